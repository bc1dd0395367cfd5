"""Shared helpers: a sandbox in another process, and measuring a client in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import urllib.request
from typing import Any

from cascade_async.sandbox import sandbox_process

__all__ = ["HERE", "machine", "peak_rss_mb", "reset_server", "run_child", "sandbox_process", "server_stats"]

HERE = os.path.dirname(os.path.abspath(__file__))


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/sandbox/stats", timeout=5) as resp:
        stats: dict[str, Any] = json.load(resp)
        return stats


def reset_server(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/sandbox/reset", method="POST"), timeout=5).read()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(script: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    """Run a measuring script in a fresh interpreter; it prints one JSON object last."""
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
