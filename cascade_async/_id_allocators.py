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

``VariablePool`` (``_variable_ids``) takes its blocks from one of these.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any, Final, Protocol

from ._errors import TransportError
from ._variables import MAX_VARIABLE_ID

__all__ = ["IdAllocator", "IncrBy", "LocalIdAllocator", "RedisIdAllocator", "allocator_from_state"]

LOCAL_LOW: Final = 2**32
LOCAL_HIGH: Final = 2**48
#: How many ids one local job may hand out; it bounds where the random base may start.
LOCAL_SPAN: Final = 2**32
DEFAULT_REDIS_KEY: Final = "cascade-async:variable-ids"


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


class IncrBy(Protocol):
    # The one redis.asyncio.Redis method used.
    def incrby(self, name: str, amount: int = ...) -> Awaitable[int]: ...


class RedisIdAllocator:
    """Blocks from ``INCRBY key count`` on a Redis shared by every sender of the account.

    Redis keeps the state, so ``state()`` only names the key. A call that does not finish within
    ``timeout`` seconds raises ``TransportError``: no ids are guessed when Redis is down.
    """

    def __init__(self, redis: IncrBy, *, key: str = DEFAULT_REDIS_KEY, timeout: float = 5.0) -> None:
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

        client: IncrBy = redis.asyncio.Redis.from_url(url)
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
        if top - count < 0:  # the key was set below zero: ids are positive integers
            raise ValueError(f"Redis key {self.key!r} held {top - count}, below zero; variable ids start at 1")
        return range(top - count + 1, top + 1)

    def state(self) -> dict[str, Any]:
        return {"kind": "redis", "key": self.key}


def allocator_from_state(state: dict[str, Any], *, redis: IncrBy | None = None) -> IdAllocator:
    """The allocator a snapshot describes; a Redis one needs the ``redis`` client to use."""
    kind = state.get("kind")
    if kind == "local":
        return LocalIdAllocator(state["base"], next_id=state["next"], end=state["end"])
    if kind == "redis":
        if redis is None:
            raise ValueError("this job allocated its ids through Redis: pass the redis client to resume it")
        return RedisIdAllocator(redis, key=state["key"])
    raise ValueError(f"unknown id allocator state {kind!r}")
