"""Sending one batch: the rate limiter, one POST per attempt, and tenacity's retry loop.

A 429 is back-pressure, not a failure: the attempt tells the limiter (``penalize``, which
pauses the whole account), acquires again and resends, without counting an attempt and
before tenacity sees anything, for as long as the batch deadline allows. Without a rate
limiter (``rate_limit=None``) a 429 is an ordinary retryable failure.

``BatchSender.deliver`` turns a batch into exactly one ``Result`` per message. It raises
only what stops the whole call (``StopCall``: wrong credentials, a wrong endpoint, a closed
client, a journal that cannot write) or cancellation; every other failure becomes results.
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
    CascadeError,
    ClientClosedError,
    EndpointError,
    RateLimitError,
    error_from_response,
)
from ._events import BatchSent, EventHook, RetryScheduled, emit
from ._models import Message, Result, Route
from ._outcomes import (
    Attempts,
    Failed,
    Recorder,
    Sending,
    StopCall,
    certainly_not_sent,
    not_sent_hook,
    record,
    record_quietly,
)
from ._ratelimit import Priority, RateLimiter
from ._redact import secrets_in
from ._retry import RetryBudget, RetryPolicy, Stop, Wait, retry_on, should_retry
from ._statuses import Verdict, classify
from ._transport import RawResponse, Transport
from ._wire import encode_batch, results_from_acks

logger = logging.getLogger("cascade_async")


#: Errors about the endpoint or the client, never about the messages.
STOPPING = (AuthenticationError, EndpointError)


class BatchSender:
    def __init__(
        self,
        *,
        transport: Transport,
        base_url: str,
        headers: Mapping[str, str],
        limiter: RateLimiter | None,
        policy: RetryPolicy,
        on_event: EventHook | None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self._urls = {route: base_url + route.value for route in Route}
        self.base_url = base_url
        self.headers = dict(headers)
        self.secrets = secrets_in(headers)  # hidden wherever an answer echoes them
        self.limiter = limiter
        self.policy = policy
        self.budget = RetryBudget(policy)
        self._hook = on_event
        self._rng = rng or random.Random()
        #: Set by the client's ``aclose``: no request leaves after it.
        self.closed = False
        #: The wrong-endpoint or credentials error that stopped a call: every request of this
        #: client (one URL, one set of credentials) meets it, those in flight with it included.
        self.stopped_by: CascadeError | None = None

    async def post(
        self, batch: Sequence[Message], body: bytes, route: Route, attempt: int, priority: Priority = Priority.BULK
    ) -> list[Result]:
        """One rate-limited POST: the results of a 2xx, or the ``CascadeError`` of anything else."""
        await self._acquire(batch, priority)
        return await self._request(batch, body, route, attempt)

    async def _acquire(self, batch: Sequence[Message], priority: Priority) -> None:
        if self.limiter is not None:
            await self.limiter.acquire(len(batch), priority=priority)
        if self.closed:
            raise ClientClosedError("the client is closed; nothing more is sent")

    async def _request(self, batch: Sequence[Message], body: bytes, route: Route, attempt: int) -> list[Result]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            raw = await self.transport(self._urls[route], self.headers, body)
        except CascadeError as exc:
            self._emit_sent(route, batch, attempt, loop.time() - started, None, exc)
            raise
        self._emit_sent(route, batch, attempt, loop.time() - started, raw.status, None)
        error = self.answered(raw, route.value)
        if error is not None:
            raise error
        return results_from_acks(batch, raw.body, attempts=attempt)

    def answered(self, raw: RawResponse, route: str) -> APIError | None:
        """The error of a non-2xx answer, or None; every answer teaches the limiter (a 429 pauses the
        account, any other resets its backoff)."""
        error = None
        if classify(raw.status) is not Verdict.OK:
            error = error_from_response(raw.status, raw.headers, raw.body, route=route, secrets=self.secrets)
        if self.limiter is not None:
            if isinstance(error, RateLimitError):
                self.limiter.penalize(error.retry_after)
            else:
                self.limiter.on_success()
        return error

    def _emit_sent(
        self,
        route: Route,
        batch: Sequence[Message],
        attempt: int,
        elapsed: float,
        status: int | None,
        error: CascadeError | None,
    ) -> None:
        if self._hook is not None:
            event = BatchSent(
                route=route, size=len(batch), attempt=attempt, status=status, elapsed=elapsed, error=error
            )
            emit(self._hook, event)

    async def send(
        self,
        batch: Sequence[Message],
        route: Route,
        recorder: Recorder | None = None,
        attempts: Attempts | None = None,
        *,
        alive: Callable[[int], bool] | None = None,
        body: bytes | None = None,
        max_requests: int | None = None,
        priority: Priority = Priority.BULK,
    ) -> list[Result] | Failed:
        """One batch of unique ids with retries: its results (in ``batch`` order), or its last failure.

        ``alive``, given, says per position whether a message is still wanted. It is asked after
        the rate limiter, before every attempt, so a message whose caller gave up (cancelled, or
        past ``send_timeout``) never leaves after that; its position gets a FAILED result that
        nobody reads. ``max_requests`` caps the attempts (isolation's budget). A 429 within the
        batch deadline is handled inside the attempt (see the module's docstring).
        """
        state = attempts or Attempts()
        sending = Sending(batch, body or encode_batch(batch))
        base = state.count
        stop = Stop(self.policy, self.budget, asyncio.get_running_loop().time, state, max_requests, base)
        wait = Wait(self.policy, self._rng, state, base)
        try:
            try:
                # The fast path, the one place the loop is bypassed: the first attempt runs bare.
                # Nearly every batch succeeds at once, and tenacity's loop costs about 40 µs and
                # dozens of GC-tracked objects per batch, enough to make the collector run ten
                # times as often in a bulk job (benchmarks/README.md). A failure is judged by the
                # loop's own functions (``_first_retry``), then the loop makes the next attempts.
                answer = await self._throttled(sending, route, state, recorder, priority, alive)
            except CascadeError as exc:
                await asyncio.sleep(self._first_retry(exc, stop, wait, route, len(batch), base, state))
                retrying = self._retrying(lambda rs: self._before_sleep(rs, route, len(batch), base, state), stop, wait)
                async for attempt in retrying:
                    with attempt:
                        answer = await self._throttled(sending, route, state, recorder, priority, alive)
        except STOPPING as exc:
            self.stopped_by = exc
            raise StopCall(exc) from exc
        except CascadeError as exc:
            state.gave_up = stop.reason
            if stop.reason is not None:
                logger.debug("not retrying %d message(s) after %s: %s", len(batch), exc, stop.reason)
            return Failed(exc, state)
        if answer is None:
            return sending.abandoned()
        self.budget.refund()
        return sending.spread(answer)

    def _first_retry(
        self, exc: CascadeError, stop: Stop, wait: Wait, route: Route, size: int, base: int, state: Attempts
    ) -> float:
        """After the bare first attempt failed: tenacity's own questions (retry? how long? stop?),
        asked of the same functions in the same order; re-raises ``exc`` when it is final."""
        if not should_retry(exc, self.policy):
            raise exc
        delay = wait.before_retry(exc)
        if stop.check(exc, delay):
            raise exc
        self._announce_retry(route, size, state.count - base, delay, exc)
        return delay

    def _retrying(
        self, before_sleep: Callable[[tenacity.RetryCallState], None], stop: Stop, wait: Wait
    ) -> tenacity.AsyncRetrying:
        # A fresh AsyncRetrying per call: tenacity keeps per-call state on the instance.
        return tenacity.AsyncRetrying(
            retry=retry_on(self.policy),
            wait=wait,
            stop=stop,
            before_sleep=before_sleep,
            sleep=asyncio.sleep,
            reraise=True,
        )

    def retry_loop(
        self, before_sleep: Callable[[tenacity.RetryCallState], None], state: Attempts
    ) -> tuple[Stop, tenacity.AsyncRetrying]:
        """The retry loop of a request that is not a batch: every attempt inside it."""
        stop = Stop(self.policy, self.budget, asyncio.get_running_loop().time, state)
        return stop, self._retrying(before_sleep, stop, Wait(self.policy, self._rng, state))

    async def _throttled(
        self,
        sending: Sending,
        route: Route,
        state: Attempts,
        recorder: Recorder | None,
        priority: Priority,
        alive: Callable[[int], bool] | None,
    ) -> list[Result] | None:
        """One attempt after the limiter; a 429 the batch deadline allows to wait out is not an attempt:
        the limiter was told (``_answered``), so acquire again and resend. None: nobody wants the batch."""
        while True:
            await self._acquire(sending.messages, priority)
            if alive is not None and not sending.keep(alive):
                return None
            try:
                return await self._attempt(sending.messages, sending.body, route, state, recorder)
            except RateLimitError as exc:
                if not self._is_back_pressure(exc, state):
                    raise
                state.count -= 1  # the recorder heard not_sent; the next attempt is dispatched again
                logger.debug("429 for %d message(s): sent again after the limiter's pause", len(sending.messages))

    def _is_back_pressure(self, exc: RateLimitError, state: Attempts) -> bool:
        """A 429 goes to the limiter, not the retry loop, while its pause ends within the batch deadline."""
        if self.limiter is None or state.started is None:
            return False
        pause = min(exc.retry_after or 0.0, self.policy.max_retry_after)
        return asyncio.get_running_loop().time() + pause < state.started + self.policy.deadline

    async def _attempt(
        self, batch: Sequence[Message], body: bytes, route: Route, state: Attempts, recorder: Recorder | None
    ) -> list[Result]:
        if recorder is not None:
            # "pending" in the journal means the request is about to leave: after the limiter.
            record(recorder.dispatched, batch)
        state.count += 1
        if state.started is None:
            state.started = asyncio.get_running_loop().time()
        before = state.leaving()
        stopped_before = self.stopped_by
        try:
            return await self._request(batch, body, route, state.count)
        except asyncio.CancelledError:
            stopped = self.stopped_by
            if recorder is not None and not state.unknown and stopped is not None and stopped is not stopped_before:
                # Cancelled because another batch met a wrong endpoint while this one was out: so did this
                # one. (A stop met before it left, by an earlier call of the client, says nothing of it.)
                record_quietly(not_sent_hook(recorder, stopped), batch)
            raise
        except CascadeError as exc:
            if exc.outcome_unknown:
                state.unknown = True
            elif not state.unknown and certainly_not_sent(exc):
                state.not_taken(before)
                if recorder is not None:
                    record(not_sent_hook(recorder, exc), batch)
            raise

    def _before_sleep(
        self, retry_state: tenacity.RetryCallState, route: Route, size: int, base: int, state: Attempts
    ) -> None:
        assert retry_state.outcome is not None
        exc = retry_state.outcome.exception()
        assert isinstance(exc, CascadeError)
        self._announce_retry(route, size, state.count - base, retry_state.upcoming_sleep, exc)

    def _announce_retry(self, route: Route, size: int, attempt: int, delay: float, exc: CascadeError) -> None:
        logger.debug("retrying %d message(s) in %.3fs after attempt %d: %s", size, delay, attempt, exc)
        emit(self._hook, RetryScheduled(route=route, size=size, attempt=attempt, delay=delay, error=exc))
