"""OPC-UA outages as an operator sees them: the log lines, the health fields, the retry pace.

Real asyncua servers on free loopback ports: the pump-station simulator
stopped and started again on the same port (a PLC restart), and a server
with a user manager that refuses a wrong password. The outages here last a
second or two with short reconnect delays: an outage of 30 s or an hour
goes through the same code with more (quiet) retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest
from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

from app.demo.plc_sim import PumpStationServer
from app.hub import Hub
from app.ingest.opcua import OpcUaNode, OpcUaSource
from tests.helpers import until
from tests.servers import free_port
from tests.test_opcua import arrives, node, subscribed

OURS = "app.ingest.opcua"


@pytest.fixture
async def plc() -> AsyncIterator[PumpStationServer]:
    server = PumpStationServer(port=free_port(), period_s=0.2, seed=11)
    await server.start()
    yield server
    await server.stop()


def lines(caplog: pytest.LogCaptureFixture, level: int, name: str = OURS) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


async def test_an_outage_is_one_warning_when_lost_and_one_info_when_back(plc: PumpStationServer, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    level = [node("level", browse_path="0:Objects/2:PumpStation/2:WetWellLevel", unit="m")]
    async with subscribed(plc, level, reconnect_max_delay_s=0.2) as (source, collector):
        await plc.set_value("WetWellLevel", 1.25)
        await arrives(collector, "level", 1.25)
        caplog.clear()

        await plc.stop()
        # Several failed attempts: the PLC is really down for a while, not one blip.
        await until(lambda: source.failed_attempts >= 4, timeout=10, what="four failed attempts")
        health = source.health()
        assert health["state"] == "disconnected" and health["error_kind"] == "connection"
        assert health["last_error"] and health["disconnected_since_ns"] and health["retry_delay_s"] <= 0.2

        await plc.start()  # same port, a fresh server
        await until(lambda: source.state == "connected", timeout=10, what="reconnected")
        await plc.set_value("WetWellLevel", 2.5)
        await arrives(collector, "level", 2.5)  # data resumes

    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 1 and "lost" in warnings[0] and plc.endpoint in warnings[0], warnings
    back = [m for m in lines(caplog, logging.INFO) if "back" in m]
    assert len(back) == 1, lines(caplog, logging.INFO)
    assert re.search(r"back after \d+(\.\d)? (ms|s) \(\d+ failed attempt", back[0]), back[0]
    retries = [m for m in lines(caplog, logging.DEBUG) if "attempt" in m and "failed" in m]
    assert len(retries) >= 3, retries  # the retries in between: DEBUG
    # Nothing else above DEBUG from the client side: not asyncua's reconnect warnings nor its publish loop's
    # traceback (the simulator's own server, restarted here, may warn about its setup).
    loud = [(r.name, r.levelname, r.getMessage()[:80]) for r in caplog.records
            if r.levelno > logging.DEBUG and r.name.startswith("asyncua") and not r.name.startswith("asyncua.server")]
    assert not loud, loud
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # Health: no current error once back, the outage's error kept as the previous one, with its time.
    health = source.health()
    assert health["last_error"] is None and health["last_error_ns"] is None and health["error_kind"] is None
    assert health["previous_error"] and health["previous_error_ns"], health  # the outage's last error
    assert "refused" in health["previous_error"].lower() or "111" in health["previous_error"], health
    assert health["failed_attempts"] == 0 and health["retry_delay_s"] is None


class Passwords:
    """A server-side user manager: one user whose password the test can change (an operator fixing the account)."""

    def __init__(self, user: str, password: str) -> None:
        self.accounts = {user: password}

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username is not None and self.accounts.get(username) == password:
            return User(role=UserRole.User)
        return None


@pytest.fixture
async def locked_server() -> AsyncIterator[tuple[str, Passwords]]:
    """A server (no security policy) that takes only user 'operator' with its password."""
    users = Passwords("operator", "right-one")
    server = Server(user_manager=users)
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/locked/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:vigie:test:locked")
    obj = await server.nodes.objects.add_object(ua.NodeId("Tank", idx), ua.QualifiedName("Tank", idx))
    await obj.add_variable(ua.NodeId("Tank.Level", idx), ua.QualifiedName("Level", idx), 1.5)
    await server.start()
    try:
        yield endpoint, users
    finally:
        await server.stop()


async def test_a_wrong_password_is_reported_once_as_an_authentication_refusal(locked_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint, users = locked_server
    source = OpcUaSource("tank", Hub(), url=endpoint, username="operator", password="wrong-one",
                         nodes=[OpcUaNode(browse_path="0:Objects/2:Tank/2:Level", device="tank", metric="level")],
                         reconnect_max_delay_s=0.05, auth_retry_max_delay_s=0.3)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.failed_attempts >= 3, timeout=10, what="three refused attempts")
        health = source.health()
        assert health["state"] == "disconnected" and health["error_kind"] == "auth"
        assert health["last_error"].startswith("authentication refused by the server: BadUserAccessDenied")
        assert "'operator'" in health["last_error"]
        assert health["retry_delay_s"] == 0.3  # the authentication back-off, not the 0.05 s of an outage
        warnings = lines(caplog, logging.WARNING)
        assert len(warnings) == 1, warnings
        assert "authentication refused by the server: BadUserAccessDenied" in warnings[0]
        assert len([m for m in lines(caplog, logging.DEBUG) if "attempt" in m]) >= 2
        assert not any("wrong-one" in r.getMessage() for r in caplog.records)  # never the password

        users.accounts["operator"] = "wrong-one"  # the account fixed on the server's side
        await until(lambda: source.state == "connected", timeout=10, what="accepted")
        health = source.health()
        assert health["last_error"] is None and health["error_kind"] is None and health["subscribed_nodes"] == 1
        assert health["previous_error"].startswith("authentication refused by the server")
        connected = [m for m in lines(caplog, logging.INFO) if "connected" in m]
        assert len(connected) == 1 and "after" in connected[0], connected
    finally:
        await source.stop()
        await asyncio.wait_for(task, 5)
    assert len(lines(caplog, logging.WARNING)) == 1


async def test_a_degraded_health_probe_is_logged_once_per_change_not_at_each_probe(plc, tmp_path, caplog) -> None:
    """A probe every few seconds during an outage: one WARNING when health turns degraded, one INFO when ok again.

    The real /health handler and access-log function of the web server, on a
    plain Tornado application (the Panel pages play no part in this).
    """
    import textwrap

    import tornado.httpserver
    import tornado.web

    from app.config import load_config
    from app.runtime import Runtime
    from app.server import HealthHandler, access_log
    from app.web.auth import WebAuth
    from tests.test_server import http

    caplog.set_level(logging.INFO)
    config = tmp_path / "config"
    config.mkdir()
    (config / "vigie.yaml").write_text(textwrap.dedent(f"""\
        store: {{engine: embedded, data_dir: data, spool_dir: spool}}
        opcua:
          - name: plc
            url: {plc.endpoint}
            reconnect_max_delay_s: 0.2
            nodes:
              - {{browse_path: "0:Objects/2:PumpStation/2:WetWellLevel", device: ps-1, metric: level}}
        """))
    runtime = Runtime(load_config(config, env={}), base_dir=tmp_path)
    await runtime.start()
    app = tornado.web.Application([(r"/health", HealthHandler, {"runtime": runtime})], log_function=access_log,
                                  vigie_auth=WebAuth(runtime.accounts, runtime.secret))
    port = free_port()
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    url = f"http://127.0.0.1:{port}/health"

    async def probe() -> int:
        return (await asyncio.to_thread(http, "GET", url, None, None))[0]

    try:
        await until(lambda: runtime.sources[0].state == "connected", what="connected")
        assert await probe() == 200
        caplog.clear()
        await plc.stop()
        await until(lambda: runtime.sources[0].state == "disconnected", what="disconnected")
        assert [await probe() for _ in range(4)] == [503] * 4
        await plc.start()
        await until(lambda: runtime.sources[0].state == "connected", timeout=10, what="reconnected")
        assert [await probe() for _ in range(3)] == [200] * 3
    finally:
        server.stop()
        await runtime.stop()
    health_lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "app.server"
                    and r.getMessage().startswith("health")]
    assert [level for level, _ in health_lines] == ["WARNING", "INFO"], health_lines
    assert "degraded" in health_lines[0][1] and "plc disconnected" in health_lines[0][1], health_lines
    assert not [r for r in caplog.records if r.name == "tornado.access" and "/health" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
