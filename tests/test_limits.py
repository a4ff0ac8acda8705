"""Limits before work, against one real `vigie serve`: what a client sends is checked before it costs.

Raw requests (headers without their body, chunked bodies, bodies of other
origins) go through http.client or sockets, since a normal client would not
send them.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from app.web.limits import json_depth_problem, load_json, load_user_yaml
from tests.browser import VigieServer
from tests.servers import wait_until

TOKEN = "limits-token"
LIMIT = 1_000_000
LAYOUT = "title: Limits\nwidgets:\n- {type: markdown, id: note, x: 0, y: 0, w: 4, h: 2, text: hello}\n"
ALIAS_BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
title: *g
"""
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100


@pytest.fixture(scope="module")
def vigie(tmp_path_factory, mosquitto):
    tmp = tmp_path_factory.mktemp("vigie-limits")
    server = VigieServer(
        tmp, mosquitto.port, layouts={"known": LAYOUT},
        server_options={"max_body_bytes": 64_000},
        extra_config=("http: {enabled: true, token_env: VIGIE_LIMITS_TOKEN, "
                      f"max_body_bytes: {LIMIT}, max_image_bytes: 64000}}\n"),
        env={"VIGIE_LIMITS_TOKEN": TOKEN})
    server.start()
    yield server
    server.stop()


