"""The delivery model: statuses, lenient parsing of the documented answers, the forward rule."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cascade_async import DeliveryReport, DeliveryStatus, ProtocolError
from cascade_async._delivery import forward, report_from_json


@pytest.mark.parametrize(
    ("raw", "status", "final"),
    [
        pytest.param("scheduled", DeliveryStatus.SCHEDULED, False, id="scheduled"),
        pytest.param("processing", DeliveryStatus.PROCESSING, False, id="processing"),
        pytest.param("delivered", DeliveryStatus.DELIVERED, True, id="delivered"),
        pytest.param("undeliverable", DeliveryStatus.UNDELIVERABLE, True, id="undeliverable"),
        pytest.param("permanenterror", DeliveryStatus.PERMANENTERROR, True, id="permanenterror"),
        pytest.param("Delivered", DeliveryStatus.DELIVERED, True, id="case-insensitive"),
        pytest.param("expired", DeliveryStatus.UNKNOWN, False, id="unknown-value-not-final"),
    ],
)
def test_each_documented_status_parses_with_its_finality_and_the_raw_text_is_kept(
    raw: str, status: DeliveryStatus, final: bool
) -> None:
    report = report_from_json(f'{{"deliverystatus": "{raw}"}}'.encode(), message_id="m1")
    assert (report.status, report.final, report.raw_status) == (status, final, raw)


def test_the_full_documented_answer_gives_exact_cost_currency_parts_and_channels() -> None:
    body = (
        b'{"messagelistId": 123456, "messageId": "abc", "deliverystatus": "delivered", "partscount": 2,'
        b' "cost": 0.05, "fallbacks": [{"type": "sms", "status": "not_used"}],'
        b' "extendedStatuses": {"viber": "delivered", "sms": "not_used"}, "rate": 0.025, "rateAmount": 0.025,'
        b' "rateCurrency": "UAH", "billAmount": 0.05, "billCurrency": "UAH", "somethingNew": [1]}'
    )
    report = report_from_json(body, message_id="ignored-when-the-answer-names-it", tracking_id="order-1")
    assert report.message_id == "abc"
    assert report.tracking_id == "order-1"
    assert report.cost == Decimal("0.05")
    assert report.currency == "UAH"
    assert report.parts == 2
    assert report.channels == {"viber": "delivered", "sms": "not_used"}
    assert report.channel == "viber"
    assert report.raw["somethingNew"] == [1]


def test_only_deliverystatus_is_needed_and_the_rest_stays_empty() -> None:
    report = report_from_json(b'{"deliverystatus": "processing"}', message_id="m1")
    assert report == DeliveryReport(
        message_id="m1",
        status=DeliveryStatus.PROCESSING,
        final=False,
        raw_status="processing",
        raw={"deliverystatus": "processing"},
    )


def test_a_webhook_timestamp_is_read_as_utc() -> None:
    report = report_from_json(b'{"messageId": "m", "deliverystatus": "delivered", "timestamp": "2025-01-23T10:30:00Z"}')
    assert report.timestamp == dt.datetime(2025, 1, 23, 10, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(b"not json", "JSON object", id="not-json"),
        pytest.param(b"[1]", "JSON object", id="array"),
        pytest.param(b'{"messageId": "m"}', "deliverystatus", id="no-status"),
        pytest.param(b'{"deliverystatus": 3, "messageId": "m"}', "deliverystatus", id="status-not-text"),
        pytest.param(b'{"deliverystatus": "delivered"}', "messageId", id="no-id-anywhere"),
    ],
)
def test_a_bad_body_raises_a_protocol_error_that_says_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        report_from_json(body)


def _r(status: str) -> DeliveryReport:
    return report_from_json(f'{{"messageId": "m", "deliverystatus": "{status}"}}'.encode())


@pytest.mark.parametrize(
    ("old", "new", "kept"),
    [
        pytest.param(None, "scheduled", "scheduled", id="first-report"),
        pytest.param("scheduled", "processing", "processing", id="forward"),
        pytest.param("processing", "scheduled", "processing", id="late-scheduled-ignored"),
        pytest.param("delivered", "processing", "delivered", id="late-processing-after-delivered-ignored"),
        pytest.param("delivered", "undeliverable", "delivered", id="a-final-status-is-never-replaced"),
        pytest.param("scheduled", "delivered", "delivered", id="straight-to-final"),
        pytest.param("expired", "processing", "processing", id="unknown-then-known"),
        pytest.param("processing", "expired", "processing", id="unknown-never-regresses"),
    ],
)
def test_statuses_only_move_forward(old: str | None, new: str, kept: str) -> None:
    got = forward(None if old is None else _r(old), _r(new))
    assert got.raw_status == kept


@pytest.mark.parametrize("cost", ["sNaN", "NaN", "Infinity", "-Infinity"])
def test_a_cost_that_is_not_a_finite_number_is_no_cost(cost: str) -> None:
    from cascade_async.webhooks import parse_report

    report = parse_report(b'{"messageId": "m-1", "deliverystatus": "delivered", "cost": "' + cost.encode() + b'"}')
    assert report.cost is None


@pytest.mark.parametrize(
    ("parts", "read"), [(b"2", 2), (b"3.0", 3), (b"1e2", 100), (b"2.5", None), (b"1e100000", None), (b"-1e400", None)]
)
def test_a_parts_count_too_large_to_be_one_is_no_count_and_costs_no_time(parts: bytes, read: int | None) -> None:
    # 1e10000000 made int() build a ten-million-digit number: minutes of CPU on the event loop, from
    # one status answer or one webhook of eleven bytes.
    import time

    from cascade_async.webhooks import parse_report

    started = time.process_time()
    report = parse_report(b'{"messageId": "m-1", "deliverystatus": "delivered", "partscount": ' + parts + b"}")
    assert report.parts == read
    assert time.process_time() - started < 0.05
