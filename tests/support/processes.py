"""Watching a process a test started: its output collected on a thread, and curl as a user runs it."""

from __future__ import annotations

import subprocess
import threading
import time


def curl(url: str) -> str:
    """curl resolves *.localhost to loopback itself, as browsers do."""
    return subprocess.run(["curl", "-sS", "--max-time", "20", url], capture_output=True, text=True,
                          check=True, timeout=30).stdout


class Output:
    """Collects a process's output on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.text += line

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if needle in self.text:
                    return self.text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not printed within {timeout}s; output:\n{self.text}")

    def finish(self) -> str:
        self._thread.join(10)
        return self.text