def connect(vigie: VigieServer, source: str = "127.0.0.1", timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", vigie.port, timeout=timeout, source_address=(source, 0))


def request(vigie: VigieServer, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            source: str = "127.0.0.1") -> tuple[int, bytes]:
    headers = dict(headers or {})
    if method == "PUT":  # layout saves: an analyst's token, so that the limits, not the login, answer
        headers.setdefault("Authorization", vigie.headers("analyst")["Authorization"])
    conn = connect(vigie, source)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def headers_only(vigie: VigieServer, path: str, length: int, token: str = TOKEN) -> tuple[int, dict, float]:
    """Send a POST's headers announcing ``length`` bytes, none of them, and read the reply."""
    conn = connect(vigie)
    try:
        started = time.monotonic()
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        r = conn.getresponse()  # times out (5 s) if the server waits for the body
        return r.status, json.loads(r.read()), time.monotonic() - started
    finally:
        conn.close()


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_content_length_over_the_limit_is_refused_before_the_body(vigie):
    for path in ("/api/v1/readings", "/api/v1/write", "/api/v1/cameras/cam-1"):
        status, doc, elapsed = headers_only(vigie, path, 100_000_000)
        assert status == 413, (path, doc)
        assert "over the limit" in doc["error"] and elapsed < 2
    status, doc, _ = headers_only(vigie, "/api/v1/layouts/big", 10_000_000, token=vigie.tokens["admin"])
    assert status == 413 and "64000" in doc["error"]


def test_the_token_is_checked_before_the_body(vigie):
    status, doc, elapsed = headers_only(vigie, "/api/v1/readings", 1000, token="wrong")
    assert status == 401 and "token" in doc["error"] and elapsed < 2


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(vigie):
    sock = socket.create_connection(("127.0.0.1", vigie.port), timeout=5)
    try:
        sock.sendall((f"POST /api/v1/readings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        piece = b"[" + b" " * 65_000
        sent, reply = 0, b""
        sock.setblocking(False)
        while sent < 8 * LIMIT and not reply:  # never the last chunk: only a cut-off answers
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                reply = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.001)
        sock.settimeout(5)
        while b"\r\n\r\n" in reply and not reply.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"over the limit" in reply and sent <= 3 * LIMIT


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_json_is_a_400_with_the_reason(vigie, depth):
    status, body = request(vigie, "POST", "/api/v1/readings", b"[" * depth + b"]" * depth,
                           {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert status == 400, body[:300]
    assert "nested deeper than" in json.loads(body)["errors"][0]["reason"]


def test_an_alias_bomb_layout_is_refused_quickly_and_briefly(vigie):
    started = time.monotonic()
    status, body = request(vigie, "PUT", "/api/v1/layouts/bomb", ALIAS_BOMB.encode())
    assert status == 400 and time.monotonic() - started < 1.0
    assert len(body) < 4096 and "aliases" in json.loads(body)["error"]
    assert not (vigie.layouts / "bomb.yaml").exists()


def test_a_layout_with_many_long_problems_gets_a_short_reply(vigie):
    body = "title: t\nwidgets:\n" + "".join(f"- {{type: nope{i}, id: {'w' * 60}{i}, x: 0}}\n" for i in range(500))
    status, reply = request(vigie, "PUT", "/api/v1/layouts/many", body.encode())
    assert status == 400 and len(reply) < 8192, len(reply)
    assert json.loads(reply)["count"] >= 500


@pytest.mark.parametrize("name", ["x%0A", "x%0D", "a%2Fb", "..", "X"])
def test_a_bad_layout_name_is_refused_and_creates_no_file(vigie, name):
    before = sorted(p.name for p in vigie.layouts.iterdir())
    status, body = request(vigie, "PUT", f"/api/v1/layouts/{name}", LAYOUT.encode())
    assert status in (400, 404), body
    assert sorted(p.name for p in vigie.layouts.iterdir()) == before
    assert request(vigie, "GET", f"/api/v1/layouts/{name}")[0] in (400, 404)


def test_a_camera_name_with_a_trailing_newline_is_refused(vigie):
    status, body = request(vigie, "POST", "/api/v1/cameras/cam%0A", JPEG,
                           {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"})
    assert status == 400, body
    cameras = vigie.tmp / "cameras"
    assert not cameras.exists() or not [p for p in cameras.iterdir() if "\n" in p.name]


@pytest.mark.parametrize("series", ["d1", "d1/m%0A", "d1/m/x", "%2Fm"])
def test_a_series_argument_follows_the_name_rule(vigie, series):
    status, body = request(vigie, "GET", f"/api/v1/envelope?series={series}")
    assert status == 400 and ("device" in json.loads(body)["error"] or "metric" in json.loads(body)["error"])


def test_unknown_embeds_and_layouts_are_404_without_a_path(vigie):
    for path in ("/embed/nope", "/embed/nope/widget", "/embed/x%0A", "/api/v1/layouts/nope",
                 "/api/v1/fragments/nope/w", "/embed-app?layout=nope", "/embed-app?layout=x%0A", "/embed-app"):
        status, body = request(vigie, "GET", path)
        assert status in (400, 404), (path, status)
        assert str(vigie.tmp) not in body.decode() and "/layouts" not in body.decode(), (path, body)
    assert request(vigie, "GET", "/embed/known")[0] == 302
    assert request(vigie, "GET", "/embed-app?layout=known")[0] == 200


def test_health_detail_is_for_local_clients_only(vigie):
    status, body = request(vigie, "GET", "/health", source="127.0.0.2")  # loopback, but not 127.0.0.1
    assert status in (200, 503) and set(json.loads(body)) == {"status"}
    status, body = request(vigie, "GET", "/health", headers={"X-Forwarded-For": "203.0.113.9"})
    assert set(json.loads(body)) == {"status"}  # through a reverse proxy on this machine
    detail = json.loads(request(vigie, "GET", "/health")[1])
    assert "sources" in detail and detail["sources"]["m"]["state"] == "connected"
    # /health answered 503 while the broker connection came up: a warning, never an error.
    assert not [line for line in vigie.log.read_text().splitlines() if "ERROR" in line and "/health" in line]


def test_a_burst_of_oversized_requests_leaves_memory_and_latency_flat(vigie):
    rss_before = vm_rss_kb(vigie.proc.pid)

    def flood() -> None:
        try:
            with socket.create_connection(("127.0.0.1", vigie.port), timeout=5) as sock:
                sock.sendall((f"POST /api/v1/readings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                              f"Content-Length: {60_000_000}\r\n\r\n").encode())
                block = b" " * (1 << 20)
                for _ in range(60):
                    sock.sendall(block)
        except OSError:
            pass  # refused and closed: what the server should do

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    started = time.monotonic()
    wait_until(lambda: request(vigie, "GET", "/health")[0] in (200, 503), timeout=5, what="health")
    assert time.monotonic() - started < 1.0
    assert vm_rss_kb(vigie.proc.pid) - rss_before < 50_000


def test_the_json_depth_check_counts_brackets_outside_strings_only():
    assert json_depth_problem(b"[" * 32 + b"]" * 32) is None
    assert "deeper than 32" in json_depth_problem(b"[" * 33 + b"]" * 33)
    assert json_depth_problem(b'[{"device": "a[[[[{{{", "tags": {"k": "\\"[[[[[[["}}]', max_depth=3) is None
    assert json_depth_problem(b"[[1]", max_depth=2) is None  # unbalanced, not deep: the parser says why
    assert load_json(b"[" * 5000)[1] is not None


def test_user_yaml_refuses_aliases_and_deep_nesting_but_not_anchors():
    assert load_user_yaml("a: &x 1\nb: 2\n") == {"a": 1, "b": 2}
    with pytest.raises(yaml.YAMLError, match="aliases"):
        load_user_yaml("a: &x [1]\nb: *x\n")
    with pytest.raises(yaml.YAMLError, match="nested deeper"):
        load_user_yaml("[" * 100 + "]" * 100)
