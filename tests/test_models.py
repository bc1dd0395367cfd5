from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_async import Message, MessageType, Result, Status, ValidationError
from cascade_async._wire import encode_batch

UTC = dt.UTC
NOW = dt.datetime.now(UTC)

# The provider's documented request examples, exactly as documented.
DOCUMENTED = [
    '[{"id":"order-12345","fromName":"YourStore","toPhone":"+380501234567","messageType":"transaction",'
    '"text":"Your order #12345 has been confirmed","ttl":86400,"scheduledSent":"2025-01-25T10:00:00Z"}]',
    '[{"id":"tx-001","fromName":"Shop","toPhone":"+380501234567","messageType":"transaction","text":"Order shipped"},'
    '{"id":"tx-002","fromName":"Shop","toPhone":"+380671234567","messageType":"promo","text":"Sale -20%","ttl":86400},'
    '{"id":"tx-003","fromName":"Shop","toPhone":"+380931234567","messageType":"flashcall"}]',
    '[{"id":"survey-1","fromName":"Shop","toPhone":"+380501234567","messageType":"viber_survey",'
    '"text":"How did we do?","ttl":604800,"surveyOptions":["Great","OK","Bad"]}]',
    '[{"id":"promo-777","fromName":"YourStore","toPhone":"+380501234567","messageType":"promo",'
    '"text":"Weekend sale: -20% on everything","ttl":172800,"scheduledSent":"2025-01-25T10:00:00Z"}]',
    '[{"id":"verify-42","fromName":"YourStore","toPhone":"+380501234567","messageType":"flashcall","ttl":300}]',
]
DOCUMENTED_IDS = ["order", "bulk-of-three", "survey", "scheduled-promo", "flashcall"]


