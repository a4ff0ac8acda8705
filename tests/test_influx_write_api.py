"""InfluxDB's write API on a running Vigie: influxdb-client (synchronous, batching, gzip) and raw /write.

A real server in-process (as tests/test_server.py starts it) with the
embedded store: points written the way Telegraf and influxdb-client write
them must all land, each field a series named ``{measurement}.{field}``,
the ``host`` tag naming the device and the other tags kept; refusals
answer as InfluxDB does (status and JSON body).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from influxdb_client import InfluxDBClient, Point, WriteOptions, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from app.config import load_config
from app.runtime import Runtime
from app.server import run_server
from tests.helpers import until
from tests.servers import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
TOKEN = "influx-compat-token"
MAX_BODY = 200_000
T0 = (time.time_ns() // 10**9 - 3600) * 10**9  # an hour ago, whole seconds

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def vigie(tmp_path):
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "vigie.yaml").write_text(
        "store: {engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 0.05}\n"
        f"http: {{token_env: TEST_TOKEN, max_body_bytes: {MAX_BODY}, line_protocol: {{device_tags: [host]}}}}\n")
    runtime = Runtime(load_config(cfg, env={"TEST_TOKEN": TOKEN}), base_dir=tmp_path)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_server(runtime, port=port, stop_event=stop))
    await until(lambda: runtime.started.is_set(), what="runtime started")
    base = f"http://127.0.0.1:{port}"
    await until(lambda: asyncio.to_thread(lambda: post(base + "/health", None, method="GET")[0] in (200, 503)),
                what="the web server")
    yield runtime, base
    stop.set()
    await asyncio.wait_for(task, 20)


def post(url: str, body: bytes | None, headers: dict | None = None, method: str = "POST") -> tuple[int, dict | None]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, json.loads(raw) if raw else None


async def stored(runtime: Runtime) -> dict[str, list[tuple[int, float]]]:
    """Every stored point by series."""
    await runtime.writer.flush()
    out = {}
    for info in await runtime.store.series():
        out[info.key] = [(t, v) for t, v, _q in await runtime.store.raw(info.key, T0 - 10**12, T0 + 10**13)]
    return out


async def test_influxdb_client_writes_land_synchronous_and_batching(vigie):
    """influxdb-client's write API, in both modes (batching with gzip), against /api/v2/write."""
    runtime, base = vigie
    sync_points = [Point("mem").tag("host", "h1").tag("region", "eu").field("used_percent", 41.5 + i)
                   .field("available", 1000 + i).time(T0 + i * 10**9, WritePrecision.NS) for i in range(5)]
    sync_points.append(Point("disk").tag("host", "h1").tag("path", "/").field("used_percent", 71.25)
                       .time(T0, WritePrecision.NS))

    def synchronous() -> None:
        with InfluxDBClient(url=base, token=TOKEN, org="plant") as client:
            client.write_api(write_options=SYNCHRONOUS).write(bucket="telegraf", record=sync_points)
            # Line protocol text and seconds precision go through as well.
            client.write_api(write_options=SYNCHRONOUS).write(
                bucket="telegraf", record=f"cpu,host=h2 usage_idle=97.5 {T0 // 10**9}", write_precision="s")

    await asyncio.to_thread(synchronous)
    got = await stored(runtime)
    assert got == {
        "h1/mem.used_percent": [(T0 + i * 10**9, 41.5 + i) for i in range(5)],
        "h1/mem.available": [(T0 + i * 10**9, 1000.0 + i) for i in range(5)],
        "h1/disk.used_percent": [(T0, 71.25)],
        "h2/cpu.usage_idle": [(T0, 97.5)]}
    tags = {s.key: s.tags for s in await runtime.store.series()}
    assert tags["h1/mem.used_percent"] == {"region": "eu"} and tags["h1/disk.used_percent"] == {"path": "/"}

    batched, failed = [], []
    n = 500

    def batching() -> None:
        with InfluxDBClient(url=base, token=TOKEN, org="plant", enable_gzip=True) as client:
            api = client.write_api(write_options=WriteOptions(batch_size=120, flush_interval=200, max_retries=0),
                                   success_callback=lambda conf, data: batched.append(data),
                                   error_callback=lambda conf, data, exc: failed.append(exc))
            for i in range(n):
                api.write(bucket="telegraf", record=Point("sensor").tag("host", f"s{i % 4}")
                          .field("temp", i / 4).time(T0 + i * 10**6, WritePrecision.NS))
            api.close()  # flushes what is left

    await asyncio.to_thread(batching)
    assert not failed, failed
    assert len(batched) == 5  # 4 batches of 120 and the 20 left
    got = await stored(runtime)
    for k in range(4):
        assert got[f"s{k}/sensor.temp"] == [(T0 + i * 10**6, i / 4) for i in range(k, n, 4)]
    assert runtime.health()["sources"]["http"]["dead_letters"]["total"] == 0


async def test_v2_refuses_a_wrong_token_and_a_partial_write_as_influxdb_does(vigie):
    runtime, base = vigie

    def wrong_token() -> ApiException:
        with InfluxDBClient(url=base, token="not-the-token", org="plant") as client:
            try:
                client.write_api(write_options=SYNCHRONOUS).write(bucket="b", record="m,host=x v=1")
            except ApiException as exc:
                return exc
        raise AssertionError("a wrong token was accepted")

    exc = await asyncio.to_thread(wrong_token)
    assert exc.status == 401
    assert json.loads(exc.body) == {"code": "unauthorized", "message": "unauthorized access",
                                    "error": "unauthorized access"}
    # A bad line among good ones: the good ones kept, 400 names the bad one (InfluxDB's "partial write").
    status, doc = await asyncio.to_thread(
        post, base + "/api/v2/write?org=plant&bucket=b&precision=s",
        f"m,host=x v=1 {T0 // 10**9}\nnot line protocol\n".encode(), {"Authorization": f"Token {TOKEN}"})
    assert status == 400 and doc["code"] == "invalid" and doc["accepted"] == 1
    assert doc["message"].startswith("partial write: http /api/v2/write line 2: ")
    status, doc = await asyncio.to_thread(post, base + "/api/v2/write?org=plant", b"m,host=x v=1",
                                          {"Authorization": f"Token {TOKEN}"})
    assert (status, doc["message"]) == (400, "bucket is required")
    assert (await stored(runtime)) == {"x/m.v": [(T0, 1.0)]}


