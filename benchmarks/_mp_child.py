"""One process of ``multi_process.py``: ``_mp_child.py bulk|interactive URL START END BATCH [SENDERS]``.

bulk: ``send_many`` of messages produced until wall time END. interactive: SENDERS (default 1) tasks, each
sending one ``send()`` every 150 ms until END, started evenly spread over the first 150 ms. The limit is the
client's default: shared when ``$CASCADE_REDIS_URL`` is set. Prints one JSON object: results, latencies
(interactive), CPU seconds, requests and 429s seen, and the shared limiter's acquire-script calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cascade_async import BatchSent, CascadeClient, Event, Message, MessageType, RateLimit, Result

INTERVAL = 0.15


def message(prefix: str, i: int) -> Message:
    return Message(
        id=f"{prefix}-{i}", from_name="Shop", to_phone="+380501234567", message_type=MessageType.TRANSACTION, text="hi"
    )


def until(prefix: str, end: float) -> Iterator[Message]:
    i = 0
    while time.time() < end:
        yield message(prefix, i)
        i += 1


def count_script_calls(client: CascadeClient, out: dict[str, Any]) -> None:
    """Counts the shared limiter's acquire-script calls in ``out["acquire_calls"]`` (heartbeats apart)."""
    limiter: Any = client._limiter
    real = getattr(limiter, "_acquire_script", None)
    if real is None:
        return

    async def counted(*args: Any, **kwargs: Any) -> Any:
        out["acquire_calls"] += 1
        return await real(*args, **kwargs)

    limiter._acquire_script = counted


async def otp_sender(client: CascadeClient, prefix: str, end: float, out: dict[str, Any]) -> list[Result]:
    results: list[Result] = []
    while time.time() < end:
        began = time.perf_counter()
        out["sent_at"].append(time.time())
        try:
            results.append(await client.send(message(prefix, len(results))))
        except Exception:
            out["errors"] += 1
        out["latencies"].append(time.perf_counter() - began)
        await asyncio.sleep(max(0.0, INTERVAL - (time.perf_counter() - began)))
    return results


async def main(mode: str, url: str, start: float, end: float, batch: int, senders: int) -> dict[str, Any]:
    seen = {"requests": 0, "429": 0, "events": 0}

    def hook(event: Event) -> None:
        if isinstance(event, BatchSent):
            seen["requests"] += 1
            seen["429"] += event.status == 429
        elif type(event).__name__.startswith("SharedLimit"):
            seen["events"] += 1

    out: dict[str, Any] = {"latencies": [], "sent_at": [], "errors": 0, "acquire_calls": 0}
    prefix = f"{mode[0]}{os.getpid()}"
    options: dict[str, Any] = {}
    reserve, headroom = os.environ.get("BENCH_RESERVE"), os.environ.get("BENCH_HEADROOM")
    if reserve or headroom:  # the trade-off runs: the shared limit with another reserve or headroom
        options["rate_limit"] = RateLimit(
            redis_url=os.environ.get("CASCADE_REDIS_URL"),
            interactive_reserve=int(reserve) if reserve else None,
            headroom=float(headroom) if headroom else None,
        )
    async with CascadeClient(base_url=url, batch_size=batch, on_event=hook, **options) as client:
        await client.send(message(prefix + "warm", 0))  # connect, load the script: not measured
        count_script_calls(client, out)
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu0 = time.process_time()
        if mode == "bulk":
            report = await client.send_many(until(prefix, end))
            results = [report[tid] for tid in report]
        else:

            async def sender(i: int) -> list[Result]:
                await asyncio.sleep(i * INTERVAL / senders)
                return await otp_sender(client, f"{prefix}s{i}", end, out)

            results = [r for rs in await asyncio.gather(*(sender(i) for i in range(senders))) for r in rs]
        out["cpu"] = time.process_time() - cpu0
    out["messages"] = len(results) + out["errors"]
    out["failed"] = sum(not r.ok for r in results) + out["errors"]
    out["max_attempts"] = max((r.attempts for r in results), default=0)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(seen)
    return out


def dump_tasks(*_: object) -> None:
    """On SIGUSR1: every task's stack, to stderr (to see where a stuck run waits)."""
    for task in asyncio.all_tasks(loop):
        task.print_stack(file=sys.stderr)


if __name__ == "__main__":
    import signal

    loop = asyncio.new_event_loop()
    signal.signal(signal.SIGUSR1, dump_tasks)
    mode, url, start, end, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    senders = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    print(json.dumps(loop.run_until_complete(main(mode, url, start, end, batch, senders))))
