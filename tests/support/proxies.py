"""Real forward proxies on loopback, as the networks polysocket is for have them: Debian's squid and
privoxy, each started in the foreground under its own PID with a named policy, and stopped by that PID.

A proxy must resolve the names it is asked for; squid has no resolver for ``*.localhost`` and privoxy
would ask the system's. So each forwards every plain HTTP request to a ``LoopbackParent`` the test
runs: a tiny parent proxy that either passes the request on to 127.0.0.1 at the asked port (so relay
names like ``{uniq}.node1.localhost:PORT`` work and nothing leaves the machine) or answers it itself
(``answer=``: a stand-in origin, for counting what a proxy lets through). ``CONNECT`` (how a browser
sends ``ws://`` through a proxy) is allowed only to the policy's ports, 443 by default, as corporate
proxies do; the parent refuses every ``CONNECT`` anyway.

    parent = LoopbackParent()                      # forwards to 127.0.0.1
    proxy = start_squid(tmp_path, ProxyPolicy(parent_port=parent.port))
    ... chromium --proxy-server=127.0.0.1:{proxy.port} --proxy-bypass-list=<-loopback> ...
    proxy.stop(); parent.close()

A TLS-intercepting squid (``start_intercepting_squid``, ``ssl_bump``) cannot use a parent: it
decrypts each tunnel and sends the requests inside to their origin itself. It resolves the names
with a ``LoopbackDNS`` (``*.localhost`` only) instead.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from polysocket_cli.processes import wait_port
from tests.support.loopback import LoopbackServer, read_head
from tests.support.ports import free_port

SQUID = "/usr/sbin/squid"
PRIVOXY = "/usr/sbin/privoxy"
NGINX = "/usr/sbin/nginx"
PRIVOXY_CONF = Path("/etc/privoxy")  # Debian's default action and filter files


@dataclass(frozen=True)
class ProxyPolicy:
    """What a proxy lets through. ``connect_ports``: ports a ``CONNECT`` tunnel may reach (a ``ws://``
    upgrade to any other port is refused with 403). ``parent_port``: the ``LoopbackParent`` every plain
    request is forwarded to (required: the proxy cannot resolve relay names itself)."""

    parent_port: int
    connect_ports: tuple[int, ...] = (443,)
    default_actions: bool = True  # privoxy: Debian's default.action / default.filter (ad blocking)
    refuse_hosts: str = ""  # squid: a regex of host names refused with 403 (a filter's block), e.g. relays


@dataclass
class RunningProxy:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM to this PID (squid -N and privoxy --no-daemon stay one process), then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.workdir.name.startswith("ps-squid-"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def _start(kind: str, cmd: list[str], port: int, workdir: Path) -> RunningProxy:
    out = (workdir / f"{kind}.out.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    proxy = RunningProxy(kind, port, proc, workdir)
    try:
        wait_port(port, timeout=20, proc=proc)
    except BaseException:
        proxy.stop()
        raise RuntimeError(f"{kind} did not start:\n{proxy.log()}") from None
    return proxy


def _squid_workdir(workdir: Path) -> Path:
    """Started as root, squid writes its logs as the user ``proxy``: then a fresh directory in the
    system's temp directory that user can reach (a test's tmp_path is private to root); ``stop()``
    removes it."""
    if os.geteuid() == 0:
        workdir = Path(tempfile.mkdtemp(prefix="ps-squid-"))
        workdir.chmod(0o777)
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _squid_logs(workdir: Path) -> str:
    return f"""\
pid_filename none
access_log stdio:{workdir}/squid_access.log
cache_log {workdir}/squid_cache.log
cache_store_log none
coredump_dir {workdir}
cache deny all
cache_mem 8 MB
shutdown_lifetime 1 seconds
"""


def start_squid(workdir: Path, policy: ProxyPolicy) -> RunningProxy:
    """squid as a typical corporate forward proxy: no cache, CONNECT only to ``policy.connect_ports``,
    destinations other than loopback names refused without a DNS lookup."""
    workdir = _squid_workdir(workdir)
    port = free_port()
    ports = " ".join(str(p) for p in policy.connect_ports)
    refused = ""
    if policy.refuse_hosts:
        refused = f"acl refused dstdom_regex -n {policy.refuse_hosts}\nhttp_access deny refused\n"
    conf = workdir / "squid.conf"
    conf.write_text(f"""\
