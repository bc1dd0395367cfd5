"""The Batcher: what a batch is (count and bytes), and fair, cheap hand-off to waiting producers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from cascade_async._batching import Batcher

from .support import run_virtual


def measure(items: Sequence[str]) -> int:
    return len(json.dumps(items, separators=(",", ":")))


def test_a_taken_batch_wakes_only_as_many_waiting_producers_as_it_has_room_for() -> None:
    async def main() -> tuple[int, list[str]]:
        batcher: Batcher[str] = Batcher(1, 0.0, 1 << 20, measure)
        assert batcher.offer("first", 10)
        woken = 0

        async def producer(i: int) -> None:
            nonlocal woken
            await batcher.wait_room()
            woken += 1

        tasks = [asyncio.create_task(producer(i)) for i in range(100)]
        await asyncio.sleep(0)
        batch = await batcher.take()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        count = woken
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return count, list(batch or [])

    woken, batch = run_virtual(main())
    assert batch == ["first"]
    assert woken == 1


def test_waiting_producers_get_in_first_come_first_served() -> None:
    async def main() -> list[list[str]]:
        batcher: Batcher[str] = Batcher(2, 0.0, 1 << 20, measure)
        for item in ("a", "b"):
            assert batcher.offer(item, 3)
        puts = [asyncio.create_task(batcher.put(name, 3)) for name in ("c", "d", "e", "f")]
        batches: list[list[str]] = []
        for _ in range(3):
            await asyncio.sleep(0)
            got = await batcher.take()
            batches.append(list(got or []))
        await asyncio.gather(*puts)
        return batches

    assert run_virtual(main()) == [["a", "b"], ["c", "d"], ["e", "f"]]


def test_a_batch_closes_before_its_encoding_would_pass_max_bytes() -> None:
    async def main() -> list[list[str]]:
        batcher: Batcher[str] = Batcher(100, 0.0, 40, measure)
        out: list[list[str]] = []
        items = [f"item{i:02d}" for i in range(10)]  # 8 characters: 10 bytes encoded, 11 with a comma

        async def produce() -> None:
            for item in items:
                await batcher.put(item, 6 * len(item) + 2)  # a loose upper bound, as admission gives
            batcher.close()

        task = asyncio.create_task(produce())
        while (batch := await batcher.take()) is not None:
            out.append(list(batch))
        await task
        return out

    batches = run_virtual(main())
    assert [x for b in batches for x in b] == [f"item{i:02d}" for i in range(10)]
    assert all(measure(b) <= 40 for b in batches)
    assert max(len(b) for b in batches) == 4  # exact sizes near the limit: the bound alone allows 1
