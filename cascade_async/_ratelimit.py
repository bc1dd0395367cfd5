"""Client-side token buckets (aiolimiter), shared by everything one client sends."""

from __future__ import annotations

import asyncio

import msgspec
from aiolimiter import AsyncLimiter

__all__ = ["RateLimit"]


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """How fast one client may send.

    The default matches the provider's documented limit for messaging endpoints: 100
    requests per second with a burst of 150. The provider counts requests, not messages;
    ``messages_per_second`` adds a second bucket in messages for accounts with such a cap.

    ``headroom`` (default 1 %) is held back from both rates: requests reach the server with
    a few milliseconds of jitter, and a client sending at exactly the limit would now and then
    show it 101 or 102 requests in some one-second window and earn a 429.

    >>> CascadeClient(api_key=..., rate_limit=RateLimit(requests_per_second=20, burst=20))
    """

    requests_per_second: float = 100.0
    burst: int | None = 150
    messages_per_second: float | None = None
    message_burst: int | None = None
    headroom: float = 0.01

    def __post_init__(self) -> None:
        if self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.messages_per_second is not None and self.messages_per_second <= 0:
            raise ValueError("messages_per_second must be positive")
        if self.message_burst is not None and self.message_burst < 1:
            raise ValueError("message_burst must be at least 1")
        if not 0 <= self.headroom < 0.5:
            raise ValueError("headroom must be at least 0 and below 0.5")


class Limiter:
    """The buckets of one client. Made per client (aiolimiter binds to its first loop)."""

    def __init__(self, config: RateLimit, *, batch_size: int) -> None:
        # aiolimiter's AsyncLimiter(capacity, period) leaks capacity/period per second and lets
        # the whole capacity through at once: "rate r, burst b" is AsyncLimiter(b, b / r).
        keep = 1.0 - config.headroom
        burst = config.burst or max(1, round(config.requests_per_second))
        self._requests = AsyncLimiter(burst, burst / (config.requests_per_second * keep))
        self._messages: AsyncLimiter | None = None
        if config.messages_per_second is not None:
            capacity = config.message_burst or max(1, round(config.messages_per_second))
            if capacity < batch_size:
                # acquire(n) with n above capacity can never succeed.
                raise ValueError(
                    f"message_burst ({capacity}) must be at least batch_size ({batch_size}): "
                    "a whole batch is taken from the message bucket at once"
                )
            self._messages = AsyncLimiter(capacity, capacity / (config.messages_per_second * keep))
        # aiolimiter wakes the smallest acquire first; a lock keeps large batches from being
        # starved by a stream of small ones (first come, first served).
        self._fifo = asyncio.Lock()

    async def acquire(self, messages: int) -> None:
        if self._messages is not None:
            async with self._fifo:
                await self._messages.acquire(messages)
        await self._requests.acquire()
