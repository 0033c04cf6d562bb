"""The command line as a user runs it: `polysocket dev` end to end with curl, flags and env vars."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from polysocket_cli.processes import REPO_ROOT, free_port
from tests.support.ports import free_port_block
from tests.support.processes import Output, curl

pytestmark = pytest.mark.stack


def test_dev_stack_with_curl_then_ctrl_c() -> None:
    base = free_port_block(4)  # router; relays and echo take the next three ports
    proc = subprocess.Popen([sys.executable, "-m", "polysocket_cli", "dev", "--port", str(base),
                             "--dev-token", "pst_fixed-dev-token-for-tests"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output = Output(proc)
    try:
        out = output.wait_for("curl '", timeout=90)
        assert "pst_fixed-dev-token-for-tests" in out
        connect_url = re.search(r"curl '([^']+)'", out)
        assert connect_url is not None
        ok = json.loads(curl(connect_url.group(1)))
        assert ok["ok"] is True, ok
        relay = f"http://{ok['fqdn']}"
        assert json.loads(curl(f"{relay}/send?socket={ok['socket']}&seq=0&d=hi%20from%20curl")) == {"ok": True}
        polled = json.loads(curl(f"{relay}/poll?socket={ok['socket']}&ttl=5000"))
        assert polled["messages"] == [{"seq": 0, "type": "text", "data": "hi from curl"}]
        demo = curl(f"http://localhost:{base}/client/demo.html")
        assert "polysocket" in demo.lower()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(60)
    text = output.finish()
    assert code == 0, text
    assert "stopping" in text
    # every child is gone: nothing listens any more
    for port in (base, base + 1, base + 2, base + 3):
        with pytest.raises(subprocess.CalledProcessError):
            curl(f"http://127.0.0.1:{port}/healthz")


async def test_key_prefix_reaches_every_process() -> None:
    """A non-default key prefix set once (Stack passes it as --key-prefix to the router, the relays
    and `polysocket token`): connects still find a relay and the token."""
    import httpx

    from polysocket_cli.processes import Stack
    from tests.support.wire_client import connect

    stack = Stack(key_prefix="kp:")
    try:
        stack.start_valkey()
        stack.start_relay("node1")
        router = stack.start_router()
        token = stack.create_token()
        echo = stack.start_echo()
        async with httpx.AsyncClient(timeout=30) as http:
            conn = await connect(http, f"http://127.0.0.1:{router.port}", f"ws://127.0.0.1:{echo.port}/",
                                 token=token)
            assert conn.socket
    finally:
        stack.stop()


@pytest.mark.parametrize(("argv", "message"), [
    (["relay", "--node-id", "bad id!"], "--node-id"),
    (["relay", "--fqdn", "http://x/"], "--fqdn"),
    (["relay", "--capacity", "0"], "positive"),
])
def test_bad_flags_are_explained(argv: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "polysocket_cli", *argv, "--redis-url", "redis://127.0.0.1:1/0"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "POLYSOCKET_PORT": str(free_port())})
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "polysocket_cli", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=30)
    for command in ("router", "relay", "dev", "token", "echo"):
        assert command in out.stdout
