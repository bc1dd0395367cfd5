"""A typed message and the checks it passes, when it is built, before it may be sent."""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._errors import ValidationError
from ._segments import SegmentInfo, sms_segments
from ._variables import check_placeholders

__all__ = ["Fallback", "Message", "MessageType", "Route"]

MAX_ID_LENGTH: Final = 255
MAX_SURVEY_TEXT: Final = 85
MIN_SURVEY_OPTIONS: Final = 2
MAX_SURVEY_OPTIONS: Final = 5
MAX_SCHEDULE_AHEAD: Final = _dt.timedelta(days=30)

# E.164: "+", a first digit 1-9, 8 to 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A lone surrogate is not Unicode: it cannot be encoded as UTF-8 (Python's json.loads makes them).
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_TTL: Final = 2**31 - 1


class MessageType(enum.StrEnum):
    """How the provider treats a message."""

    TRANSACTION = "transaction"
    PROMO = "promo"
    VIBER_SURVEY = "viber_survey"
    FLASHCALL = "flashcall"


class Route(enum.StrEnum):
    """Which cascade endpoint a batch is posted to."""

    CASCADE = "/api/CascadeMessage/send_message/async"
    TELEGRAM_VIBER = "/api/CascadeMessage/send_message/tg-viber/async"


class Fallback(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=False, forbid_unknown_fields=True, gc=False
):
    """What a flashcall sends instead when the call fails: ``"fallback": {"messageType": "transaction",
    "text": "..."}`` on the wire, as the provider documents it.

    >>> Fallback(text="Your code is 1234")
    Fallback(message_type=<MessageType.TRANSACTION: 'transaction'>, text='Your code is 1234')
    """

    message_type: MessageType = MessageType.TRANSACTION
    text: str = ""

    def __post_init__(self) -> None:
        kind = self.message_type
        if kind != MessageType.TRANSACTION:
            raise ValidationError(
                f"must be transaction (the only fallback the provider documents), not {str(kind)!r}",
                field="fallback.messageType",
                tracking_id=None,
            )
        msgspec.structs.force_setattr(self, "message_type", MessageType.TRANSACTION)
        text = self.text
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("must be a non-empty string", field="fallback.text", tracking_id=None)
        check_placeholders(text, field="fallback.text")


