"""Delivery against the real sandbox: its simulated lifecycle, outcomes, channels and poll counting."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from cascade_async import CascadeClient, DeliveryStatus, Message, RateLimit, Route
from cascade_async.sandbox import Sandbox


def message(i: int | str, phone: str = "+380501234567", **over: Any) -> Message:
    fields: dict[str, Any] = {
        "id": f"d{i}",
        "fromName": "Shop",
        "toPhone": phone,
        "messageType": "transaction",
        "text": "Your code is 1234",
    }
    fields.update(over)
    return Message.from_dict(fields)


async def test_a_message_walks_scheduled_processing_then_delivered_with_channels_and_cost() -> None:
    async with Sandbox(delivery_steps=(0.3, 0.3)) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        result = await client.send(message(1))
        assert result.message_id is not None
        seen: list[Any] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            report = await client.status(result.message_id)
            if not seen or seen[-1] != report.status:
                seen.append(report.status)
            if report.final:
                break
            await asyncio.sleep(0.1)
    assert seen == [DeliveryStatus.SCHEDULED, DeliveryStatus.PROCESSING, DeliveryStatus.DELIVERED]
    assert report.cost is not None
    assert report.cost > Decimal(0)
    assert report.currency == "UAH"
    assert report.channel in ("telegram", "viber", "rcs", "sms")
    assert list(report.channels) == ["telegram", "viber", "rcs", "sms"]
    assert report.raw["billCurrency"] == "UAH"


@pytest.mark.parametrize(
    ("phone", "status"),
    [
        pytest.param("+380501234513", DeliveryStatus.UNDELIVERABLE, id="ending-13-undeliverable"),
        pytest.param("+380501234566", DeliveryStatus.PERMANENTERROR, id="ending-66-permanenterror"),
        pytest.param("+380501234567", DeliveryStatus.DELIVERED, id="others-delivered"),
    ],
)
async def test_test_numbers_end_deterministically(phone: str, status: DeliveryStatus) -> None:
    async with Sandbox(delivery_steps=(0.0, 0.1)) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        report = await client.wait_delivered(await client.send(message(1, phone)), timeout=10)
    assert report.final
    assert report.status is status


@pytest.mark.parametrize(
    ("fields", "route", "chain"),
    [
        pytest.param({}, Route.CASCADE, ["telegram", "viber", "rcs", "sms"], id="transaction-full-cascade"),
        pytest.param({"messageType": "promo"}, Route.TELEGRAM_VIBER, ["telegram", "viber", "sms"], id="tg-viber"),
        pytest.param(
            {"messageType": "viber_survey", "text": "Rate us", "surveyOptions": ["good", "bad"]},
            Route.CASCADE,
            ["viber", "sms"],
            id="survey-viber-then-sms",
        ),
        pytest.param({"messageType": "flashcall", "text": None}, Route.CASCADE, ["call"], id="flashcall-a-call"),
    ],
)
async def test_the_channel_follows_the_message_type_and_route(
    fields: dict[str, Any], route: Route, chain: list[str]
) -> None:
    async with Sandbox(delivery_steps=(0.0, 0.0)) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        result = await client.send(message(1, **fields), route=route)
        assert result.message_id is not None
        report = await client.status(result.message_id)
    assert list(report.channels) == chain
    assert report.channel in chain


async def test_an_accepted_message_is_never_a_404_after_the_inbox_forgot_it() -> None:
    sandbox = Sandbox(delivery_steps=(0.0, 0.0), inbox_max_messages=1)
    async with sandbox as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        results = [await client.send(message(i)) for i in range(5)]
        assert sb.inbox is not None
        assert len(sb.inbox) == 1
        reports = [r async for r in client.track(results, every=1.0)]
    assert len(reports) == 5
    assert all(r.delivered for r in reports)


async def test_the_inbox_shows_the_moving_delivery_status() -> None:
    async with Sandbox(delivery_steps=(0.0, 0.0)) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        await client.send(message(1, "+380501234513"))
        shown = await sb.wait_for_async(phone="+380501234513")
    assert shown.status == "undeliverable"


async def test_tracking_polls_stay_within_the_rate_and_one_per_message_per_second_counted_at_the_sandbox() -> None:
    rate, burst = 40.0, 10
    async with Sandbox(delivery_steps=(0.5, 0.5), status_rate_limit=rate + 2, status_rate_burst=burst + 2) as sb:
        limit = RateLimit(requests_per_second=rate, burst=burst)
        async with CascadeClient(api_key="k", base_url=sb.url, status_rate_limit=limit) as client:
            report = await client.send_many([message(i) for i in range(60)])
            accepted = report.accepted
            reports = [r async for r in client.track(accepted, every=1.0)]
    assert len(reports) == 60
    assert all(r.final for r in reports)
    times = sorted(sb.delivery.poll_times)
    for i, t in enumerate(times):
        j = i
        while j < len(times) and times[j] < t + 1.0:
            j += 1
        assert j - i <= burst + rate + 1
    assert all(n >= 1 for n in sb.delivery.polls.values())
    assert sb.delivery.answers["429"] == 0
    assert sb.delivery.answers["200"] == len(times)


@pytest.mark.cascade_sandbox(delivery_steps=(0.0, 0.05))
def test_the_pytest_fixture_takes_the_delivery_options_from_its_marker(cascade_sandbox: Sandbox) -> None:
    async def main() -> DeliveryStatus:
        async with CascadeClient(api_key="k", base_url=cascade_sandbox.url) as client:
            report = await client.wait_delivered(await client.send(message(1, "+380501234566")), timeout=10)
            return report.status

    assert asyncio.run(main()) is DeliveryStatus.PERMANENTERROR
    assert cascade_sandbox.delivery.steps == (0.0, 0.05)


async def test_reset_forgets_the_poll_counts_but_not_the_statuses() -> None:
    async with Sandbox(delivery_steps=(0.0, 0.0)) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        result = await client.send(message(1))
        assert result.message_id is not None
        await client.status(result.message_id)
        sb.reset()
        assert sb.delivery.stats()["polls"] == 0
        assert (await client.status(result.message_id)).delivered


def test_the_inbox_shows_the_channel_that_delivered_a_message() -> None:
    from cascade_async.sandbox._delivery import DeliverySim

    sim = DeliverySim(steps=(0.0, 0.0))
    # second-to-last digit 1 → the second channel of the cascade delivers
    sim.add([{"toPhone": "+380501234512", "messageType": "transaction", "text": "hi"}], ["mid-1"], "/api/x")
    progress = sim.progress("mid-1", now=10**10)
    assert progress is not None
    status, channel = progress
    assert status == "delivered"
    assert channel == "viber"
    assert sim.progress("unknown") is None


async def test_a_sandbox_without_delivery_simulation_keeps_no_statuses() -> None:
    from cascade_async import CascadeClient, Message
    from cascade_async.sandbox import Sandbox

    message = Message.from_dict(
        {"id": "nd-1", "fromName": "Shop", "toPhone": "+380501234567", "messageType": "transaction", "text": "hi"}
    )
    async with Sandbox(delivery=False) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        result = await client.send(message)
        assert result.message_id is not None
        assert sb.delivery.status(result.message_id) is None
