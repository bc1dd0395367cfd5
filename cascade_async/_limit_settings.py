"""Rate-limit settings and the interface every limiter offers: ``RateLimit``, ``Priority``, ``RateLimiter``.

Also what must never leak a secret: ``redact_url`` for Redis URLs, ``credential_key`` for the shared key, and
the events a shared limiter emits when Redis goes away and comes back.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterator
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

__all__ = [
    "LimiterEvent",
    "LimiterEventHook",
    "Priority",
    "RateLimit",
    "RateLimiter",
    "SharedLimitFallback",
    "SharedLimitRecovered",
    "credential_key",
    "redact_url",
]


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

    ``headroom`` is held back from both rates: requests reach the server with some jitter, and
    a client sending at exactly the limit would now and then show it 101 or 102 requests in
    some one-second window and earn a 429. The default is 1 % for one process, and 2 % for a
    shared limit, whose requests come from many processes and hosts with more jitter between
    them (measured in the README's "Many processes, one account").

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
    headroom: float | None = None
    redis_url: str | None = None
    key: str | None = None
    interactive_reserve: int | None = None
    fallback_share: float | None = None
    redis_timeout: float = 0.25

    def __post_init__(self) -> None:
        # Written so that NaN and infinity fail them too (NaN compares false with everything).
        if not 0 < self.requests_per_second < math.inf:
            raise ValueError("requests_per_second must be positive and finite")
        if self.burst is not None and not 1 <= self.burst < math.inf:
            raise ValueError("burst must be at least 1 and finite")
        if self.messages_per_second is not None and not 0 < self.messages_per_second < math.inf:
            raise ValueError("messages_per_second must be positive and finite")
        if self.message_burst is not None and not 1 <= self.message_burst < math.inf:
            raise ValueError("message_burst must be at least 1 and finite")
        if self.headroom is not None and not 0 <= self.headroom < 0.5:
            raise ValueError("headroom must be at least 0 and below 0.5")
        if self.interactive_reserve is not None and not 0 <= self.interactive_reserve < self.request_burst:
            raise ValueError(f"interactive_reserve must be at least 0 and below the burst ({self.request_burst})")
        if self.fallback_share is not None and not 0 < self.fallback_share <= 1:
            raise ValueError("fallback_share must be above 0 and at most 1")
        if not 0 < self.redis_timeout < math.inf:
            raise ValueError("redis_timeout must be positive")
        if self.key is not None and not self.key:
            raise ValueError("key must not be empty")

    @property
    def held_back(self) -> float:
        """The share of each rate held back: ``headroom``, or its default for this limit."""
        if self.headroom is not None:
            return self.headroom
        return 0.02 if self.redis_url else 0.01

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
