"""Every exception cascade-async raises or puts into a ``Result``.

The tree::

    CascadeError
    ├── ValidationError          (also ValueError) a message refused before sending
    ├── APIError                 the API answered with a status that is not a success
    │   ├── BadRequestError      400, 413, 422 and other permanent 4xx
    │   ├── AuthenticationError  401, 403: stops the whole call
    │   ├── EndpointError        3xx, 404, 405, 415: a wrong base URL or a proxy; stops the call
    │   ├── MessageNotFoundError 404 from the status host: no such message (yet)
    │   ├── RateLimitError       429, with ``retry_after``
    │   └── ServerError          5xx (and 408)
    ├── TransportError           connection failures
    │   └── TimeoutError         (also builtins.TimeoutError) no answer in time
    ├── ProtocolError            a 2xx whose body is not the documented shape
    ├── ClientClosedError        (also RuntimeError) the client or stream was closed
    └── JournalError             a journal that cannot be used (a newer schema, not a journal)
        └── JournalLockedError   another process is sending with this journal

``outcome_unknown`` is true when the request may have reached the provider and been
accepted although no confirmation came back (a lost response, a malformed 200, a gateway
timeout): such messages must not be reported delivered, nor silently treated as never sent.

How each HTTP status is read is one table in ``_statuses.py`` (``classify``); which class an
error answer becomes is ``error_from_response`` below, and ``_error_body.py`` reads its body.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Self

from ._error_body import parse_retry_after, read_error_body
from ._redact import redact
from ._statuses import AUTH_STATUSES, ENDPOINT_STATUSES, UNKNOWN_STATUSES

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CascadeError",
    "ClientClosedError",
    "EndpointError",
    "ErrorCode",
    "JournalError",
    "JournalLockedError",
    "MessageNotFoundError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "TimeoutError",
    "TransportError",
    "ValidationError",
]


class ErrorCode(enum.StrEnum):
    """Codes the client itself gives. Codes from the provider stay open strings."""

    DUPLICATE_ID = "DUPLICATE_ID"  # the id was already used in this call (or job)
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"  # one message encodes above max_batch_bytes
    INVALID_FIELD = "INVALID_FIELD"  # a field breaks the contract
    UNPARSEABLE = "UNPARSEABLE"  # an input line or row could not be read at all
    NOT_ISOLATED = "NOT_ISOLATED"  # a 400 batch whose bad messages were not found within the cap
    CONTENT_CHANGED = "CONTENT_CHANGED"  # a resumed job holds the id with other content
    MISSING_VARIABLE = "MISSING_VARIABLE"  # a template field has no value for this recipient


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

    def for_message(self, tracking_id: str) -> Self:
        """A copy of this error for one message of a batch: each Result owns its exception,
        so raising it in one caller never changes what another caller sees."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.args = self.args
        clone.tracking_id = tracking_id
        clone.__cause__ = self.__cause__
        clone.__suppress_context__ = True
        return clone

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle by state, not by calling __init__ again: subclasses take required keyword
        # arguments that ``args`` does not hold (a Result's error crosses processes).
        return _restore, (type(self), self.args), self.__dict__

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
        self,
        message: str,
        *,
        field: str | None,
        tracking_id: str | None,
        code: str = ErrorCode.INVALID_FIELD,
        line: int | None = None,
    ) -> None:
        head = f"{field}: {message}" if field else message
        if tracking_id is not None:
            head = f"message {tracking_id!r}: {head}"
        if line is not None:
            head = f"line {line}: {head}"
        super().__init__(head, tracking_id=tracking_id)
        self.field = field
        self.problem = message
        self.line = line
        self._code = code

    @property
    def code(self) -> str:
        return self._code


class APIError(CascadeError):
    """The API answered with a status that is not a success."""

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
    """The request was refused as invalid (400, 413, 422 and other permanent 4xx): never retried."""


class EndpointError(APIError):
    """The endpoint is not the API: a redirect, 404, 405 or 415, as from a wrong base URL or a
    proxy. It says nothing about the messages, so they stay unsettled and the call stops."""


class MessageNotFoundError(APIError):
    """The status host does not know this ``messageId`` (404): a wrong id, or a message too new to show.

    On the send routes a 404 means a wrong endpoint (``EndpointError``); on the status route it
    is about the message, so it gets its own class.
    """


class AuthenticationError(APIError):
    """The credentials were missing, wrong or not allowed (401, 403): never retried."""


class RateLimitError(APIError):
    """Too many requests (429). ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """The provider failed (5xx, or 408). Retried with backoff when ``classify`` says so."""


class TransportError(CascadeError):
    """The request did not complete: connection refused or reset, or a timeout."""


class TimeoutError(TransportError, builtins.TimeoutError):
    """No complete answer in time (the request may have arrived: ``outcome_unknown``), or a
    ``send()`` that outlived ``send_timeout``."""


class ProtocolError(CascadeError):
    """A 2xx answer that is not the documented shape, or that misses a request's tracking id."""


class ClientClosedError(CascadeError, RuntimeError):
    """The client (or the stream) was closed: nothing more is sent through it."""


class JournalError(CascadeError):
    """A journal that cannot be used as it is: written by a newer version, or not a journal."""


class JournalLockedError(JournalError):
    """Another process holds the journal's sender lock: a second sender would send twice."""


# --- which exception for which status -------------------------------------------------


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, *, route: str | None = None, secrets: Sequence[str] = ()
) -> APIError:
    """Build the matching ``APIError`` for a non-200 answer, whatever its body looks like.

    ``secrets``, the credentials the request carried, are hidden wherever the answer echoes them.
    """
    code, message, field, text = read_error_body(status, body)
    if secrets:
        code, field = (None if v is None else redact(v, secrets) for v in (code, field))
        message, text = redact(message, secrets), redact(text, secrets)
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "field": field,
        "body": text,
        "route": route,
    }
    if status in UNKNOWN_STATUSES:
        kwargs["outcome_unknown"] = True
    if status == 429:
        return RateLimitError(message, retry_after=parse_retry_after(headers.get("Retry-After")), **kwargs)
    if status in AUTH_STATUSES:
        return AuthenticationError(message, **kwargs)
    if status in ENDPOINT_STATUSES or status < 200:
        if 300 <= status < 400 and headers.get("Location"):
            message += f" (redirected to {redact(headers['Location'], secrets)}; check base_url)"
        return EndpointError(message, **kwargs)
    if status >= 500 or status == 408:
        return ServerError(message, **kwargs)
    if 400 <= status < 500:
        return BadRequestError(message, **kwargs)
    return APIError(message, **kwargs)


def _restore(cls: type[CascadeError], args: tuple[Any, ...]) -> CascadeError:
    """An error unpickled: its class without ``__init__``; pickle then sets its attributes."""
    error = cls.__new__(cls)
    error.args = args
    return error
