"""Coalesced vs one-request-per-message single sends: ``coalesce.py URL``.

For 1, 10, 100, 1,000 and 10,000 concurrent callers of ``client.send()``: HTTP requests made
and per-caller latency (p50/p99), with coalescing on (the default, 2 ms linger) and off.
The client rate limit is off so that the uncoalesced runs measure sending, not waiting.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import reset_server, server_stats

from cascade_async import CascadeClient, Message, MessageType

LEVELS = (1, 10, 100, 1_000, 10_000)


async def one_level(url: str, callers: int, coalesce: bool) -> dict[str, float]:
    reset_server(url)
    latencies: list[float] = []
    async with CascadeClient(
        api_key="bench", base_url=url, rate_limit=None, coalesce=coalesce, batch_size=500, max_in_flight=8
    ) as client:

        async def caller(i: int) -> None:
            msg = Message(
                id=f"otp-{i}",
                from_name="Bench",
                to_phone="+380501234567",
                message_type=MessageType.TRANSACTION,
                text="Your code is 123456",
            )
            started = time.perf_counter()
            await client.send(msg)
            latencies.append(time.perf_counter() - started)

        wall = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        wall = time.perf_counter() - wall
    latencies.sort()
    return {
        "callers": callers,
        "coalesce": coalesce,
        "requests": server_stats(url)["requests"],
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "wall_s": wall,
    }


async def main(url: str) -> list[dict[str, float]]:
    rows = []
    for callers in LEVELS:
        for coalesce in (True, False):
            rows.append(await one_level(url, callers, coalesce))
    return rows


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
