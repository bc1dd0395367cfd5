from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses

from cascade_async import (
    AuthenticationError,
    BadRequestError,
    CascadeClient,
    Message,
    ProtocolError,
    RateLimit,
    RateLimitError,
    RetryPolicy,
    Route,
    ServerError,
    Status,
    TransportError,
    ValidationError,
)
from cascade_async.sandbox import Sandbox

BASE = "https://api.test"
URL = BASE + Route.CASCADE.value
SECRET = "sk-live-SECRET-9f8e7d"


def message(i: int) -> Message:
    return Message.from_dict(
        {"id": f"m{i}", "fromName": "Shop", "toPhone": "+380501234567", "messageType": "transaction", "text": f"t{i}"}
    )


def acks(*ids: str) -> list[dict[str, str]]:
    return [{"messageId": f"uuid-{i}", "trackinId": i} for i in ids]


def client(**kw: Any) -> CascadeClient:
    kw.setdefault("api_key", SECRET)
    return CascadeClient(base_url=BASE, rate_limit=None, **kw)


# --- construction --------------------------------------------------------------------------


def test_needs_a_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="credentials"):
        CascadeClient()


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_API_KEY", SECRET)
    assert CascadeClient()._sender.headers["X-Authorization-Key"] == SECRET


@pytest.mark.parametrize("bad", ["", "  ", "a\r\nX-Evil: 1", "a\nb", "a\rb"])
@pytest.mark.parametrize("name", ["api_key", "viber_token", "telegram_key"])
def test_bad_credential_values_are_refused(name: str, bad: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        CascadeClient(**{name: bad})  # type: ignore[arg-type]
    assert bad.strip() == "" or bad not in str(info.value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        pytest.param("https://restapi.smsbat.com", True, id="https"),
        pytest.param("http://127.0.0.1:8080", True, id="http-loopback-v4"),
        pytest.param("http://127.9.9.9", True, id="http-loopback-range"),
        pytest.param("http://localhost:1", True, id="http-localhost"),
        pytest.param("http://[::1]:8080", True, id="http-loopback-v6"),
        pytest.param("http://restapi.smsbat.com", False, id="http-remote"),
        pytest.param("http://10.0.0.1", False, id="http-private"),
        pytest.param("ftp://x", False, id="other-scheme"),
        pytest.param("https://user:pw@host", False, id="userinfo"),
        pytest.param("restapi.smsbat.com", False, id="no-scheme"),
    ],
)
def test_base_url_rules(url: str, ok: bool) -> None:
    if ok:
        CascadeClient(api_key="k", base_url=url)
    else:
        with pytest.raises(ValueError, match="base_url"):
            CascadeClient(api_key="k", base_url=url)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: CascadeClient(api_key="k", linger=v), "linger"),
        (lambda v: CascadeClient(api_key="k", send_linger=v), "send_linger"),
        (lambda v: CascadeClient(api_key="k", send_timeout=v if v != v else -v), "send_timeout"),
        (lambda v: CascadeClient(api_key="k", timeout=v), "timeout"),
        (lambda v: CascadeClient(api_key="k", close_timeout=v), "close_timeout"),
        (lambda v: RetryPolicy(deadline=v if v != v else -v), "deadline"),
        (lambda v: RetryPolicy(initial_wait=v if v != v else -v), "initial_wait"),
        (lambda v: RateLimit(requests_per_second=v), "requests_per_second"),
        (lambda v: RateLimit(burst=v), "burst"),
        (lambda v: RateLimit(messages_per_second=v), "messages_per_second"),
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_setting_of_nan_or_infinity_is_a_value_error_not_a_silent_stall(
    make: Callable[[float], object], name: str, value: float
) -> None:
    # NaN compares false with every bound, so "< 0" checks let it through: a linger of NaN never sent a
    # partial batch, a send_timeout of NaN failed every send() at once. (Where infinity means "no limit",
    # minus infinity stands in for it.)
    with pytest.raises(ValueError, match=name):
        make(value)


