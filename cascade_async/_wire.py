"""Encoding batches and reading the provider's answers: the per-message hot path."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from operator import attrgetter

import msgspec

from ._errors import CascadeError, ProtocolError
from ._models import Message, Result, Status, failure

logger = logging.getLogger("cascade_async")

_encoder = msgspec.json.Encoder()
_ids = attrgetter("id")
_tracking_ids = attrgetter("tracking_id")


# An answer entry decodes straight into a Result: ``{"messageId", "trackinId"}`` are renamed
# onto its fields, and its other fields get reserved wire names, so an entry that grows a
# "status" or an "error" of its own is still read (unknown keys are ignored). An answer that
# holds a reserved name (or an escape that could spell one) is read by ``_strict_decoder``.
class _Accepted(
    Result,
    frozen=True,
    gc=False,
    kw_only=True,
    rename={
        "tracking_id": "trackinId",
        "message_id": "messageId",
        "status": "\u00a7status",
        "error": "\u00a7error",
        "attempts": "\u00a7attempts",
        "from_journal": "\u00a7from_journal",
    },
):
    tracking_id: str
    status: Status = Status.ACCEPTED
    message_id: str
    error: CascadeError | None = None
    attempts: int = 1


_answer_decoder = msgspec.json.Decoder(list[_Accepted])


class _Ack(msgspec.Struct, frozen=True, gc=False, rename={"tracking_id": "trackinId", "message_id": "messageId"}):
    tracking_id: str
    message_id: str


_strict_decoder = msgspec.json.Decoder(list[_Ack])
#: What an answer would need to set a Result field other than the two it documents: a reserved
#: name ("§status" ...), whose UTF-8 holds the byte 0xA7, or an escape that spells one, which
#: holds a backslash. One byte each, so each test is a memchr; an answer holding either (ids
#: with "ç" or an escaped character) is read the strict way, which is slower, not wrong.
_RESERVED = b"\xa7"
_ESCAPE = b"\\"


def encode_batch(messages: Sequence[Message]) -> bytes:
    """One encode per batch."""
    return _encoder.encode(messages)


def encoded_size(messages: Sequence[Message]) -> int:
    """The length of the batch's body (the batcher's exact measure near its byte limit)."""
    return len(encode_batch(messages))


def results_from_acks(batch: Sequence[Message], body: bytes, *, attempts: int) -> list[Result]:
    """Match a 2xx answer to the request by ``trackinId``, never by position.

    A request message missing from the answer ends FAILED with a ``ProtocolError`` whose
    outcome is unknown (the provider may have taken it); ids the request did not hold are
    logged and ignored. A body that is not the documented shape raises ``ProtocolError``.
    """
    acks: list[Result]
    try:
        if _RESERVED in body or _ESCAPE in body:  # the usual answer holds neither
            acks = [Result(a.tracking_id, Status.ACCEPTED, a.message_id, None, 1) for a in _strict_decoder.decode(body)]
        else:
            acks = _answer_decoder.decode(body)  # type: ignore[assignment]  # list is invariant
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"2xx answer is not the documented shape: {exc}", outcome_unknown=True) from None
    if len(acks) == len(batch) and list(map(_tracking_ids, acks)) == list(map(_ids, batch)):
        out = acks  # the usual answer: one entry per message, in order (checked, not assumed)
    else:
        out = _match(batch, acks, attempts)
    if attempts != 1:
        out = [msgspec.structs.replace(r, attempts=attempts) if r.error is None else r for r in out]
    return out


def _match(batch: Sequence[Message], acks: list[Result], attempts: int) -> list[Result]:
    # reversed: the first entry for an id wins when an answer repeats one
    by_id = {ack.tracking_id: ack for ack in reversed(acks)}
    if len(by_id) != len(acks):
        logger.warning("answer repeats %d trackinId(s); keeping the first messageId of each", len(acks) - len(by_id))
    known = len(by_id)
    pop = by_id.pop
    out = [ack if (ack := pop(m.id, None)) is not None else _missing(m.id, attempts) for m in batch]
    if by_id:
        logger.warning("answer holds %d trackinId(s) the request did not send; ignored", len(by_id))
    missing = len(batch) - (known - len(by_id))
    if missing:
        logger.warning("answer misses %d of %d request message(s); their outcome is unknown", missing, len(batch))
    return out


def _missing(tracking_id: str, attempts: int) -> Result:
    err = ProtocolError(
        "the 2xx answer holds no entry for this message; it may or may not have been accepted",
        tracking_id=tracking_id,
        outcome_unknown=True,
    )
    return failure(tracking_id, Status.FAILED, err, attempts)
