"""Peak RSS of one stream() job over N generated messages: ``stream_memory.py URL N [dedupe]``.

The messages come from a generator and are never materialized. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import peak_rss_mb


def main() -> None:
    from cascade_async import CascadeClient, Message, MessageType, Status

    url, n = sys.argv[1], int(sys.argv[2])
    dedupe = len(sys.argv) < 4 or sys.argv[3] != "no-dedupe"

    def source() -> Iterator[Message]:
        for i in range(n):
            yield Message(
                id=f"msg-{i:08d}",
                from_name="BenchShop",
                to_phone=f"+38050{i % 10_000_000:07d}",
                message_type=MessageType.TRANSACTION,
                text=f"Your order #{i} has been confirmed",
            )

    async def run() -> int:
        accepted = 0
        async with CascadeClient(api_key="bench", base_url=url, rate_limit=None, dedupe=dedupe) as client:
            async for r in client.stream(source()):
                accepted += r.status is Status.ACCEPTED
        return accepted

    base = peak_rss_mb()
    started = time.perf_counter()
    accepted = asyncio.run(run())
    print(
        json.dumps(
            {
                "messages": n,
                "accepted": accepted,
                "dedupe": dedupe,
                "seconds": time.perf_counter() - started,
                "rss_before_mb": base,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