def test_a_timeout_of_none_is_a_value_error_that_says_how_to_ask_for_no_limit() -> None:
    with pytest.raises(ValueError, match=r"ClientTimeout\(total=None\)"):
        CascadeClient(api_key="k", timeout=None)  # type: ignore[arg-type]
    assert CascadeClient(api_key="k", timeout=aiohttp.ClientTimeout(total=None)) is not None


def test_insecure_opt_in() -> None:
    assert CascadeClient(api_key="k", base_url="http://gateway.internal/", allow_insecure=True).base_url == (
        "http://gateway.internal"
    )


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"batch_size": 1001}, {"max_in_flight": 0}, {"linger": -1}])
def test_bad_knobs_are_value_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        CascadeClient(api_key="k", **kw)


def test_repr_names_credentials_but_never_shows_them() -> None:
    c = CascadeClient(api_key=SECRET, viber_token=SECRET + "v", telegram_key=SECRET + "t")
    assert SECRET not in repr(c)
    assert SECRET not in str(c)
    assert "api_key" in repr(c)
    assert "telegram_key" in repr(c)


# --- requests over aioresponses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "header"),
    [
        pytest.param({"api_key": SECRET}, "X-Authorization-Key", id="api-key"),
        pytest.param({"api_key": None, "viber_token": SECRET}, "X-Viber-Auth-Token", id="viber"),
        pytest.param({"api_key": None, "telegram_key": SECRET}, "X-Tg-Bot-Key", id="telegram"),
    ],
)
async def test_header_for_each_credential(kw: dict[str, Any], header: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_API_KEY", raising=False)
    with aioresponses() as m:
        m.post(URL, payload=acks("m1"))
        async with client(**kw) as c:
            await c.send_batch([message(1)])
        (call,) = m.requests[("POST", yarl.URL(URL))]
        headers = call.kwargs["headers"]
        assert headers[header] == SECRET
        assert headers["Content-Type"] == "application/json"
        sent = {"X-Authorization-Key", "X-Viber-Auth-Token", "X-Tg-Bot-Key"} & set(headers)
        assert sent == {header}


@pytest.mark.parametrize("route", list(Route), ids=lambda r: r.name)
async def test_both_routes(route: Route) -> None:
    url = BASE + route.value
    with aioresponses() as m:
        m.post(url, payload=acks("m1"), repeat=True)
        async with client(route=route) as c:
            (r,) = await c.send_batch([message(1)])
            assert r.status is Status.ACCEPTED
        assert len(m.requests[("POST", yarl.URL(url))]) == 1
    other = next(r for r in Route if r is not route)
    with aioresponses() as m:
        m.post(BASE + other.value, payload=acks("m1"))
        async with client(route=route) as c:
            await c.send_batch([message(1)], route=other)
        assert len(m.requests[("POST", yarl.URL(BASE + other.value))]) == 1


def test_route_paths_are_the_documented_ones() -> None:
    assert Route.CASCADE.value == "/api/CascadeMessage/send_message/async"
    assert Route.TELEGRAM_VIBER.value == "/api/CascadeMessage/send_message/tg-viber/async"


async def test_body_is_the_wire_array() -> None:
    with aioresponses() as m:
        m.post(URL, payload=acks("m1", "m2"))
        async with client() as c:
            await c.send_batch([message(1), message(2)])
        (call,) = m.requests[("POST", yarl.URL(URL))]
        assert json.loads(call.kwargs["data"]) == [message(1).to_dict(), message(2).to_dict()]


async def test_results_matched_by_tracking_id_not_position() -> None:
    with aioresponses() as m:
        m.post(URL, payload=list(reversed(acks("m1", "m2", "m3"))))
        async with client() as c:
            results = await c.send_batch([message(1), message(2), message(3)])
    assert [(r.tracking_id, r.message_id) for r in results] == [("m1", "uuid-m1"), ("m2", "uuid-m2"), ("m3", "uuid-m3")]
    assert all(r.status is Status.ACCEPTED and r.attempts == 1 for r in results)


async def test_missing_id_fails_that_message_only_and_extra_ids_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with aioresponses() as m:
        m.post(URL, payload=acks("m1", "m3", "stranger"))
        async with client() as c:
            r1, r2, r3 = await c.send_batch([message(1), message(2), message(3)])
    assert r1.status is r3.status is Status.ACCEPTED
    assert r2.status is Status.FAILED
    assert isinstance(r2.error, ProtocolError)
    assert r2.outcome_unknown
    assert "did not send" in caplog.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"not json", 200, id="not-json"),
        pytest.param(b'{"ok": true}', 200, id="object"),
        pytest.param(b'[{"messageId": 1, "trackinId": "m1"}]', 200, id="wrong-types"),
    ],
)
async def test_malformed_200_is_a_protocol_error(body: bytes, status: int) -> None:
    with aioresponses() as m:
        m.post(URL, body=body, status=status)
        async with client() as c:
            with pytest.raises(ProtocolError):
                await c.send_batch([message(1)])


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (422, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
    ],
)
async def test_non_200_raises_matching_error(status: int, cls: type[Exception]) -> None:
    with aioresponses() as m:
        m.post(
            URL,
            status=status,
            payload={"error": {"code": "C", "message": "msg", "field": "toPhone"}},
            headers={"Retry-After": "3"},
        )
        async with client() as c:
            with pytest.raises(cls) as info:
                await c.send_batch([message(1)])
    err = info.value
    assert (err.status, err.code, err.field, err.route) == (status, "C", "toPhone", Route.CASCADE.value)  # type: ignore[attr-defined]
    if status == 429:
        assert err.retry_after == 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "exc",
    [aiohttp.ClientConnectionError("boom"), TimeoutError(), aiohttp.ServerDisconnectedError()],
    ids=["connection", "timeout", "disconnected"],
)
async def test_transport_failures_become_transport_errors(exc: Exception) -> None:
    with aioresponses() as m:
        m.post(URL, exception=exc)
        async with client() as c:
            with pytest.raises(TransportError):
                await c.send_batch([message(1)])


