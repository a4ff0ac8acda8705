"""What pages may use of the platform: the parts they read or act on, and nothing else.

Pages get a :class:`PageServices`, not the :class:`~app.runtime.Runtime`:
a page cannot start or stop a source, reach the store writer or its spool,
the signing secret or the config's secrets. Who is looking comes beside it,
from :class:`~app.web.auth.WebAuth`, and is checked again at each click.
Built once per server with :meth:`PageServices.of`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.alarms.engine import AlarmEngine
    from app.alarms.journal import Journal
    from app.alarms.rule_file import RuleEditor
    from app.cameras import CameraStore
    from app.config import OverviewSection, SeriesNames, SiteSpec
    from app.ingest.deadletters import DeadLetters
    from app.live import LiveCache
    from app.notify.cascade import Notifier
    from app.pulse import Pulse
    from app.runtime import Runtime
    from app.store.base import StoreEngine
    from app.web.accounts import AccountStore


@dataclass(frozen=True, slots=True)
class PageServices:
    """The platform as pages see it (see the module docstring)."""

    live: LiveCache  # latest values and the recent past of every series
    pulse: Pulse  # wakes a page when what it shows changes
    store: StoreEngine  # history queries (the History page, backtests, history plots)
    alarms: AlarmEngine  # active alarms; acknowledge, shelve, maintenance
    rule_editor: RuleEditor  # the alarm rules file
    journal: Journal  # alarm history and the audit log
    notifier: Notifier  # contacts, rota, policies, cascades in progress
    accounts: AccountStore  # users, tokens, embed links (the Access page; admins only)
    cameras: CameraStore
    timezone: str  # the zone pages show times in
    tile_url: str | None  # the map widgets' background
    health: Callable[[], dict[str, Any]]  # the detailed health (the System page; admins only)
    dead_letters: Callable[[], list[DeadLetters]]  # every source's, and the store writer's
    layouts_report: Callable[[], tuple[int, str]]  # how many layouts, and where
    sites: dict[str, SiteSpec]  # the config's sites: coordinates, titles, dashboards (the overview)
    overview: OverviewSection  # when a device is silent; the wall display's defaults
    names: SeriesNames  # devices' and metrics' display names (config ``devices`` / ``metrics``)
    # The loop the store's coroutines run on: a page built on a builder thread (app/pagegate.py) can
    # await a query there while it builds (History draws its first plot in the page it sends).
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def of(cls, runtime: Runtime) -> PageServices:
        """Return the page's view of ``runtime``."""
        cfg = runtime.loaded.config
        return cls(
            live=runtime.live, pulse=runtime.pulse, store=runtime.store, alarms=runtime.alarms,
            rule_editor=runtime.rule_editor, journal=runtime.journal, notifier=runtime.notifier,
            accounts=runtime.accounts, cameras=runtime.cameras, timezone=cfg.server.timezone,
            tile_url=cfg.map.tile_url, health=runtime.health,
            dead_letters=lambda: [part.dead for part in [*runtime.sources, runtime.writer]],
            layouts_report=runtime.loaded.layouts_report, sites=cfg.site_specs(), overview=cfg.overview,
            names=cfg.series_names(), loop=_running_loop(),
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # built outside the server's loop (a test): pages query on their session's loop
        return None
