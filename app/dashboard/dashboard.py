"""A dashboard: a layout's widgets on a GridStack grid, refreshed live by its session.

``Dashboard`` is a plain Panel object, so the same class serves the web page,
the iframe embeds and a Jupyter notebook::

    from app.dashboard.dashboard import Dashboard
    Dashboard.from_yaml("layouts/flood-dams.yaml", live=cache).servable()

GridStack's own item ids are ``str(id(obj))`` and change every run
(FIELD-NOTES), so the grid's state is mapped back to the widgets' stable
ids (:meth:`positions`) before anything is saved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn
from panel.io.state import set_curdoc

import app.dashboard.widgets  # noqa: F401  (registers the widget kinds)
from app.dashboard.spec import GRID_COLUMNS, LayoutSpec, LoadedLayout, WidgetSpec, load_layout
from app.dashboard.view import ErrorView, WidgetContext
from app.i18n import t
from app.live import LiveCache
from app.pulse import Interest, Pulse
from app.refresh import every

IDLE_TICK_MS = 1000
"""How often a pulse-driven dashboard checks whether it should refresh for the ages alone."""
IDLE_REFRESH_S = 2.0
"""A dashboard with no new data refreshes after this long (ages, stale colours)."""


class Dashboard:
    """The live rendering of one layout."""

    def __init__(self, loaded: LoadedLayout, ctx: WidgetContext, *, editable: bool = False,
                 only: str | None = None, pulse: Pulse | None = None) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.ctx = ctx
        self.editable = editable
        self.pulse = pulse
        self.views: dict[str, Any] = {}
        self._callback = None
        self._version = -1
        self._doc: Any = None  # the session's document, when woken by the pulse
        self._pending: Any = None  # the refresh scheduled on it, if any
        self._last = 0.0  # monotonic time of the last refresh
        self.refreshes = 0
        self.grid = self._build(only)
        widgets = [w for w in self.spec.widgets if only is None or w.id == only]
        self.interest = Interest.of(p for w in widgets for p in w.device_patterns())

    @classmethod
    def from_yaml(cls, path: str | Path, *, live: LiveCache | None = None, ctx: WidgetContext | None = None,
                  **kwargs: Any) -> Dashboard:
        """Load ``layouts/<name>.yaml`` and render it (a live cache, or an empty one)."""
        ctx = ctx or WidgetContext(live=live or LiveCache())
        return cls(load_layout(path), ctx, **kwargs)

    def unknown_series(self) -> list[str]:
        """Return, naming the file, widget and key, each configured series with no reading anywhere.

        A typo in a hand-edited file or a removed device: the widget says it
        in place, and the dashboard's problem list says where to fix it.
        """
        text = t("{file}: widget {widget}: series: unknown series {series} (no reading seen, none stored)",
                 self.ctx.lang)
        return [text.format(file=f"{self.loaded.name}.yaml", widget=repr(w.id), series=repr(key))
                for w in self.spec.widgets for key in self.ctx.unknown(w.series_keys())]

    def _build(self, only: str | None) -> pn.viewable.Viewable:
        if only is not None:
            spec = self.spec.widget(only)
            if spec is None:
                view = ErrorView(only, [f"no widget {only!r} in this layout"])
            else:
                view = spec.view(self.ctx)
            self.views[only] = view
            return pn.Column(view.panel, sizing_mode="stretch_both", margin=0)
        placed = self._resolve_overlaps()
        rows = max([y + h for (_w, (_x, y, _wd, h)) in placed] + [1])
        broken_top = rows  # widgets that failed to load go in rows of three below the others
        rows += 3 * ((len(self.loaded.broken) + 2) // 3)
        if self.editable:
            rows += 6  # GridStack refuses moves past its last row: give the editor room below
        grid = pn.GridStack(
            sizing_mode="stretch_width", ncols=GRID_COLUMNS, nrows=rows, height=rows * self.spec.row_height,
            allow_drag=self.editable, allow_resize=self.editable, css_classes=["vigie-grid"],
        )
        self._ids: dict[str, str] = {}
        for w, (x, y, width, height) in placed:
            self._place(grid, w.id, w.view(self.ctx), x, y, width, height)
        for k, (index, raw, reasons) in enumerate(self.loaded.broken):
            wid = str(raw.get("id") or f"broken-{index}")
            self._place(grid, wid, ErrorView(wid, reasons), (k % 3) * 4, broken_top + (k // 3) * 3, 4, 3)
        return grid

    def _resolve_overlaps(self) -> list[tuple[WidgetSpec, tuple[int, int, int, int]]]:
        """Keep each widget's place unless it overlaps an earlier one; then move it below (and say so)."""
        taken: set[tuple[int, int]] = set()
        out = []
        bottom = max([w.y + w.h for w in self.spec.widgets] + [0])
        for w in self.spec.widgets:
            x, y, width, height = w.x, w.y, w.w, w.h
            cells = {(cx, cy) for cx in range(x, x + width) for cy in range(y, y + height)}
            if cells & taken:
                self.loaded.problems.append(f"widget {w.id!r} overlaps another one; shown below the others")
                x, y = 0, bottom
                bottom += height
                cells = {(cx, cy) for cx in range(x, x + width) for cy in range(y, y + height)}
            taken |= cells
            out.append((w, (x, y, width, height)))
        return out

    def _place(self, grid: pn.GridStack, wid: str, view: Any, x: int, y: int, w: int, h: int) -> None:
        self.views[wid] = view
        grid[y:y + h, x:x + w] = view.panel
        self._ids[str(id(view.panel))] = wid

    # -- live -----------------------------------------------------------
    def refresh(self) -> None:
        """Pull new data into every widget (on a timer: a notebook, a page without a pulse).

        When the live cache has nothing new, only every ~2 s (for the ages
        shown) does the refresh touch the widgets at all.
        """
        if self.ctx.live.version == self._version and not self._idle_due():
            return
        self._refresh_views()

    def _idle_due(self) -> bool:
        """Whether the ages shown are due a refresh although no data came (~2 s, or the period if longer)."""
        # A tenth of a second early counts: a timer of that period fires a little early or late.
        return time.monotonic() - self._last >= max(IDLE_REFRESH_S, self.spec.refresh_ms / 1000) - 0.1

    def _refresh_views(self) -> None:
        """Refresh every view, as one message to the browser."""
        self._version = self.ctx.live.version
        self._last = time.monotonic()
        self.refreshes += 1
        with pn.io.hold(self._doc):
            for view in self.views.values():
                view.refresh()

    def start(self) -> None:
        """Refresh live until :meth:`stop` (or the session's end).

        In a server session with a pulse, the dashboard refreshes when data
        it shows arrives (:meth:`wake`), at most once per ``refresh_ms``,
        plus every ~2 s for the ages shown. Elsewhere it polls the live
        cache every ``refresh_ms``.
        """
        if self._callback is not None or self._doc is not None:
            return
        doc = pn.state.curdoc
        if self.pulse is not None and doc is not None and doc.session_context is not None:
            self._doc = doc
            # At once, not on Panel's onload: attaching on document_ready left a chart's later history
            # queries (a pan into the past) unanswered (tests/test_browser.py, panning). The page gate
            # bounds the sessions nobody attaches to (max_sessions) and they expire in idle_session_s.
            self._attach()
        else:
            self._callback = every(self.refresh, self.spec.refresh_ms)

    def _attach(self) -> None:
        """Start waking and ticking: the session's browser is there."""
        doc = self._doc
        if doc is None or self._callback is not None:  # stopped before a browser came, or already attached
            return
        self.pulse.subscribe(self)
        self._callback = every(self._idle_tick, IDLE_TICK_MS)
        # A first refresh as soon as the session runs: what the views want once attached
        # (a chart's history from the store) should not wait for data or the idle tick.
        self._pending = doc.add_next_tick_callback(self._woken)

    def wake(self) -> None:
        """Schedule a refresh on the session's document: now, or when the period since the last one ends.

        Called by the pulse, outside the session: it never touches the views.
        """
        doc = self._doc
        if doc is None or self._pending is not None or doc.session_context is None:  # stopped, or destroyed
            return
        delay_s = self._last + self.spec.refresh_ms / 1000 - time.monotonic()
        if delay_s <= 0:
            self._pending = doc.add_next_tick_callback(self._woken)
        else:
            self._pending = doc.add_timeout_callback(self._woken, max(1, int(delay_s * 1000)))

    def _woken(self) -> None:
        self._pending = None
        if self._doc is not None:
            with set_curdoc(self._doc):  # as Panel's own callbacks: model changes go out directly
                self._refresh_views()

    def _idle_tick(self) -> None:
        """Refresh when nothing woke the dashboard for a while (~2 s): the ages shown move on."""
        if self._doc is None:  # stopped: Panel may restart a callback stopped before its first run
            return
        if self._pending is None and self._idle_due():
            self._refresh_views()

    def stop(self) -> None:
        """Stop refreshing and drop the views (also after Bokeh destroyed the session's document)."""
        if self.pulse is not None:
            self.pulse.unsubscribe(self)
        doc, pending = self._doc, self._pending
        self._doc = self._pending = None
        try:
            # A destroyed document (session_context None) has dropped its callbacks already.
            if pending is not None and doc is not None and doc.session_context is not None:
                with contextlib.suppress(ValueError, KeyError):  # already run
                    doc.callbacks.remove_session_callback(pending)
        finally:
            if self._callback is not None:
                self._callback.stop()
                self._callback = None
            for view in self.views.values():
                view.dispose()

    # -- editing ----------------------------------------------------------
    def positions(self) -> dict[str, tuple[int, int, int, int]]:
        """Return each widget's (x, y, w, h) as the grid shows it now, by stable id."""
        out = {}
        if isinstance(self.grid, pn.GridStack):
            for item in self.grid.state or []:
                wid = self._ids.get(str(item["id"]))
                if wid:
                    out[wid] = (item["x0"], item["y0"], item["x1"] - item["x0"], item["y1"] - item["y0"])
            if not out:
                for (y0, x0, y1, x1), obj in self.grid.objects.items():
                    wid = self._ids.get(str(id(obj)))
                    if wid:
                        out[wid] = (x0 or 0, y0 or 0, (x1 or GRID_COLUMNS) - (x0 or 0), (y1 or 1) - (y0 or 0))
        return out

    def current_spec(self) -> LayoutSpec:
        """Return the layout with the grid's current positions applied."""
        widgets: list[WidgetSpec] = []
        pos = self.positions()
        for w in self.spec.widgets:
            clone = type(w).from_spec(w.to_spec())
            if w.id in pos:
                clone.x, clone.y, clone.w, clone.h = pos[w.id]
            widgets.append(clone)
        spec = LayoutSpec.from_spec({k: v for k, v in self.spec.to_spec().items() if k != "widgets"})
        spec.widgets = widgets
        return spec

    def __panel__(self) -> pn.viewable.Viewable:
        return self.grid

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """Show the dashboard when it is the last expression of a notebook cell."""
        return self.grid._repr_mimebundle_(include, exclude)

    def servable(self, title: str | None = None) -> pn.viewable.Viewable:
        """Mark for ``panel serve`` and start refreshing (notebooks and scripts)."""
        self.start()
        return self.grid.servable(title=title or self.spec.title)


def dashboard_context(live: LiveCache, *, store=None, lang: str = "en", **kwargs: Any) -> WidgetContext:
    """Build a widget context (a helper for notebooks and pages)."""
    return WidgetContext(live=live, store=store, lang=lang, **kwargs)


LimitsFn = Callable[[str], list[tuple[float, str, str]]]
