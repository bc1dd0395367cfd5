"""The local limiter: the buckets of one client, in one process, on the event loop's clock.

The buckets are token buckets that may go into debt: at a fixed rate the same as GCRA. aiolimiter, used
before, cannot serve priorities, keep a reserve, pause, change its rate or show its state before committing,
all of which the rules in ``_ratelimit`` need; our bucket is a few lines.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Final

from ._limit_settings import Priority, RateLimit

__all__ = ["Adaptive", "Bucket", "Limiter", "pause_for"]

LOWER_FACTOR: Final = 0.7  # a 429 outside a pause multiplies the rate by this
FLOOR_FACTOR: Final = 0.1  # never below this share of the configured rate
RECOVERY_PER_SECOND: Final = 0.05  # share of the configured rate regained per second after a pause
BACKOFF_BASE: Final = 1.0  # pause after a 429 without Retry-After, doubled for each one in a row
MAX_PAUSE: Final = 60.0  # no Retry-After, however large, freezes the account longer than this
_EARLY: Final = 1e-6  # timers may fire this early; admitting 1 µs early is harmless


def pause_for(retry_after: float | None, streak: int) -> float:
    """How long a 429 pauses the account: ``Retry-After``, else a doubling backoff; at most MAX_PAUSE."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_PAUSE)
    return min(BACKOFF_BASE * 2.0**streak, MAX_PAUSE)


class Adaptive:
    """The adaptive share of the configured rate, and the account pause, on some clock."""

    __slots__ = ("lowered_to", "paused_until", "recover_from", "streak")

    def __init__(self) -> None:
        self.lowered_to = 1.0
        self.recover_from = -math.inf
        self.paused_until = -math.inf
        self.streak = 0

    def factor(self, now: float) -> float:
        return min(1.0, self.lowered_to + RECOVERY_PER_SECOND * max(0.0, now - self.recover_from))

    def penalize(self, now: float, retry_after: float | None) -> float:
        """Record a 429 at ``now``; return the end of the pause."""
        # 429s answered during a pause were sent before it: they lower the rate and lengthen the backoff
        # once, not each (eight batches in flight would otherwise pause the account for 2 ** 8 seconds).
        outside = now >= self.paused_until
        until = now + pause_for(retry_after, self.streak if outside else max(0, self.streak - 1))
        if outside:
            self.streak += 1
            self.lowered_to = max(FLOOR_FACTOR, self.factor(now) * LOWER_FACTOR)
            self.recover_from = until
        self.paused_until = max(self.paused_until, until)
        return self.paused_until


class Bucket:
    """A token bucket that may go into debt: ``level`` tokens at loop time ``at``, refilled at the rate in force.

    (GCRA's single timestamp is the same bucket at a fixed rate; with an adaptive rate, a level is easier to
    keep right.)
    """

    __slots__ = ("at", "burst", "level", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.level = float(burst)
        self.at = -math.inf

    def _level(self, now: float, factor: float) -> float:
        if now <= self.at:
            return self.level
        return min(float(self.burst), self.level + (now - self.at) * self.rate * factor)

    def ready_at(self, cost: int, now: float, factor: float, keep: int = 0) -> float:
        """When ``cost`` tokens can be taken leaving ``keep`` behind."""
        short = cost + keep - self._level(now, factor)
        return now if short <= 0 else now + short / (self.rate * factor)

    def take(self, cost: int, now: float, factor: float) -> None:
        self.level = self._level(now, factor) - cost
        self.at = now

    def empty_at(self, now: float, until: float, factor: float) -> None:
        """Hold every token until ``until``; then one request may go, and the bucket refills from there."""
        self.level = min(self._level(now, factor), 1.0 - (until - now) * self.rate * factor)
        self.at = now


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()  # the default loop's clock


class Limiter:
    """The local limiter: the buckets of one client, in one process.

    >>> limiter = Limiter(RateLimit(requests_per_second=10, burst=10), batch_size=100)
    >>> await limiter.acquire(100, priority=Priority.INTERACTIVE)
    """

    def __init__(self, config: RateLimit, *, batch_size: int) -> None:
        keep = 1.0 - config.held_back
        self._requests = Bucket(config.requests_per_second * keep, config.request_burst)
        self._reserve = config.reserve
        self._messages: Bucket | None = None
        if config.messages_per_second is not None:
            capacity = config.message_burst or max(1, round(config.messages_per_second))
            if capacity < batch_size:
                # a batch larger than the bucket could never be admitted.
                raise ValueError(
                    f"message_burst ({capacity}) must be at least batch_size ({batch_size}): "
                    "a whole batch is taken from the message bucket at once"
                )
            self._messages = Bucket(config.messages_per_second * keep, capacity)
        self._adaptive = Adaptive()
        # Waiters in arrival order, one queue per priority; futures resolved by _dispatch.
        self._queues: dict[Priority, deque[tuple[int, asyncio.Future[None]]]] = {p: deque() for p in Priority}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def factor(self) -> float:
        """The share of the configured rate in force now (below 1 after 429s)."""
        return self._adaptive.factor(_now())

    def _ready_at(self, messages: int, priority: Priority, now: float) -> float:
        factor = self._adaptive.factor(now)
        keep = 0 if priority is Priority.INTERACTIVE else self._reserve
        at = self._requests.ready_at(1, now, factor, keep)
        if self._messages is not None:
            at = max(at, self._messages.ready_at(messages, now, factor))
        return at

    def _take(self, messages: int, now: float) -> None:
        factor = self._adaptive.factor(now)
        self._requests.take(1, now, factor)
        if self._messages is not None:
            self._messages.take(messages, now, factor)

    def _queued_ahead(self, priority: Priority) -> bool:
        if priority is Priority.INTERACTIVE:
            return bool(self._queues[Priority.INTERACTIVE])
        return any(self._queues.values())

    async def acquire(self, messages: int, *, priority: Priority = Priority.BULK) -> None:
        now = _now()
        if not self._queued_ahead(priority) and self._ready_at(messages, priority, now) <= now + _EARLY:
            self._take(messages, now)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[priority].append((messages, waiter))
        self._dispatch()
        try:
            await waiter
        finally:
            if waiter.cancelled():
                self._dispatch()  # the next waiter may be the head now

    def _dispatch(self) -> None:
        """Admit every waiter that can go now, in priority order; arm one timer for the next."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for priority in (Priority.INTERACTIVE, Priority.BULK):
            queue = self._queues[priority]
            while queue:
                messages, waiter = queue[0]
                if waiter.done():  # cancelled while queued
                    queue.popleft()
                    continue
                at = self._ready_at(messages, priority, now)
                if at > now + _EARLY:
                    self._timer = loop.call_at(at, self._dispatch)
                    return  # bulk waits behind a waiting interactive head too
                self._take(messages, now)
                queue.popleft()
                waiter.set_result(None)

    def penalize(self, retry_after: float | None) -> None:
        now = _now()
        until = self._adaptive.penalize(now, retry_after)
        self._requests.empty_at(now, until, self._adaptive.factor(now))
        if any(self._queues.values()):
            self._dispatch()

    def on_success(self) -> None:
        self._adaptive.streak = 0

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
