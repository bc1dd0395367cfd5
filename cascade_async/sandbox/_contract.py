"""The provider's request rules, written from the contract independently of the client's checks.

Nothing here knows about HTTP servers: the server asks, and turns a ``Reject`` into an answer.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

__all__ = ["AUTH_HEADERS", "MAX_BATCH", "Reject", "check_auth", "check_message", "decode_batch"]

MAX_BATCH: Final = 1000
AUTH_HEADERS: Final = ("X-Authorization-Key", "X-Viber-Auth-Token", "X-Tg-Bot-Key")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_TYPES = frozenset({"transaction", "promo", "viber_survey", "flashcall"})
_decode = msgspec.json.Decoder()


class Reject(Exception):
    """A refusal with the documented error body's parts; ``index`` names the offending message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.index: int | None = None


def check_auth(headers: Mapping[str, str], api_keys: frozenset[str] | None) -> None:
    present = [h for h in AUTH_HEADERS if headers.get(h)]
    if not present:
        raise Reject(
            401, "UNAUTHORIZED", "missing credentials: send X-Authorization-Key, X-Viber-Auth-Token or X-Tg-Bot-Key"
        )
    if api_keys is not None and not any(headers[h] in api_keys for h in present):
        raise Reject(401, "UNAUTHORIZED", "invalid credentials")


def decode_batch(content_type: str, body: bytes) -> list[Any]:
    if content_type != "application/json":
        raise Reject(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
    try:
        messages = _decode.decode(body)
    except msgspec.DecodeError:
        raise Reject(400, "INVALID_REQUEST", "body is not valid JSON") from None
    if not isinstance(messages, list):
        raise Reject(400, "INVALID_REQUEST", "body must be a JSON array of messages")
    if not 1 <= len(messages) <= MAX_BATCH:
        raise Reject(400, "INVALID_BATCH_SIZE", f"a request holds 1 to {MAX_BATCH} messages, got {len(messages)}")
    return messages


def check_message(m: Any, now: _dt.datetime) -> None:
    if not isinstance(m, dict):
        raise Reject(400, "INVALID_REQUEST", "each message must be a JSON object")
    tid = m.get("id")
    if not isinstance(tid, str) or not 1 <= len(tid) <= 255:
        raise Reject(400, "INVALID_ID", "id must be a string of 1 to 255 characters", "id")
    for name in ("fromName", "toPhone", "messageType"):
        if not isinstance(m.get(name), str) or not m[name]:
            raise Reject(400, "MISSING_FIELD", f"{name} is required", name)
    if not _E164.fullmatch(m["toPhone"]):
        raise Reject(400, "INVALID_PHONE", "Invalid phone number format", "toPhone")
    kind = m["messageType"]
    if kind not in _TYPES:
        raise Reject(400, "INVALID_MESSAGE_TYPE", f"unknown messageType {kind!r}", "messageType")
    text = m.get("text")
    if kind != "flashcall" and (not isinstance(text, str) or not text):
        raise Reject(400, "MISSING_FIELD", "text is required", "text")
    if text is not None and not isinstance(text, str):
        raise Reject(400, "INVALID_FIELD", "text must be a string", "text")
    options = m.get("surveyOptions")
    if kind == "viber_survey":
        if (
            not isinstance(options, list)
            or not 2 <= len(options) <= 5
            or not all(isinstance(o, str) and o for o in options)
        ):
            raise Reject(400, "INVALID_SURVEY", "surveyOptions needs 2 to 5 options", "surveyOptions")
        if isinstance(text, str) and len(text) > 85:
            raise Reject(400, "INVALID_SURVEY", "survey text is at most 85 characters", "text")
    fallback = m.get("fallback")
    if fallback is not None:
        if kind != "flashcall":
            raise Reject(400, "INVALID_FIELD", "fallback is only allowed on flashcall messages", "fallback")
        if not isinstance(fallback, dict) or fallback.get("messageType") != "transaction":
            raise Reject(400, "INVALID_FIELD", "fallback.messageType must be transaction", "fallback.messageType")
        if not isinstance(fallback.get("text"), str) or not fallback["text"]:
            raise Reject(400, "MISSING_FIELD", "fallback.text is required", "fallback.text")
    ttl = m.get("ttl")
    if ttl is not None and (type(ttl) is not int or ttl <= 0):
        raise Reject(400, "INVALID_TTL", "ttl must be a positive integer", "ttl")
    when = m.get("scheduledSent")
    if when is not None:
        try:
            parsed = _dt.datetime.fromisoformat(when) if isinstance(when, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise Reject(400, "INVALID_DATE", "scheduledSent must be an ISO 8601 UTC date-time", "scheduledSent")
        if parsed - now > _dt.timedelta(days=30):
            raise Reject(400, "INVALID_DATE", "scheduledSent is at most 30 days ahead", "scheduledSent")
