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
from operator import attrgetter
from typing import Protocol

import tenacity

from ._errors import (
    APIError,
    AuthenticationError,
    CascadeError,
    ClientClosedError,
    EndpointError,
    RateLimitError,
    ValidationError,
    Verdict,
    classify,
    error_from_response,
)
from ._events import BatchSent, EventHook, RetryScheduled, emit
from ._models import Message, Result, Route, Status, failure
from ._ratelimit import Priority, RateLimiter
from ._retry import RetryBudget, RetryPolicy, Stop, Wait, retry_on, should_retry
from ._transport import RawResponse, Transport
from ._wire import encode_batch, results_from_acks

logger = logging.getLogger("cascade_async")

_ids = attrgetter("id")


class Recorder(Protocol):
    """Told what happens to each batch (the journal implements it; ``stream(recorder=...)``).

    ``dispatched`` runs just before each attempt's request leaves (after the rate limiter);
    ``not_sent`` after an attempt that certainly did not deliver (refused, 429, a certain
    5xx, a wrong endpoint), when no earlier attempt's outcome is unknown; ``completed`` with
    the final results. An exception from a recorder stops the call.

    Optional: ``variables_uploading(variables)``, called before each upload of a templated
    stream's variables (a journal keeps them, so a resumed job knows what the provider has).
    """

    def dispatched(self, batch: Sequence[Message]) -> None: ...

    def not_sent(self, batch: Sequence[Message]) -> None: ...

    def completed(self, results: Sequence[Result]) -> None: ...


