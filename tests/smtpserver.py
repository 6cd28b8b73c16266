"""A real SMTP server (aiosmtpd) on 127.0.0.1 for sink tests.

``smtp_server`` is a factory fixture: ``smtp_server(security="starttls", auth=True)``
starts a server in a thread and returns an ``SMTPServer`` holding its port, a
client TLS context trusting its self-signed certificate, and every message it
accepted (envelope sender, recipients, raw bytes). Every server started is
stopped at teardown.

Modes: ``security`` "none" (plain), "starttls" (STARTTLS required) or "tls"
(implicit TLS); ``auth`` requires AUTH LOGIN/PLAIN as ``USER``/``PASSWORD``;
``rcpt_reply`` / ``data_reply`` (e.g. "451 4.3.0 try later", "550 5.1.1 no")
make the server refuse RCPT TO or DATA with that reply (``handler.rcpt_replies``, an
address -> reply dict, refuses only those recipients, the others taken); ``eightbitmime=False``
leaves 8BITMIME out of its EHLO reply. ``data_size_limit`` is aiosmtpd's: a message
larger than that many bytes as sent is refused (``552 Error: Too much mail data``,
or at MAIL FROM when its SIZE= says so); the server announces it as ``SIZE`` (RFC
1870) in its EHLO reply unless ``announce_size=False``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = "alerts@example.org"
PASSWORD = "s3cr3t-Pa55w0rd-never-logged"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class Collector:
    """aiosmtpd handler: records accepted messages, or answers with a scripted refusal."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    # one reply per recipient (e.g. {"full@example.org": "452 4.2.2 Mailbox full"}):
    # those recipients are refused, the others taken
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    eightbitmime: bool = True
    announce_size: bool = True
    messages: list[Received] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # this hook's duty, in aiosmtpd's new-style EHLO hook
        if not self.eightbitmime:
            responses = [r for r in responses if r[4:].upper() != "8BITMIME"]
        if not self.announce_size:
            responses = [r for r in responses if not r[4:].upper().startswith("SIZE")]
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.messages.append(
            Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))
        )
        return "250 Message accepted for delivery"


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@dataclass
class SMTPServer:
    host: str
    port: int
    handler: Collector
    client_context: ssl.SSLContext | None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


def free_port() -> int:
    """A port free right now on 127.0.0.1 (aiosmtpd's Controller cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: openssl if present, else ``cryptography``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        return cert, key
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("neither openssl nor cryptography is available to make a test certificate")
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture(scope="session")
def smtp_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _make_cert(tmp_path_factory.mktemp("smtp-cert"))


@pytest.fixture
def smtp_server(
    smtp_cert: tuple[Path, Path],
) -> Iterator[Callable[..., SMTPServer]]:
    controllers: list[Controller] = []
    cert, key = smtp_cert

    def start(
        security: str = "none",
        *,
        auth: bool = False,
        rcpt_reply: str | None = None,
        data_reply: str | None = None,
        eightbitmime: bool = True,
        data_size_limit: int | None = None,
        announce_size: bool = True,
    ) -> SMTPServer:
        handler = Collector(
            rcpt_reply=rcpt_reply,
            data_reply=data_reply,
            eightbitmime=eightbitmime,
            announce_size=announce_size,
        )
        kwargs: dict[str, Any] = {}
        if data_size_limit is not None:
            kwargs["data_size_limit"] = data_size_limit
        client_context: ssl.SSLContext | None = None
        if security in ("starttls", "tls"):
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_context.load_cert_chain(cert, key)
            client_context = ssl.create_default_context(cafile=str(cert))
            if security == "starttls":
                kwargs.update(tls_context=server_context, require_starttls=True)
            else:
                kwargs.update(ssl_context=server_context)
        elif security != "none":
            raise ValueError(f"unknown security {security!r}")
        if auth:
            # Implicit TLS is invisible to aiosmtpd's auth_require_tls check: relax it there.
            kwargs.update(
                authenticator=_authenticator,
                auth_required=True,
                auth_require_tls=security == "starttls",
            )
        controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=free_port(),
            server_hostname="smtp.test",
            ready_timeout=10,
            **kwargs,
        )
        controller.start()
        controllers.append(controller)
        return SMTPServer("127.0.0.1", controller.port, handler, client_context)

    yield start
    for controller in controllers:
        controller.stop()
