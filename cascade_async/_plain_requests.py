"""Requests that are not batches of messages (the status GET, ``/api/items`` uploads), through
the same retry loop, budget and closed-client rule as a batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._errors import APIError, CascadeError, ClientClosedError, RateLimitError, error_from_response
from ._outcomes import Attempts, StopCall
from ._ratelimit import Priority, RateLimiter
from ._redact import secrets_in
from ._sending import STOPPING
from ._statuses import Verdict, classify
from ._transport import RawResponse

if TYPE_CHECKING:
    from ._sending import BatchSender

__all__ = ["post_body", "request_json"]

logger = logging.getLogger("cascade_async")


async def request_json(
    sender: BatchSender,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    limiter: RateLimiter | None = None,
    priority: Priority = Priority.BULK,
    errors: Mapping[int, type[APIError]] | None = None,
) -> RawResponse:
    """Any request that is not a batch (the status GET), with the same retry loop and budget.

    ``limiter`` (its own bucket, not the send one) is taken once per attempt; ``errors`` maps
    a status to the ``APIError`` class it means on this route (404 on the status host is
    ``MessageNotFoundError``), in place of the send routes' reading. Returns the 2xx answer
    or raises its ``CascadeError``.
    """
    request = getattr(sender.transport, "request", None)
    if request is None:
        raise TypeError(f"{type(sender.transport).__name__} has no request(method, url, headers, body) method")
    loop = asyncio.get_running_loop()
    secrets = secrets_in(headers)
    state = Attempts()
    _, retrying = sender.retry_loop(lambda rs: logger.debug("retrying %s %s: %s", method, url, rs.outcome), state)
    async for attempt in retrying:
        with attempt:
            if limiter is not None:
                await limiter.acquire(1, priority=priority)
            if sender.closed:
                raise ClientClosedError("the client is closed; nothing more is sent")
            if state.started is None:
                state.started = loop.time()  # the deadline counts after the limiter
            state.count += 1
            raw: RawResponse = await request(method, url, headers, body)
            known = (errors or {}).get(raw.status)
            if known is not None:
                generic = error_from_response(raw.status, raw.headers, raw.body, secrets=secrets)
                raise known(str(generic.message), status=raw.status, code=generic.code, body=generic.body)
            if classify(raw.status) is not Verdict.OK:
                exc = error_from_response(raw.status, raw.headers, raw.body, secrets=secrets)
                if limiter is not None and isinstance(exc, RateLimitError):
                    limiter.penalize(exc.retry_after)
                raise exc
            if limiter is not None:
                limiter.on_success()
            sender.budget.refund()
            return raw
    raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover


async def post_body(sender: BatchSender, path: str, body: bytes) -> RawResponse:
    """POST ``body`` to ``base_url + path`` through the limiter, with the same retry loop and
    budget as a batch (``/api/items`` uploads): the 2xx answer, or raise the last
    ``CascadeError`` (``StopCall`` for wrong credentials or a wrong endpoint)."""
    url = sender.base_url + path
    state = Attempts()
    stop, retrying = sender.retry_loop(lambda rs: logger.debug("retrying POST %s after %s", path, rs.outcome), state)
    try:
        async for attempt in retrying:
            with attempt:
                if sender.limiter is not None:
                    await sender.limiter.acquire(0, priority=Priority.BULK)  # one request, no messages
                if sender.closed:
                    raise ClientClosedError("the client is closed; nothing more is sent")
                if state.started is None:  # the deadline counts from after the limiter
                    state.started = asyncio.get_running_loop().time()
                state.count += 1
                raw = await sender.transport(url, sender.headers, body)
                if (error := sender.answered(raw, path)) is not None:
                    raise error
    except STOPPING as exc:
        raise StopCall(exc) from exc
    except CascadeError as exc:
        exc.gave_up = stop.reason
        raise
    sender.budget.refund()
    return raw