# gc=False: a Message holds only strings, numbers, a datetime and a tuple of strings, so it can
# never be part of a reference cycle; untracked, a million of them cost the collector nothing.
class Message(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    omit_defaults=True,
    forbid_unknown_fields=True,
    gc=False,
):
    """One cascade message, checked when it is built.

    >>> Message(id="order-1", from_name="Shop", to_phone="+380501234567",
    ...         message_type=MessageType.TRANSACTION, text="Order confirmed")
    Message(id='order-1', ...)

    ``ValidationError`` names the field, the problem and the tracking id.
    """

    id: str
    from_name: str
    to_phone: str
    message_type: MessageType
    text: str | None = None
    ttl: int | None = None
    scheduled_sent: _dt.datetime | None = None
    survey_options: tuple[str, ...] | None = None
    fallback: Fallback | None = None

    def __post_init__(self) -> None:
        # msgspec does not check types or constraints when a Struct is built in Python, and
        # this runs for decoded messages too: one place for every rule.
        _check(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Build a message from its wire form (the provider's camelCase keys)."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            # msgspec wraps what __post_init__ raised; hand back our own error unwrapped.
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                tid = data.get("id") if cause.tracking_id is None and isinstance(data, Mapping) else None
                if isinstance(tid, str):  # a nested Fallback did not know the id
                    cause = ValidationError(cause.problem, field=cause.field, tracking_id=tid, code=cause.code)
                raise cause from None
            raise _from_msgspec(exc, data) from None
        except TypeError as exc:  # a non-mapping input
            raise ValidationError(str(exc), field=None, tracking_id=None) from None

    def to_dict(self) -> dict[str, Any]:
        """The wire form, as sent: camelCase keys, unset fields left out."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    @property
    def sms_segments(self) -> SegmentInfo:
        """What the text costs if the cascade falls back to SMS (a flashcall: its fallback text).

        A ``%short_url=N%`` counts as a link of ``SHORT_URL_LENGTH`` characters (an assumption the
        result states in ``assumed``), other placeholders as written.
        """
        text = self.text
        if text is None and self.fallback is not None:
            text = self.fallback.text
        return sms_segments(text or "")


def _from_msgspec(exc: msgspec.ValidationError, data: Any) -> ValidationError:
    text = str(exc)
    field = None
    if " - at `$." in text:
        text, _, path = text.partition(" - at `$.")
        field = path.rstrip("`").split("[", 1)[0]
    elif text.startswith("Object missing required field `") or text.startswith("Object contains unknown field `"):
        field = text.split("`")[1]
    tid = data.get("id") if isinstance(data, Mapping) else None
    return ValidationError(text, field=field, tracking_id=tid if isinstance(tid, str) else None)


def _fail(msg: Message | None, field: str, problem: str) -> ValidationError:
    tid = getattr(msg, "id", None)
    return ValidationError(problem, field=field, tracking_id=tid if isinstance(tid, str) else None)


def _check_str(msg: Message, wire: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(msg, wire, f"must be a string, not {type(value).__name__}")
    return value


def _check(msg: Message) -> None:
    tid = _check_str(msg, "id", msg.id)
    if not 1 <= len(tid) <= MAX_ID_LENGTH:
        raise _fail(msg, "id", f"must be 1 to {MAX_ID_LENGTH} characters, got {len(tid)}")
    if _CONTROL.search(tid):
        raise _fail(msg, "id", "must not contain control characters")
    if not _check_str(msg, "fromName", msg.from_name).strip():
        raise _fail(msg, "fromName", "must not be empty")
    for wire, value in (("id", tid), ("fromName", msg.from_name), ("text", msg.text)):
        if isinstance(value, str) and _SURROGATE.search(value):
            raise _fail(msg, wire, "holds a lone surrogate, which is not valid Unicode")
    phone = _check_str(msg, "toPhone", msg.to_phone)
    if not _E164.fullmatch(phone):
        raise _fail(msg, "toPhone", _phone_problem(phone))

    kind = msg.message_type
    if not isinstance(kind, MessageType):
        try:
            kind = MessageType(kind)
        except ValueError:
            choices = ", ".join(t.value for t in MessageType)
            raise _fail(msg, "messageType", f"must be one of {choices}, not {kind!r}") from None
        msgspec.structs.force_setattr(msg, "message_type", kind)

    text = msg.text
    if kind is MessageType.FLASHCALL:
        if text is not None:
            raise _fail(msg, "text", "must be left out for flashcall messages")
    elif text is None or not _check_str(msg, "text", text).strip():
        raise _fail(msg, "text", f"is required for {kind.value} messages")
    elif "%" in text:
        check_placeholders(text, field="text", tracking_id=tid)

    fallback = msg.fallback
    if fallback is not None:
        if kind is not MessageType.FLASHCALL:
            raise _fail(msg, "fallback", "is only allowed on flashcall messages")
        if not isinstance(fallback, Fallback):
            raise _fail(msg, "fallback", f"must be a Fallback, not {type(fallback).__name__}")

    options = msg.survey_options
    if kind is MessageType.VIBER_SURVEY:
        if options is None:
            raise _fail(msg, "surveyOptions", "is required for viber_survey messages")
        if not isinstance(options, tuple):
            if isinstance(options, str) or not isinstance(options, list):
                raise _fail(msg, "surveyOptions", "must be a list of strings")
            options = tuple(options)
            msgspec.structs.force_setattr(msg, "survey_options", options)
        if not MIN_SURVEY_OPTIONS <= len(options) <= MAX_SURVEY_OPTIONS:
            raise _fail(
                msg, "surveyOptions", f"needs {MIN_SURVEY_OPTIONS} to {MAX_SURVEY_OPTIONS} options, got {len(options)}"
            )
        for option in options:
            if not isinstance(option, str) or not option.strip():
                raise _fail(msg, "surveyOptions", "options must be non-empty strings")
            if _SURROGATE.search(option):
                raise _fail(msg, "surveyOptions", "an option holds a lone surrogate, which is not valid Unicode")
        assert text is not None
        if len(text) > MAX_SURVEY_TEXT:
            raise _fail(msg, "text", f"survey text is at most {MAX_SURVEY_TEXT} characters, got {len(text)}")
    elif options is not None:
        raise _fail(msg, "surveyOptions", "is only allowed on viber_survey messages")

    ttl = msg.ttl
    if ttl is not None and (type(ttl) is not int or not 0 < ttl <= MAX_TTL):
        raise _fail(msg, "ttl", f"must be a positive integer of seconds up to {MAX_TTL}, not {ttl!r:.40}")

    when = msg.scheduled_sent
    if when is not None:
        if not isinstance(when, _dt.datetime):
            raise _fail(msg, "scheduledSent", "must be a datetime")
        if when.tzinfo is None or when.utcoffset() is None:
            raise _fail(msg, "scheduledSent", "must be timezone-aware (a naive datetime is not guessed)")
        try:
            utc = when.astimezone(_dt.UTC)
        except OverflowError:
            raise _fail(msg, "scheduledSent", "is out of range") from None
        if utc - _dt.datetime.now(_dt.UTC) > MAX_SCHEDULE_AHEAD:
            raise _fail(msg, "scheduledSent", "must be at most 30 days ahead")
        if utc is not when:
            msgspec.structs.force_setattr(msg, "scheduled_sent", utc)


def _phone_problem(phone: str) -> str:
    digits = phone.lstrip("+")
    if not phone.startswith("+") and phone[:1].isdigit():
        if phone.startswith("0"):
            return f"{phone!r} is a national number; use E.164 with the country code, e.g. '+380{phone[1:]}'"
        return f"{phone!r} lacks the leading '+' of E.164, e.g. '+{phone}'"
    if not digits.isdigit():
        return f"{phone!r} is not E.164: '+' then digits only, no spaces or punctuation"
    return f"{phone!r} is not E.164: '+', a first digit 1-9, 8 to 15 digits in all"
