"""A large bulk job as taskiq tasks: one task per part file, any number of worker processes, one account.

    export CASCADE_API_KEY=...  CASCADE_REDIS_URL=redis://localhost:6379/0
    taskiq worker examples.multi_worker.tasks:broker --workers 4      # on as many hosts as you like
    python -m examples.multi_worker.enqueue big.jsonl --parts 20       # split, enqueue, wait

Why taskiq and not arq: both are asyncio job queues on Redis, but arq pins redis-py below 6 (it would
pull the whole application, and this project's own Redis code, back to an old redis-py) and is in
maintenance-only mode; taskiq is maintained, typed, and its worker events give each worker process a
place to hold one client for its whole life.

Each worker process opens one ``CascadeClient`` at startup and closes it at shutdown. The clients share
one rate limit through ``CASCADE_REDIS_URL`` (the queue's Redis can be the same server). Each task sends
one part and keeps its own output (``<output>``: one JSON line per message, rewritten by each run) and its
own journal (``<output>.journal``): a task run again, after a crash or by taskiq's retry, sends only what
is left.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Annotated

from taskiq import TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from cascade_async import DEFAULT_BASE_URL, CascadeClient, Journal, read_jsonl

REDIS_URL = os.environ.get("CASCADE_REDIS_URL", "redis://localhost:6379/0")

broker = ListQueueBroker(REDIS_URL, queue_name="cascade:bulk-parts").with_result_backend(
    RedisAsyncResultBackend(REDIS_URL, result_ex_time=3600)
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def open_client(state: TaskiqState) -> None:
    # No rate_limit passed: with CASCADE_REDIS_URL set, the default limit is the account's shared one.
    state.cascade = CascadeClient(base_url=os.environ.get("CASCADE_BASE_URL", DEFAULT_BASE_URL))


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def close_client(state: TaskiqState) -> None:
    await state.cascade.aclose()


@broker.task(task_name="cascade.send_part")
async def send_part(part: str, output: str, state: Annotated[TaskiqState, TaskiqDepends()]) -> dict[str, int]:
    """Send every message of the JSONL file ``part``; one result line per message to ``output``."""
    client: CascadeClient = state.cascade
    counts: collections.Counter[str] = collections.Counter()
    # a local file, opened once per task; its writes are buffered
    with Journal(output + ".journal") as journal, open(output, "w", encoding="utf-8") as out:  # noqa: ASYNC230
        async with journal.stream(client, read_jsonl(part)) as results:
            async for r in results:
                # settled by an earlier run of this task: not sent again, its result comes from the journal
                counts["skipped" if r.from_journal else r.status.value] += 1
                row = {"id": r.tracking_id, "status": r.status.value, "messageId": r.message_id}
                if r.error is not None:
                    row["error"] = str(r.error)
                out.write(json.dumps(row) + "\n")
    return dict(counts)
