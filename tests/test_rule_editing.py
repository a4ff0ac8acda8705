"""Editing alarm rules on a running server: the file keeps its comments, the next reading is judged by the new rule.

Also the backtest: the stored history replayed through a rule gives
exactly the events the live engine gave when the same readings arrived.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app.alarms.backtest import backtest_on_history
from app.alarms.engine import AlarmEngine
from app.alarms.rule_file import RuleEditor, RuleError
from app.alarms.rules import rule_from_spec
from app.model import Reading
from app.store.embedded import EmbeddedStore
from tests.browser import VigieServer
from tests.servers import wait_until

RULES_FILE = """\
# The dams' rules: reviewed by the water directorate every spring.
alarms:
  journal_file: journal.sqlite
  rules:
    # vigilance then alert
    - {name: flood, series: re-*/level, h: 50, severity: high}   # set after the 2024 flood
    - {name: battery, series: re-*/battery, l: 3.5, severity: low}
"""


def call(server: VigieServer, method: str, path: str, doc: dict | None = None,
         role: str = "admin") -> tuple[int, dict]:
    req = urllib.request.Request(server.base + path, data=None if doc is None else json.dumps(doc).encode(),
                                 method=method, headers={"Content-Type": "application/json", **server.headers(role)})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_editor_keeps_comments_and_order_and_reports_field_problems(tmp_path: Path):
    path = tmp_path / "alarms.yaml"
    path.write_text(RULES_FILE)
    engine = AlarmEngine([rule_from_spec({"name": "flood", "series": "re-*/level", "h": 50})])
    editor = RuleEditor(path, engine)
    editor.save({"name": "flood", "series": "re-*/level", "h": 55, "severity": "high"}, user="ana")
    text = path.read_text()
    assert text == RULES_FILE.replace("h: 50,", "h: 55,")  # that one value, nothing else
    assert [r.v.h for r in engine.rules if r.name == "flood"] == [55.0]
    with pytest.raises(RuleError) as err:
        editor.save({"name": "flood", "series": "re-*/level", "h": 55, "l": 60, "severity": "urgent"}, user="ana")
    assert {w for w, _m in err.value.problems} == {"h", "severity"}
    with pytest.raises(RuleError):
        editor.save({"type": "composite", "name": "both", "expression": "flood and nope"}, user="ana")
    assert path.read_text() == RULES_FILE.replace("h: 50,", "h: 55,")  # refused: the file is untouched
    editor.save({"type": "no_data", "name": "silent", "series": "re-*/level", "timeout_s": 120}, user="ana")
    assert path.read_text().startswith(RULES_FILE.replace("h: 50,", "h: 55,").rstrip("\n"))
    assert len(editor.versions()) == 2  # each save kept the version it replaced


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_rule_edited_over_http_judges_the_next_reading(tmp_path, mosquitto):
    import paho.mqtt.publish as pub

    server = VigieServer(tmp_path, mosquitto.port, extra_config=RULES_FILE.split("\n", 1)[1])
    rules_file = server.config / "vigie.yaml"
    server.start()
    try:
        def send(value: float) -> None:
            pub.single("bt/nord/re-1/telemetry", json.dumps({"ts": int(time.time() * 1000), "level": value}),
                       qos=1, hostname="127.0.0.1", port=mosquitto.port)

        def flood() -> dict | None:
            return next((a for a in call(server, "GET", "/api/v1/alarms")[1]["active"]
                         if a["alarm_id"] == "flood|re-1/level"), None)

        send(52.0)
        wait_until(lambda: flood() is not None, 10, 0.05, "raised at 52 > 50")
        new_flood = {"name": "flood", "series": "re-*/level", "h": 60, "severity": "high"}
        # An analyst changes rules out of service only: a live rule needs an admin.
        status, answer = call(server, "PUT", "/api/v1/alarms/rules/flood", new_flood, role="analyst")
        assert status == 403 and "admin" in answer["error"], answer
        status, answer = call(server, "PUT", "/api/v1/alarms/rules/trial", {"name": "trial", "series": "re-*/level",
                                                                          "h": 40, "mode": "shadow"}, role="analyst")
        assert status == 200, answer
        status, answer = call(server, "PUT", "/api/v1/alarms/rules/trial", {"name": "trial", "series": "re-*/level",
                                                                          "h": 40}, role="analyst")
        assert status == 403, answer  # putting it live is the admin's
        assert call(server, "DELETE", "/api/v1/alarms/rules/trial", {}, role="analyst")[0] == 200
        status, answer = call(server, "PUT", "/api/v1/alarms/rules/flood", new_flood)
        assert status == 200 and answer["matched"] == 1, answer
        assert "h: 60" in rules_file.read_text() and "# set after the 2024 flood" in rules_file.read_text()
        send(55.0)  # under the new limit: the next reading clears it
        wait_until(lambda: (a := flood()) is not None and not a["active"], 10, 0.05, "cleared under 60")
        status, answer = call(server, "PUT", "/api/v1/alarms/rules/flood",
                              {"name": "flood", "series": "re-*/level", "h": "high"})
        assert status == 400 and answer["problems"][0]["where"] == "h", answer
        status, answer = call(server, "GET", "/api/v1/alarms/rules")
        nothing = next(r for r in answer["rules"] if r["spec"]["name"] == "battery")
        assert nothing["matched"] == 0  # a rule whose target matches no series is shown as such
        events = call(server, "GET", "/api/v1/alarms/journal?category=audit&rule=flood")[1]["events"]
        assert [(e["kind"], e["rule"], e["user"]) for e in events] == [("rule_saved", "flood", "admin (token)")]
        assert '"h": 60' in events[0]["comment"] and '"h": 50' in events[0]["comment"]  # before and after
    finally:
        server.stop()


async def test_backtest_on_stored_history_gives_the_live_engines_events(tmp_path: Path):
    spec = {"type": "threshold", "name": "t", "series": "bk-*/level", "h": 10, "deadband": 1, "on_delay_s": 120}
    t0 = 1_790_000_000 * 10**9
    readings = [Reading(f"bk-{i % 2}", "level", t0 + i * 30 * 10**9, 8 + 4 * ((i // 7) % 2) + (i % 3) * 0.4, unit="m")
                for i in range(2000)]
    live = AlarmEngine([rule_from_spec(spec)], clock=lambda: readings[-1].time_ns, log_events=False)
    got = []
    live.subscribe(got.append)
    store = EmbeddedStore(tmp_path / "data")
    await store.open()
    try:
        for i in range(0, len(readings), 50):  # as ingest delivers them: batches, stored and judged
            batch = readings[i:i + 50]
            live.accept(batch)
            await store.write(batch)
            live.tick(batch[-1].time_ns)
        end = t0 + 2000 * 30 * 10**9
        live.tick(end)  # the clock goes on to the end of the range, as the replay's does
        result = await backtest_on_history(rule_from_spec(spec), store, t0, end)
    finally:
        await store.close()
    assert result["series"] == ["bk-0/level", "bk-1/level"] and result["readings"] == 2000
    assert [(e.kind, e.key, e.time_ns) for e in result["events"]] == [(e.kind, e.key, e.time_ns) for e in got]
    assert result["summary"]["count"] == sum(1 for e in got if e.kind == "raised") > 10