async def test_v1_write_gzip_credentials_and_limits(vigie, caplog):
    """/write as InfluxDB 1.x clients use it: gzip bodies, the token as password (basic auth or p), 401/400/413."""
    runtime, base = vigie
    lines = "".join(f"weather,host=ws-{i % 3},site=north temp={i / 2},hum={40 + i}i {T0 // 10**6 + i}\n"
                    for i in range(300)).encode()
    gz = {"Content-Encoding": "gzip"}
    basic = "Basic " + base64.b64encode(f"telegraf:{TOKEN}".encode()).decode()
    token = {"Authorization": f"Token {TOKEN}"}

    def calls() -> list:
        return [
            post(f"{base}/write?db=telegraf&precision=ms", gzip.compress(lines), {**gz, "Authorization": basic}),
            post(f"{base}/write?db=telegraf&u=telegraf&p={TOKEN}", f"up,host=ws-9 v=1 {T0}".encode()),
            post(f"{base}/write?db=telegraf", f"up,host=ws-9 v=2 {T0 + 1}".encode(), token),
            post(f"{base}/write?db=telegraf&u=telegraf&p=wrong", b"up,host=ws-9 v=3"),
            post(f"{base}/write?db=telegraf", b"up,host=ws-9 v=3"),
            post(f"{base}/write?precision=ms", b"up,host=ws-9 v=3", {"Authorization": f"Token {TOKEN}"}),
            post(f"{base}/write?db=t", gzip.compress(b"x" * (MAX_BODY + 1)), {**gz, "Authorization": f"Token {TOKEN}"}),
            post(f"{base}/write?db=t", b"not gzip", {**gz, "Authorization": f"Token {TOKEN}"}),
            post(f"{base}/write?db=t", b"x" * (MAX_BODY + 1), {"Authorization": f"Token {TOKEN}"}),
            post(f"{base}/write?db=t&u=x&p={TOKEN}&precision=s", b"not line protocol"),
        ]

    answers = await asyncio.to_thread(calls)
    assert answers[:3] == [(204, None)] * 3
    assert answers[3:6] == [(401, {"error": "authorization failed"}), (401, {"error": "authorization failed"}),
                            (400, {"error": "database is required"})]
    assert answers[6] == (413, {"error": f"gzip body over the limit of {MAX_BODY} bytes once inflated"})
    assert answers[7][0] == 400 and answers[7][1]["error"].startswith("the body is not gzip")
    assert answers[8] == (413, {"error": f"body of {MAX_BODY + 1} bytes is over the limit of {MAX_BODY} bytes"})
    assert answers[9][0] == 400 and answers[9][1]["error"].startswith("partial write: http /write line 1: ")
    # The failure is in the access log, the token given as p is not.
    logged = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert any("/write?db=t&u=x&p=***&precision=s" in line for line in logged), logged
    assert TOKEN not in caplog.text
    got = await stored(runtime)
    for k in range(3):
        assert got[f"ws-{k}/weather.temp"] == [((T0 // 10**6 + i) * 10**6, i / 2) for i in range(k, 300, 3)]
        assert got[f"ws-{k}/weather.hum"] == [((T0 // 10**6 + i) * 10**6, 40.0 + i) for i in range(k, 300, 3)]
    assert got["ws-9/up.v"] == [(T0, 1.0), (T0 + 1, 2.0)]
    assert {s.key: s.tags for s in await runtime.store.series()}["ws-0/weather.temp"] == {"site": "north"}


async def test_the_readme_influxdb_client_snippet_works_as_printed(vigie, monkeypatch):
    """The README's Python example, run as printed (only the server's port differs)."""
    runtime, base = vigie
    readme = README.read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "InfluxDBClient" in block)
    assert 'url="http://localhost:5006"' in snippet
    monkeypatch.setenv("VIGIE_INGEST_TOKEN", TOKEN)
    before = time.time_ns()
    await asyncio.to_thread(exec, snippet.replace("http://localhost:5006", base), {})
    got = await stored(runtime)
    assert sorted(got) == ["b-1/boiler.pressure", "b-1/boiler.temp"]
    (t, temp), = got["b-1/boiler.temp"]
    assert temp == 81.5 and got["b-1/boiler.pressure"] == [(t, 2.1)] and before <= t <= time.time_ns()


async def test_a_gzip_body_of_several_members_is_read_to_its_end(vigie):
    """Concatenated gzip members are one stream (RFC 1952): every member's lines are stored, none dropped."""
    runtime, base = vigie
    body = gzip.compress(f"multi,host=gz-1 v=1 {T0}\n".encode()) + gzip.compress(f"multi,host=gz-1 v=2 {T0 + 1}\n"
                                                                                 .encode())
    answer = await asyncio.to_thread(post, f"{base}/write?db=t", body,
                                     {"Content-Encoding": "gzip", "Authorization": f"Token {TOKEN}"})
    assert answer == (204, None)
    assert (await stored(runtime))["gz-1/multi.v"] == [(T0, 1.0), (T0 + 1, 2.0)]
