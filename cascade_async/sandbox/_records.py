"""What the inbox hands out: accepted messages, refused requests, recipient threads, and a query."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Final

import msgspec

from .._models import Route

__all__ = ["CHANNELS", "ROUTE_NAMES", "InboxMessage", "Query", "Rejection", "Thread", "message", "when"]

# Until delivery is simulated, a message shows on the first channel of its type's cascade.
CHANNELS: Final = {"transaction": "telegram", "promo": "telegram", "viber_survey": "viber", "flashcall": "call"}
ROUTE_NAMES: Final = {Route.CASCADE.value: "cascade", Route.TELEGRAM_VIBER.value: "tg-viber"}


class InboxMessage(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One accepted message as the recipient would see it; ``seq`` orders everything in the inbox."""

    seq: int
    tracking_id: str
    message_id: str
    to_phone: str
    from_name: str
    message_type: str
    text: str | None
    rendered_text: str | None
    survey_options: list[str] | None
    channel: str
    status: str
    received_at: _dt.datetime
    route: str
    ttl: int | None
    scheduled_sent: str | None


class Rejection(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A refused request: the status and error body it got, and what in it was wrong."""

    seq: int
    received_at: _dt.datetime
    status: int
    error: dict[str, str]
    to_phone: str | None  # the phone it was for, when one is known (even a malformed one)
    tracking_id: str | None
    index: int | None  # the offending message's position in the request
    message_count: int | None
    route: str
    request: str  # the offending message as JSON, or the start of the body


class Thread(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    phone: str  # "" gathers rejected requests without a usable phone
    messages: int
    unread: int
    rejected: int
    last_seq: int
    last_at: _dt.datetime
    preview: str


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """Which messages: one phone, a case-insensitive substring, newer than a seq or a time."""

    phone: str | None = None
    q: str = ""
    after_seq: int = -1
    after_time: float = 0.0

    def match(self, m: dict[str, Any], mid: str) -> bool:
        if self.phone is not None and m["toPhone"] != self.phone:
            return False
        if not self.q:
            return True
        q = self.q.casefold()
        text = m.get("text")
        return (
            q in m["toPhone"]
            or q in m["id"].casefold()
            or q in mid
            or q in m["fromName"].casefold()
            or (isinstance(text, str) and q in text.casefold())
            or q in m.get("renderedText", "").casefold()
        )


def when(at: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(at, _dt.UTC)


def message(seq: int, m: dict[str, Any], message_id: str, at: float, path: str) -> InboxMessage:
    """The recipient's view of one accepted message dict (built on read, never when recording)."""
    text = m.get("text")
    options = m.get("surveyOptions")
    return InboxMessage(
        seq=seq,
        tracking_id=m["id"],
        message_id=message_id,
        to_phone=m["toPhone"],
        from_name=m["fromName"],
        message_type=m["messageType"],
        text=text,
        rendered_text=m.get("renderedText", text),  # placeholders substituted at acceptance
        survey_options=options if isinstance(options, list) else None,
        channel=CHANNELS[m["messageType"]],
        status="accepted",
        received_at=when(at),
        route=ROUTE_NAMES.get(path, path),
        ttl=m.get("ttl"),
        scheduled_sent=m.get("scheduledSent"),
    )
