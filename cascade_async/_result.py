"""Where each message ended: ``Status``, the ``Result`` value and ``failure``, which builds every failed one."""

from __future__ import annotations

import enum

import msgspec

from ._errors import CascadeError

__all__ = ["Result", "Status", "failure"]


class Status(enum.StrEnum):
    """Where a message ended."""

    ACCEPTED = "accepted"  # the provider took it and gave it a messageId
    REJECTED = "rejected"  # permanent: invalid input, a 4xx, a duplicate id
    FAILED = "failed"  # transient errors given up on, or a broken answer


# gc=False: millions of Results pass through a bulk job, and tracked ones would make the
# collector run every few hundred messages. A Result reaches other objects only through
# ``error``; ``failure()`` builds every Result that holds one and drops the tracebacks along the
# error's chain, which are the only way an error could lead back to a Result (through a frame).
class Result(msgspec.Struct, frozen=True, gc=False):
    """Where one message ended. Exactly one per input message."""

    tracking_id: str
    status: Status
    message_id: str | None = None
    error: CascadeError | None = None
    attempts: int = 0
    #: Settled (or left unknown) by an earlier run of a journaled job; nothing was sent for it now.
    from_journal: bool = False

    @property
    def ok(self) -> bool:
        return self.status is Status.ACCEPTED

    @property
    def outcome_unknown(self) -> bool:
        """True when the provider may have accepted this message although no answer said so."""
        return self.error is not None and self.error.outcome_unknown

    def __repr__(self) -> str:
        extra = f", message_id={self.message_id!r}" if self.message_id else ""
        if self.error is not None:
            extra += f", error={type(self.error).__name__}({str(self.error)!r})"
        if self.from_journal:
            extra += ", from_journal=True"
        return f"Result({self.tracking_id!r}, {self.status.name}{extra}, attempts={self.attempts})"


def failure(tracking_id: str, status: Status, error: CascadeError, attempts: int) -> Result:
    """A non-accepted Result. The only way the engine builds a Result that holds an error."""
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
    return Result(tracking_id, status, None, error, attempts)
