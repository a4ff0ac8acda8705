"""Widget kinds: each module holds one kind's spec and its live view.

Importing this package registers every kind with :class:`WidgetSpec`.
"""

from app.dashboard.widgets import alarms, map, markdown, status_grid, table, timeseries, value, webcam

__all__ = ["alarms", "map", "markdown", "status_grid", "table", "timeseries", "value", "webcam"]
