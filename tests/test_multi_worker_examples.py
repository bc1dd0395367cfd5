"""``examples/multi_worker``: a web app under several uvicorn workers next to a bulk CLI job, and a bulk job
split into taskiq tasks, each sharing one account through a real Valkey/Redis, against one sandbox."""

from __future__ import annotations

import ast
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cascade_async import credential_key
from cascade_async.pytest_plugin import SandboxThread

from .redis_support import PASSWORD, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-multi-worker-SECRET"

pytest.importorskip("uvicorn", reason="the examples extra: pip install -e '.[examples]'")
pytest.importorskip("taskiq_redis", reason="the examples extra: pip install -e '.[examples]'")


def environ(valkey: RedisServer, base_url: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(CASCADE_API_KEY=SECRET, CASCADE_REDIS_URL=valkey.url, CASCADE_BASE_URL=base_url)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    return e


def write_job(path: Path, n: int, prefix: str) -> Path:
    rows = (
        {
            "id": f"{prefix}{i}",
            "fromName": "Shop",
            "toPhone": "+380501234567",
            "messageType": "transaction",
            "text": "x",
        }
        for i in range(n)
    )
    path.write_text("".join(json.dumps({**r, "text": "x"}) + "\n" for r in rows))
    return path


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[Any]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return str(out)


def test_web_workers_and_a_bulk_cli_job_share_one_account(valkey: RedisServer, tmp_path: Path) -> None:
    job = write_job(tmp_path / "bulk.jsonl", 5000, "bulk")
    port = free_port()
    procs_key = credential_key(SECRET) + ":procs"
    with SandboxThread(rate_limit=100, rate_burst=150, latency=0.02, api_keys={SECRET}) as sandbox:
        env = environ(valkey, sandbox.url)
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "examples.multi_worker.app:app",
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for_port(port, web)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                for _ in range(4):  # every worker's client up and on the shared limit
                    assert http.post("/otp", json={"phone": "+380501234567"}).status_code == 200
                cli_env = {k: v for k, v in env.items() if k != "CASCADE_REDIS_URL"}  # --redis says it here
                cli = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cascade_async.cli",
                        "send",
                        str(job),
                        "--batch-size",
                        "10",
                        "--redis",
                        valkey.url,
                        "--no-progress",
                        "--base-url",
                        sandbox.url,
                    ],
                    env=cli_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                time.sleep(1.5)  # the bulk job saturates the account
                latencies: list[float] = []
                live = 0
                with redis.Redis.from_url(valkey.url) as r:
                    while cli.poll() is None and len(latencies) < 25:
                        began = time.perf_counter()
                        assert http.post("/otp", json={"phone": "+380501234567"}).status_code == 200
                        latencies.append(time.perf_counter() - began)
                        live = max(live, int(r.zcard(procs_key)))
                        time.sleep(0.1)
                cli_out, _ = cli.communicate(timeout=120)
        finally:
            web_out = stop(web)
        stats = sandbox.stats()
    assert cli.returncode == 0, cli_out
    assert len(latencies) >= 10, "the bulk job ended before the web app was measured under load"
    assert live >= 2  # web workers and the CLI seen on the one key (the rest between heartbeats)
    assert statistics.median(latencies) < 0.15  # the OTPs pass the saturating bulk job
    assert stats.accepted_messages == 5000 + 4 + len(latencies)
    assert stats.statuses.get("429", 0) <= 2
    for text in (cli_out, web_out):
        assert SECRET not in text
        assert PASSWORD not in text


def test_a_bulk_job_split_into_taskiq_tasks_shares_one_account(valkey: RedisServer, tmp_path: Path) -> None:
    job = write_job(tmp_path / "big.jsonl", 4000, "task")
    with SandboxThread(rate_limit=100, rate_burst=150, latency=0.02, api_keys={SECRET}) as sandbox:
        env = environ(valkey, sandbox.url)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskiq",
                "worker",
                "examples.multi_worker.tasks:broker",
                "--workers",
                "2",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def enqueue() -> dict[str, int]:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "examples.multi_worker.enqueue",
                        str(job),
                        "--parts",
                        "8",
                        "--workdir",
                        str(tmp_path / "parts"),
                    ],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                    check=True,
                )
                counts: dict[str, int] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
                return counts

            first = enqueue()
            again = enqueue()  # each part's journal: nothing is sent twice
        finally:
            worker_out = stop(worker)
        stats = sandbox.stats()
    assert first == {"accepted": 4000}
    assert again == {"skipped": 4000}
    outputs = sorted((tmp_path / "parts").glob("part-*.out.jsonl"))
    assert len(outputs) == 8  # one output per task
    rows = [json.loads(line) for p in outputs for line in p.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"task{i}" for i in range(4000))
    assert stats.accepted_messages == 4000
    assert stats.max_count == 1
    assert stats.statuses.get("429", 0) <= 2
    assert SECRET not in worker_out
    assert PASSWORD not in worker_out
