"""pebble, Let's Encrypt's ACME test server, as a process on loopback for the tests.

Debian ships it (``apt-get install -y pebble``). It serves its ACME directory and its management
interface over HTTPS with a certificate made here by trustme (``ca_bundle`` verifies them), checks
DNS-01 challenges against the DNS server given (``-dnsserver``), never sleeps before a validation
(``PEBBLE_VA_NOSLEEP``), never rejects a valid nonce (``PEBBLE_WFE_NONCEREJECT=0``), and issues
certificates valid for ``validity_s`` (90 days, as Let's Encrypt's). Its root and intermediate are
made anew at every start: fetch them with :meth:`root_pem`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import trustme

from polysocket_cli.processes import free_port

INSTALL_HINT = ("pebble (Let's Encrypt's ACME test server) is not installed: "
                "`apt-get update && apt-get install -y pebble` (a Debian package)")


class PebbleMissing(RuntimeError):
    pass


class Pebble:
    def __init__(self, dns_server: str, *, validity_s: int = 90 * 86400) -> None:
        binary = shutil.which("pebble")
        if binary is None:
            raise PebbleMissing(INSTALL_HINT)
        self.binary = binary
        self.dns_server = dns_server
        self.validity_s = validity_s
        self.root = Path(tempfile.mkdtemp(prefix="polysocket-pebble-"))
        self.log_path = self.root / "pebble.log"
        self.ca_bundle = str(self.root / "ca.pem")
        self.port = self.mgmt_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._opener: urllib.request.OpenerDirector | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _get(self, url: str) -> bytes:
        assert self._opener is not None
        with self._opener.open(url, timeout=5) as r:
            body: bytes = r.read()
            return body

    def start(self) -> Pebble:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(self.ca_bundle)
        served = ca.issue_cert("127.0.0.1", "localhost")
        served.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        served.private_key_pem.write_to_path(str(self.root / "key.pem"))
        self.port, self.mgmt_port = free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(self.root / "cert.pem"), "privateKey": str(self.root / "key.pem"),
            # ports pebble would connect to for HTTP-01 / TLS-ALPN-01 (never used: DNS-01 only)
            "httpPort": free_port(), "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            "certificateValidityPeriod": self.validity_s,
        }}
        (self.root / "config.json").write_text(json.dumps(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-config", str(self.root / "config.json"), "-dnsserver", self.dns_server,
                 "-strict=false"], env=env, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                   urllib.request.HTTPSHandler(context=ctx))
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pebble exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                json.loads(self._get(self.directory_url))
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pebble not ready after 20 s:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def root_pem(self) -> str:
        """The root that issued every certificate of this run (to verify the relays against)."""
        return self._get(f"https://127.0.0.1:{self.mgmt_port}/roots/0").decode()

    def intermediate_pem(self) -> str:
        return self._get(f"https://127.0.0.1:{self.mgmt_port}/intermediates/0").decode()

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def orders(self) -> int:
        """Orders created since pebble started (it logs the count after each new order)."""
        counts = [int(n) for n in re.findall(r"There are now (\d+) orders in the db", self.log_text())]
        return max(counts, default=0)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)
