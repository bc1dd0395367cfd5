"""The standalone sandbox in a child process, for benchmarks and crash tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

__all__ = ["sandbox_process"]


@contextlib.contextmanager
def sandbox_process(*options: str, start_timeout: float = 20.0) -> Iterator[str]:
    """``cascade-async sandbox`` in a child process on a free loopback port; yields its URL.

    For benchmarks and crash tests that need the server out of the client's process.
    ``options`` are the command's flags (``"--latency", "0.05"``); needs the ``cli`` extra.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "cascade_async.cli", "sandbox", "--port", str(port), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the sandbox process did not start: {' '.join(cmd)}") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
