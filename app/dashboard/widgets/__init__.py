"""Widget kinds: each module holds one kind's spec and its live view.

Importing this package registers every kind with :class:`WidgetSpec`.
"""

from app.dashboard.widgets import markdown, timeseries, value

__all__ = ["markdown", "timeseries", "value"]
