"""The variable ids of one job: the same value gets the same id, and a resumed job gets them back.

Ids come in blocks from an ``IdAllocator`` (``_id_allocators``: Redis ``INCRBY`` or a random range
per job, and the residual risk of a collision between jobs).

``VariablePool`` keeps, per variable type, one map of value to id, in the order the ids were handed
out: nothing else per value (an int and the map's entry, about 100 bytes with the value itself kept
by the caller's row anyway). What was handed out since some point is the tail of those maps, so the
new values of a template chunk (``take_fresh``) and of a journal record (``changes``) are read from
there in bulk, as ``VariableRun`` lists. ``Variable`` objects are made only for the per-message path
(``get``; cached there, as it asks for the same value again and again). ``snapshot()`` is a plain
JSON-able dict for the journal; ``VariablePool.restore(snapshot)`` gives a resumed job the same ids
for the same values, and new ids only from beyond what was handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any, Final

from ._errors import ValidationError
from ._id_allocators import (
    DEFAULT_REDIS_KEY,
    LOCAL_HIGH,
    LOCAL_LOW,
    LOCAL_SPAN,
    IdAllocator,
    IncrBy,
    LocalIdAllocator,
    RedisIdAllocator,
    allocator_from_state,
)
from ._variables import UPLOAD_BATCH, Variable, VariableRun, VariableType, url_ok, value_problem

__all__ = [
    "DEFAULT_REDIS_KEY",
    "LOCAL_HIGH",
    "LOCAL_LOW",
    "LOCAL_SPAN",
    "IdAllocator",
    "LocalIdAllocator",
    "RedisIdAllocator",
    "VariablePool",
    "allocator_from_state",
]

_STATE_VERSION: Final = 1
_NAME: Final = VariableType.NAME


class VariablePool:
    """One id per distinct ``(type, value)`` in a job, taken from the allocator in blocks.

    ``get()`` is synchronous and covers every value already seen and every new value while the
    current block lasts; only when it returns None must the caller ``await refill()``.
    """

    def __init__(
        self,
        allocator: IdAllocator | None = None,
        *,
        block_size: int = UPLOAD_BATCH,
        on_block: Callable[[VariablePool], None] | None = None,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.allocator: IdAllocator = allocator if allocator is not None else LocalIdAllocator()
        self._block_size = block_size
        #: The unused part of the current block, [next, stop) (a list: generated code takes ids).
        self._free = [0, 0]
        #: Per type, value -> id, in the order handed out (never removed: the tails below rely on it).
        self._ids: dict[VariableType, dict[str, int]] = {t: {} for t in VariableType}
        self._variables: dict[VariableType, dict[str, Variable]] = {t: {} for t in VariableType}
        #: Called after each new block is taken, before any of its ids is handed out, and before a
        #: template hands out a chunk whose rows took new ids (``unsaved()``): the moments to
        #: persist ``changes()`` (a journal's hook).
        self.on_block = on_block
        self._saved = dict.fromkeys(VariableType, 0)  # per type, how many ``changes()`` reported
        #: Per type, how many ``take_fresh()`` handed over; None until ``claim_fresh()``.
        self._handed: dict[VariableType, int] | None = None

    def __len__(self) -> int:
        return sum(map(len, self._ids.values()))

    def get(self, kind: VariableType, value: str) -> Variable | None:
        """The job's variable for ``value``; None only when a new id is needed and the block is spent.

        Raises ``ValidationError`` (field ``value``) for a value no variable of ``kind`` may hold.
        """
        known = self._variables[kind]
        var = known.get(value)
        if var is not None:
            return var
        ids = self._ids[kind]
        # Every id has its Variable here when the counts agree (the per-message path): then a
        # value missing above has no id either, and the second lookup is saved.
        vid = None if len(ids) == len(known) else ids.get(value)
        if vid is None:
            free = self._free
            vid = free[0]
            if vid >= free[1]:
                return None
            var = Variable(vid, kind, value)  # checks the value (raises ValidationError)
            ids[value] = vid
            free[0] = vid + 1
        else:
            var = Variable(vid, kind, value)
        known[value] = var
        return var

    def new(self, kind: VariableType, value: str) -> Variable | None:
        """As ``get`` (a value seen already keeps its id), for callers of the earlier API."""
        return self.get(kind, value)

    def ids(self, kind: VariableType) -> dict[str, int]:
        """The live map of value to id for ``kind`` (read it; ``new_id`` adds to it)."""
        return self._ids[kind]

    def free_ids(self) -> list[int]:
        """The live ``[next, stop)`` of the current block: take an id by moving ``next`` up (as
        ``new_id`` does; the generated row code does it inline), never by replacing the list."""
        return self._free

    def variables(self, kind: VariableType) -> dict[str, Variable]:
        """The live map of value to ``Variable`` for the values ``get`` was asked for (read it)."""
        return self._variables[kind]

    def new_id(self, kind: VariableType, value: str) -> int | None:
        """A fresh id for a value not in ``ids(kind)`` (only then: a value keeps its first id, and
        the maps' order is what was handed out); None when the block is spent (``refill``).

        Raises ``ValidationError`` (field ``value``) for a value no variable of ``kind`` may hold.
        The generated row code does the same inline for the usual valid URL.
        """
        free = self._free
        vid = free[0]
        if vid >= free[1]:
            return None
        if kind is _NAME or type(value) is not str or not url_ok(value):
            problem = value_problem(kind, value)
            if problem is not None:
                raise ValidationError(problem, field="value", tracking_id=None)
        self._ids[kind][value] = vid
        free[0] = vid + 1
        return vid

    def claim_fresh(self) -> bool:
        """Whether the caller may take this pool's new variables in blocks (``take_fresh``): only
        the first caller, and only while the pool is empty, so that every variable the pool ever
        hands out is in one of the blocks that caller takes."""
        if self._handed is not None or len(self):
            return False
        self._handed = dict.fromkeys(VariableType, 0)
        return True

    def take_fresh(self) -> list[VariableRun]:
        """The values given ids since the last call (after ``claim_fresh``), oldest first, one
        run per type."""
        if self._handed is None:
            return []
        return self._tails(self._handed)

    def _tails(self, marks: dict[VariableType, int]) -> list[VariableRun]:
        """Per type, the values and ids added since ``marks`` said (moved to the end)."""
        runs: list[VariableRun] = []
        for kind, by_value in self._ids.items():
            count = len(by_value) - marks[kind]
            if count:
                marks[kind] = len(by_value)
                # From the end: a dict has no index, and walking to the tail from the start
                # would cost the whole map each time.
                values = list(islice(reversed(by_value.keys()), count))
                ids = list(islice(reversed(by_value.values()), count))
                values.reverse()
                ids.reverse()
                runs.append(VariableRun(kind, ids, values))
        return runs

    async def refill(self) -> None:
        block = await self.allocator.allocate(self._block_size)
        self._free[:] = block.start, block.stop
        if self.on_block is not None:
            self.on_block(self)

    def unsaved(self) -> bool:
        """Whether values were given ids since ``changes()`` last reported."""
        saved = self._saved
        return any(len(by_value) != saved[kind] for kind, by_value in self._ids.items())

    def changes(self) -> dict[str, Any]:
        """What changed since the last call, as a small JSON-able record (a journal appends these):
        the allocator's state, the current block's end, and the new assignments. ``replay`` turns
        the records back into a pool. Costs O(new assignments), unlike ``snapshot()``."""
        return {
            "version": _STATE_VERSION,
            "allocator": self.allocator.state(),
            "block_end": self._free[1],
            "block_size": self._block_size,
            "variables": _triples(self._tails(self._saved)),
        }

    @classmethod
    def replay(
        cls,
        records: Iterable[dict[str, Any]],
        *,
        redis: IncrBy | None = None,
        on_block: Callable[[VariablePool], None] | None = None,
    ) -> VariablePool:
        """The pool that ``changes()`` records describe, in order. The same values keep their ids;
        the rest of the last recorded block is never handed out again (values assigned from it
        after the last record, by a job that then crashed, may already be at the provider)."""
        pool: VariablePool | None = None
        for record in records:
            if record.get("version") != _STATE_VERSION:
                raise ValueError(f"unknown variable pool record version {record.get('version')!r}")
            pool = (
                cls(
                    allocator_from_state(record["allocator"], redis=redis),
                    block_size=record["block_size"],
                    on_block=on_block,
                )
                if pool is None
                else pool
            )
            pool.allocator = allocator_from_state(record["allocator"], redis=redis)
            pool._load(record["variables"])
        if pool is None:
            raise ValueError("no variable pool records to replay")
        return pool

    async def variable(self, kind: VariableType, value: str) -> Variable:
        var = self.get(kind, value)
        while var is None:
            await self.refill()
            var = self.get(kind, value)
        return var

    def snapshot(self) -> dict[str, Any]:
        """A plain dict for the journal: the allocator, the unused block and every assignment."""
        return {
            "version": _STATE_VERSION,
            "allocator": self.allocator.state(),
            "free": list(self._free),
            "block_size": self._block_size,
            "variables": _triples(self._tails(dict.fromkeys(VariableType, 0))),
        }

    @classmethod
    def restore(cls, state: dict[str, Any], *, redis: IncrBy | None = None) -> VariablePool:
        """The pool a ``snapshot()`` describes: same ids for the same values, nothing handed out twice."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown variable pool state version {state.get('version')!r}")
        pool = cls(allocator_from_state(state["allocator"], redis=redis), block_size=state["block_size"])
        pool._free[:] = state["free"]
        pool._load(state["variables"])
        return pool

    def _load(self, triples: Iterable[list[Any]]) -> None:
        """Assignments read back (checked as ``Variable``s), already saved: not ``changes()``."""
        for vid, kind, value in triples:
            var = Variable(vid, VariableType(kind), value)
            self._ids[var.type][value] = var.id
        self._saved = {kind: len(by_value) for kind, by_value in self._ids.items()}


def _triples(runs: list[VariableRun]) -> list[list[Any]]:
    return [[vid, run.type.value, value] for run in runs for vid, value in zip(run.ids, run.values, strict=True)]
