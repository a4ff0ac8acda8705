"""MQTT over TLS with a password, configured as a user would: YAML, secrets from the environment.

A real Mosquitto with a TLS listener (certificates made here by a throwaway
CA) and a password file; Vigie connects through ``load_config`` and the
runtime, so the config keys, the secret lookup and the TLS context are all
on the path.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.config import load_config
from app.runtime import Runtime
from tests.helpers import publish, until
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd not installed")

USER, PASSWORD = "vigie", "s3cret-from-env"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for 127.0.0.1; return (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Vigie test CA")).issuer_name(_name("Vigie test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class SecureMosquitto(Mosquitto):
    """Mosquitto with one TLS listener that wants a user name and password."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, port=free_port())
        self.ca, cert, key = make_certificates(directory)
        passwords = directory / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True,
                       capture_output=True)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.ca}\ncertfile {cert}\nkeyfile {key}\n"
            f"allow_anonymous false\npassword_file {passwords}\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nuser root\n"
        )


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    server = SecureMosquitto(tmp_path_factory.mktemp("mosquitto-tls"))
    server.start()
    yield server
    server.stop()


def vigie_config(tmp_path: Path, broker: SecureMosquitto, *, ca: str | None, password: str, transport: str):
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    tls = f"    tls: {{ca_file: {ca}}}\n" if ca else "    tls: {}\n"
    (d / "vigie.yaml").write_text(
        "store: {engine: embedded, data_dir: data, spool_dir: spool}\n"
        f"mqtt:\n  - name: secure\n    host: 127.0.0.1\n    port: {broker.port}\n"
        f"    client_id: tls-test-{time.monotonic_ns()}\n    transport: {transport}\n{tls}"
        "    username_env: MQTT_USER\n    password_env: MQTT_PASSWORD\n"
        "    subscriptions:\n      - topic: tls/{device}/telemetry\n        fields: {level: {unit: m}}\n"
    )
    return load_config(d, env={"MQTT_USER": USER, "MQTT_PASSWORD": password})


def client_tls(broker: SecureMosquitto) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(broker.ca))


async def test_readings_arrive_over_tls_with_credentials_from_the_environment(tmp_path, secure_broker,
                                                                              mqtt_transport):
    loaded = vigie_config(tmp_path, secure_broker, ca=str(secure_broker.ca), password=PASSWORD,
                          transport=mqtt_transport)
    runtime = Runtime(loaded, base_dir=tmp_path)
    await runtime.start()
    try:
        await until(lambda: runtime.sources[0].state == "connected", what="connected over TLS")
        now_ms = int(time.time() * 1000)
        await publish(secure_broker.host, secure_broker.port,
                      [("tls/gate-1/telemetry", json.dumps({"ts": now_ms, "level": 4.25}))],
                      tls_context=client_tls(secure_broker), username=USER, password=PASSWORD)
        await until(lambda: runtime.live.get("gate-1/level") is not None, what="reading over TLS")
        latest = runtime.live.get("gate-1/level").latest()
        assert (latest.value, latest.time_ns // 10**6, latest.unit) == (4.25, now_ms, "m")
        assert PASSWORD not in json.dumps(runtime.health())  # secrets never reach health or logs
    finally:
        await runtime.stop()


@pytest.mark.parametrize(("ca", "password", "reason"), [
    (True, "wrong-password", "not authori"),  # the broker refuses the credentials
    (False, PASSWORD, "certificate verify failed"),  # our throwaway CA is not in the system's trust
])
async def test_a_refused_connection_says_why_and_keeps_retrying(tmp_path, secure_broker, ca, password, reason,
                                                                mqtt_transport):
    loaded = vigie_config(tmp_path, secure_broker, ca=str(secure_broker.ca) if ca else None, password=password,
                          transport=mqtt_transport)
    runtime = Runtime(loaded, base_dir=tmp_path)
    await runtime.start()
    try:
        source = runtime.sources[0]
        await until(lambda: source.health()["last_error"], what="the connection error reported")
        health = source.health()
        assert health["state"] != "connected"
        assert reason in health["last_error"].lower(), health["last_error"]
        assert password not in json.dumps(runtime.health())
    finally:
        await runtime.stop()
