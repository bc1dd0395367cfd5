"""cascade-async: the asyncio client for SMSBAT's Cascade Messages API."""

from ._client import DEFAULT_BASE_URL, CascadeClient
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CascadeError,
    ProtocolError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from ._events import BatchCompleted, BatchSent, Event, EventHook, RetryScheduled
from ._journal import Journal
from ._models import Message, MessageType, Result, Route, Status
from ._ratelimit import RateLimit
from ._report import BulkReport
from ._retry import RetryPolicy
from ._segments import SHORT_URL_LENGTH, SegmentInfo, SmsEncoding, sms_segments
from ._stream import MessageSource, ResultStream
from ._templates import Personalised, Rejected, Template, TemplateItem
from ._transport import AiohttpTransport, RawResponse, Transport
from ._variable_ids import IdAllocator, LocalIdAllocator, RedisIdAllocator, VariablePool
from ._variables import Placeholder, Variable, VariableType, check_placeholders, find_placeholders, variable_batches
from ._version import __version__

__all__ = [
    "APIError",
    "AiohttpTransport",
    "AuthenticationError",
    "BadRequestError",
    "BatchCompleted",
    "BatchSent",
    "BulkReport",
    "CascadeClient",
    "CascadeError",
    "DEFAULT_BASE_URL",
    "Event",
    "EventHook",
    "IdAllocator",
    "Journal",
    "LocalIdAllocator",
    "Message",
    "MessageSource",
    "MessageType",
    "Personalised",
    "Placeholder",
    "ProtocolError",
    "RateLimit",
    "RateLimitError",
    "RawResponse",
    "RedisIdAllocator",
    "Rejected",
    "Result",
    "ResultStream",
    "RetryPolicy",
    "RetryScheduled",
    "Route",
    "SHORT_URL_LENGTH",
    "SegmentInfo",
    "ServerError",
    "SmsEncoding",
    "Status",
    "Template",
    "TemplateItem",
    "Transport",
    "TransportError",
    "ValidationError",
    "Variable",
    "VariablePool",
    "VariableType",
    "__version__",
    "check_placeholders",
    "find_placeholders",
    "sms_segments",
    "variable_batches",
]
