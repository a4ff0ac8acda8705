"""Build a starting layout for a device or a site from the series it has."""

from __future__ import annotations

from collections import defaultdict

from app.dashboard.layouts import slugify
from app.dashboard.spec import GRID_COLUMNS, LayoutSpec, WidgetSpec, unique_id
from app.dashboard.widgets.timeseries import TimeSeriesSpec
from app.dashboard.widgets.value import ValueSpec
from app.live import LiveCache


class _Ids:
    """Widget ids for generated widgets: slugs of metric names (which may carry accents), each used once."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def __call__(self, text: str) -> str:
        return unique_id(slugify(text, default="widget")[:56], self.taken)


def generate_for_device(live: LiveCache, device: str) -> LayoutSpec:
    """One value tile per metric on top, one chart per metric below."""
    metrics = sorted(k.split("/", 1)[1] for k in live.keys() if k.split("/", 1)[0] == device)
    widgets: list[WidgetSpec] = []
    new_id = _Ids()
    for i, metric in enumerate(metrics):
        widgets.append(ValueSpec(id=new_id(f"{metric}-now"), title=metric, series=f"{device}/{metric}",
                                 x=(i % 4) * 3, y=(i // 4) * 2, w=3, h=2))
    top = ((len(metrics) + 3) // 4) * 2
    for i, metric in enumerate(metrics):
        widgets.append(TimeSeriesSpec(id=new_id(f"{metric}-chart"), title=metric, series=[f"{device}/{metric}"],
                                      x=(i % 2) * 6, y=top + (i // 2) * 3, w=6, h=3))
    return LayoutSpec(title=device, description=f"Generated for device {device}", widgets=widgets)


def generate_for_site(live: LiveCache, site: str) -> LayoutSpec:
    """One chart per metric, with every device of the site on it."""
    by_metric: dict[str, list[str]] = defaultdict(list)
    for v in live.latest():
        if v.tags.get("site") == site:
            by_metric[v.metric].append(v.key)
    widgets: list[WidgetSpec] = []
    new_id = _Ids()
    for i, (metric, keys) in enumerate(sorted(by_metric.items())):
        widgets.append(TimeSeriesSpec(id=new_id(metric), title=metric, series=sorted(keys),
                                      x=(i % 2) * (GRID_COLUMNS // 2), y=(i // 2) * 4, w=GRID_COLUMNS // 2, h=4))
    return LayoutSpec(title=site, description=f"Generated for site {site}", site=site, widgets=widgets)