async def test_send_batch_checks_its_input() -> None:
    async with client() as c:
        with pytest.raises(ValueError, match="1 to 1000"):
            await c.send_batch([])
        with pytest.raises(ValueError, match="1 to 1000"):
            await c.send_batch([message(i) for i in range(1001)])
        with pytest.raises(ValidationError, match="twice"):
            await c.send_batch([message(1), message(1)])


async def test_send_returns_result_or_raises() -> None:
    with aioresponses() as m:
        m.post(URL, payload=acks("m1"))
        m.post(URL, status=400, payload={"error": {"code": "INVALID_PHONE", "message": "bad", "field": "toPhone"}})
        async with client() as c:
            r = await c.send(message(1))
            assert r.message_id == "uuid-m1"
            with pytest.raises(BadRequestError) as info:
                await c.send(message(2))
            assert info.value.code == "INVALID_PHONE"
            with pytest.raises(ValidationError):
                await c.send({"id": "x"})


async def test_closed_client_refuses_use() -> None:
    c = client()
    await c.aclose()
    await c.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await c.send_batch([message(1)])
    with pytest.raises(RuntimeError, match="closed"):
        c.stream([])


async def test_borrowed_session_is_never_closed(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as session:
        async with CascadeClient(api_key="k", base_url=sandbox.url, session=session) as c:
            await c.send_batch([message(1)])
        assert not session.closed
        async with session.get(sandbox.url + "/sandbox/stats") as resp:
            assert (await resp.json())["accepted_messages"] == 1


# --- credentials never leak ----------------------------------------------------------------


async def test_credentials_absent_from_errors_and_logs(caplog: pytest.LogCaptureFixture, sandbox: Sandbox) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.script(["500", "429", "ok"])
    texts: list[str] = []
    async with CascadeClient(api_key=SECRET, viber_token=SECRET + "V", base_url=sandbox.url, retry=None) as c:
        for _ in range(3):
            try:
                texts.append(repr(await c.send_batch([message(1)])))
            except Exception as exc:
                texts += [str(exc), repr(exc), getattr(exc, "body", "")]
        texts.append(repr(c))
    bad = Sandbox(api_keys={"other"})
    async with bad, CascadeClient(api_key=SECRET, base_url=bad.url) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.send_batch([message(1)])
        texts += [str(info.value), repr(info.value), info.value.body]
    assert len(texts) >= 8
    for text in [*texts, caplog.text]:
        assert SECRET not in text