class StopCall(Exception):
    """Every later batch would fail the same way, or the results cannot be kept: stop."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


#: Errors about the endpoint or the client, never about the messages.
_STOPPING = (AuthenticationError, EndpointError)


class Attempts:
    """What one batch has been through: its attempts, when the first began (after the rate
    limiter: the deadline counts from there), and whether any may have got through."""

    __slots__ = ("count", "gave_up", "started", "unknown")

    def __init__(self, count: int = 0, unknown: bool = False, started: float | None = None) -> None:
        self.count = count
        self.unknown = unknown
        self.started = started
        self.gave_up: str | None = None

    def carried(self) -> Attempts:
        """A copy for part of the batch (isolation): same history, same deadline."""
        return Attempts(self.count, self.unknown, self.started)


class Failed:
    """A batch's last failure, after retries: turned into results by ``results``."""

    __slots__ = ("attempts", "error")

    def __init__(self, error: CascadeError, attempts: Attempts) -> None:
        self.error = error
        self.attempts = attempts

    @property
    def splittable(self) -> bool:
        return isinstance(self.error, APIError) and classify(self.error.status) is Verdict.SPLIT

    def results(self, batch: Sequence[Message], *, status: Status | None = None) -> list[Result]:
        err = self.error
        unknown = err.outcome_unknown or self.attempts.unknown
        if status is None:
            status = Status.REJECTED if _is_permanent(err) and not unknown else Status.FAILED
        out = []
        for m in batch:
            own = err.for_message(m.id)
            own.outcome_unknown = unknown
            own.gave_up = self.attempts.gave_up
            out.append(failure(m.id, status, own, self.attempts.count))
        return out


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
        self._transport = transport
        self._urls = {route: base_url + route.value for route in Route}
        self._base_url = base_url
        self._headers = dict(headers)
        self._limiter = limiter
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
        if self._limiter is not None:
            await self._limiter.acquire(len(batch), priority=priority)
        if self.closed:
            raise ClientClosedError("the client is closed; nothing more is sent")

    async def _request(self, batch: Sequence[Message], body: bytes, route: Route, attempt: int) -> list[Result]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            raw = await self._transport(self._urls[route], self._headers, body)
        except CascadeError as exc:
            self._emit_sent(route, batch, attempt, loop.time() - started, None, exc)
            raise
        self._emit_sent(route, batch, attempt, loop.time() - started, raw.status, None)
        error = self._answered(raw, route.value)
        if error is not None:
            raise error
        return results_from_acks(batch, raw.body, attempts=attempt)

    def _answered(self, raw: RawResponse, route: str) -> APIError | None:
        """The error of a non-2xx answer, or None; every answer teaches the limiter (a 429 pauses the
        account, any other resets its backoff)."""
        error = None
        if classify(raw.status) is not Verdict.OK:
            error = error_from_response(raw.status, raw.headers, raw.body, route=route)
        if self._limiter is not None:
            if isinstance(error, RateLimitError):
                self._limiter.penalize(error.retry_after)
            else:
                self._limiter.on_success()
        return error

    async def request_json(
        self,
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
        request = getattr(self._transport, "request", None)
        if request is None:
            raise TypeError(f"{type(self._transport).__name__} has no request(method, url, headers, body) method")
        loop = asyncio.get_running_loop()
        state = Attempts()
        _, retrying = self._loop(lambda rs: logger.debug("retrying %s %s: %s", method, url, rs.outcome), state)
        async for attempt in retrying:
            with attempt:
                if limiter is not None:
                    await limiter.acquire(1, priority=priority)
                if self.closed:
                    raise ClientClosedError("the client is closed; nothing more is sent")
                if state.started is None:
                    state.started = loop.time()  # the deadline counts after the limiter
                state.count += 1
                raw: RawResponse = await request(method, url, headers, body)
                known = (errors or {}).get(raw.status)
                if known is not None:
                    generic = error_from_response(raw.status, raw.headers, raw.body)
                    raise known(str(generic.message), status=raw.status, code=generic.code, body=generic.body)
                if classify(raw.status) is not Verdict.OK:
                    exc = error_from_response(raw.status, raw.headers, raw.body)
                    if limiter is not None and isinstance(exc, RateLimitError):
                        limiter.penalize(exc.retry_after)
                    raise exc
                if limiter is not None:
                    limiter.on_success()
                self.budget.refund()
                return raw
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

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
        sending = _Sending(batch, body or encode_batch(batch))
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
        except _STOPPING as exc:
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

    def _loop(
        self, before_sleep: Callable[[tenacity.RetryCallState], None], state: Attempts
    ) -> tuple[Stop, tenacity.AsyncRetrying]:
        """The retry loop of a request that is not a batch: every attempt inside it."""
        stop = Stop(self.policy, self.budget, asyncio.get_running_loop().time, state)
        return stop, self._retrying(before_sleep, stop, Wait(self.policy, self._rng, state))

    async def post_body(self, path: str, body: bytes) -> RawResponse:
        """POST ``body`` to ``base_url + path`` through the limiter, with the same retry loop and
        budget as a batch (``/api/items`` uploads): the 2xx answer, or raise the last
        ``CascadeError`` (``StopCall`` for wrong credentials or a wrong endpoint)."""
        url = self._base_url + path
        state = Attempts()
        stop, retrying = self._loop(lambda rs: logger.debug("retrying POST %s after %s", path, rs.outcome), state)
        try:
            async for attempt in retrying:
                with attempt:
                    if self._limiter is not None:
                        await self._limiter.acquire(0, priority=Priority.BULK)  # one request, no messages
                    if self.closed:
                        raise ClientClosedError("the client is closed; nothing more is sent")
                    if state.started is None:  # the deadline counts from after the limiter
                        state.started = asyncio.get_running_loop().time()
                    state.count += 1
                    raw = await self._transport(url, self._headers, body)
                    if (error := self._answered(raw, path)) is not None:
                        raise error
        except _STOPPING as exc:
            raise StopCall(exc) from exc
        except CascadeError as exc:
            exc.gave_up = stop.reason
            raise
        self.budget.refund()
        return raw

    async def _throttled(
        self,
        sending: _Sending,
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
        if self._limiter is None or state.started is None:
            return False
        pause = min(exc.retry_after or 0.0, self.policy.max_retry_after)
        return asyncio.get_running_loop().time() + pause < state.started + self.policy.deadline

    async def _attempt(
        self, batch: Sequence[Message], body: bytes, route: Route, state: Attempts, recorder: Recorder | None
    ) -> list[Result]:
        if recorder is not None:
            # "pending" in the journal means the request is about to leave: after the limiter.
            _record(recorder.dispatched, batch)
        state.count += 1
        if state.started is None:
            state.started = asyncio.get_running_loop().time()
        try:
            return await self._request(batch, body, route, state.count)
        except asyncio.CancelledError:
            if recorder is not None and not state.unknown and self.stopped_by is not None:
                # Cancelled because another batch met a wrong endpoint: so did this one.
                _record_quietly(recorder.not_sent, batch)
            raise
        except CascadeError as exc:
            if exc.outcome_unknown:
                state.unknown = True
            elif recorder is not None and not state.unknown and _certainly_not_sent(exc):
                _record(recorder.not_sent, batch)
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

    async def deliver(
        self,
        batch: Sequence[Message],
        route: Route,
        recorder: Recorder | None = None,
        *,
        isolate: int = 0,
        body: bytes | None = None,
        unique: bool = False,
        priority: Priority = Priority.BULK,
    ) -> list[Result]:
        """Exactly one Result per message of ``batch``, in its order.

        A batch may repeat a tracking id (``dedupe=False``, or two callers of ``send()``): one
        request holds an id once, since answers are matched by id, so the k-th occurrences
        of ids go in the k-th request. ``isolate`` > 0 lets a 400 be narrowed down to the bad
        messages with at most that many extra requests. ``unique``: the caller knows the ids
        are unique (admission with ``dedupe``).
        """
        if unique or len(set(map(_ids, batch))) == len(batch):  # the usual case, in C
            return await self._deliver_unique(batch, route, recorder, isolate, priority, body)
        results: list[Result | None] = [None] * len(batch)
        for indices in repeat_rounds(batch):
            part = [batch[i] for i in indices]
            got = await self._deliver_unique(part, route, recorder, isolate, priority)
            for i, r in zip(indices, got, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]  # every index is in exactly one round

    async def _deliver_unique(
        self,
        batch: Sequence[Message],
        route: Route,
        recorder: Recorder | None,
        isolate: int,
        priority: Priority,
        body: bytes | None = None,
    ) -> list[Result]:
        got = await self.send(batch, route, recorder, body=body, priority=priority)
        if not isinstance(got, Failed):
            return got
        if isolate and len(batch) > 1 and got.splittable:
            from ._isolate import isolate_bad_messages

            return await isolate_bad_messages(self, batch, route, recorder, got, cap=isolate, priority=priority)
        return got.results(batch)


class _Sending:
    """The part of a batch still wanted, and its body; results spread back to batch positions."""

    __slots__ = ("batch", "body", "messages", "positions")

    def __init__(self, batch: Sequence[Message], body: bytes) -> None:
        self.batch = batch
        self.messages = batch
        self.body = body
        self.positions: list[int] | None = None  # None: all of the batch

    def keep(self, alive: Callable[[int], bool]) -> bool:
        """Drop the positions no longer wanted; False when none is left."""
        wanted = [i for i in (self.positions or range(len(self.batch))) if alive(i)]
        if len(wanted) != len(self.messages):
            self.positions = wanted
            self.messages = [self.batch[i] for i in wanted]
            self.body = encode_batch(self.messages) if wanted else b""
        return bool(wanted)

    def spread(self, results: list[Result]) -> list[Result]:
        if self.positions is None:
            return results
        out = self.abandoned()
        for i, result in zip(self.positions, results, strict=True):
            out[i] = result
        return out

    def abandoned(self) -> list[Result]:
        err = CascadeError("not sent: its caller gave up first (cancelled, or past send_timeout)")
        return [failure(m.id, Status.FAILED, err.for_message(m.id), 0) for m in self.batch]


def repeat_rounds(batch: Sequence[Message]) -> list[list[int]]:
    """Indices of ``batch`` by occurrence: round k holds the k-th occurrence of each id."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(batch):
        k = seen.get(m.id, 0)
        seen[m.id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return rounds


def _record(hook: Callable[[Sequence[Message]], None], batch: Sequence[Message]) -> None:
    try:
        hook(batch)
    except Exception as exc:
        raise StopCall(exc) from exc


def _record_quietly(hook: Callable[[Sequence[Message]], None], batch: Sequence[Message]) -> None:
    try:
        hook(batch)
    except Exception:
        logger.exception("the recorder failed while the call was stopping")


def _certainly_not_sent(exc: CascadeError) -> bool:
    """A failure after which the messages certainly were not delivered."""
    if isinstance(exc, APIError):
        return classify(exc.status) in (Verdict.RETRY, Verdict.STOP)
    return isinstance(exc, ClientClosedError) or (not exc.outcome_unknown and not isinstance(exc, ValidationError))


def _is_permanent(exc: CascadeError) -> bool:
    """Whether the failure is about the messages themselves (REJECTED) rather than passing."""
    if isinstance(exc, ValidationError):
        return True
    if isinstance(exc, APIError):
        return classify(exc.status) in (Verdict.SPLIT, Verdict.REJECT)
    return False
