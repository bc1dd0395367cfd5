from __future__ import annotations

import datetime as dt
import json

import pytest

from cascade_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    EndpointError,
    RateLimitError,
    ServerError,
)
from cascade_async._error_body import parse_retry_after
from cascade_async._errors import error_from_response

SHAPE_1 = json.dumps(
    {"error": {"code": "INVALID_PHONE", "message": "Invalid phone number format", "field": "toPhone"}}
).encode()
SHAPE_1_NO_FIELD = json.dumps({"error": {"code": "X", "message": "nope"}}).encode()
SHAPE_2 = json.dumps({"status": 400, "error": "Bad Request", "message": "Invalid phone number", "code": 1003}).encode()
SHAPE_3 = json.dumps({"error": "Too Many Requests", "message": "Slow down", "status": 429}).encode()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        pytest.param(400, BadRequestError, id="400"),
        pytest.param(422, BadRequestError, id="422"),
        pytest.param(404, EndpointError, id="404"),
        pytest.param(413, BadRequestError, id="413"),
        pytest.param(415, EndpointError, id="415"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, AuthenticationError, id="403"),
        pytest.param(429, RateLimitError, id="429"),
        pytest.param(500, ServerError, id="500"),
        pytest.param(502, ServerError, id="502"),
        pytest.param(503, ServerError, id="503"),
        pytest.param(504, ServerError, id="504"),
    ],
)
def test_status_maps_to_class_with_details(status: int, cls: type[APIError]) -> None:
    err = error_from_response(status, {}, SHAPE_1, route="/r")
    assert type(err) is cls
    assert (err.status, err.code, err.message, err.field, err.route) == (
        status,
        "INVALID_PHONE",
        "Invalid phone number format",
        "toPhone",
        "/r",
    )
    assert "INVALID_PHONE" in str(err)
    assert str(status) in str(err)


@pytest.mark.parametrize(
    ("body", "code", "message", "field"),
    [
        pytest.param(SHAPE_1, "INVALID_PHONE", "Invalid phone number format", "toPhone", id="nested"),
        pytest.param(SHAPE_1_NO_FIELD, "X", "nope", None, id="nested-no-field"),
        pytest.param(SHAPE_2, "1003", "Invalid phone number", None, id="flat-numeric-code"),
        pytest.param(SHAPE_3, None, "Slow down", None, id="flat-error-string"),
        pytest.param(b"<html>502 Bad Gateway</html>", None, "<html>502 Bad Gateway</html>", None, id="html"),
        pytest.param(b"", None, "Bad Request", None, id="empty"),
        pytest.param(b"[1, 2]", None, "[1, 2]", None, id="json-array"),
        pytest.param(b'{"error": 5}', None, '{"error": 5}', None, id="json-odd-types"),
        pytest.param(b"\xff\xfe garbage", None, "\ufffd\ufffd garbage", None, id="not-utf8"),
    ],
)
def test_every_error_body_shape(body: bytes, code: str | None, message: str, field: str | None) -> None:
    err = error_from_response(400, {}, body)
    assert err.status == 400
    assert (err.code, err.message, err.field) == (code, message, field)
    assert err.body == body.decode("utf-8", "replace")


def test_error_message_falls_back_to_error_string() -> None:
    err = error_from_response(429, {}, json.dumps({"error": "Too Many Requests", "status": 429}).encode())
    assert err.message == "Too Many Requests"


def test_raw_body_kept_is_capped() -> None:
    err = error_from_response(500, {}, b"x" * 100_000)
    assert len(err.body) == 4096
    assert err.status == 500


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("2", 2.0, id="seconds"),
        pytest.param(" 1.5 ", 1.5, id="fractional"),
        pytest.param("-3", 0.0, id="negative-clamped"),
        pytest.param("Thu, 26 Nov 2026 12:00:10 GMT", 10.0, id="http-date"),
        pytest.param("Thu, 26 Nov 2026 11:00:00 GMT", 0.0, id="http-date-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
        pytest.param("nan", None, id="nan"),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after(header, now=now) == expected


def test_rate_limit_error_carries_retry_after() -> None:
    err = error_from_response(429, {"Retry-After": "7"}, SHAPE_3)
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 7.0


def test_error_answers_are_definite_outcomes() -> None:
    for status in (400, 408, 429, 500, 502, 503, 521, 522, 523):
        assert not error_from_response(status, {}, b"").outcome_unknown


@pytest.mark.parametrize("status", [504, 520, 524])
def test_a_gateway_that_gave_up_leaves_the_outcome_unknown(status: int) -> None:
    assert error_from_response(status, {}, b"").outcome_unknown
