"""Mail through apprise reuses its TLS contexts, and verification still means verification.

A real aiosmtpd server with STARTTLS and a self-signed certificate on
loopback. Before :mod:`app.notify.tls_reuse`, every mail loaded the system's
certificate store (about 50 ms, most of an alarm's time to its mail).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.notify.channels import DeliveryError, apprise_send, warm_up
from tests.servers import free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Box:
    def __init__(self) -> None:
        self.mails: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    box, port = Box(), free_port()
    plain_box, plain_port = Box(), free_port()
    starttls = Controller(box, hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True)
    plain = Controller(plain_box, hostname="127.0.0.1", port=plain_port)
    starttls.start()
    plain.start()
    warm_up([])  # what every delivery worker does when it starts
    yield box, port, plain_box, plain_port
    starttls.stop()
    plain.stop()


def url(port: int, mode: str, verify: str = "yes") -> str:
    return f"mailto://127.0.0.1:{port}?mode={mode}&verify={verify}&from=vigie@example.org&to=ops@example.org"


@pytest.fixture
def ca_loads(monkeypatch) -> list[int]:
    """Count loads of the system's certificate store (what ``create_default_context`` costs)."""
    calls: list[int] = []
    real = ssl.SSLContext.load_default_certs

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", counting)
    return calls


def test_plain_mail_never_loads_the_certificate_store(smtp, ca_loads):
    _box, _port, plain_box, plain_port = smtp
    before = len(plain_box.mails)
    for i in range(3):
        apprise_send([url(plain_port, "insecure")], f"plain {i}", "body")
    assert len(plain_box.mails) - before == 3
    assert ca_loads == []


def test_starttls_mail_loads_it_once_and_verification_holds(smtp, ca_loads):
    box, port, _plain_box, _plain_port = smtp
    before = len(box.mails)
    for i in range(3):  # the self-signed server is accepted only because verification is off
        apprise_send([url(port, "starttls", verify="no")], f"tls {i}", "body")
    assert len(box.mails) - before == 3
    assert len(ca_loads) <= 1
    # A verifying send after the unverified ones: the reused context must not be the one told not to verify.
    with pytest.raises(DeliveryError):
        apprise_send([url(port, "starttls", verify="yes")], "verified", "body")
    assert len(box.mails) - before == 3
