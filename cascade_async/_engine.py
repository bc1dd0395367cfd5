"""Delivering one batch: rate limit, POST, retries with backoff, and bisection of 400s.

``BatchSender.deliver`` turns a batch into exactly one ``Result`` per message and raises
only ``AuthenticationError`` (every later batch would fail the same way) or cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence

import tenacity

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CascadeError,
    ProtocolError,
    TransportError,
    ValidationError,
    error_from_response,
)
from ._events import BatchSent, EventHook, RetryScheduled, emit
from ._models import Message, Result, Route, Status, failure
from ._ratelimit import Limiter
from ._retry import RetryBudget, RetryPolicy, is_retryable, wait_before_retry
from ._transport import Transport
from ._wire import encode_batch, results_from_acks

logger = logging.getLogger("cascade_async")

OnSend = Callable[[Sequence[Message]], None]

# Statuses whose batch is split in halves to find the messages at fault.
SPLIT_STATUSES = frozenset({400, 413, 422})


class BatchSender:
    def __init__(
        self,
        *,
        transport: Transport,
        base_url: str,
        headers: Mapping[str, str],
        limiter: Limiter | None,
        policy: RetryPolicy,
        isolate_bad_messages: bool,
        max_batch_bytes: int,
        on_event: EventHook | None,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self._urls = {route: base_url + route.value for route in Route}
        self._headers = dict(headers)
        self._limiter = limiter
        self.policy = policy
        self.budget = RetryBudget(policy)
        self._isolate = isolate_bad_messages
        self._max_bytes = max_batch_bytes
        self._hook = on_event
        self._rng = rng or random.Random()

    async def post(
        self, batch: Sequence[Message], body: bytes, route: Route, attempt: int, on_send: OnSend | None = None
    ) -> list[Result]:
        """One rate-limited POST. Returns the results of a 200; raises a ``CascadeError`` else.

        ``on_send`` is called once the rate limiter lets the request go, just before it leaves.
        """
        if self._limiter is not None:
            await self._limiter.acquire(len(batch))
        if on_send is not None:
            on_send(batch)
        started = asyncio.get_running_loop().time()
        try:
            raw = await self._transport(self._urls[route], self._headers, body)
        except CascadeError as exc:
            self._sent(route, batch, attempt, started, None, exc)
            raise
        self._sent(route, batch, attempt, started, raw.status, None)
        if raw.status != 200:
            raise error_from_response(raw.status, raw.headers, raw.body, route=route.value)
        return results_from_acks(batch, raw.body, attempts=attempt)

    def _sent(
        self,
        route: Route,
        batch: Sequence[Message],
        attempt: int,
        started: float,
        status: int | None,
        error: CascadeError | None,
    ) -> None:
        if self._hook is not None:
            elapsed = asyncio.get_running_loop().time() - started
            emit(
                self._hook,
                BatchSent(
                    route=route,
                    size=len(batch),
                    attempt=attempt,
                    status=status,
                    elapsed=elapsed,
                    error=None if error is None else str(error),
                ),
            )

    async def deliver_repeats(
        self, batch: Sequence[Message], route: Route, on_send: OnSend | None = None
    ) -> list[Result]:
        """Like ``deliver``, for a batch that may repeat a tracking id: every occurrence is sent.

        One request can hold an id once (answers are matched by id), so repeats go in
        follow-up requests. Results come back in ``batch`` order.
        """
        if len({m.id for m in batch}) == len(batch):  # the usual case, checked in C
            return await self.deliver(batch, route, on_send=on_send)
        firsts: dict[str, int] = {}
        repeats: list[int] = []
        for i, m in enumerate(batch):
            if firsts.setdefault(m.id, i) != i:
                repeats.append(i)
        results: list[Result | None] = [None] * len(batch)
        firsts_batch = [batch[i] for i in firsts.values()]
        for i, r in zip(firsts.values(), await self.deliver(firsts_batch, route, on_send=on_send), strict=True):
            results[i] = r
        repeats_batch = [batch[i] for i in repeats]
        for i, r in zip(repeats, await self.deliver_repeats(repeats_batch, route, on_send), strict=True):
            results[i] = r
        return results  # type: ignore[return-value]  # every slot is filled above

    async def deliver(
        self,
        batch: Sequence[Message],
        route: Route,
        prior_attempts: int = 0,
        maybe_sent: bool = False,
        *,
        on_send: OnSend | None = None,
    ) -> list[Result]:
        """Exactly one Result per message of ``batch``, in its order.

        ``maybe_sent`` says an earlier request with these messages may have been accepted
        although no answer said so; then no failure of theirs is reported as certain.
        ``on_send`` is told of the messages once, before the first request with them leaves.
        """
        body = encode_batch(batch)
        if len(body) > self._max_bytes:
            return await self._deliver_oversized(batch, body, route, prior_attempts, on_send)
        attempts = 0
        first_failure: CascadeError | None = None

        async def attempt_once() -> list[Result]:
            nonlocal attempts, maybe_sent, first_failure
            if first_failure is not None:
                # Replays the first attempt's failure, so tenacity decides on it like any other.
                exc, first_failure = first_failure, None
                raise exc
            attempts += 1
            try:
                return await self.post(
                    batch, body, route, prior_attempts + attempts, on_send if attempts == 1 else None
                )
            except CascadeError as exc:
                maybe_sent = maybe_sent or exc.outcome_unknown
                raise

        try:
            try:
                # The happy path skips tenacity: its machinery is only worth paying for on a failure.
                results: list[Result] = await attempt_once()
            except CascadeError as exc:
                if isinstance(exc, AuthenticationError):
                    raise
                first_failure = exc
                results = await self._retrying(batch, route)(attempt_once)
        except AuthenticationError:
            raise
        except CascadeError as exc:
            total = prior_attempts + attempts
            if self._isolate and len(batch) > 1 and isinstance(exc, BadRequestError) and exc.status in SPLIT_STATUSES:
                logger.debug("HTTP %d for a batch of %d: splitting to isolate the bad messages", exc.status, len(batch))
                half = len(batch) // 2
                return await self.deliver(batch[:half], route, total, maybe_sent) + await self.deliver(
                    batch[half:], route, total, maybe_sent
                )
            # A later clear failure does not undo an earlier attempt that may have got through.
            exc.outcome_unknown = exc.outcome_unknown or maybe_sent
            status = Status.REJECTED if _is_permanent(exc) else Status.FAILED
            return [failure(m.id, status, exc, total) for m in batch]
        self.budget.refund()
        return results

    async def _deliver_oversized(
        self, batch: Sequence[Message], body: bytes, route: Route, prior_attempts: int, on_send: OnSend | None
    ) -> list[Result]:
        if len(batch) == 1:
            m = batch[0]
            err = ValidationError(
                f"encodes to {len(body)} bytes, above max_batch_bytes={self._max_bytes}",
                field=None,
                tracking_id=m.id,
                code="MESSAGE_TOO_LARGE",
            )
            return [failure(m.id, Status.REJECTED, err, prior_attempts)]
        # Split in proportion to the overshoot; each part is checked again.
        parts = min(len(batch), -(-len(body) // self._max_bytes))
        step = -(-len(batch) // parts)
        out: list[Result] = []
        for i in range(0, len(batch), step):
            out += await self.deliver(batch[i : i + step], route, prior_attempts, on_send=on_send)
        return out

    def _retrying(self, batch: Sequence[Message], route: Route) -> tenacity.AsyncRetrying:
        # A fresh AsyncRetrying per batch: tenacity keeps per-call state on the instance.
        policy = self.policy
        budget = self.budget
        rng = self._rng
        hook = self._hook
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.deadline

        def wait(state: tenacity.RetryCallState) -> float:
            exc = _outcome_error(state)
            return wait_before_retry(policy, exc, state.attempt_number, rng)

        def stop(state: tenacity.RetryCallState) -> bool:
            exc = _outcome_error(state)
            reason = None
            if state.attempt_number >= policy.max_attempts:
                reason = f"gave up after {state.attempt_number} attempts"
            elif loop.time() + (state.upcoming_sleep or 0.0) > deadline:
                reason = f"the batch deadline of {policy.deadline:g}s would pass"
            elif not budget.try_spend(exc):
                reason = "retry budget exhausted (too many recent failures)"
            if reason is not None:
                exc.gave_up = reason
                logger.debug("not retrying %d message(s) after %s: %s", len(batch), exc, reason)
                return True
            return False

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = _outcome_error(state)
            delay = state.upcoming_sleep or 0.0
            logger.debug(
                "retrying %d message(s) in %.3fs after attempt %d: %s", len(batch), delay, state.attempt_number, exc
            )
            emit(
                hook,
                RetryScheduled(
                    route=route, size=len(batch), attempt=state.attempt_number, delay=delay, reason=str(exc)
                ),
            )

        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(lambda exc: is_retryable(exc, policy)),
            wait=wait,
            stop=stop,
            before_sleep=before_sleep,
            sleep=asyncio.sleep,
            reraise=True,
        )


def _outcome_error(state: tenacity.RetryCallState) -> CascadeError:
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert isinstance(exc, CascadeError)
    return exc


def _is_permanent(exc: CascadeError) -> bool:
    if isinstance(exc, ValidationError):
        return True
    if isinstance(exc, APIError):
        return 400 <= exc.status < 500 and exc.status != 429
    return not isinstance(exc, (TransportError, ProtocolError))
