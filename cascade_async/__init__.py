"""cascade-async: the asyncio client for SMSBAT's Cascade Messages API."""

from ._client import DEFAULT_BASE_URL, CascadeClient
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CascadeError,
    ClientClosedError,
    EndpointError,
    ErrorCode,
    ProtocolError,
    RateLimitError,
    ServerError,
    TimeoutError,
    TransportError,
    ValidationError,
)
from ._events import BatchCompleted, BatchSent, Event, EventHook, RetryScheduled
from ._inputs import BadLine, read_csv, read_json_array, read_jsonl
from ._journal import Journal
from ._models import Message, MessageType, Result, Route, Status
from ._ratelimit import Priority, RateLimit, RateLimiter, SharedLimitFallback, SharedLimitRecovered
from ._report import BulkReport
from ._retry import RetryPolicy
from ._sending import Recorder
from ._stream import MessageSource, ResultStream
from ._transport import AiohttpTransport, RawResponse, Transport
from ._version import __version__

__all__ = [
    "APIError",
    "AiohttpTransport",
    "AuthenticationError",
    "BadLine",
    "BadRequestError",
    "BatchCompleted",
    "BatchSent",
    "BulkReport",
    "CascadeClient",
    "CascadeError",
    "ClientClosedError",
    "DEFAULT_BASE_URL",
    "EndpointError",
    "ErrorCode",
    "Event",
    "EventHook",
    "Journal",
    "Message",
    "MessageSource",
    "MessageType",
    "Priority",
    "ProtocolError",
    "RateLimit",
    "RateLimitError",
    "RateLimiter",
    "RawResponse",
    "Recorder",
    "Result",
    "ResultStream",
    "RetryPolicy",
    "RetryScheduled",
    "Route",
    "ServerError",
    "SharedLimitFallback",
    "SharedLimitRecovered",
    "Status",
    "TimeoutError",
    "Transport",
    "TransportError",
    "ValidationError",
    "__version__",
    "read_csv",
    "read_json_array",
    "read_jsonl",
]
