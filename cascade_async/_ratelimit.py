"""Client-side rate limits: one interface, a local limiter here, a shared one in ``_shared_limit``.

Every request takes one token from a bucket before it leaves (and, with ``messages_per_second``, its messages
from a second one). Both limiters share three rules:

- **Interactive before bulk.** Interactive acquisitions are served before waiting bulk ones, and bulk ones
  leave ``interactive_reserve`` tokens in the bucket that only interactive traffic may spend.
- **A 429 pauses the account**, not one batch: ``penalize(retry_after)`` holds every acquisition until the
  pause ends, then lets the bucket refill from empty.
- **Adaptive rate.** A 429 outside a pause lowers the rate to 70 % of what it was (never below 10 % of the
  configured rate); after the pause it climbs back linearly, 5 % of the configured rate per second, so one
  lowering is undone in six seconds. botocore's adaptive mode does the same with a cubic curve; a straight
  line is easier to reason about and to reproduce in the shared limiter's Lua script.

The buckets are token buckets that may go into debt, on the event loop's clock: at a fixed rate the same as
GCRA, and the same arithmetic the shared limiter runs in Redis. aiolimiter, used before, cannot serve
priorities, keep a reserve, pause, change its rate or show its state before committing, all of which the
rules above need; our bucket is a few lines.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

__all__ = [
    "Limiter",
    "LimiterEvent",
    "LimiterEventHook",
    "Priority",
    "RateLimit",
    "RateLimiter",
    "SharedLimitFallback",
    "SharedLimitRecovered",
    "credential_key",
    "make_limiter",
    "redact_url",
]

LOWER_FACTOR: Final = 0.7  # a 429 outside a pause multiplies the rate by this
FLOOR_FACTOR: Final = 0.1  # never below this share of the configured rate
RECOVERY_PER_SECOND: Final = 0.05  # share of the configured rate regained per second after a pause
BACKOFF_BASE: Final = 1.0  # pause after a 429 without Retry-After, doubled for each one in a row
MAX_PAUSE: Final = 60.0  # no Retry-After, however large, freezes the account longer than this
_EARLY: Final = 1e-6  # timers may fire this early; admitting 1 µs early is harmless


class Priority(enum.StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


class RateLimiter(Protocol):
    """What the engine calls. One ``acquire`` per request (not per message)."""

    async def acquire(self, messages: int, *, priority: Priority) -> None: ...

    def penalize(self, retry_after: float | None) -> None: ...

    def on_success(self) -> None: ...

    async def aclose(self) -> None: ...


_PASSWORD_PARAMS: Final = {"password", "pass", "auth", "token", "secret"}


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: ``redis://:***@host:6379/0``."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        # Everything up to the last "@" is credentials, whatever it holds: a raw password may
        # contain "#", "?" or "/", which would end the host part for urlsplit and expose it.
        userinfo, _, rest = rest.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        if "/" in user or "?" in user or "#" in user:
            user, has_password = "", ":"
        url = f"{scheme}://{user}:***@{rest}" if has_password else f"{scheme}://***@{rest}"
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, has_password, _ = userinfo.partition(":")
            # ``redis://secret@host`` is a password written in the user's place more often than a user name.
            netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k.lower() in _PASSWORD_PARAMS else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable url, redacted>"


def credential_key(secret: str) -> str:
    """The default Redis key for an account: a SHA-256 of the credential, never the credential itself."""
    return "cascade:rl:" + hashlib.sha256(secret.encode()).hexdigest()


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """How fast one client, or every client sharing ``redis_url`` and ``key``, may send.

    The default matches the provider's documented limit for messaging endpoints: 100
    requests per second with a burst of 150. The provider counts requests, not messages;
    ``messages_per_second`` adds a second bucket in messages for accounts with such a cap.

    ``headroom`` (default 1 %) is held back from both rates: requests reach the server with
    a few milliseconds of jitter, and a client sending at exactly the limit would now and then
    show it 101 or 102 requests in some one-second window and earn a 429.

    ``interactive_reserve`` tokens of the request bucket are kept for interactive sends. The
    default, a tenth of the burst (15 of 150), costs bulk traffic nothing in sustained rate and
    15 requests of its initial burst, and lets 15 interactive requests through at once while bulk
    jobs saturate the account; more than that inside one refill is not "interactive" traffic.

    With ``redis_url`` every process and host given the same Redis and ``key`` shares one
    bucket (install ``cascade-async[redis]``). If Redis cannot be reached, each process falls
    back to a local bucket at ``fallback_share`` of the rate (default 1/K, K being the number
    of processes last seen on the key). ``redis_timeout`` bounds every Redis call.

    >>> CascadeClient(api_key=..., rate_limit=RateLimit(requests_per_second=20, burst=20))
    >>> RateLimit(redis_url="redis://:secret@redis:6379/0")
    RateLimit(requests_per_second=100.0, burst=150, redis_url='redis://:***@redis:6379/0', ...)
    """

    requests_per_second: float = 100.0
    burst: int | None = 150
    messages_per_second: float | None = None
    message_burst: int | None = None
    headroom: float = 0.01
    redis_url: str | None = None
    key: str | None = None
    interactive_reserve: int | None = None
    fallback_share: float | None = None
    redis_timeout: float = 0.25

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
        if self.interactive_reserve is not None and not 0 <= self.interactive_reserve < self.request_burst:
            raise ValueError(f"interactive_reserve must be at least 0 and below the burst ({self.request_burst})")
        if self.fallback_share is not None and not 0 < self.fallback_share <= 1:
            raise ValueError("fallback_share must be above 0 and at most 1")
        if self.redis_timeout <= 0:
            raise ValueError("redis_timeout must be positive")
        if self.key is not None and not self.key:
            raise ValueError("key must not be empty")

    @property
    def request_burst(self) -> int:
        return self.burst or max(1, round(self.requests_per_second))

    @property
    def reserve(self) -> int:
        return self.request_burst // 10 if self.interactive_reserve is None else self.interactive_reserve

    def _fields(self) -> Iterator[tuple[str, Any]]:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "redis_url" and value is not None:
                value = redact_url(value)
            yield name, value

    def __repr__(self) -> str:
        return "RateLimit(" + ", ".join(f"{k}={v!r}" for k, v in self._fields()) + ")"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(self._fields())


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
        keep = 1.0 - config.headroom
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


class SharedLimitFallback(msgspec.Struct, frozen=True, kw_only=True):
    """Redis could not be reached: this process limits itself locally at ``share`` of the rate."""

    key: str
    reason: str
    share: float


class SharedLimitRecovered(msgspec.Struct, frozen=True, kw_only=True):
    """Redis answers again: the shared limit is back in force after ``outage`` seconds."""

    key: str
    outage: float


LimiterEvent = SharedLimitFallback | SharedLimitRecovered


class LimiterEventHook(Protocol):
    def __call__(self, event: LimiterEvent, /) -> None: ...


def make_limiter(
    config: RateLimit,
    *,
    batch_size: int,
    credential_hash: str,
    on_event: LimiterEventHook | None = None,
) -> RateLimiter:
    """The limiter ``config`` asks for: shared through Redis when ``redis_url`` is set, else local.

    ``credential_hash`` is the SHA-256 hex digest of the account's credential; it names the default key.
    """
    if config.redis_url is None:
        return Limiter(config, batch_size=batch_size)
    if not re.fullmatch(r"[0-9a-f]{64}", credential_hash):
        raise ValueError("credential_hash must be a SHA-256 hex digest (never the credential itself)")
    from ._shared_limit import SharedLimiter  # imports redis, an optional extra

    key = config.key or "cascade:rl:" + credential_hash
    return SharedLimiter(config, batch_size=batch_size, key=key, on_event=on_event)
