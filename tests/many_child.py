"""One process of the many-processes tests: ``python tests/many_child.py MODE URL COUNT START [BATCH]``.

MODE ``bulk`` sends COUNT messages with ``send_many``; ``interactive`` sends COUNT with ``send()``,
one every 100 ms. The account's key comes from ``$CASCADE_API_KEY``; the rate limit is the
default one, shared when ``$CASCADE_REDIS_URL`` is set (``$LOCAL_LIMIT=1`` forces a local one).
Sending starts at wall time START, so that every process starts together. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from cascade_async import CascadeClient, Event, Message, MessageType, RateLimit


def message(prefix: str, i: int) -> Message:
    return Message(
        id=f"{prefix}-{i}", from_name="Shop", to_phone="+380501234567", message_type=MessageType.TRANSACTION, text="hi"
    )


async def main(mode: str, url: str, count: int, start: float, batch_size: int) -> dict[str, Any]:
    events: list[str] = []

    def hook(event: Event) -> None:
        name = type(event).__name__
        if name.startswith("SharedLimit"):
            events.append(name)

    options: dict[str, Any] = {"base_url": url, "batch_size": batch_size, "on_event": hook}
    if os.environ.get("LOCAL_LIMIT"):
        options["rate_limit"] = RateLimit()
    prefix = f"{mode}-{os.getpid()}"
    out: dict[str, Any] = {"events": events}
    async with CascadeClient(**options) as client:
        out["shared"] = client.rate_limit is not None and client.rate_limit.redis_url is not None
        await asyncio.sleep(max(0.0, start - time.time()))
        if mode == "bulk":
            report = await client.send_many(message(prefix, i) for i in range(count))
            results = [report[tid] for tid in report]
            out["latencies"] = []
        else:
            results, out["latencies"] = [], []
            for i in range(count):
                began = time.perf_counter()
                results.append(await client.send(message(prefix, i)))
                out["latencies"].append(time.perf_counter() - began)
                await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - began)))
    out["accepted"] = sum(r.ok for r in results)
    out["failed"] = len(results) - out["accepted"]
    out["max_attempts"] = max((r.attempts for r in results), default=0)
    return out


if __name__ == "__main__":
    mode, url, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    print(json.dumps(asyncio.run(main(mode, url, count, start, batch))))