def base(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": "t-1",
        "fromName": "Shop",
        "toPhone": "+380501234567",
        "messageType": "promo",
        "text": "Hello",
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("doc", DOCUMENTED, ids=DOCUMENTED_IDS)
def test_documented_examples_round_trip_byte_for_byte(doc: str) -> None:
    messages = [Message.from_dict(d) for d in json.loads(doc)]
    assert encode_batch(messages) == doc.encode()


def test_snake_case_attributes_and_camel_case_wire_names() -> None:
    when = NOW + dt.timedelta(days=1)
    m = Message(
        id="a",
        from_name="S",
        to_phone="+12025550123",
        message_type=MessageType.VIBER_SURVEY,
        text="Q?",
        ttl=60,
        scheduled_sent=when,
        survey_options=("x", "y"),
    )
    wire = m.to_dict()
    assert set(wire) == {"id", "fromName", "toPhone", "messageType", "text", "ttl", "scheduledSent", "surveyOptions"}
    assert wire["messageType"] == "viber_survey"
    assert wire["scheduledSent"].endswith("Z")


def test_unset_optional_fields_are_omitted() -> None:
    m = Message(id="a", from_name="S", to_phone="+12025550123", message_type=MessageType.FLASHCALL)
    assert json.loads(encode_batch([m])) == [
        {"id": "a", "fromName": "S", "toPhone": "+12025550123", "messageType": "flashcall"}
    ]


def test_non_utc_datetime_is_sent_as_utc_with_z() -> None:
    kyiv = dt.timezone(dt.timedelta(hours=2))
    m = Message.from_dict(base(scheduledSent=(NOW + dt.timedelta(hours=1)).astimezone(kyiv).isoformat()))
    assert m.scheduled_sent is not None
    assert m.scheduled_sent.utcoffset() == dt.timedelta(0)
    assert m.to_dict()["scheduledSent"].endswith("Z")


def test_message_is_frozen() -> None:
    m = Message.from_dict(base())
    with pytest.raises(AttributeError):
        m.text = "changed"  # type: ignore[misc]


INVALID = [
    pytest.param(base(id=""), "id", id="id-empty"),
    pytest.param(base(id="x" * 256), "id", id="id-too-long"),
    pytest.param(base(id="a\nb"), "id", id="id-control-char"),
    pytest.param(base(id=5), "id", id="id-not-string"),
    pytest.param(base(fromName=""), "fromName", id="from-empty"),
    pytest.param(base(fromName="  "), "fromName", id="from-blank"),
    pytest.param({k: v for k, v in base().items() if k != "fromName"}, "fromName", id="from-missing"),
    pytest.param(base(toPhone="380501234567"), "toPhone", id="phone-no-plus"),
    pytest.param(base(toPhone="0501234567"), "toPhone", id="phone-national"),
    pytest.param(base(toPhone="+0501234567"), "toPhone", id="phone-leading-zero"),
    pytest.param(base(toPhone="+1234567"), "toPhone", id="phone-7-digits"),
    pytest.param(base(toPhone="+1234567890123456"), "toPhone", id="phone-16-digits"),
    pytest.param(base(toPhone="+38 050 123 45 67"), "toPhone", id="phone-spaces"),
    pytest.param(base(messageType="sms"), "messageType", id="type-unknown"),
    pytest.param(base(text=None), "text", id="text-missing"),
    pytest.param(base(text=""), "text", id="text-empty"),
    pytest.param(base(messageType="flashcall", text="hi"), "text", id="flashcall-with-text"),
    pytest.param(base(messageType="viber_survey"), "surveyOptions", id="survey-no-options"),
    pytest.param(base(messageType="viber_survey", surveyOptions=["a"]), "surveyOptions", id="survey-1-option"),
    pytest.param(
        base(messageType="viber_survey", surveyOptions=list("abcdef")), "surveyOptions", id="survey-6-options"
    ),
    pytest.param(base(messageType="viber_survey", surveyOptions=["a", ""]), "surveyOptions", id="survey-empty-option"),
    pytest.param(
        base(messageType="viber_survey", surveyOptions=["a", "b"], text="x" * 86), "text", id="survey-text-86"
    ),
    pytest.param(base(surveyOptions=["a", "b"]), "surveyOptions", id="options-on-promo"),
    pytest.param(base(ttl=0), "ttl", id="ttl-zero"),
    pytest.param(base(ttl=-5), "ttl", id="ttl-negative"),
    pytest.param(base(ttl="60"), "ttl", id="ttl-string"),
    pytest.param(base(ttl=1.5), "ttl", id="ttl-float"),
    pytest.param(base(ttl=True), "ttl", id="ttl-bool"),
    pytest.param(base(scheduledSent="2025-01-25T10:00:00"), "scheduledSent", id="schedule-naive"),
    pytest.param(base(scheduledSent="tomorrow"), "scheduledSent", id="schedule-garbage"),
    pytest.param(base(scheduledSent=(NOW + dt.timedelta(days=31)).isoformat()), "scheduledSent", id="schedule-31-days"),
    pytest.param(base(extra="x"), "extra", id="unknown-field"),
]


@pytest.mark.parametrize(("data", "field"), INVALID)
def test_invalid_wire_dicts_name_field_and_tracking_id(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Message.from_dict(data)
    err = info.value
    assert err.field == field
    if isinstance(data.get("id"), str) and field != "id":
        assert err.tracking_id == data["id"]
        assert repr(data["id"]) in str(err)
    assert field in str(err)


VALID = [
    pytest.param(base(), id="promo"),
    pytest.param(base(messageType="transaction", ttl=300), id="transaction-ttl"),
    pytest.param(base(messageType="flashcall", text=None), id="flashcall"),
    pytest.param(base(messageType="viber_survey", surveyOptions=["a", "b"], text="x" * 85), id="survey-85"),
    pytest.param(base(messageType="viber_survey", surveyOptions=list("abcde")), id="survey-5-options"),
    pytest.param(base(id="x" * 255), id="id-255"),
    pytest.param(base(toPhone="+12345678"), id="phone-8-digits"),
    pytest.param(base(toPhone="+123456789012345"), id="phone-15-digits"),
    pytest.param(base(scheduledSent="2025-01-25T10:00:00Z"), id="schedule-past"),
    pytest.param(base(scheduledSent=(NOW + dt.timedelta(days=29)).isoformat()), id="schedule-29-days"),
]


@pytest.mark.parametrize("data", VALID)
def test_valid_wire_dicts(data: dict[str, Any]) -> None:
    m = Message.from_dict(data)
    assert Message.from_dict(m.to_dict()) == m


def test_hints_for_common_phone_mistakes() -> None:
    with pytest.raises(ValidationError, match=r"\+380501234567"):
        Message.from_dict(base(toPhone="0501234567"))
    with pytest.raises(ValidationError, match=r"leading '\+'"):
        Message.from_dict(base(toPhone="380501234567"))


def test_validation_at_construction_in_python() -> None:
    with pytest.raises(ValidationError) as info:
        Message(id="k", from_name="S", to_phone="+380501234567", message_type=MessageType.PROMO, text="x", ttl=0)
    assert (info.value.field, info.value.tracking_id) == ("ttl", "k")
    with pytest.raises(ValidationError, match="naive"):
        Message(
            id="k",
            from_name="S",
            to_phone="+380501234567",
            message_type=MessageType.PROMO,
            text="x",
            scheduled_sent=dt.datetime(2030, 1, 1),
        )
    with pytest.raises(ValidationError, match="messageType"):
        Message(id="k", from_name="S", to_phone="+380501234567", message_type="bogus", text="x")  # type: ignore[arg-type]


def test_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="toPhone"):
        Message.from_dict(base(toPhone="12"))


def test_from_dict_refuses_non_mappings() -> None:
    with pytest.raises(ValidationError):
        Message.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
def test_every_e164_number_is_accepted(phone: str) -> None:
    assert Message.from_dict(base(toPhone=phone)).to_phone == phone


@given(
    st.text(max_size=20).filter(
        lambda s: (
            not (s.startswith("+") and s[1:].isascii() and s[1:].isdigit() and s[1:2] != "0" and 8 <= len(s) - 1 <= 15)
        )
    )
)
def test_everything_else_is_refused_as_phone(phone: str) -> None:
    with pytest.raises(ValidationError) as info:
        Message.from_dict(base(toPhone=phone))
    assert info.value.field == "toPhone"


@given(st.text(min_size=1, max_size=255).filter(lambda s: not any(ord(c) < 32 or ord(c) == 127 for c in s)))
def test_any_printable_id_up_to_255_is_accepted_and_survives_the_wire(tid: str) -> None:
    m = Message.from_dict(base(id=tid))
    assert msgspec.json.decode(encode_batch([m]))[0]["id"] == tid


@given(st.text(min_size=1, max_size=300))
def test_ids_with_control_chars_or_too_long_are_refused(tid: str) -> None:
    bad = len(tid) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in tid)
    if bad:
        with pytest.raises(ValidationError):
            Message.from_dict(base(id=tid))
    else:
        Message.from_dict(base(id=tid))


