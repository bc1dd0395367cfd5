"""Webhooks: parsing, the shared secret, 503 instead of a lost report, idempotence, FastAPI and aiohttp."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from cascade_async import DeliveryReport, DeliveryStatus, ProtocolError, webhooks

TOKEN = "hook-SECRET-1"


def body(mid: str = "m1", status: str = "delivered", **extra: Any) -> bytes:
    return json.dumps(
        {"messageId": mid, "deliverystatus": status, "timestamp": "2025-01-23T10:30:00Z", **extra}
    ).encode()


def test_parse_report_reads_the_documented_webhook_and_keeps_unknown_fields() -> None:
    report = webhooks.parse_report(body(cost=0.05, region="eu"))
    assert (report.message_id, report.status, report.final) == ("m1", DeliveryStatus.DELIVERED, True)
    assert str(report.cost) == "0.05"
    assert report.raw["region"] == "eu"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"deliverystatus": "delivered"}', id="no-message-id"),
        pytest.param(b'{"messageId": "m1"}', id="no-status"),
    ],
)
def test_parse_report_refuses_a_bad_body_clearly(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        webhooks.parse_report(raw)


def test_a_handler_needs_a_token_or_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_WEBHOOK_TOKEN", raising=False)
    with pytest.raises(ValueError, match="shared secret"):
        webhooks.aiohttp_handler(lambda r: None)
    monkeypatch.setenv("CASCADE_WEBHOOK_TOKEN", TOKEN)
    webhooks.aiohttp_handler(lambda r: None)


class Recorder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.reports: list[DeliveryReport] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, report: DeliveryReport) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("database down")
        self.reports.append(report)


Post = Callable[..., Any]


@pytest.fixture(params=["aiohttp", "fastapi"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """serve(on_report, **options) -> post(body, token=...) -> (status, text), for each framework."""
    kind = request.param
    runners: list[web.AppRunner] = []

    async def make(on_report: Any, **options: Any) -> Post:
        if kind == "fastapi":
            from fastapi import FastAPI

            app = FastAPI()
            app.include_router(webhooks.fastapi_router(on_report, token=TOKEN, **options))
            transport = httpx.ASGITransport(app=app)

            async def post_asgi(data: bytes, token: str | None = TOKEN) -> tuple[int, str]:
                params = {} if token is None else {"token": token}
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                    r = await http.post("/webhook", content=data, params=params)
                return r.status_code, r.text

            return post_asgi
        app_ = web.Application()
        app_.router.add_post("/webhook", webhooks.aiohttp_handler(on_report, token=TOKEN, **options))
        runner = web.AppRunner(app_)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]

        async def post_http(data: bytes, token: str | None = TOKEN) -> tuple[int, str]:
            params = {} if token is None else {"token": token}
            url = f"http://127.0.0.1:{port}/webhook"
            async with aiohttp.ClientSession() as http, http.post(url, data=data, params=params) as r:
                return r.status, await r.text()

        return post_http

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    "token", [pytest.param(None, id="missing"), pytest.param("wrong", id="wrong"), pytest.param("", id="empty")]
)
async def test_without_the_right_token_the_answer_is_401_and_nothing_is_called(
    serve: Callable[..., Any], token: str | None
) -> None:
    seen = Recorder()
    post = await serve(seen)
    status, _ = await post(body(), token=token)
    assert status == 401
    assert seen.reports == []


async def test_a_report_is_answered_2xx_only_after_the_callback_returned(serve: Callable[..., Any]) -> None:
    seen = Recorder(delay=0.05)
    post = await serve(seen)
    status, _ = await post(body())
    assert status == 204
    assert [r.message_id for r in seen.reports] == ["m1"]


@pytest.mark.parametrize(
    "options", [pytest.param({"delay": 5.0}, id="slow"), pytest.param({"fail": True}, id="failing")]
)
async def test_a_slow_or_failing_callback_gives_503_never_a_2xx(
    serve: Callable[..., Any], options: dict[str, Any]
) -> None:
    recorder = Recorder(**options)
    post = await serve(recorder, timeout=0.2)
    status, _ = await post(body())
    assert status == 503
    # not remembered as handled: the provider's retry (if any) goes through
    recorder.delay, recorder.fail = 0.0, False
    status, _ = await post(body())
    assert status == 204


async def test_a_bad_body_is_400(serve: Callable[..., Any]) -> None:
    status, text = await (await serve(Recorder()))(b'{"messageId": "m1"}')
    assert status == 400
    assert "deliverystatus" in text


async def test_duplicates_and_late_reports_never_reach_the_callback_as_a_regression(serve: Callable[..., Any]) -> None:
    seen = Recorder()
    post = await serve(seen)
    for status in ("processing", "delivered", "delivered", "processing", "undeliverable", "scheduled"):
        code, _ = await post(body(status=status))
        assert code in (200, 204)
    assert [r.raw_status for r in seen.reports] == ["processing", "delivered"]


async def test_background_mode_answers_at_once_and_calls_back_afterwards(serve: Callable[..., Any]) -> None:
    seen = Recorder(delay=0.1)
    post = await serve(seen, background=True)
    status, _ = await post(body())
    assert status == 202
    assert seen.reports == []
    await asyncio.sleep(0.3)
    assert [r.message_id for r in seen.reports] == ["m1"]


async def test_a_large_report_within_the_limit_is_read_whole(serve: Callable[..., Any]) -> None:
    seen = Recorder()
    post = await serve(seen)
    padded = body(note="x" * 20_000)
    status, _ = await post(padded)
    assert status == 204
    assert seen.reports[0].raw["note"] == "x" * 20_000


async def test_a_body_over_64_kib_is_refused_with_413(serve: Callable[..., Any]) -> None:
    seen = Recorder()
    status, _ = await (await serve(seen))(body(note="x" * 70_000))
    assert status == 413
    assert seen.reports == []
