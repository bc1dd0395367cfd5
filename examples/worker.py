"""An asyncio worker pool sending jobs from a queue, with graceful shutdown.

    python examples/worker.py            # runs against a local sandbox; Ctrl-C to stop

On SIGINT/SIGTERM it stops taking new jobs, finishes the queued ones, then closes the client
(which flushes any send still being batched). Every job ends in exactly one outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from cascade_async import CascadeClient, CascadeError, Message, MessageType, Result

Outcome = Result | CascadeError


async def worker(
    queue: asyncio.Queue[Message | None], client: CascadeClient, on_outcome: Callable[[Message, Outcome], None]
) -> None:
    """Take messages until a ``None`` arrives; each ``send`` shares batches with the other workers."""
    while (message := await queue.get()) is not None:
        try:
            outcome: Outcome = await client.send(message)
        except CascadeError as exc:
            outcome = exc
        finally:
            queue.task_done()
        on_outcome(message, outcome)
    queue.task_done()


async def run_pool(
    queue: asyncio.Queue[Message | None],
    client: CascadeClient,
    stop: asyncio.Event,
    on_outcome: Callable[[Message, Outcome], None],
    workers: int = 50,
) -> None:
    """Run ``workers`` workers until ``stop`` is set, then drain the queue and stop them."""
    tasks = [asyncio.create_task(worker(queue, client, on_outcome)) for _ in range(workers)]
    await stop.wait()
    await queue.join()  # everything queued before the stop is sent
    for _ in tasks:
        queue.put_nowait(None)
    await asyncio.gather(*tasks)


async def main() -> None:
    from cascade_async.sandbox import Sandbox

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    counts = {"ok": 0, "error": 0}

    def record(message: Message, outcome: Outcome) -> None:
        counts["ok" if isinstance(outcome, Result) else "error"] += 1

    async with Sandbox(latency=0.02) as sb, CascadeClient(api_key="sandbox", base_url=sb.url) as client:
        queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=1000)
        pool = asyncio.create_task(run_pool(queue, client, stop, record))
        for i in range(5000):  # a producer; in real life, a broker consumer
            await queue.put(
                Message(
                    id=f"job-{i}",
                    from_name="Worker",
                    to_phone="+380501234567",
                    message_type=MessageType.PROMO,
                    text=f"job {i}",
                )
            )
        stop.set()
        await pool
        print(f"{counts['ok']} sent, {counts['error']} failed, in {sb.stats().requests} requests")


if __name__ == "__main__":
    asyncio.run(main())
