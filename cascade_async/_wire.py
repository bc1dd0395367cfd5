"""Encoding batches and reading the provider's answers: the per-message hot path."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from ._errors import ProtocolError
from ._models import Message, Result, Status

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
    by_id: dict[str, str] = {}
    for ack in acks:
        if by_id.setdefault(ack.tracking_id, ack.message_id) is not ack.message_id:
            logger.warning("answer repeats trackinId %r; keeping its first messageId", ack.tracking_id)
    accepted = Status.ACCEPTED
    out: list[Result] = []
    missing = 0
    for m in batch:
        mid = by_id.pop(m.id, None)
        if mid is None:
            missing += 1
            out.append(
                Result(
                    m.id,
                    Status.FAILED,
                    None,
                    ProtocolError(
                        "the 200 answer holds no entry for this message; it may or may not have been accepted",
                        tracking_id=m.id,
                        outcome_unknown=True,
                    ),
                    attempts,
                )
            )
        else:
            out.append(Result(m.id, accepted, mid, None, attempts))
    if by_id:
        logger.warning("answer holds %d trackinId(s) the request did not send; ignored", len(by_id))
    if missing:
        logger.warning("answer misses %d of %d request message(s)", missing, len(batch))
    return out
