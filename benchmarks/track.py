"""Tracking delivery at scale against a sandbox in another process: ``python benchmarks/track.py``.

Two parts, each streaming freshly sent Results straight into ``client.track()`` (nothing is
materialised: the sender's backpressure follows the tracker's read-ahead):

- ``complete``: N messages (default 10,000) tracked until every one is final. At the provider's
  50 requests/s this needs N/50 seconds at least, so it runs with ``--complete-rate`` (default
  500/s) to stay short; it checks that each message got exactly one final report.
- ``window``: M messages (default 100,000) at the default data limit (50/s, burst 75) for
  ``--seconds`` (default 60): requests per second and the shortest gap between two polls of one
  message, both counted at the sandbox, and the client's peak RSS. 100,000 messages need at
  least 2,000 s to finish at 50/s: the window measures the steady state, not completion.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import machine, peak_rss_mb, sandbox_process


def delivery_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/sandbox/delivery", timeout=10) as resp:
        stats: dict[str, Any] = json.load(resp)
        return stats


async def sent(client: Any, n: int) -> AsyncIterator[Any]:
    from cascade_async import Message, MessageType

    def source() -> Any:
        phones = ("+380501234567", "+380501234513", "+380501234566")
        for i in range(n):
            yield Message(
                id=f"trk-{i:08d}",
                from_name="BenchShop",
                to_phone=phones[i % 3] if i % 10 == 0 else f"+38050{i % 10_000_000:07d}",
                message_type=MessageType.TRANSACTION,
                text=f"Your order #{i} has shipped",
            )

    async with client.stream(source()) as stream:
        async for result in stream:
            yield result


async def complete(url: str, n: int, rate: float) -> dict[str, Any]:
    from cascade_async import CascadeClient, RateLimit

    limit = RateLimit(requests_per_second=rate, burst=int(rate * 1.5))
    started = time.monotonic()
    finals = timed_out = 0
    seen: set[str] = set()
    async with CascadeClient(api_key="bench", base_url=url, rate_limit=None, status_rate_limit=limit) as client:
        async for report in client.track(sent(client, n), timeout=120, every=1.0):
            seen.add(report.message_id)
            finals += report.final
            timed_out += not report.final
    elapsed = time.monotonic() - started
    stats = delivery_stats(url)
    return {
        "messages": n,
        "reports": finals + timed_out,
        "unique_messages_reported": len(seen),
        "final": finals,
        "timed_out": timed_out,
        "seconds": round(elapsed, 1),
        "status_rate_limit": rate,
        "polls": stats["polls"],
        "polls_per_message": round(stats["polls"] / n, 2),
        "max_per_second_at_sandbox": stats["maxPerSecond"],
        "max_per_second_after_burst": max(stats["perSecond"][2:-1], default=0),
        "min_gap_per_message_s": stats["minGap"],
    }


async def window(url: str, m: int, seconds: float) -> dict[str, Any]:
    from cascade_async import CascadeClient

    reports = 0
    rss_peak_during = 0.0
    async with CascadeClient(api_key="bench", base_url=url, rate_limit=None) as client:
        stream = client.track(sent(client, m), timeout=3600, every=5.0)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for _ in stream:
                    reports += 1
                    rss_peak_during = peak_rss_mb()
        await stream.aclose()  # type: ignore[attr-defined]
        elapsed = time.monotonic() - started
    stats = delivery_stats(url)
    per_second = stats["perSecond"][2:-1]  # past the burst, whole seconds only
    return {
        "messages_in_window": m,
        "seconds": round(elapsed, 1),
        "reports": reports,
        "polls": stats["polls"],
        "messages_polled": stats["messagesPolled"],
        "max_per_second_after_burst": max(per_second, default=0),
        "mean_per_second_after_burst": round(sum(per_second) / max(1, len(per_second)), 1),
        "first_seconds": stats["perSecond"][:3],
        "min_gap_per_message_s": stats["minGap"],
        "answers": stats["answers"],
        "client_peak_rss_mb": round(max(rss_peak_during, peak_rss_mb()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--complete", type=int, default=10_000)
    parser.add_argument("--complete-rate", type=float, default=500.0)
    parser.add_argument("--window", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--part", choices=["both", "complete", "window"], default="both")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    steps = ("--delivery-steps", "0.5", "1.0", "--no-record", "--no-inbox")
    if args.part in ("both", "complete"):
        with sandbox_process(*steps) as url:
            out["complete"] = asyncio.run(complete(url, args.complete, args.complete_rate))
    if args.part in ("both", "window"):
        # the provider's documented data limit, enforced by the sandbox: any excess would show as 429s
        with sandbox_process(*steps, "--status-rate-limit", "50", "--status-rate-burst", "75") as url:
            out["window"] = asyncio.run(window(url, args.window, args.seconds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