def test_result_is_frozen_and_small() -> None:
    r = Result("a", Status.ACCEPTED, "uuid", None, 1)
    assert r.ok
    assert not r.outcome_unknown
    with pytest.raises(AttributeError):
        r.status = Status.FAILED  # type: ignore[misc]
    assert not hasattr(r, "__dict__")


# --- placeholders, the SMS cost of a message, and flashcall's fallback (#14) -------------------

FLASHCALL = {"id": "v-1", "fromName": "Shop", "toPhone": "+380501234567", "messageType": "flashcall"}


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        pytest.param("50% off today", True, id="a literal percent"),
        pytest.param("Hi %name=12%, 100% yours", True, id="a valid placeholder and a percent"),
        pytest.param("Go %short_url=9007199254740991%", True, id="the largest id (checked on the full path)"),
        pytest.param("Hi %name=0%", False, id="id zero"),
        pytest.param("Hi %name=-1%", False, id="a negative id"),
        pytest.param("Hi %url=abc%", False, id="not a number"),
        pytest.param("Hi %short_url=012%", False, id="a leading zero"),
        pytest.param("Hi %name=9007199254740992%", False, id="past the largest id"),
    ],
)
def test_placeholders_are_checked_the_same_on_the_full_and_the_chunk_path(text: str, ok: bool) -> None:
    from cascade_async._models import convert_chunk

    if ok:
        assert Message.from_dict(base(text=text)).text == text
    else:
        with pytest.raises(ValidationError) as info:
            Message.from_dict(base(text=text))
        assert (info.value.field, info.value.tracking_id) == ("text", "t-1")
    chunk = convert_chunk([base(id="a"), base(id="b", text=text), base(id="c")])
    if not ok:
        assert chunk is None  # the chunk goes down the full path, which names the field
    elif len(text) < 30:
        assert chunk is not None  # the usual texts stay on the fast path


