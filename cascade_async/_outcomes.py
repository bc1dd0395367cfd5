"""What happens to a batch, in words every part of the engine shares: its history
(``Attempts``), its last failure (``Failed``), who is told (``Recorder``), and ``StopCall``,
which ends the whole call; ``Sending``, the part of a batch still wanted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Protocol

from ._errors import APIError, CascadeError, ClientClosedError, ValidationError
from ._models import Message, Result, Status, failure
from ._statuses import Verdict, classify
from ._wire import encode_batch

__all__ = ["Attempts", "Failed", "Recorder", "Sending", "StopCall", "not_sent_hook"]

logger = logging.getLogger("cascade_async")

#: Whether a request of the batch the current task sends may have got through: set as each
#: request leaves, put back when its answer says it certainly was not taken. A batch task the
#: client's close cuts short reads it (each task has its own): only then is its outcome unknown.
MAY_HAVE_LEFT: ContextVar[bool] = ContextVar("may_have_left", default=False)


class Recorder(Protocol):
    """Told what happens to each batch (the journal implements it; ``stream(recorder=...)``).

    ``dispatched`` runs just before each attempt's request leaves (after the rate limiter);
    ``not_sent`` after an attempt that certainly did not deliver (refused, 429, a certain
    5xx, a wrong endpoint), when no earlier attempt's outcome is unknown; ``completed`` with
    the final results. An exception from a recorder stops the call.

    Optional: ``variables_uploading(variables)``, called before each upload of a templated
    stream's variables (a journal keeps them, so a resumed job knows what the provider has);
    ``not_sent_because(batch, error)``, called instead of ``not_sent`` with the failure that
    said so (a journal keeps it as the messages' last error).
    """

    def dispatched(self, batch: Sequence[Message]) -> None: ...

    def not_sent(self, batch: Sequence[Message]) -> None: ...

    def completed(self, results: Sequence[Result]) -> None: ...


class StopCall(Exception):
    """Every later batch would fail the same way, or the results cannot be kept: stop."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Attempts:
    """What one batch has been through: its attempts, when the first began (after the rate
    limiter: the deadline counts from there), and whether any may have got through."""

    __slots__ = ("count", "gave_up", "started", "unknown")

    def __init__(self, count: int = 0, unknown: bool = False, started: float | None = None) -> None:
        self.count = count
        self.unknown = unknown
        self.started = started
        self.gave_up: str | None = None

    @staticmethod
    def leaving() -> bool:
        """A request of this task's batch leaves (``MAY_HAVE_LEFT``); whether one may have got through before."""
        before = MAY_HAVE_LEFT.get()
        MAY_HAVE_LEFT.set(True)
        return before

    @staticmethod
    def not_taken(before: bool) -> None:
        """The request that left certainly was not taken: back to what ``leaving`` found."""
        MAY_HAVE_LEFT.set(before)

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


def record(hook: Callable[[Sequence[Message]], None], batch: Sequence[Message]) -> None:
    try:
        hook(batch)
    except Exception as exc:
        raise StopCall(exc) from exc


def not_sent_hook(recorder: Recorder, error: CascadeError) -> Callable[[Sequence[Message]], None]:
    """The recorder's ``not_sent``, told ``error`` when it takes one (``not_sent_because``)."""
    because: Callable[[Sequence[Message], CascadeError], None] | None = getattr(recorder, "not_sent_because", None)
    if because is None:
        return recorder.not_sent
    return lambda batch: because(batch, error)


def record_quietly(hook: Callable[[Sequence[Message]], None], batch: Sequence[Message]) -> None:
    try:
        hook(batch)
    except Exception:
        logger.exception("the recorder failed while the call was stopping")


def certainly_not_sent(exc: CascadeError) -> bool:
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


class Sending:
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
