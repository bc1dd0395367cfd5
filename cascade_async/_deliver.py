"""A batch to exactly one ``Result`` per message: ids repeated within it go in rounds, and a
400 is narrowed down to the bad messages (``_isolate``)."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from ._models import Message, Result, Route
from ._outcomes import Failed, Recorder
from ._ratelimit import Priority

if TYPE_CHECKING:
    from ._sending import BatchSender

__all__ = ["deliver", "repeat_rounds"]

_ids = attrgetter("id")


async def deliver(
    sender: BatchSender,
    batch: Sequence[Message],
    route: Route,
    recorder: Recorder | None = None,
    *,
    isolate: int = 0,
    body: bytes | None = None,
    unique: bool = False,
    priority: Priority = Priority.BULK,
) -> list[Result]:
    """Exactly one Result per message of ``batch``, in its order.

    A batch may repeat a tracking id (``dedupe=False``, or two callers of ``send()``): one
    request holds an id once, since answers are matched by id, so the k-th occurrences
    of ids go in the k-th request. ``isolate`` > 0 lets a 400 be narrowed down to the bad
    messages with at most that many extra requests. ``unique``: the caller knows the ids
    are unique (admission with ``dedupe``).
    """
    if unique or len(set(map(_ids, batch))) == len(batch):  # the usual case, in C
        return await _deliver_unique(sender, batch, route, recorder, isolate, priority, body)
    results: list[Result | None] = [None] * len(batch)
    for indices in repeat_rounds(batch):
        part = [batch[i] for i in indices]
        got = await _deliver_unique(sender, part, route, recorder, isolate, priority)
        for i, r in zip(indices, got, strict=True):
            results[i] = r
    return results  # type: ignore[return-value]  # every index is in exactly one round


async def _deliver_unique(
    sender: BatchSender,
    batch: Sequence[Message],
    route: Route,
    recorder: Recorder | None,
    isolate: int,
    priority: Priority,
    body: bytes | None = None,
) -> list[Result]:
    got = await sender.send(batch, route, recorder, body=body, priority=priority)
    if not isinstance(got, Failed):
        return got
    if isolate and len(batch) > 1 and got.splittable:
        from ._isolate import isolate_bad_messages

        return await isolate_bad_messages(sender, batch, route, recorder, got, cap=isolate, priority=priority)
    return got.results(batch)


def repeat_rounds(batch: Sequence[Message]) -> list[list[int]]:
    """Indices of ``batch`` by occurrence: round k holds the k-th occurrence of each id."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(batch):
        k = seen.get(m.id, 0)
        seen[m.id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return rounds
