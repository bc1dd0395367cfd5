"""Client-side rate limits: one interface (``_limit_settings``), a local limiter (``_local_limit``) and a shared
one (``_shared_limit``), and ``make_limiter`` to pick one.

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
"""

from __future__ import annotations

import re

from ._limit_settings import (
    LimiterEvent,
    LimiterEventHook,
    Priority,
    RateLimit,
    RateLimiter,
    SharedLimitFallback,
    SharedLimitRecovered,
    credential_key,
    redact_url,
)
from ._local_limit import (
    BACKOFF_BASE,
    FLOOR_FACTOR,
    LOWER_FACTOR,
    MAX_PAUSE,
    RECOVERY_PER_SECOND,
    Adaptive,
    Bucket,
    Limiter,
    pause_for,
)

__all__ = [
    "BACKOFF_BASE",
    "FLOOR_FACTOR",
    "LOWER_FACTOR",
    "MAX_PAUSE",
    "RECOVERY_PER_SECOND",
    "Adaptive",
    "Bucket",
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
    "pause_for",
    "redact_url",
]


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
