"""A bulk job with the library: stream a JSONL file through the client, write a report.

    python examples/bulk_send.py examples/messages.jsonl

With no CASCADE_BASE_URL set it starts a local sandbox and sends there: nothing leaves this
machine. Point CASCADE_BASE_URL (and CASCADE_API_KEY) at the real service to send for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from cascade_async import CascadeClient, Status
from cascade_async.sandbox import Sandbox


def read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


async def main(path: str) -> int:
    base_url = os.environ.get("CASCADE_BASE_URL")
    sandbox = None
    failed = 0
    if base_url is None:
        sandbox = await Sandbox(latency=0.05).start()
        base_url = sandbox.url
        print(f"sending to a local sandbox at {base_url}; nothing leaves this machine")
    try:
        async with CascadeClient(
            api_key=os.environ.get("CASCADE_API_KEY", "sandbox"), base_url=base_url, batch_size=200
        ) as client:
            # stream(): results as batches complete, memory bounded whatever the file size.
            # (send_many() collects the same into a BulkReport keyed by tracking id.)
            counts = dict.fromkeys(Status, 0)
            async for result in client.stream(read_jsonl(path)):
                counts[result.status] += 1
                if result.status is not Status.ACCEPTED:
                    print(f"{result.tracking_id}: {result.status.value}: {result.error}")
            failed = counts[Status.REJECTED] + counts[Status.FAILED]
            print(", ".join(f"{n} {status.value}" for status, n in counts.items()))
    finally:
        if sandbox is not None:
            stats = sandbox.stats()
            print(f"sandbox accepted {stats.accepted_messages} messages in {stats.requests} requests")
            await sandbox.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "examples/messages.jsonl")))
