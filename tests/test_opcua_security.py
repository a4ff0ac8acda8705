"""OPC-UA with Basic256Sha256 / SignAndEncrypt against a real asyncua server that trusts one client certificate.

Plants rarely run OPC-UA without security: the source's certificate,
private key and policy must really be used (a server that accepts only
that policy and only a trusted client certificate proves it), and a
refused certificate must show in health rather than fail silently.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.config import load_config
from app.runtime import Runtime
from tests.helpers import until
from tests.servers import free_port


async def make_cert(directory: Path, name: str, uri: str, use, key_dir: Path | None = None) -> tuple[Path, Path]:
    """A self-signed certificate (DER) and its key (PEM, in ``key_dir`` if given) for an application URI."""
    cert, key = directory / f"{name}.der", (key_dir or directory) / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, uri, "localhost", [use], {"commonName": name})
    return cert, key


@pytest.fixture
async def secure_server(tmp_path) -> AsyncIterator[tuple[Server, str, ua.NodeId, Path, Path]]:
    """A server offering only Basic256Sha256/SignAndEncrypt and trusting one client certificate."""
    certs = tmp_path / "certs"
    trusted = certs / "trusted"
    trusted.mkdir(parents=True)
    server_cert, server_key = await make_cert(certs, "server", "urn:vigie:test:server",
                                              ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = await make_cert(trusted, "client", "urn:vigie:test:client",
                                              ExtendedKeyUsageOID.CLIENT_AUTH, key_dir=certs)
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/secure/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(str(server_cert))
    await server.load_private_key(str(server_key))
    store = TrustStore([trusted], [])
    await store.load()
    # Trusted, unexpired, the application URI in the certificate, the right key usages, a client's.
    options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    server.set_certificate_validator(CertificateValidator(options, trust_store=store).validate)
    server.set_server_name("secure test server")
    await server.set_application_uri("urn:vigie:test:server")
    idx = await server.register_namespace("urn:vigie:test:secure")
    obj = await server.nodes.objects.add_object(ua.NodeId("Tank", idx), ua.QualifiedName("Tank", idx))
    var = await obj.add_variable(ua.NodeId("Tank.Level", idx), ua.QualifiedName("Level", idx), 1.0)
    await server.start()
    try:
        yield server, endpoint, var.nodeid, client_cert, client_key
    finally:
        await server.stop()


def config(tmp_path: Path, endpoint: str, cert: Path, key: Path, node_id: str, name: str = "sec") -> Path:
    d = tmp_path / f"config-{name}"
    d.mkdir()
    (d / "vigie.yaml").write_text(textwrap.dedent(f"""\
        store: {{engine: embedded, data_dir: data-{name}, spool_dir: spool-{name}, flush_interval_s: 0.05}}
        opcua:
          - name: {name}
            url: {endpoint}
            security_policy: Basic256Sha256
            security_mode: SignAndEncrypt
            certificate: {cert}
            private_key: {key}
            sampling_interval_ms: 50
            publishing_interval_ms: 100
            nodes:
              - {{node_id: "{node_id}", device: tank-1, metric: level, unit: m}}
        """))
    return d


@pytest.mark.timeout(60)
async def test_signed_and_encrypted_session_delivers_values_to_the_store(tmp_path, secure_server):
    """The configured certificate and key must be what the server sees: values flow only through that session."""
    server, endpoint, node_id, cert, key = secure_server
    runtime = Runtime(load_config(config(tmp_path, endpoint, cert, key, node_id.to_string()), env={}),
                      base_dir=tmp_path)
    await runtime.start()
    try:
        source = runtime.sources[0]
        await until(lambda: source.state == "connected", timeout=15, what="secure session")
        stamp = datetime.now(UTC).replace(microsecond=250000) - timedelta(minutes=1)
        await server.write_attribute_value(node_id, ua.DataValue(ua.Variant(4.75, ua.VariantType.Double),
                                                                 SourceTimestamp=stamp, ServerTimestamp=stamp))
        t_ns = int(stamp.timestamp()) * 10**9 + 250_000_000

        async def stored():
            await runtime.writer.flush()
            return await runtime.store.raw("tank-1/level", t_ns, t_ns + 1)

        assert await until(stored, what="the value in the store") == [(t_ns, 4.75, "good")]
        assert source.health()["subscribed_nodes"] == 1
    finally:
        await runtime.stop()


@pytest.mark.timeout(60)
async def test_an_untrusted_client_certificate_is_refused_and_health_says_so(tmp_path, secure_server):
    """A certificate the server does not trust must leave the source disconnected with a reason, never 'connected'."""
    _server, endpoint, node_id, _cert, _key = secure_server
    other = tmp_path / "untrusted"
    other.mkdir()
    cert, key = await make_cert(other, "intruder", "urn:vigie:test:intruder", ExtendedKeyUsageOID.CLIENT_AUTH)
    runtime = Runtime(load_config(config(tmp_path, endpoint, cert, key, node_id.to_string(), "bad"), env={}),
                      base_dir=tmp_path)
    await runtime.start()
    try:
        source = runtime.sources[0]
        await until(lambda: source.last_error, timeout=15, what="a refused session")
        assert source.state == "disconnected" and source.connects == 0
        assert "BadCertificate" in source.last_error or "certificate" in source.last_error.lower(), source.last_error
        health = runtime.health()
        assert health["status"] == "degraded" and health["sources"]["bad"]["subscribed_nodes"] == 0
        assert not runtime._source_tasks[0].done()  # it keeps retrying; it did not crash
    finally:
        await runtime.stop()
