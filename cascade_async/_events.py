"""Typed events for observability hooks.

>>> def hook(event: Event) -> None:
...     if isinstance(event, RetryScheduled):
...         print(f"retrying {event.size} messages in {event.delay:.1f}s: {event.reason}")
>>> client = CascadeClient(api_key=..., on_event=hook)

Hooks run inline on the event loop: keep them quick. An exception in a hook is logged and
otherwise ignored, so observability can never cost a message its delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import msgspec

from ._errors import CascadeError
from ._models import Result, Route
from ._ratelimit import SharedLimitFallback, SharedLimitRecovered

__all__ = ["BatchCompleted", "BatchSent", "Event", "EventHook", "RetryScheduled"]

logger = logging.getLogger("cascade_async")


class BatchSent(msgspec.Struct, frozen=True, kw_only=True):
    """One HTTP attempt for a batch finished (with an answer or an error)."""

    route: Route
    size: int
    attempt: int
    status: int | None  # the HTTP status; None when no answer came back
    elapsed: float  # seconds, the request alone (rate-limit waits excluded)
    error: CascadeError | None = None  # what the attempt failed with, when no answer came back


class RetryScheduled(msgspec.Struct, frozen=True, kw_only=True):
    """A batch will be tried again after ``delay`` seconds."""

    route: Route
    size: int
    attempt: int  # the attempt that failed
    delay: float
    error: CascadeError  # what the attempt failed with

    @property
    def reason(self) -> str:
        return str(self.error)


class BatchCompleted(msgspec.Struct, frozen=True, kw_only=True):
    """A batch's messages reached their final results (one per message)."""

    route: Route
    results: Sequence[Result]


#: ``SharedLimitFallback`` and ``SharedLimitRecovered`` come from a shared rate limit (``RateLimit(redis_url=...)``).
Event = BatchSent | RetryScheduled | BatchCompleted | SharedLimitFallback | SharedLimitRecovered


class EventHook(Protocol):
    def __call__(self, event: Event, /) -> None: ...


def emit(hook: EventHook | None, event: Event) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("event hook raised; ignored")
