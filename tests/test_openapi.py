"""The served OpenAPI document against the running server: schemathesis, and every endpoint's refusals.

One `vigie serve` of its own (schemathesis saves layouts, rules, users and
tokens with made-up values, so no other test shares it). Schemathesis
generates requests from /api/v1/openapi.json, sends them with an admin's
token, and checks that no answer is a 5xx and that every status, content
type and body is one the document declares. Then each documented operation
is called with no token, a wrong one, an expired one and one whose scope is
too narrow: 401, 401, 401, 403.
"""

from __future__ import annotations

import http.client
import json

import hypothesis.strategies
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.browser import VigieServer
from tests.servers import wait_until

TOKEN = "openapi-ingest-token"
LAYOUT = "title: API\nwidgets:\n- {type: value, id: dam-1-level, x: 0, y: 0, w: 3, h: 2, series: oa-1/level}\n"
RULES = "alarms:\n  rules:\n    - {name: oa high, series: oa-*/level, h: 50, severity: high}\n"
EXAMPLES = 25  # per operation: the whole run stays well under a minute
INGEST = ("/api/v1/readings", "/api/v1/write", "/write", "/api/v2/write")  # the gateway token, or an ingest one


@pytest.fixture(scope="module")
def vigie(tmp_path_factory, mosquitto):
    server = VigieServer(tmp_path_factory.mktemp("openapi"), mosquitto.port, anonymous_read=False,
                         layouts={"api": LAYOUT, "flood-dams": LAYOUT}, extra_config=RULES,
                         env={"VIGIE_INGEST_TOKEN": TOKEN})
    server.start()
    yield server
    server.stop()


def call(vigie: VigieServer, method: str, path: str, headers: dict | None = None,
         body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", vigie.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_the_document_describes_the_api_and_has_a_reference_page(vigie):
    status, raw = call(vigie, "GET", "/api/v1/openapi.json")
    assert status == 200
    doc = json.loads(raw)
    assert doc["openapi"].startswith("3.")
    for path in (*INGEST, "/api/v1/devices", "/api/v1/latest", "/api/v1/envelope",
                 "/api/v1/layouts/{name}", "/api/v1/alarms", "/api/v1/alarms/acknowledge", "/api/v1/alarms/journal",
                 "/api/v1/tokens", "/api/v1/users", "/api/v1/embeds"):
        assert path in doc["paths"], path
    # The rule kinds are in the document because the rule classes are: one definition per concept.
    kinds = {s["properties"]["type"]["enum"][0]
             for s in doc["paths"]["/api/v1/alarms/rules/{name}"]["put"]["requestBody"]["content"][
                 "application/json"]["schema"]["oneOf"]}
    assert {"threshold", "rate_of_change", "no_data", "time_to_threshold", "composite"} <= kinds
    shelve = doc["paths"]["/api/v1/alarms/shelve"]["post"]
    assert shelve["x-vigie-action"] == "alarms:ack" and "operator" in shelve["description"]
    duration = shelve["requestBody"]["content"]["application/json"]["schema"]["properties"]["duration_s"]
    assert (duration["minimum"], duration["maximum"]) == (60, 604800)
    status, page = call(vigie, "GET", "/api/v1/docs")
    assert status == 200 and b"/api/v1/alarms/acknowledge" in page and b"<script" not in page


def fuzz(operation, base: str, headers: dict, checks: list):
    """Return a Hypothesis test that sends ``operation``'s generated requests and checks each answer."""

    strategy = operation.as_strategy()
    examples = operation.get_strategies_from_examples()
    if examples:  # the document's own examples (a real layout, a real alarm): past the validation, into the work
        strategy = strategy | hypothesis.strategies.one_of(examples)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:
        case.call_and_validate(base_url=base, headers=headers, checks=checks, timeout=30)

    return run


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(vigie):
    schema = schemathesis.openapi.from_url(f"{vigie.base}/api/v1/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        ingest = operation.path in INGEST
        headers = {"Authorization": f"Bearer {TOKEN if ingest else vigie.tokens['admin']}"}

        try:
            fuzz(operation, vigie.base, headers, checks)()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
        tested += 1
    assert tested >= 30
    assert not failures, "\n\n".join(failures)
    assert call(vigie, "GET", "/health")[0] in (200, 503)  # still up


def test_every_operation_refuses_a_missing_wrong_expired_or_narrow_token(vigie):
    doc = json.loads(call(vigie, "GET", "/api/v1/openapi.json")[1])
    status, made = call(vigie, "POST", "/api/v1/tokens", {**vigie.headers("admin"), "Content-Type":
                                                          "application/json"},
                        json.dumps({"label": "brief", "scopes": ["read"], "days": 1 / 86400}).encode())
    expiring = json.loads(made)["token"]
    status, made = call(vigie, "POST", "/api/v1/tokens", {**vigie.headers("admin"), "Content-Type":
                                                          "application/json"},
                        json.dumps({"label": "metrics only", "scopes": ["metrics"]}).encode())
    narrow = json.loads(made)["token"]
    wait_until(lambda: call(vigie, "GET", "/api/v1/me", {"Authorization": f"Bearer {expiring}"})[0] == 401,
               timeout=10, interval=0.2, what="the one-second token expired")
    checked = 0
    for path, item in doc["paths"].items():
        concrete = path.replace("{name}", "api").replace("{id}", "x").replace("{device}", "oa-1")
        for method, op in item.items():
            if op["x-vigie-action"] is None:
                continue  # a gateway's own token (its test: tests/test_notify_end_to_end.py)
            body = b"{}" if method in ("post", "put", "patch") else None
            for headers, expected in (({}, 401), ({"Authorization": "Bearer vgt_wrong_wrong"}, 401),
                                      ({"Authorization": f"Bearer {expiring}"}, 401),
                                      ({"Authorization": f"Bearer {narrow}"}, 403)):
                if path in INGEST and expected == 403:
                    expected = 401  # ingest takes the shared gateway token or an ingest-scoped one
                status, answer = call(vigie, method.upper(), concrete, headers, body)
                assert status == expected, (method, path, headers, status, answer[:200])
                assert "error" in json.loads(answer), (method, path, answer[:200])
            checked += 1
    assert checked >= 30
