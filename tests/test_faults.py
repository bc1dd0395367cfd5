"""Fault injection over real sockets: no message is lost, none is reported delivered that was not.

Each scenario sends a job through the client to the sandbox (a real HTTP server on loopback)
while the sandbox misbehaves, then checks every message against what the server recorded:

- lost: an input without exactly one result, a result ACCEPTED that the server never took, or
  a result reported as a certain failure (no ``outcome_unknown``) for a message the server took.
  Must be 0.
- duplicates: extra copies the server accepted (a retry after a lost answer delivers twice: the
  provider does not promise to de-duplicate ids).
- unknown: results whose ``outcome_unknown`` is set.

The table is printed at the end of the test run.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from cascade_async import CascadeClient, Result, RetryPolicy, Status
from cascade_async.sandbox import Sandbox

FAULT_TABLE: list[dict[str, Any]] = []
N = 400
QUICK_RETRY = RetryPolicy(initial_wait=0.02, max_wait=0.2, max_attempts=6, deadline=20)


def messages(n: int = N) -> list[dict[str, Any]]:
    return [
        {
            "id": f"f{i}",
            "fromName": "Shop",
            "toPhone": "+380501234567",
            "messageType": "transaction",
            "text": f"message {i}",
        }
        for i in range(n)
    ]


def audit(name: str, results: list[Result], counts: dict[str, int], n: int = N) -> dict[str, Any]:
    by_id: dict[str, list[Result]] = {}
    for r in results:
        by_id.setdefault(r.tracking_id, []).append(r)
    lost = sum(1 for i in range(n) if len(by_id.get(f"f{i}", [])) != 1)
    for tid, rs in by_id.items():
        r = rs[0]
        if r.status is Status.ACCEPTED and counts.get(tid, 0) == 0:
            lost += 1  # reported delivered, never taken
        if r.status is not Status.ACCEPTED and counts.get(tid, 0) > 0 and not r.outcome_unknown:
            lost += 1  # taken, but reported as a certain failure
    row = {
        "fault": name,
        "messages": n,
        "accepted": sum(r.status is Status.ACCEPTED for r in results),
        "failed": sum(r.status is Status.FAILED for r in results),
        "lost": lost,
        "duplicates at server": sum(c - 1 for c in counts.values() if c > 1),
        "unknown outcome": sum(r.outcome_unknown for r in results),
    }
    FAULT_TABLE.append(row)
    return row


async def run_job(sb: Sandbox, **client: Any) -> list[Result]:
    client.setdefault("retry", QUICK_RETRY)
    async with CascadeClient(
        api_key="k", base_url=sb.url, batch_size=25, max_in_flight=4, rate_limit=None, **client
    ) as c:
        return [r async for r in c.stream(messages())]


SCENARIOS: list[Any] = [
    pytest.param("reset mid-request", {"fault_rates": {"reset-early": 0.3}}, {}, id="reset-mid-request"),
    pytest.param("reset mid-response", {"fault_rates": {"truncated": 0.3}}, {}, id="reset-mid-response"),
    pytest.param("connection dropped after accepting", {"fault_rates": {"lost": 0.3}}, {}, id="lost-answer"),
    pytest.param(
        "connection dropped after accepting, retry_ambiguous=True",
        {"fault_rates": {"lost": 0.3}},
        {"retry": RetryPolicy(initial_wait=0.02, max_wait=0.2, max_attempts=6, retry_ambiguous=True)},
        id="lost-answer-at-least-once",
    ),
    pytest.param(
        "read timeout (no answer)",
        {"fault_rates": {"hang": 0.2}, "hang_seconds": 30},
        {"timeout": 0.3},
        id="read-timeout",
    ),
    pytest.param(
        "answer slower than the timeout",
        {"fault_rates": {"slow": 0.2}, "hang_seconds": 1.0},
        {"timeout": 0.3},
        id="slow-answer",
    ),
    pytest.param("burst of 500/502/503/504", {"faults": ["500"] * 4 + ["502", "503", "504"] * 3}, {}, id="5xx-burst"),
    pytest.param("429 storm with Retry-After", {"faults": ["429:0.05"] * 12}, {}, id="429-retry-after"),
    pytest.param("429 storm without Retry-After", {"faults": ["429"] * 12}, {}, id="429-bare"),
    pytest.param("200 with malformed JSON", {"fault_rates": {"malformed": 0.2}}, {}, id="malformed-200"),
    pytest.param("200 of the wrong shape", {"fault_rates": {"wrong-shape": 0.2}}, {}, id="wrong-shape-200"),
    pytest.param("200 missing tracking ids", {"fault_rates": {"missing-ids": 0.3}}, {}, id="missing-ids"),
    pytest.param("200 with duplicated ids", {"fault_rates": {"dup-ids": 0.3}}, {}, id="duplicated-ids"),
    pytest.param(
        "server rate limit (429 + Retry-After)", {"rate_limit": 40, "rate_burst": 5}, {}, id="server-rate-limit"
    ),
]


@pytest.mark.parametrize(("name", "server", "client"), SCENARIOS)
async def test_fault(name: str, server: dict[str, Any], client: dict[str, Any]) -> None:
    async with Sandbox(seed=7, **server) as sb:
        results = await run_job(sb, **client)
        row = audit(name, results, dict(sb.counts))
    assert row["lost"] == 0, row
    assert len(results) == N


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with CascadeClient(
        api_key="k",
        base_url=f"http://127.0.0.1:{port}",
        batch_size=25,
        rate_limit=None,
        retry=RetryPolicy(initial_wait=0.01, max_attempts=2),
    ) as c:
        results = [r async for r in c.stream(messages())]
    row = audit("connection refused", results, {})
    assert row["lost"] == 0
    assert all(r.status is Status.FAILED and not r.outcome_unknown for r in results)


async def test_server_dies_mid_job_and_comes_back() -> None:
    first = await Sandbox(latency=0.02).start()
    port = first.port
    second: Sandbox | None = None
    counts: dict[str, int] = {}

    async def outage() -> None:
        nonlocal second
        await asyncio.sleep(0.15)
        await first.stop()
        await asyncio.sleep(0.5)
        second = await Sandbox(port=port).start()

    restart = asyncio.create_task(outage())
    async with CascadeClient(
        api_key="k",
        base_url=first.url,
        batch_size=25,
        max_in_flight=2,
        rate_limit=None,
        retry=RetryPolicy(initial_wait=0.2, max_wait=1.0, max_attempts=8),
    ) as c:
        results = [r async for r in c.stream(messages())]
    await restart
    assert second is not None
    for sb in (first, second):
        for tid, count in sb.counts.items():
            counts[tid] = counts.get(tid, 0) + count
    await second.stop()
    row = audit("server dies mid-job, comes back", results, counts)
    assert row["lost"] == 0
    # batches in flight when it died end unknown; those refused during the outage are retried
    assert row["accepted"] + row["unknown outcome"] == N, row
    assert row["accepted"] >= N - 2 * 25


def format_table(rows: list[dict[str, Any]], write: Callable[[str], None]) -> None:
    cols = list(rows[0])
    write("| " + " | ".join(cols) + " |")
    write("|" + "|".join("---" if c == "fault" else "---:" for c in cols) + "|")
    for row in rows:
        write("| " + " | ".join(str(row[c]) for c in cols) + " |")
