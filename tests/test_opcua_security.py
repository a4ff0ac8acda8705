"""OPC-UA with Basic256Sha256 / SignAndEncrypt against a real asyncua server that trusts one client certificate.

Plants rarely run OPC-UA without security: the source's certificate,
private key and policy must really be used (a server that accepts only
that policy and only a trusted client certificate proves it), and a
refused certificate must show in health rather than fail silently.

The first two tests share one server per module (building asyncua's
standard address space costs seconds per start), on the module's event
loop; the test that trusts a certificate made by ``vigie opcua-cert`` has its own.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.config import load_config
from app.runtime import Runtime
from tests.helpers import until
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent


async def make_cert(directory: Path, name: str, uri: str, use, key_dir: Path | None = None) -> tuple[Path, Path]:
    """A self-signed certificate (DER) and its key (PEM, in ``key_dir`` if given) for an application URI."""
    cert, key = directory / f"{name}.der", (key_dir or directory) / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, uri, "localhost", [use], {"commonName": name})
    return cert, key


on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The tests on the shared server run on the module's loop, where its tasks live."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_secure_server(tmp_path_factory) -> AsyncIterator[tuple[Server, str, ua.NodeId, Path, Path]]:
    """A server offering only Basic256Sha256/SignAndEncrypt and trusting one client certificate."""
    certs = tmp_path_factory.mktemp("secure") / "certs"
    trusted = certs / "trusted"
    trusted.mkdir(parents=True)
    client_cert, client_key = await make_cert(trusted, "client", "urn:vigie:test:client",
                                              ExtendedKeyUsageOID.CLIENT_AUTH, key_dir=certs)
    server, endpoint, node_id = await start_secure_server(certs, trusted)
    try:
        yield server, endpoint, node_id, client_cert, client_key
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def secure_server(shared_secure_server) -> tuple[Server, str, ua.NodeId, Path, Path]:
    """The module's secure server, its variable back at its start value (1.0)."""
    server, _endpoint, node_id, _cert, _key = shared_secure_server
    await server.write_attribute_value(node_id, ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
    return shared_secure_server


async def start_secure_server(certs: Path, trusted: Path) -> tuple[Server, str, ua.NodeId]:
    """Start a server offering only Basic256Sha256/SignAndEncrypt, trusting the certificates in ``trusted``."""
    server_cert, server_key = await make_cert(certs, "server", "urn:vigie:test:server",
                                              ExtendedKeyUsageOID.SERVER_AUTH)
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
    return server, endpoint, var.nodeid


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


@on_module_loop
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


@on_module_loop
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
        # Named as what it is: a refusal a person must fix, retried slowly.
        assert health["sources"]["bad"]["error_kind"] == "auth"
        assert source.last_error.startswith("authentication refused by the server: BadCertificateUntrusted")
        assert health["sources"]["bad"]["retry_delay_s"] >= 5
        assert not runtime._source_tasks[0].done()  # it keeps retrying; it did not crash
    finally:
        await runtime.stop()


@pytest.mark.timeout(90)
async def test_a_certificate_made_by_vigie_opcua_cert_opens_a_signed_and_encrypted_session(tmp_path):
    """``vigie opcua-cert`` (run as the operator would) makes a certificate a strict server accepts once trusted.

    The server checks the application URI the client presents against the
    certificate's, so the config gives none: Vigie takes the certificate's.
    """
    certs = tmp_path / "certs"
    trusted = certs / "trusted"
    trusted.mkdir(parents=True)
    mine = tmp_path / "vigie-pki"
    uri = "urn:vigie:test:made-by-cli"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "opcua-cert", "--out", str(mine), "--application-uri", uri,
        "--hostname", "vigie.test", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    cert, key = mine / "vigie-client.der", mine / "vigie-client-key.pem"
    assert f"application URI: {uri}" in out.decode() and f"certificate: {cert}" in out.decode()
    assert key.stat().st_mode & 0o777 == 0o600
    made = x509.load_der_x509_certificate(cert.read_bytes())
    san = made.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert san.get_values_for_type(x509.DNSName) == ["vigie.test"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in made.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    # Run again: the files exist, nothing is overwritten without --force.
    again = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "opcua-cert", "--out", str(mine), cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(again.communicate(), 60)
    assert again.returncode == 1 and b"--force" in err and cert.read_bytes() == made.public_bytes(Encoding.DER)

    shutil.copy(cert, trusted / cert.name)  # the operator trusts it on the server
    server, endpoint, node_id = await start_secure_server(certs, trusted)
    try:
        runtime = Runtime(load_config(config(tmp_path, endpoint, cert, key, node_id.to_string(), "cli"), env={}),
                          base_dir=tmp_path)
        await runtime.start()
        try:
            source = runtime.sources[0]
            await until(lambda: source.state == "connected", timeout=15, what="secure session")
            await server.write_attribute_value(node_id, ua.DataValue(ua.Variant(6.5, ua.VariantType.Double)))
            await until(lambda: runtime.live.get("tank-1/level") and runtime.live.get("tank-1/level").latest()
                        and runtime.live.get("tank-1/level").latest().value == 6.5, what="the value")
            assert source._application_uri == uri and source.health()["last_error"] is None
        finally:
            await runtime.stop()
    finally:
        await server.stop()
