"""Fuzzing: whatever comes in, only the documented errors come out."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade_async import APIError, Message, ProtocolError, ValidationError
from cascade_async._errors import error_from_response
from cascade_async._wire import results_from_acks

FIELDS = ["id", "fromName", "toPhone", "messageType", "text", "ttl", "scheduledSent", "surveyOptions"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(),
    st.integers(min_value=200, max_value=20_000).map(lambda n: "\u0436" * n),
    st.sampled_from(["transaction", "promo", "viber_survey", "flashcall"]),
    st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True),
    st.datetimes(timezones=st.none() | st.timezones()),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=10
)
wire_dicts = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=10)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(wire_dicts)
def test_from_dict_raises_only_validation_errors(data: dict[str, Any]) -> None:
    try:
        m = Message.from_dict(data)
    except ValidationError as exc:
        message = str(exc)
    else:
        assert Message.from_dict(m.to_dict()) == m
        return
    assert message


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.binary()))
def test_from_dict_refuses_non_mappings_with_validation_errors(data: Any) -> None:
    try:
        Message.from_dict(data)
    except ValidationError:
        return
    raise AssertionError("accepted a non-mapping")


BATCH = [
    Message.from_dict({"id": f"m{i}", "fromName": "S", "toPhone": "+380501234567", "messageType": "flashcall"})
    for i in range(3)
]
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.sampled_from(["m0", "m1", "m2"]),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(["messageId", "trackinId", "x"]), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_like.map(lambda v: __import__("json").dumps(v).encode())))
def test_answer_parser_raises_only_protocol_errors(body: bytes) -> None:
    try:
        results = results_from_acks(BATCH, body, attempts=1)
    except ProtocolError:
        return
    assert [r.tracking_id for r in results] == ["m0", "m1", "m2"]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=100, max_value=999),
    st.binary(max_size=300) | json_like.map(lambda v: __import__("json").dumps(v).encode()),
    st.text(max_size=40),
)
def test_error_parser_always_returns_an_api_error_keeping_the_status(status: int, body: bytes, retry: str) -> None:
    err = error_from_response(status, {"Retry-After": retry}, body)
    assert isinstance(err, APIError)
    assert err.status == status
    assert isinstance(str(err), str)
