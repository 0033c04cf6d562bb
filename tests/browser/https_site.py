"""The site on HTTPS for the TLS-intercepting cell of the matrix: test certificate authorities, the
stack (router, relay, echo target) serving TLS with their certificates, and a TLS front for the
echo target, which has none.

Two CAs, as on a corporate network: the *site's* CA signs the stack's own certificates (router,
relay, echo front), standing in for a public CA the proxy and the relays trust; the *proxy's* CA is
the one squid mints its forged leaf certificates with, the one the company installs in its
browsers. The browser is told to trust only the proxy's CA (Chromium: its key's SPKI hash), so a
page that loads at all went through the interception.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import hashlib
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psbrowser import BrowserStack

from polysocket_cli.processes import Stack
from tests.support.ports import free_port


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files (``cert`` holds the chain: leaf, then its CA)."""

    cert: Path
    key: Path


class TestCA:
    """A CA made for one run: its certificate and key written to ``workdir/{name}.pem`` / ``.key``."""

    __test__ = False  # not a pytest class

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.workdir = workdir
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name(f"polysocket test {name} CA")).issuer_name(
                _name(f"polysocket test {name} CA"))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_pem = workdir / f"{name}.pem"
        self.key_pem = workdir / f"{name}.key"
        self.cert_pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.key_pem.write_bytes(_key_pem(self._key))
        self.key_pem.chmod(0o644)  # squid reads it as the user ``proxy``

    @property
    def spki_hash(self) -> str:
        """base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's ``--ignore-certificate-errors-spki-list`` takes."""
        spki = self.certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def issue(self, stem: str, names: list[str]) -> Issued:
        """A server certificate for ``names`` (DNS names, or IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256()))
        issued = Issued(self.workdir / f"{stem}.pem", self.workdir / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                + self.certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        return issued


class TlsFront:
    """TLS on 127.0.0.1:port in front of a plain TCP server (the echo target, which has no TLS):
    each connection is decrypted and piped both ways, byte for byte, so the target's commands
    (close, flood, abort) behave as without it; when one side ends, so does the other. Its own
    event loop in a thread (an SSL object is not for two threads at once)."""

    def __init__(self, issued: Issued, backend_port: int) -> None:
        self.backend_port = backend_port
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(issued.cert, issued.key)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        started = concurrent.futures.Future[asyncio.Server]()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        self._server = started.result(10)

    def _run(self, started: concurrent.futures.Future[asyncio.Server]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._ctx, ssl_handshake_timeout=10))
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(server)
        self._loop.run_forever()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()

        ends = [asyncio.ensure_future(pipe(reader, b_writer)), asyncio.ensure_future(pipe(b_reader, writer))]
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        for task in ends:
            task.cancel()
        for w in (b_writer, writer):
            w.transport.abort()


@dataclass(frozen=True)
class TlsSite:
    """The server side on HTTPS: a router, a relay and an echo target (behind a ``TlsFront``), their
    certificates from ``ca``; the relay trusts ``ca`` for its ``wss://`` upstreams."""

    ca: TestCA
    stack: BrowserStack


@contextlib.contextmanager
def tls_site(workdir: Path) -> Iterator[TlsSite]:
    ca = TestCA(workdir, "site")
    relay_names = ["localhost", "node1.localhost", "*.node1.localhost"]  # a socket's relay: {label}.node1.localhost
    cert = ca.issue("site", [*relay_names, "127.0.0.1"])
    serve_tls = {"POLYSOCKET_SSL_CERTFILE": str(cert.cert), "POLYSOCKET_SSL_KEYFILE": str(cert.key)}
    verify = ssl.create_default_context(cafile=str(ca.cert_pem))
    s = Stack(log_dir=workdir / "stack")
    s.log_dir.mkdir()
    front: TlsFront | None = None
    try:
        s.start_valkey()
        s.start_relay("node1", extra=["--buffer-bytes", "65536"], env={**serve_tls, "SSL_CERT_FILE": str(ca.cert_pem)},
                      tls=verify)
        router = s.start_router(env=serve_tls)
        token = s.create_token()
        front = TlsFront(cert, s.start_echo().port)
        yield TlsSite(ca, BrowserStack(router=f"https://localhost:{router.port}",
                                       targets={"websockets": f"wss://localhost:{front.port}/"}, token=token))
    finally:
        if front is not None:
            front.close()
        s.stop()
