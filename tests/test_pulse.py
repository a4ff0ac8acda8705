"""The pulse: dashboards are woken by the data they show, at most once per period, never by ingest itself."""

from __future__ import annotations

import time

from bokeh.document import Document

from app.dashboard.dashboard import Dashboard
from app.dashboard.spec import parse_layout
from app.dashboard.view import WidgetContext
from app.live import LiveCache
from app.model import Reading
from app.pulse import Interest, Pulse
from tests.helpers import until

LAYOUT = """title: t
refresh_ms: 300
widgets:
- {type: value, id: v, series: dam-1/level}
- {type: status_grid, id: g, devices: [gauge-*]}
- {type: webcam, id: w, camera: dam-1-cam}
- {type: table, id: tb, series: ['srv-*/cpu']}
- {type: markdown, id: m, text: hello}
"""


class FakeDoc(Document):
    """A session's document whose next-tick and timeout callbacks are recorded, to run by hand."""

    def __init__(self) -> None:
        super().__init__()
        self._session_context = lambda: "a session"  # what a served document has (a weakref in Bokeh)
        self.next_tick: list = []
        self.timeouts: list[tuple[object, int]] = []

    def add_next_tick_callback(self, cb):
        self.next_tick.append(cb)
        return cb

    def add_timeout_callback(self, cb, ms):
        self.timeouts.append((cb, ms))
        return cb


def test_interest_names_and_globs_from_every_widget_kind():
    dash = Dashboard(parse_layout("t", LAYOUT), WidgetContext(live=LiveCache()))
    interest = dash.interest
    assert interest.exact == {"dam-1", "dam-1-cam"} and interest.globs == ["gauge-*", "srv-*"]
    assert interest.wants("dam-1") and interest.wants("gauge-7") and interest.wants("srv-2")
    assert not interest.wants("dam-2") and not interest.any_of({"truck-1", "plc-1"})
    assert Interest(["*"]).wants("anything")


def test_pulse_wakes_only_the_dashboards_that_show_a_changed_device():
    pulse = Pulse(LiveCache())
    woken: list[str] = []

    class L:
        def __init__(self, name: str, patterns: list[str]) -> None:
            self.name, self.interest = name, Interest(patterns)

        def wake(self) -> None:
            woken.append(self.name)

    dams, trucks = L("dams", ["dam-*"]), L("trucks", ["truck-1"])
    pulse.subscribe(dams)
    pulse.subscribe(trucks)
    pulse.notify({"dam-3", "plc-1"})
    assert woken == ["dams"]
    pulse.notify({"truck-1"})
    assert woken == ["dams", "trucks"]
    pulse.notify({f"dev-{i}" for i in range(pulse.filter_limit + 1)})  # too many to filter: wake all
    assert sorted(woken[2:]) == ["dams", "trucks"]
    pulse.unsubscribe(trucks)
    pulse.notify({"truck-1", "dam-1"})
    assert woken[4:] == ["dams"]


def test_a_listener_that_fails_is_dropped_and_the_others_still_woken():
    pulse = Pulse(LiveCache())
    woken = []

    class Broken:
        interest = None

        def wake(self) -> None:
            raise RuntimeError("session gone")

    class Fine:
        interest = None

        def wake(self) -> None:
            woken.append(1)

    pulse.subscribe(Broken())
    pulse.subscribe(Fine())
    pulse.notify({"d"})
    pulse.notify({"d"})
    assert woken == [1, 1] and pulse.listeners == 1


async def test_pulse_turns_a_burst_of_batches_into_one_wake():
    live = LiveCache()
    pulse = Pulse(live, coalesce_s=0.05)
    woken: list[float] = []

    class L:
        interest = Interest(["dam-*"])

        def wake(self) -> None:
            woken.append(time.monotonic())

    pulse.subscribe(L())
    pulse.start()
    try:
        now = time.time_ns()
        for i in range(5):  # one simulator tick, arriving as several batches
            live.accept([Reading(f"dam-{i}", "level", now, 1.0)])
        live.accept([Reading("plc-1", "pressure", now, 2.0)])
        await until(lambda: pulse.pulses == 1, what="one pulse for the burst")
        assert len(woken) == 1
        live.accept([Reading("plc-1", "pressure", now + 1, 2.0)])  # nothing the listener shows
        await until(lambda: pulse.pulses == 2, what="a pulse for the PLC reading")
        assert len(woken) == 1
    finally:
        await pulse.stop()
    assert pulse.listeners == 0


def test_a_woken_dashboard_refreshes_at_most_once_per_period():
    live = LiveCache()
    live.accept([Reading("dam-1", "level", time.time_ns(), 1.0, unit="m")])
    dash = Dashboard(parse_layout("t", LAYOUT), WidgetContext(live=live), pulse=Pulse(live))
    doc = dash._doc = FakeDoc()
    dash.wake()
    dash.wake()  # already scheduled: nothing more
    assert len(doc.next_tick) == 1 and not doc.timeouts
    doc.next_tick.pop()()  # the session runs it
    assert dash.refreshes == 1 and "1.00" in dash.views["v"].html.object
    live.accept([Reading("dam-1", "level", time.time_ns(), 2.0, unit="m")])
    dash.wake()  # within refresh_ms of the last refresh: deferred to the period's end
    assert not doc.next_tick and len(doc.timeouts) == 1 and 0 < doc.timeouts[0][1] <= 300
    doc.timeouts.pop()[0]()
    assert dash.refreshes == 2 and "2.00" in dash.views["v"].html.object
    dash.stop()
    dash.wake()  # stopped: never scheduled again
    assert not doc.next_tick and not doc.timeouts


def test_stop_after_bokeh_destroyed_the_document_still_cleans_up():
    live = LiveCache()
    live.accept([Reading("dam-1", "level", time.time_ns(), 1.0)])
    pulse = Pulse(live)
    dash = Dashboard(parse_layout("t", LAYOUT), WidgetContext(live=live), pulse=pulse)
    doc = dash._doc = FakeDoc()
    pulse.subscribe(dash)
    dash._refresh_views()
    dash.wake()  # deferred to the period's end: pending when the session ends
    assert doc.timeouts
    def session(event) -> None:  # stands in for the ServerSession listening to the document
        pass

    doc.on_change(session)
    doc.destroy(session)  # Bokeh destroys the document before the session-destroyed hooks run
    dash.wake()  # a pulse racing the teardown schedules nothing on a destroyed document
    dash.stop()
    assert dash._doc is None and dash._pending is None and pulse.listeners == 0