http_port 127.0.0.1:{port}
{_squid_logs(workdir)}acl connect_ports port {ports}
acl CONNECT method CONNECT
http_access deny CONNECT !connect_ports
acl lo_dst dstdomain -n 127.0.0.1 .localhost
http_access deny !lo_dst
{refused}http_access allow localhost
http_access deny all
cache_peer 127.0.0.1 parent {policy.parent_port} 0 no-query no-digest default no-netdb-exchange
never_direct allow all
dns_nameservers 127.0.0.1
""")
    return _start("squid", [SQUID, "-N", "-f", str(conf)], port, workdir)


@dataclass(frozen=True)
class Interception:
    """What a TLS-intercepting squid (``ssl_bump``) needs: the CA it mints each site's certificate
    with (``ca_cert``/``ca_key``: the one the company's browsers trust), the CA it trusts for the
    origins' own certificates (``origin_cafile``), and the ``LoopbackDNS`` that resolves the
    origins' names (a bumped request goes to its origin itself, not to a parent proxy)."""

    ca_cert: Path
    ca_key: Path
    origin_cafile: Path
    nameserver: str  # an IPv4 address, port 53: squid's dns_nameservers takes nothing else


SECURITY_FILE_CERTGEN = "/usr/lib/squid/security_file_certgen"  # Debian's squid-openssl


def start_intercepting_squid(workdir: Path, interception: Interception) -> RunningProxy:
    """squid with ``ssl_bump``, as corporate networks run it: every ``CONNECT`` tunnel is decrypted
    (squid answers the TLS handshake with a certificate it mints for the site, mimicking the
    origin's) and the requests inside are handled as plain ones, so a WebSocket upgrade is stripped
    while HTTPS requests pass; destinations other than loopback names are refused. Since every
    tunnel is opened, its port is not restricted. Needs Debian's ``squid-openssl``."""
    workdir = _squid_workdir(workdir)
    port = free_port()
    db = workdir / "ssl_db"
    subprocess.run([SECURITY_FILE_CERTGEN, "-c", "-s", str(db), "-M", "4MB"], check=True, capture_output=True)
    if os.geteuid() == 0:  # squid's helpers run as the user ``proxy``
        for path in (db, *db.rglob("*")):
            shutil.chown(path, "proxy", "proxy")
    conf = workdir / "squid.conf"
    conf.write_text(f"""\
http_port 127.0.0.1:{port} ssl-bump tls-cert={interception.ca_cert} tls-key={interception.ca_key} \
generate-host-certificates=on dynamic_cert_mem_cache_size=4MB
{_squid_logs(workdir)}sslcrtd_program {SECURITY_FILE_CERTGEN} -s {db} -M 4MB
sslcrtd_children 4 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={interception.origin_cafile}
acl lo_dst dstdomain -n 127.0.0.1 .localhost
http_access deny !lo_dst
http_access allow localhost
http_access deny all
dns_nameservers {interception.nameserver}
""")
    return _start("squid", [SQUID, "-N", "-f", str(conf)], port, workdir)


def start_privoxy(workdir: Path, policy: ProxyPolicy) -> RunningProxy:
    """privoxy with Debian's action and filter files (its ad blocking, as installed), CONNECT only to
    ``policy.connect_ports``, every request forwarded to the parent (privoxy resolves nothing)."""
    if policy.refuse_hosts:
        raise NotImplementedError("refuse_hosts: squid only (privoxy blocks by its action files)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    own = workdir / "policy.action"
    ports = ",".join(str(p) for p in policy.connect_ports)
    own.write_text("{+limit-connect{" + ports + "}}\n/\n")
    actions = ["match-all.action", "default.action", "user.action"] if policy.default_actions else []
    filters = ["default.filter"] if policy.default_actions else []
    conf = workdir / "privoxy.conf"
    conf.write_text("\n".join([
        f"listen-address 127.0.0.1:{port}",
        f"confdir {PRIVOXY_CONF}",
        f"logdir {workdir}",
        "logfile privoxy.log",
        *(f"actionsfile {a}" for a in actions),
        f"actionsfile {own}",
        *(f"filterfile {f}" for f in filters),
        f"forward / 127.0.0.1:{policy.parent_port}",
        "toggle 1",
        "enable-remote-toggle 0",
        "enable-edit-actions 0",
        "keep-alive-timeout 5",
        "debug 1",
        "",
    ]))
    return _start("privoxy", [PRIVOXY, "--no-daemon", str(conf)], port, workdir)


def start_nginx(workdir: Path) -> RunningProxy:
    """nginx as a site's front door, configured as most are: ``proxy_buffering on`` and nothing for
    WebSocket (the upstream request is HTTP/1.0, ``Upgrade`` and ``Connection`` are dropped). The
    browser reaches it as its proxy, so every loopback origin (router, ``*.localhost`` relays, echo
    targets) is behind it without DNS: a request for ``host:port`` goes on to 127.0.0.1:port with its
    ``Host`` kept, a ``CONNECT`` (a browser's ``ws://`` through a proxy) is refused, and any name
    other than 127.0.0.1, ``localhost`` or ``*.localhost`` gets 403. One process
    (``master_process off``), stopped by its PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    temp = workdir / "temp"
    temp.mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx_error.log info;
events {{ worker_connections 512; }}
http {{
  access_log {workdir}/nginx_access.log;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  map $http_host $loopback_port {{
    "~^(127\\.0\\.0\\.1|localhost|[a-z0-9.-]+\\.localhost):(?<p>[0-9]+)$" $p;
    default "";
  }}
  server {{
    listen 127.0.0.1:{port};
    proxy_buffering on;
    proxy_read_timeout 120s;
    location / {{
      if ($loopback_port = "") {{ return 403; }}
      proxy_set_header Host $http_host;
      proxy_pass http://127.0.0.1:$loopback_port;
    }}
  }}
}}
""")
    return _start("nginx", [NGINX, "-e", str(workdir / "nginx_start.log"), "-p", str(workdir), "-c", str(conf)],
                  port, workdir)


Answer = Callable[[bytes], tuple[int, bytes]]  # request line -> (status, body)


class LoopbackParent(LoopbackServer):
    """The parent proxy a test's proxy forwards to. With ``answer``, it answers each request itself
    (keep-alive) and counts them; without, it sends each request on to 127.0.0.1 at the port in its
    absolute URL (one request per connection) and pipes the answer back as it arrives (streams pass)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while True:
                message = read_head(f)
                if not message or not message[0]:
                    return
                head, headers = message
                with self._lock:
                    self.requests.append(head[0])
                length = int(headers.get(b"content-length", b"0") or b"0")
                body = f.read(length) if length else b""
                method = head[0].partition(b" ")[0]
                if self.answer is not None:
                    status, payload = self.answer(head[0])
                    conn.sendall(b"HTTP/1.1 %d X\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                                 % (status, len(payload), payload))
                    continue
                if method == b"CONNECT":
                    conn.sendall(b"HTTP/1.1 501 No tunnels here\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    return
                self._forward(conn, f, head, body)
                return

    def _forward(self, conn: socket.socket, f: BinaryIO, head: list[bytes], body: bytes) -> None:
        method, url, version = head[0].split(b" ", 2)
        if not url.startswith(b"http://"):
            conn.sendall(b"HTTP/1.1 400 Absolute URL expected\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        hostport, _, path = url[len(b"http://"):].partition(b"/")
        host, _, port = hostport.rpartition(b":") if b":" in hostport else (hostport, b"", b"80")
        if not (host in (b"localhost", b"127.0.0.1") or host.endswith(b".localhost")) or not port.isdigit():
            # a browser's own background request: it goes nowhere
            conn.sendall(b"HTTP/1.1 403 Loopback only\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        lines = [b"%s /%s %s" % (method, path, version)]
        lines += [h for h in head[1:] if h.split(b":", 1)[0].strip().lower() not in (b"connection", b"proxy-connection",
                                                                                   b"keep-alive")]
        lines.append(b"connection: close")
        try:
            upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Unreachable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        with upstream:
            upstream.settimeout(None)
            upstream.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            while True:
                try:
                    data = upstream.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return


class LoopbackDNS:
    """A DNS server on ``address``:53 (UDP and TCP) that answers ``localhost`` and ``*.localhost``
    with 127.0.0.1 (no AAAA) and refuses every other name: the resolver a TLS-intercepting squid
    reaches the per-socket relay names with, and nothing beyond loopback. Port 53 because squid's
    ``dns_nameservers`` takes addresses only; an address of 127/8 of its own (drawn at random) so
    it meets no system resolver."""

    def __init__(self) -> None:
        from dnslib.server import DNSServer

        last: OSError | None = None
        for _ in range(20):
            self.address = f"127.{random.randrange(64, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"
            servers = []
            try:
                for tcp in (False, True):
                    servers.append(DNSServer(_LoopbackNames(), address=self.address, port=53, tcp=tcp,
                                             logger=_QuietDNSLog()))
            except OSError as exc:
                for started in servers:
                    started.server.server_close()
                last = exc
                continue
            self._servers = servers
            for server in servers:
                server.start_thread()
            return
        raise RuntimeError(f"no loopback address free for a DNS server on port 53: {last}")

    def close(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()


class _QuietDNSLog:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _LoopbackNames:
    """dnslib's resolver interface: ``resolve(request, handler) -> reply``."""

    def resolve(self, request: Any, handler: Any) -> Any:
        from dnslib import QTYPE, RCODE, RR, A

        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        if name != "localhost" and not name.endswith(".localhost"):
            reply.header.rcode = RCODE.REFUSED
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=60))
        return reply
