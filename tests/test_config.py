"""Config loading: the shipped config validates; every problem names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, VigieConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid():
    loaded = load_config(ROOT / "config", env={})
    assert loaded.config.store.engine == "embedded"
    assert loaded.config.mqtt[0].subscriptions[0].topic == "site/{site}/device/{device}/telemetry"
    assert len(loaded.config.opcua[0].nodes) == 7


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_problems_name_file_line_and_key(tmp_path):
    write(tmp_path, "a.yaml", "store:\n  engine: influx\n  token_env: MISSING_TOKEN\n"
                              "mqtt:\n  - host: h\n    prot: 5\n    subscriptions:\n      - topic: a/{b\n")
    write(tmp_path, "b.yaml", "opcua:\n  - url: opc.tcp://x\n    nodes:\n      - {device: d}\nsevrer: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "a.yaml:3: store.token_env: environment variable MISSING_TOKEN is not set" in text
    assert "a.yaml:6: mqtt[0].prot: unknown key (did you mean 'port'?)" in text
    assert "a.yaml:8: mqtt[0].subscriptions[0].topic:" in text
    assert "b.yaml:4: opcua[0].nodes[0]: give exactly one of node_id or browse_path" in text
    assert "b.yaml:4: opcua[0].nodes[0].metric: missing (required)" in text
    assert "b.yaml:5: sevrer: unknown section (did you mean 'server'?)" in text


def test_settings_that_only_work_together_are_checked_before_serve(tmp_path):
    """What check-config passes, serve can start: keys that need one another, and files that must exist."""
    write(tmp_path, "a.yaml",
          "store: {engine: influx, api: v2, username_env: U}\n"
          "mqtt:\n  - tls: {ca_file: /nonexistent/ca.pem, cert_file: c.pem}\n"
          "opcua:\n  - url: opc.tcp://x\n    security_policy: Basic256Sha256\n"
          "  - url: opc.tcp://y\n    certificate: /nonexistent/cert.der\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={"U": "u"})
    text = str(err.value)
    assert "a.yaml:1: store.org: required with api: v2" in text
    assert "a.yaml:1: store.token_env: required with api: v2" in text
    assert "a.yaml:1: store.password_env: give both username_env and password_env, or neither" in text
    assert "a.yaml:3: mqtt[0].tls.ca_file: file not found: /nonexistent/ca.pem" in text
    assert "a.yaml:3: mqtt[0].tls: a client certificate needs both cert_file and key_file" in text
    assert "opcua[0].certificate: required with security_policy Basic256Sha256" in text
    assert "opcua[0].private_key: required with security_policy Basic256Sha256" in text
    assert "opcua[1].security_policy: certificate / private_key given but no security_policy" in text
    assert "opcua[1].certificate: file not found: /nonexistent/cert.der" in text


def test_an_unknown_time_zone_is_named(tmp_path):
    write(tmp_path, "a.yaml", "server: {timezone: Europe/Pariss}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert "a.yaml:1: server.timezone: unknown time zone 'Europe/Pariss'" in str(err.value)


def test_wrong_type_and_duplicate_section(tmp_path):
    write(tmp_path, "a.yaml", "server:\n  port: eighty\n")
    write(tmp_path, "b.yaml", "server:\n  port: 80\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "a.yaml:2: server.port: expected an integer, got a string 'eighty'" in text
    assert "b.yaml:1: server: section already defined in" in text


def test_yaml_syntax_error_is_located(tmp_path):
    write(tmp_path, "a.yaml", "server:\n  port: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert "a.yaml:" in str(err.value) and "(syntax)" in str(err.value)


def test_check_config_command_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(ROOT / "config")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    shipped = len(list((ROOT / "layouts").glob("*.yaml")))
    assert f"{shipped} layout(s) in {ROOT / 'layouts'}" in ok.stdout
    # A copy of config/ elsewhere finds no layouts beside its new parent: said, with where it looked.
    copy = tmp_path / "mine" / "config"
    copy.mkdir(parents=True)
    for f in (ROOT / "config").glob("*.yaml"):
        (copy / f.name).write_text(f.read_text())
    moved = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(copy)], capture_output=True, text=True)
    assert moved.returncode == 0, moved.stderr
    assert f"warning: no layouts in {tmp_path / 'mine' / 'layouts'}" in moved.stdout
    assert "server.layouts_dir" in moved.stdout
    write(tmp_path, "a.yaml", "store:\n  engnie: embedded\n")
    bad = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "a.yaml:2: store.engnie: unknown key (did you mean 'engine'?)" in bad.stderr


def test_opcua_queue_and_timeout_reach_the_source(tmp_path):
    from app.runtime import Runtime

    write(tmp_path, "vigie.yaml", "store: {engine: embedded, data_dir: data}\n"
          "opcua:\n  - {name: plc, url: 'opc.tcp://127.0.0.1:4840/', queue_size: 200, timeout_s: 9,\n"
          "     reconnect_max_delay_s: 30, nodes: [{node_id: 'ns=2;i=2', device: p, metric: m}]}\n")
    source = Runtime(load_config(tmp_path, env={}), base_dir=tmp_path).sources[0]
    assert (source.queue_size, source.timeout_s, source._backoff.cap) == (200, 9, 30)
    write(tmp_path, "vigie.yaml", "opcua:\n  - {name: plc, url: 'opc.tcp://h:4840/', queue_size: 0}\n")
    with pytest.raises(ConfigError, match=r"opcua\[0\]\.queue_size|queue_size"):
        load_config(tmp_path, env={})


async def test_the_docker_image_default_config_serves_healthy(tmp_path):
    """With nothing mounted the image must be healthy: no broker or PLC it cannot reach."""
    from app.runtime import Runtime

    loaded = load_config(ROOT / "docker" / "config", env={})
    assert loaded.config.mqtt == [] and loaded.config.opcua == [] and loaded.config.store.engine == "embedded"
    runtime = Runtime(loaded, base_dir=tmp_path)
    await runtime.start()
    try:
        assert runtime.health()["status"] == "ok"
    finally:
        await runtime.stop()


def test_every_source_kind_is_a_config_section_built_by_its_own_spec(tmp_path):
    """One registry: a kind declared beside its source is a config section, checked and built from there."""
    from app.ingest.source_spec import SourceSpec, source_kinds

    kinds = source_kinds()
    assert {"mqtt", "opcua"} <= set(kinds)
    assert all(issubclass(k, SourceSpec) and section in VigieConfig.keys() for section, k in kinds.items())
    (tmp_path / "sources.yaml").write_text(
        "mqtt:\n  - name: plant\n    subscriptions: [{topic: 'p/{device}/{metric}', decoder: number}]\n"
        "opcua:\n  - name: plc\n    url: opc.tcp://127.0.0.1:4840\n    nodes: [{node_id: 'ns=2;i=5'}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert [(p.where, p.message) for p in err.value.problems] == [
        ("opcua[0].nodes[0].device", "missing (required)"), ("opcua[0].nodes[0].metric", "missing (required)")]


def test_single_sign_on_config_says_what_is_wrong(tmp_path):
    (tmp_path / "vigie.yaml").write_text(
        "server:\n  oidc:\n    issuer: http://sso.example.org/realms/city\n"
        "    role_map: {operators: operater}\n    scopes: [profile]\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    found = {(p.where, p.message) for p in err.value.problems}
    assert found == {
        ("server.oidc.client_id", "missing (required)"),
        ("server.oidc.issuer", "must be an https:// URL (plain http only on the loopback, for tests)"),
        ("server.oidc.scopes", "must include openid"),
        ("server.oidc.role_map.operators", "unknown role 'operater' (one of viewer, operator, analyst, admin)")}
