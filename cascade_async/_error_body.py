"""Reading an error answer: its body in any of the provider's shapes, and its ``Retry-After``."""

from __future__ import annotations

import datetime as _dt
import email.utils

import msgspec

__all__ = ["parse_retry_after", "read_error_body"]

# How much of a raw error body is kept on the exception (bodies can be HTML pages).
_MAX_KEPT_BODY = 4096


class _Detail(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None
    field: str | None = None


class _Envelope(msgspec.Struct):
    # Shape 1: {"error": {"code", "message", "field"}}
    # Shape 2: {"status": 400, "error": "Bad Request", "message": "...", "code": 1001}
    # Shape 3: {"error": "Too Many Requests", "message": "...", "status": 429}
    error: _Detail | str | None = None
    message: str | None = None
    code: str | int | None = None
    field: str | None = None
    status: int | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def parse_retry_after(value: str | None, *, now: _dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.UTC)
        seconds = (when - (now or _dt.datetime.now(_dt.UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def _text(body: bytes) -> str:
    return body[:_MAX_KEPT_BODY].decode("utf-8", "replace")


def read_error_body(status: int, body: bytes) -> tuple[str | None, str, str | None, str]:
    """``(code, message, field, kept body)`` of a non-200 answer, whatever its body looks like."""
    code: str | None = None
    message: str | None = None
    field: str | None = None
    try:
        env = _envelope_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        env = None
    if env is not None:
        if isinstance(env.error, _Detail):
            detail = env.error
            code = None if detail.code is None else str(detail.code)
            message, field = detail.message, detail.field
        else:
            code = None if env.code is None else str(env.code)
            message = env.message or env.error
            field = env.field
    if not message:
        text = _text(body).strip()
        message = text[:200] if text and env is None else _default_reason(status)
    return code, message, field, _text(body)


def _default_reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"unexpected HTTP status {status}"
