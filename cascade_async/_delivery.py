"""Delivery status: the statuses, one report, the lenient parsing of the provider's answers, and the
rule that statuses only move forward.

>>> report = await client.status(result.message_id)
>>> report.status, report.final, report.cost, report.channels
(<DeliveryStatus.DELIVERED: 'delivered'>, True, Decimal('0.05'), {'viber': 'delivered', 'sms': 'not_used'})

The status host answers ``GET /bat/message/{messageId}`` with an object of which only
``deliverystatus`` is always present; a webhook POSTs ``messageId``, ``deliverystatus``,
``timestamp`` and ``cost``. Both are read by ``report_from_json``: unknown fields are kept in
``raw``, an unknown status becomes ``UNKNOWN`` (not final) with its text in ``raw_status``.
Numbers are decoded as ``Decimal``, so a cost of 0.05 stays exactly 0.05.
"""

from __future__ import annotations

import datetime as _dt
import enum
from decimal import Decimal
from typing import Any, Final

import msgspec

from ._errors import ProtocolError

__all__ = ["DeliveryReport", "DeliveryStatus", "forward", "report_from_json"]


class DeliveryStatus(enum.StrEnum):
    """The provider's ``deliverystatus``; ``UNKNOWN`` stands for any value it may add later."""

    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    PERMANENTERROR = "permanenterror"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        """A final status never changes (delivered, undeliverable, permanenterror)."""
        return self in _FINAL

    @property
    def rank(self) -> int:
        """Order along the lifecycle: unknown 0, scheduled 1, processing 2, a final status 3."""
        return _RANK[self]

    @classmethod
    def parse(cls, raw: str) -> DeliveryStatus:
        try:
            return cls(raw.strip().lower())
        except ValueError:
            return cls.UNKNOWN


_FINAL: Final = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERABLE, DeliveryStatus.PERMANENTERROR})
_RANK: Final = {
    DeliveryStatus.UNKNOWN: 0,
    DeliveryStatus.SCHEDULED: 1,
    DeliveryStatus.PROCESSING: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.UNDELIVERABLE: 3,
    DeliveryStatus.PERMANENTERROR: 3,
}


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the provider says about one message's delivery, from a status answer or a webhook.

    ``final`` is false for a status that may still change, and for the report ``track()`` gives
    when a message's timeout passed (``status`` is then the last one seen, ``UNKNOWN`` if none).
    ``cost`` is exact (``Decimal``); ``currency`` comes with it when the answer names one.
    ``channels`` is ``extendedStatuses`` (channel -> its status); ``channel`` the one that
    delivered. ``raw_status`` is the provider's text as given; ``raw`` the whole answer.
    ``error`` says why a report carries no news (the message was not found, the host failed).
    """

    message_id: str
    status: DeliveryStatus
    final: bool
    raw_status: str = ""
    tracking_id: str | None = None
    cost: Decimal | None = None
    currency: str | None = None
    parts: int | None = None
    channels: dict[str, str] = msgspec.field(default_factory=dict)
    timestamp: _dt.datetime | None = None
    raw: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str | None = None

    @property
    def channel(self) -> str | None:
        """The channel whose extended status is ``delivered``, if the answer says."""
        for name, status in self.channels.items():
            if status.lower() == DeliveryStatus.DELIVERED:
                return name
        return None

    @property
    def delivered(self) -> bool:
        return self.status is DeliveryStatus.DELIVERED


def forward(old: DeliveryReport | None, new: DeliveryReport) -> DeliveryReport:
    """The report to keep when ``new`` arrives after ``old``: statuses only move forward.

    A final status is never replaced; otherwise ``new`` wins unless it is earlier in the
    lifecycle (a late ``processing`` after ``delivered``, or ``scheduled`` after ``processing``).
    The journal applies the same rule in SQL (``_journal_delivery``).
    """
    if old is None:
        return new
    if old.final:
        return old
    if new.final or new.status.rank >= old.status.rank:
        return new
    return old


# Lenient: every field optional, numbers as Decimal (exact costs), unknown fields kept.
_decoder: Final = msgspec.json.Decoder(float_hook=Decimal)
_CURRENCY_FIELDS: Final = ("currency", "billCurrency", "rateCurrency")


def report_from_json(
    body: bytes,
    *,
    message_id: str | None = None,
    tracking_id: str | None = None,
    observed_at: _dt.datetime | None = None,
) -> DeliveryReport:
    """Read a status answer or a webhook body. Raises ``ProtocolError`` saying what is wrong.

    ``message_id`` is the id asked about (a status answer may leave it out); a webhook must
    carry its own. ``observed_at`` stands in for a missing ``timestamp``.
    """
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"a delivery report must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"a delivery report must be a JSON object, not {type(data).__name__}")
    raw_status = data.get("deliverystatus")
    if not isinstance(raw_status, str):
        raise ProtocolError("a delivery report needs a 'deliverystatus' string")
    given_id = data.get("messageId")
    if given_id is not None and not isinstance(given_id, (str, int)):
        raise ProtocolError("'messageId' must be a string")
    mid = str(given_id) if given_id is not None else message_id
    if not mid:
        raise ProtocolError("a delivery report needs a 'messageId'")
    status = DeliveryStatus.parse(raw_status)
    return DeliveryReport(
        message_id=mid,
        tracking_id=tracking_id,
        status=status,
        final=status.final,
        raw_status=raw_status,
        cost=_decimal(data.get("cost", data.get("billAmount"))),
        currency=_first_text(data, _CURRENCY_FIELDS),
        parts=_int(data.get("partscount")),
        channels=_channels(data.get("extendedStatuses")),
        timestamp=_timestamp(data.get("timestamp")) or observed_at,
        raw=data,
    )


def _decimal(value: Any) -> Decimal | None:
    """A finite Decimal, or None: a cost of NaN or Infinity is no cost at all (it would poison
    every sum it joins)."""
    if isinstance(value, bool):
        return None
    number: Decimal | None = None
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except ArithmeticError:
            return None
    return number if number is not None and number.is_finite() else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # ``adjusted()`` first: int() of a Decimal like 1e10000000 builds all its digits (minutes of CPU).
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 19:
        return int(value) if value == value.to_integral_value() else None
    return None


def _first_text(data: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _channels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, (str, int))}


def _timestamp(value: Any) -> _dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=_dt.UTC)
