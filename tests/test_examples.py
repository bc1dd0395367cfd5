"""The examples run, against the sandbox."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from cascade_async import CascadeClient, CascadeError, Message, MessageType, Result
from cascade_async.sandbox import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("concurrent", [1, 500])
async def test_fastapi_handlers_share_batches(sandbox: Sandbox, concurrent: int) -> None:
    linger = 0.02
    app = load("fastapi_app").create_app(api_key="k", base_url=sandbox.url, batch_size=100, send_linger=linger)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(http.post("/otp", json={"phone": "+380501234567"}) for _ in range(concurrent))
            )
            elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * concurrent
    ids = {a.json()["trackingId"] for a in answers}
    assert len(ids) == concurrent
    assert len({a.json()["messageId"] for a in answers}) == concurrent
    stats = sandbox.stats()
    assert stats.unique_ids == concurrent
    assert stats.max_count == 1
    # About N / batch_size requests, not N: a batch leaves full, or `linger` after its first
    # message, so while handlers keep arriving at most one batch per linger leaves part-full.
    assert stats.requests <= math.ceil(concurrent / 100) + elapsed / linger + 1
    if concurrent > 1:
        assert stats.requests <= concurrent / 10


async def test_fastapi_bad_phone_is_a_422_and_costs_no_request(sandbox: Sandbox) -> None:
    app = load("fastapi_app").create_app(api_key="k", base_url=sandbox.url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http,
    ):
        answer = await http.post("/otp", json={"phone": "0501234567"})
    assert answer.status_code == 422
    assert "toPhone" in answer.json()["detail"]
    assert sandbox.stats().requests == 0


async def test_worker_pool_drains_and_stops(sandbox: Sandbox) -> None:
    example = load("worker")
    outcomes: dict[str, Any] = {}

    def record(message: Message, outcome: Result | CascadeError) -> None:
        assert message.id not in outcomes
        outcomes[message.id] = outcome

    sandbox.reject_prefixes = ("+7",)
    async with CascadeClient(api_key="k", base_url=sandbox.url, batch_size=100) as client:
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        stop = asyncio.Event()
        pool = asyncio.create_task(example.run_pool(queue, client, stop, record, workers=20))
        for i in range(300):
            phone = "+79161234567" if i % 50 == 0 else "+380501234567"
            queue.put_nowait(
                Message(id=f"j{i}", from_name="W", to_phone=phone, message_type=MessageType.PROMO, text="x")
            )
        stop.set()
        await asyncio.wait_for(pool, 30)
    assert len(outcomes) == 300
    errors = {k for k, v in outcomes.items() if isinstance(v, CascadeError)}
    assert errors == {f"j{i}" for i in range(0, 300, 50)}
    assert sandbox.stats().unique_ids == 294
