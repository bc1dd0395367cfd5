"""cascade-async: the asyncio client for SMSBAT's Cascade Messages API."""

from ._client import DATA_RATE_LIMIT, DEFAULT_BASE_URL, DEFAULT_STATUS_URL, CascadeClient
from ._delivery import DeliveryReport, DeliveryStatus
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    CascadeError,
    ClientClosedError,
    EndpointError,
    ErrorCode,
    JournalError,
    JournalLockedError,
    MessageNotFoundError,
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
from ._models import Fallback, Message, MessageType, Result, Route, Status
from ._outcomes import Recorder
from ._ratelimit import Priority, RateLimit, RateLimiter, SharedLimitFallback, SharedLimitRecovered, credential_key
from ._report import BulkReport
from ._retry import RetryPolicy
from ._segments import SHORT_URL_LENGTH, SegmentInfo, SmsEncoding, sms_segments
from ._stream import MessageSource, ResultStream
from ._templates import Personalised, Rejected, Template, TemplateItem, TemplateItems
from ._tracking import TrackItem
from ._transport import AiohttpTransport, RawResponse, Transport
from ._uploads import UploadReport
from ._variable_ids import IdAllocator, LocalIdAllocator, RedisIdAllocator, VariablePool
from ._variables import Placeholder, Variable, VariableType, check_placeholders, find_placeholders, variable_batches
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
    "DATA_RATE_LIMIT",
    "DEFAULT_BASE_URL",
    "DEFAULT_STATUS_URL",
    "DeliveryReport",
    "DeliveryStatus",
    "EndpointError",
    "ErrorCode",
    "Event",
    "EventHook",
    "Fallback",
    "IdAllocator",
    "Journal",
    "JournalError",
    "JournalLockedError",
    "LocalIdAllocator",
    "Message",
    "MessageNotFoundError",
    "MessageSource",
    "MessageType",
    "Personalised",
    "Placeholder",
    "Priority",
    "ProtocolError",
    "RateLimit",
    "RateLimitError",
    "RateLimiter",
    "RawResponse",
    "Recorder",
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
    "SharedLimitFallback",
    "SharedLimitRecovered",
    "SmsEncoding",
    "Status",
    "Template",
    "TemplateItem",
    "TemplateItems",
    "TimeoutError",
    "TrackItem",
    "Transport",
    "TransportError",
    "UploadReport",
    "ValidationError",
    "Variable",
    "VariablePool",
    "VariableType",
    "__version__",
    "check_placeholders",
    "credential_key",
    "find_placeholders",
    "read_csv",
    "read_json_array",
    "read_jsonl",
    "sms_segments",
    "variable_batches",
]
