"""Variable ids that do not collide between jobs, and that a resumed job gets back.

The provider substitutes values at delivery, so if two jobs on one account used the same id, a
message still waiting (a scheduled one, say) would pick up the other job's value. Ids therefore come
in blocks from an ``IdAllocator``:

- ``RedisIdAllocator``: ``INCRBY`` on one key shared by every sender of the account. Blocks never
  overlap while everyone uses the same key; ids count up from 1.
- ``LocalIdAllocator``: without Redis, each job takes ids upwards from a random base drawn from
  ``[2**32, 2**48)`` (``secrets``). Small ids stay free for the Redis counter and for ids chosen by
  hand. Residual risk: two jobs collide only if their ranges overlap, with probability about
  ``(n1 + n2) / 2**48`` for jobs using n1 and n2 ids: about 1 in 1.4 billion for two jobs of 100,000
  ids each. It grows with the square of the number of jobs whose values are still pending at the
  provider, and assumes the provider accepts ids up to 2**48, which it does not document (if it
  does not, pass a smaller ``low``/``high``, and the risk grows in proportion).

``VariablePool`` gives the same ``(type, value)`` the same ``Variable`` within a job, and its
``snapshot()`` is a plain JSON-able dict for the journal. ``VariablePool.restore(snapshot)`` gives
a resumed job the same ids for the same values, and new ids only from beyond what was handed out.
The pool holds one entry per distinct value (about 200 bytes each).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Protocol

from ._errors import TransportError
from ._variables import MAX_VARIABLE_ID, UPLOAD_BATCH, Variable, VariableType

__all__ = ["IdAllocator", "LocalIdAllocator", "RedisIdAllocator", "VariablePool", "allocator_from_state"]

LOCAL_LOW: Final = 2**32
LOCAL_HIGH: Final = 2**48
#: How many ids one local job may hand out; it bounds where the random base may start.
LOCAL_SPAN: Final = 2**32
DEFAULT_REDIS_KEY: Final = "cascade-async:variable-ids"
_STATE_VERSION: Final = 1


class IdAllocator(Protocol):
    """Hands out blocks of ids no other job will get."""

    async def allocate(self, count: int) -> range:
        """``count`` fresh consecutive ids."""
        ...

    def state(self) -> dict[str, Any]:
        """A JSON-able dict ``allocator_from_state`` turns back into an equivalent allocator."""
        ...


class LocalIdAllocator:
    """Ids from a random range chosen per job (see the module docstring for the residual risk)."""

    def __init__(
        self,
        base: int | None = None,
        *,
        next_id: int | None = None,
        end: int | None = None,
        low: int = LOCAL_LOW,
        high: int = LOCAL_HIGH,
    ) -> None:
        if not 1 <= low < high <= MAX_VARIABLE_ID + 1:
            raise ValueError(f"need 1 <= low < high <= {MAX_VARIABLE_ID + 1}")
        span = min(LOCAL_SPAN, (high - low) // 2)
        if base is None:
            base = low + secrets.randbelow(high - low - span)
        self._base = base
        self._next = base if next_id is None else next_id
        self._end = min(base + span, high) if end is None else end
        if not 1 <= base <= self._next <= self._end <= MAX_VARIABLE_ID + 1:
            raise ValueError("need 1 <= base <= next_id <= end")

    async def allocate(self, count: int) -> range:
        if count < 1:
            raise ValueError(f"count must be positive, got {count}")
        if self._next + count > self._end:
            raise OverflowError(f"this job's id range is used up ({self._end - self._base} ids)")
        block = range(self._next, self._next + count)
        self._next += count
        return block

    def state(self) -> dict[str, Any]:
        return {"kind": "local", "base": self._base, "next": self._next, "end": self._end}


class _IncrBy(Protocol):
    # The one redis.asyncio.Redis method used.
    def incrby(self, name: str, amount: int = ...) -> Awaitable[int]: ...


class RedisIdAllocator:
    """Blocks from ``INCRBY key count`` on a Redis shared by every sender of the account.

    Redis keeps the state, so ``state()`` only names the key. A call that does not finish within
    ``timeout`` seconds raises ``TransportError``: no ids are guessed when Redis is down.
    """

    def __init__(self, redis: _IncrBy, *, key: str = DEFAULT_REDIS_KEY, timeout: float = 5.0) -> None:
        self._redis = redis
        self.key = key
        self._timeout = timeout

    @classmethod
    def from_url(cls, url: str, *, key: str = DEFAULT_REDIS_KEY, timeout: float = 5.0) -> RedisIdAllocator:
        """Connect lazily with redis-py (``pip install redis``); nothing is imported until called."""
        try:
            import redis.asyncio  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise ImportError("RedisIdAllocator.from_url needs redis-py 5 or later: pip install 'redis>=5'") from exc

        client: _IncrBy = redis.asyncio.Redis.from_url(url)
        return cls(client, key=key, timeout=timeout)

    async def allocate(self, count: int) -> range:
        if count < 1:
            raise ValueError(f"count must be positive, got {count}")
        try:
            top = await asyncio.wait_for(self._redis.incrby(self.key, count), self._timeout)
        except Exception as exc:  # redis-py's errors do not derive from the builtin ones
            raise TransportError(f"could not allocate variable ids from Redis key {self.key!r}: {exc!r}") from exc
        top = int(top)
        if top > MAX_VARIABLE_ID:
            raise OverflowError(f"Redis key {self.key!r} is past the largest variable id")
        return range(top - count + 1, top + 1)

    def state(self) -> dict[str, Any]:
        return {"kind": "redis", "key": self.key}


def allocator_from_state(state: dict[str, Any], *, redis: _IncrBy | None = None) -> IdAllocator:
    """The allocator a snapshot describes; a Redis one needs the ``redis`` client to use."""
    kind = state.get("kind")
    if kind == "local":
        return LocalIdAllocator(state["base"], next_id=state["next"], end=state["end"])
    if kind == "redis":
        if redis is None:
            raise ValueError("this job allocated its ids through Redis: pass the redis client to resume it")
        return RedisIdAllocator(redis, key=state["key"])
    raise ValueError(f"unknown id allocator state {kind!r}")


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
        self._next = self._stop = 0  # the unused part of the current block
        self._known: dict[VariableType, dict[str, Variable]] = {t: {} for t in VariableType}
        #: Called after each new block is taken, before any of its ids is handed out: the moment
        #: to persist ``changes()`` (a journal's hook).
        self.on_block = on_block
        self._unsaved: list[Variable] = []  # assignments since the last ``changes()``

    def __len__(self) -> int:
        return sum(len(by_value) for by_value in self._known.values())

    def get(self, kind: VariableType, value: str) -> Variable | None:
        """The job's variable for ``value``; None only when a new id is needed and the block is spent.

        Raises ``ValidationError`` (field ``value``) for a value no variable of ``kind`` may hold.
        """
        var = self._known[kind].get(value)
        return var if var is not None else self.new(kind, value)

    def known(self, kind: VariableType) -> dict[str, Variable]:
        """The live map of value to variable for ``kind`` (read it; ``new`` adds to it)."""
        return self._known[kind]

    def new(self, kind: VariableType, value: str) -> Variable | None:
        """A fresh id for a value not in ``known(kind)``; None when the block is spent (``refill``)."""
        vid = self._next
        if vid >= self._stop:
            return None
        var = Variable(vid, kind, value)  # validates; raises ValidationError (field "value")
        self._next = vid + 1
        self._known[kind][value] = var
        self._unsaved.append(var)
        return var

    async def refill(self) -> None:
        block = await self.allocator.allocate(self._block_size)
        self._next, self._stop = block.start, block.stop
        if self.on_block is not None:
            self.on_block(self)

    def changes(self) -> dict[str, Any]:
        """What changed since the last call, as a small JSON-able record (a journal appends these):
        the allocator's state, the current block's end, and the new assignments. ``replay`` turns
        the records back into a pool. Costs O(new assignments), unlike ``snapshot()``."""
        new, self._unsaved = self._unsaved, []
        return {
            "version": _STATE_VERSION,
            "allocator": self.allocator.state(),
            "block_end": self._stop,
            "block_size": self._block_size,
            "variables": [[v.id, v.type.value, v.value] for v in new],
        }

    @classmethod
    def replay(
        cls,
        records: Iterable[dict[str, Any]],
        *,
        redis: _IncrBy | None = None,
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
            for vid, kind, value in record["variables"]:
                var = Variable(vid, VariableType(kind), value)
                pool._known[var.type][value] = var
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
            "free": [self._next, self._stop],
            "block_size": self._block_size,
            "variables": [[v.id, v.type.value, v.value] for by in self._known.values() for v in by.values()],
        }

    @classmethod
    def restore(cls, state: dict[str, Any], *, redis: _IncrBy | None = None) -> VariablePool:
        """The pool a ``snapshot()`` describes: same ids for the same values, nothing handed out twice."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown variable pool state version {state.get('version')!r}")
        pool = cls(allocator_from_state(state["allocator"], redis=redis), block_size=state["block_size"])
        pool._next, pool._stop = state["free"]
        for vid, kind, value in state["variables"]:
            var = Variable(vid, VariableType(kind), value)
            pool._known[var.type][value] = var
        return pool
