"""Every exception cascade-async raises or puts into a ``Result``.

The tree::

    CascadeError
    ├── ValidationError          (also ValueError) a message refused before sending
    ├── APIError                 the API answered with a non-200 status
    │   ├── BadRequestError      400, 422 (and other permanent 4xx: 404, 413, 415)
    │   ├── AuthenticationError  401, 403
    │   ├── RateLimitError       429, with ``retry_after``
    │   └── ServerError          5xx
    ├── TransportError           connection failures and timeouts
    └── ProtocolError            a 200 whose body is not the documented shape

``outcome_unknown`` is true when the request may have reached the provider and been
accepted although no confirmation came back (a lost response, a malformed 200): such
messages must not be reported delivered, nor silently treated as never sent.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CascadeError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "ValidationError",
]

# How much of a raw error body is kept on the exception (bodies can be HTML pages).
_MAX_KEPT_BODY = 4096


class CascadeError(Exception):
    """Root of every cascade-async error."""

    tracking_id: str | None
    outcome_unknown: bool
    #: Why no further attempt was made, when the error ended a batch's retries.
    gave_up: str | None = None

    def __init__(self, message: str, *, tracking_id: str | None = None, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.tracking_id = tracking_id
        self.outcome_unknown = outcome_unknown

    @property
    def code(self) -> str | None:
        return None

    def _describe(self) -> str:
        return self.message

    def __str__(self) -> str:
        text = self._describe()
        if self.outcome_unknown:
            text += " [outcome unknown: the provider may have accepted it]"
        if self.gave_up:
            text += f" [not retried: {self.gave_up}]"
        return text


class ValidationError(CascadeError, ValueError):
    """A message was refused on the client side; nothing was sent for it."""

    def __init__(
        self, message: str, *, field: str | None, tracking_id: str | None, code: str = "INVALID_FIELD"
    ) -> None:
        head = f"{field}: {message}" if field else message
        if tracking_id is not None:
            head = f"message {tracking_id!r}: {head}"
        super().__init__(head, tracking_id=tracking_id)
        self.field = field
        self.problem = message
        self._code = code

    @property
    def code(self) -> str:
        return self._code


class APIError(CascadeError):
    """The API answered with a status other than 200."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        field: str | None = None,
        body: str = "",
        route: str | None = None,
        tracking_id: str | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message, tracking_id=tracking_id, outcome_unknown=outcome_unknown)
        self.status = status
        self._code = code
        self.field = field
        self.body = body
        self.route = route

    @property
    def code(self) -> str | None:
        return self._code

    def _describe(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self._code:
            parts.append(self._code)
        text = f"{' '.join(parts)}: {self.message}"
        if self.field:
            text += f" (field {self.field})"
        return text


class BadRequestError(APIError):
    """The request was refused as invalid (400, 422 and other permanent 4xx): never retried."""


class AuthenticationError(APIError):
    """The credentials were missing, wrong or not allowed (401, 403): never retried."""


class RateLimitError(APIError):
    """Too many requests (429). ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """The provider failed (5xx). Retried with backoff."""


class TransportError(CascadeError):
    """The request did not complete: connection refused or reset, or a timeout."""


class ProtocolError(CascadeError):
    """A 200 answer that is not the documented shape, or that misses a request's tracking id."""


# --- parsing error answers ---------------------------------------------------------------


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


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, *, route: str | None = None) -> APIError:
    """Build the matching ``APIError`` for a non-200 answer, whatever its body looks like."""
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
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "field": field,
        "body": _text(body),
        "route": route,
    }
    if status == 429:
        return RateLimitError(message, retry_after=parse_retry_after(headers.get("Retry-After")), **kwargs)
    if status in (401, 403):
        return AuthenticationError(message, **kwargs)
    if status >= 500:
        return ServerError(message, **kwargs)
    if 400 <= status < 500:
        return BadRequestError(message, **kwargs)
    return APIError(message, **kwargs)


def _default_reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"unexpected HTTP status {status}"
