import cascade_async

PROMISED = {
    "CascadeClient",
    "Message",
    "MessageType",
    "Route",
    "Result",
    "Status",
    "BulkReport",
    "ResultStream",
    "RateLimit",
    "RateLimiter",
    "Priority",
    "SharedLimitFallback",
    "SharedLimitRecovered",
    "RetryPolicy",
    "CascadeError",
    "ValidationError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "ProtocolError",
    "BatchSent",
    "RetryScheduled",
    "BatchCompleted",
    "EventHook",
    "Transport",
    "RawResponse",
}


def test_all_is_sorted() -> None:
    assert cascade_async.__all__ == sorted(cascade_async.__all__)


def test_every_promised_name_is_exported_flat() -> None:
    missing = PROMISED - set(cascade_async.__all__)
    assert not missing
    for name in cascade_async.__all__:
        assert hasattr(cascade_async, name), name


def test_error_tree_has_one_root() -> None:
    for name in PROMISED:
        obj = getattr(cascade_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, cascade_async.CascadeError), name
    assert issubclass(cascade_async.ValidationError, ValueError)
