"""One account, many processes (issue #12): real client and CLI processes, one sandbox, one real Valkey/Redis.

Counted at the sandbox: every request's arrival time (``Sandbox.request_times``) and status.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from cascade_async import credential_key
from cascade_async.pytest_plugin import SandboxThread

from .redis_support import PASSWORD, RedisServer, require_server

CHILD = str(Path(__file__).with_name("many_child.py"))
SECRET = "sk-many-SECRET-777"


@pytest.fixture
def fresh(valkey: RedisServer) -> RedisServer:
    with redis.Redis.from_url(valkey.url) as r:
        r.flushall()
    return valkey


def env(redis_url: str | None, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("CASCADE_REDIS_URL", "LOCAL_LIMIT")}
    e["CASCADE_API_KEY"] = SECRET
    if redis_url is not None:
        e["CASCADE_REDIS_URL"] = redis_url
    e.update(extra)
    return e


def start_children(specs: list[tuple[str, int]], url: str, batch: int, environ: dict[str, str]) -> list[Any]:
    start = time.time() + 2.0  # every process imported and connected
    return [
        subprocess.Popen(
            [sys.executable, CHILD, mode, url, str(count), str(start), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            text=True,
        )
        for mode, count in specs
    ]


def outputs(children: list[Any]) -> list[dict[str, Any]]:
    out = []
    for c in children:
        stdout, stderr = c.communicate(timeout=120)
        assert c.returncode == 0, stderr
        assert PASSWORD not in stdout + stderr
        assert SECRET not in stdout + stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def busiest_second(times: list[float], skip: float) -> int:
    """The most requests in any one-second window starting at a request, after the first ``skip`` seconds."""
    after = sorted(t for t in times if t >= times[0] + skip)
    best, j = 0, 0
    for i, t in enumerate(after):
        while after[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def cli_children(tmp: Path, url: str, redis_url: str, n: int, count: int) -> list[Any]:
    """Two ways to share the limit from the CLI: ``--redis URL``, and ``$CASCADE_REDIS_URL``."""
    children = []
    for k in range(n):
        path = tmp / f"job{k}.jsonl"
        lines = (
            json.dumps(
                {
                    "id": f"cli{k}-{i}",
                    "fromName": "Shop",
                    "toPhone": "+380501234567",
                    "messageType": "transaction",
                    "text": "hi",
                }
            )
            for i in range(count)
        )
        path.write_text("\n".join(lines) + "\n")
        args = [sys.executable, "-m", "cascade_async.cli", "send", str(path), "--base-url", url, "--batch-size", "2"]
        args += ["--no-progress"] + (["--redis", redis_url] if k % 2 else [])
        environ = env(None) if k % 2 else env(redis_url)
        children.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, text=True))
    return children


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("shared", id="clients-sharing-redis"),
        pytest.param("cli", id="cli-jobs-sharing-redis"),
        pytest.param("local", id="todays-per-process-limit"),
    ],
)
def test_processes_on_one_account_share_the_server_limit(fresh: RedisServer, tmp_path: Path, mode: str) -> None:
    with SandboxThread(rate_limit=100, rate_burst=150, latency=0.02, api_keys={SECRET}) as sandbox:
        if mode == "cli":
            children = cli_children(tmp_path, sandbox.url, fresh.url, 3, 300)
            for c in children:
                stdout, stderr = c.communicate(timeout=120)
                assert c.returncode == 0, stdout + stderr
                assert PASSWORD not in stdout + stderr
                assert SECRET not in stdout + stderr
        else:
            extra = {"LOCAL_LIMIT": "1"} if mode == "local" else {}
            results = outputs(start_children([("bulk", 300)] * 3, sandbox.url, 2, env(fresh.url, **extra)))
            assert all(r["shared"] is (mode == "shared") for r in results)
            assert sum(r["failed"] for r in results) == 0  # even today's mode: 429s are back-pressure now
        stats = sandbox.stats()
        times = list(sandbox.request_times)
    assert stats.accepted_messages == 900
    assert stats.max_count == 1
    throttled = stats.statuses.get("429", 0)
    if mode == "local":
        # three processes, each at the whole account's rate: each keeps getting 429s (its own adaptive
        # limiter slows it down after a first round, which is all it can do alone)
        assert throttled > 10
        return
    assert throttled <= 2  # 0 expected; a scheduling hiccup on a busy machine may cost one
    # after the burst of 150, at the rate: 99 acquisitions a second, plus the arrival jitter of four processes
    # on a busy machine (per-process limiters show 160 and more here)
    assert busiest_second(times, skip=1.5) <= 105
    # and nothing about the account in Redis reveals its credential
    with redis.Redis.from_url(fresh.url) as r:
        keys = [k.decode() for k in r.keys("*")]
        assert credential_key(SECRET) in keys
        dump = repr([(k, r.dump(k)) for k in keys])
    assert SECRET not in dump
    assert SECRET not in repr(keys)
    assert PASSWORD not in dump


def test_interactive_sends_go_ahead_of_bulk_processes(fresh: RedisServer) -> None:
    with SandboxThread(rate_limit=100, rate_burst=150, latency=0.02, api_keys={SECRET}) as sandbox:
        children = start_children([("bulk", 600), ("bulk", 600), ("interactive", 30)], sandbox.url, 2, env(fresh.url))
        *bulk, interactive = outputs(children)
        stats = sandbox.stats()
    assert sum(r["failed"] for r in [*bulk, interactive]) == 0
    latencies = interactive["latencies"]
    assert len(latencies) == 30
    # bulk requests wait their turn at about 100 per second; an OTP only for the request itself
    assert statistics.median(latencies) < 0.1
    assert sorted(latencies)[-2] < 0.5
    assert stats.statuses.get("429", 0) <= 2


def test_a_429_in_one_process_pauses_every_process(fresh: RedisServer) -> None:
    with SandboxThread(latency=0.05, api_keys={SECRET}) as sandbox:
        sandbox.script(["429:1"])
        children = start_children([("bulk", 60), ("bulk", 60)], sandbox.url, 10, env(fresh.url))
        results = outputs(children)
        times = sorted(sandbox.request_times)
        stats = sandbox.stats()
    assert stats.statuses.get("429") == 1
    assert all(r["failed"] == 0 and r["max_attempts"] == 1 for r in results)  # the 429 was no attempt
    answered = times[0] + 0.05  # the first request got the 429
    # a request already on its way may still come; after it nobody sends until the second is over
    during = [t for t in times if answered + 0.1 < t < answered + 0.95]
    assert during == []


def test_redis_killed_mid_job_falls_back_then_recovers_and_no_message_fails() -> None:
    own = RedisServer(require_server())
    own.start()
    try:
        with SandboxThread(rate_limit=100, rate_burst=150, latency=0.02, api_keys={SECRET}) as sandbox:
            children = start_children([("bulk", 700), ("bulk", 700)], sandbox.url, 2, env(own.url))
            time.sleep(3.5)  # 2 s to start, then 1.5 s of shared sending
            own.kill()
            time.sleep(1.5)
            own.start()
            results = outputs(children)
            stats = sandbox.stats()
    finally:
        own.kill()
    assert all(r["failed"] == 0 for r in results)
    assert [r["events"] for r in results] == [["SharedLimitFallback", "SharedLimitRecovered"]] * 2, results
    assert stats.accepted_messages == 1400
    assert stats.max_count == 1
