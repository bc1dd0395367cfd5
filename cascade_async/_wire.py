"""Encoding batches and reading the provider's answers: the per-message hot path."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from ._errors import ProtocolError
from ._models import Message, Result, Status, failure

logger = logging.getLogger("cascade_async")

_encoder = msgspec.json.Encoder()


class _Ack(msgspec.Struct):
    message_id: str = msgspec.field(name="messageId")
    tracking_id: str = msgspec.field(name="trackinId")


_ack_decoder = msgspec.json.Decoder(list[_Ack])


def encode_batch(messages: Sequence[Message]) -> bytes:
    """One encode per batch."""
    return _encoder.encode(messages)


def results_from_acks(batch: Sequence[Message], body: bytes, *, attempts: int) -> list[Result]:
    """Match a 200 answer to the request by ``trackinId``, never by position.

    A request message missing from the answer ends FAILED with a ``ProtocolError`` whose
    outcome is unknown (the provider may have taken it); ids the request did not hold are
    logged and ignored. A body that is not the documented shape raises ``ProtocolError``.
    """
    try:
        acks = _ack_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"200 answer is not the documented shape: {exc}", outcome_unknown=True) from None
    # reversed: the first entry for an id wins when an answer repeats one
    by_id = {ack.tracking_id: ack.message_id for ack in reversed(acks)}
    if len(by_id) != len(acks):
        logger.warning("answer repeats %d trackinId(s); keeping the first messageId of each", len(acks) - len(by_id))
    known = len(by_id)
    accepted = Status.ACCEPTED
    pop = by_id.pop
    out = [
        Result(tid, accepted, mid, None, attempts)
        if (mid := pop(tid := m.id, None)) is not None
        else _missing(tid, attempts)
        for m in batch
    ]
    if by_id:
        logger.warning("answer holds %d trackinId(s) the request did not send; ignored", len(by_id))
    missing = len(batch) - (known - len(by_id))
    if missing:
        logger.warning("answer misses %d of %d request message(s); their outcome is unknown", missing, len(batch))
    return out


def _missing(tracking_id: str, attempts: int) -> Result:
    err = ProtocolError(
        "the 200 answer holds no entry for this message; it may or may not have been accepted",
        tracking_id=tracking_id,
        outcome_unknown=True,
    )
    return failure(tracking_id, Status.FAILED, err, attempts)