def test_sms_segments_counts_the_text_and_a_flashcall_counts_its_fallback() -> None:
    from cascade_async import Fallback

    assert Message.from_dict(base(text="x" * 161)).sms_segments.segments == 2
    assert Message.from_dict(base(text="Привіт")).sms_segments.first_non_gsm == "П"
    assert Message.from_dict(FLASHCALL).sms_segments.segments == 0
    fb = Message.from_dict(FLASHCALL | {"fallback": {"messageType": "transaction", "text": "Code: 1234 €"}})
    assert fb.sms_segments.units == 13  # the euro sign counts two
    assert Fallback(text="a").message_type is MessageType.TRANSACTION


@pytest.mark.parametrize(
    ("over", "field"),
    [
        pytest.param(
            {"fallback": {"messageType": "promo", "text": "x"}}, "fallback.messageType", id="a promo fallback"
        ),
        pytest.param({"fallback": {"messageType": "transaction", "text": " "}}, "fallback.text", id="a blank text"),
        pytest.param({"fallback": {"messageType": "transaction"}}, "fallback.text", id="no text"),
        pytest.param({"fallback": {"text": "Hi %name=x%"}}, "fallback.text", id="a bad placeholder"),
        pytest.param({"fallback": {"text": "x", "extra": 1}}, "fallback", id="an unknown key"),
        pytest.param({"fallback": "x"}, "fallback", id="not an object"),
    ],
)
def test_an_invalid_fallback_is_refused_naming_the_field_and_the_message(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Message.from_dict(FLASHCALL | over)
    assert info.value.field is not None
    assert info.value.field.startswith(field)
    assert info.value.tracking_id == "v-1"


def test_a_fallback_is_only_for_flashcalls_and_never_takes_the_chunk_path() -> None:
    from cascade_async import Fallback
    from cascade_async._models import convert_chunk

    with pytest.raises(ValidationError, match="only allowed on flashcall") as info:
        Message.from_dict(base(fallback={"messageType": "transaction", "text": "x"}))
    assert info.value.field == "fallback"
    with pytest.raises(ValidationError, match="fallback"):
        Message(
            id="a",
            from_name="S",
            to_phone="+380501234567",
            message_type=MessageType.PROMO,
            text="x",
            fallback=Fallback(text="y"),
        )
    assert convert_chunk([base(fallback={"messageType": "transaction", "text": "x"})]) is None


def test_a_fallback_goes_out_in_the_documented_wire_shape() -> None:
    from cascade_async import Fallback

    m = Message(
        id="v-1",
        from_name="Shop",
        to_phone="+380501234567",
        message_type=MessageType.FLASHCALL,
        fallback=Fallback(message_type=MessageType.TRANSACTION, text="Your code is 1234"),
    )
    assert encode_batch([m]) == (
        b'[{"id":"v-1","fromName":"Shop","toPhone":"+380501234567","messageType":"flashcall",'
        b'"fallback":{"messageType":"transaction","text":"Your code is 1234"}}]'
    )
    assert Message.from_dict(json.loads(encode_batch([m]))[0]) == m


_fragments = st.sampled_from(["%", "name=", "url=", "short_url=", "1", "0", "12", "9" * 16, "x", "\n", " ", "-"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(_fragments, min_size=1, max_size=8).map("".join), min_size=1, max_size=3))
def test_the_chunk_path_takes_no_text_the_full_checks_refuse_for_its_placeholders(texts: list[str]) -> None:
    from cascade_async._models import convert_chunk

    chunk = [base(id=f"m{i}", text=f"t{text}") for i, text in enumerate(texts)]
    fast = convert_chunk(chunk)
    if fast is None:
        return  # declined: each then goes through the full checks
    for item, message in zip(chunk, fast, strict=True):
        assert Message.from_dict(item).to_dict() == message.to_dict()
