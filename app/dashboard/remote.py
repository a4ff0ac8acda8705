"""Show a dashboard in a notebook, live, against a running Vigie.

The embedded store's file is locked to the server process, and a notebook
should not open ingest connections of its own, so a notebook reads the
server's JSON API: the layout from ``/api/v1/layouts/<name>``, then every
second the latest values from ``/api/v1/latest`` into a local live cache
that the same widget classes as the web page draw from::

    import panel as pn
    from app.dashboard.remote import RemoteVigie
    pn.extension("gridstack")
    vigie = RemoteVigie("http://localhost:5006")   # an API token with the read scope from $VIGIE_TOKEN
    vigie.dashboard("flood-dams")        # displays in the cell and updates live

The API asks who is reading (``vigie token add --user NAME --scope read``);
the token comes from the ``token`` argument or the ``VIGIE_TOKEN`` variable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.parse
import urllib.request
from typing import Any

from app.dashboard.dashboard import Dashboard
from app.dashboard.spec import LayoutSpec, LoadedLayout
from app.dashboard.view import WidgetContext
from app.live import LiveCache
from app.model import Envelope, Reading
from app.refresh import every

log = logging.getLogger(__name__)


class RemoteEnvelopes:
    """The one store query a dashboard makes, ``envelope()``, answered by the server's ``/api/v1/envelope``.

    With it, a notebook's charts draw the past (pan, zoom, the part of the
    window before the notebook opened) from the server's store, reduced there.
    """

    def __init__(self, remote: RemoteVigie) -> None:
        self.remote = remote

    async def envelope(self, key: str, start_ns: int, end_ns: int, buckets: int) -> Envelope:
        """Return ``[start, end)`` of a series reduced to at most ``buckets`` buckets, from the server."""
        query = urllib.parse.urlencode({"series": key, "start": start_ns, "end": end_ns, "buckets": buckets})
        doc = await asyncio.to_thread(self.remote._get, f"/api/v1/envelope?{query}")
        return Envelope(key, doc["bucket_ns"], doc["time_ns"], doc["min"], doc["mean"], doc["max"])


class RemoteVigie:
    """A running Vigie seen through its HTTP API."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        token = token or os.environ.get("VIGIE_TOKEN")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.live = LiveCache()
        self._last: dict[str, int] = {}
        self._callback = None

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers=self._headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
            return json.loads(r.read())

    def poll(self) -> int:
        """Fetch the latest values and add the new ones to the local cache; return how many."""
        try:
            rows = self._get("/api/v1/latest")
        except OSError as exc:
            log.warning("cannot reach %s: %s", self.url, exc)
            return 0
        batch = []
        for row in rows:
            key = row["series"]
            if row["time_ns"] <= self._last.get(key, -1):
                continue
            self._last[key] = row["time_ns"]
            device, _, metric = key.partition("/")
            batch.append(Reading(device, metric, row["time_ns"], row["value"], row["quality"], row["unit"],
                                 "remote", row["tags"]))
        self.live.accept(batch)
        return len(batch)

    def layout(self, name: str) -> LoadedLayout:
        """Fetch a layout from the server."""
        doc = self._get(f"/api/v1/layouts/{name}")
        return LoadedLayout(name, LayoutSpec.from_spec(doc["spec"]), doc.get("problems", []))

    def dashboard(self, name: str, *, lang: str = "en", period_ms: int = 1000) -> Dashboard:
        """Return the named dashboard, fed live from the server."""
        self.poll()
        ctx = WidgetContext(live=self.live, lang=lang, store=RemoteEnvelopes(self))
        dash = Dashboard(self.layout(name), ctx)
        if self._callback is None:
            self._callback = every(self.poll, period_ms)
        dash.start()
        return dash

    def stop(self) -> None:
        """Stop polling."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
