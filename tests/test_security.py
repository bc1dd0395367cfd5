"""Security hygiene: TLS verified by default, capped answers, no secrets anywhere."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cascade_async import CascadeClient, Message, ProtocolError, Result, Status, TransportError
from cascade_async._transport import AiohttpTransport
from cascade_async.sandbox import Sandbox

MSG = Message.from_dict({"id": "s1", "fromName": "S", "toPhone": "+380501234567", "messageType": "flashcall"})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified_by_default_and_a_context_can_be_passed(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with Sandbox(ssl_context=server_ctx) as sb:
        assert sb.url.startswith("https://")
        async with CascadeClient(api_key="k", base_url=sb.url, retry=None) as c:
            with pytest.raises(TransportError, match=r"(?i)certificate"):
                await c.send_batch([MSG])
        trusting = ssl.create_default_context(cafile=str(cert))
        async with CascadeClient(api_key="k", base_url=sb.url, ssl=trusting) as c:
            (result,) = await c.send_batch([MSG])
    assert result.status is Status.ACCEPTED


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_answers_are_refused_not_read(chunked: bool) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b"[" + b" " * 50_000 + b"]", content_type="application/json")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(50):
            await resp.write(b" " * 1000)
        return resp

    app = web.Application()
    app.router.add_post("/x", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = AiohttpTransport(timeout=5, max_response_bytes=10_000)
    try:
        with pytest.raises(ProtocolError, match="cap"):
            await transport(f"http://127.0.0.1:{port}/x", {}, b"[]")
    finally:
        await transport.aclose()
        await runner.cleanup()


def test_default_cap_is_16_mib() -> None:
    from cascade_async._transport import MAX_RESPONSE_BYTES

    assert MAX_RESPONSE_BYTES == 16 * 1024 * 1024


def test_sandbox_binds_loopback_unless_told() -> None:
    assert Sandbox().host == "127.0.0.1"
    assert Sandbox(host="0.0.0.0").host == "0.0.0.0"


MESSAGE = {"fromName": "Shop", "toPhone": "+380501234567", "messageType": "transaction", "text": "hi"}


@pytest.fixture
async def garbage_http() -> AsyncIterator[str]:
    """A server whose answers are not HTTP at all (aiohttp keeps the request's headers on
    the exception it raises for them)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: not-a-number\r\n\r\n[]")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_a_garbled_answer_leaves_no_credential_in_the_error_chain(garbage_http: str) -> None:
    secret = "sk-live-do-not-leak-0123456789"
    async with CascadeClient(api_key=secret, base_url=garbage_http, retry=None) as client:
        results = [r async for r in client.stream([Message.from_dict({**MESSAGE, "id": "g1"})])]
    assert_no_secret(results, secret)


@pytest.mark.parametrize("call", ["send_batch", "send", "status"])
async def test_an_error_raised_to_the_caller_holds_no_credential_even_as_its_hidden_context(
    garbage_http: str, call: str
) -> None:
    # ``raise ... from None`` inside an except block still keeps aiohttp's exception (its request_info
    # holds the request headers) as __context__: send_batch and status raised that chain.
    secret = "sk-live-do-not-leak-0123456789"
    message = Message.from_dict({**MESSAGE, "id": "c1"})
    async with CascadeClient(api_key=secret, base_url=garbage_http, retry=None, rate_limit=None) as client:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "send_batch": lambda: client.send_batch([message]),
            "send": lambda: client.send(message),
            "status": lambda: client.status("m-1"),
        }
        with pytest.raises(TransportError) as caught:
            await calls[call]()
    assert_no_secret([Result("c1", Status.FAILED, None, caught.value)], secret)


def assert_no_secret(results: list[Result], secret: str) -> None:
    seen: list[BaseException] = []
    for r in results:
        exc: BaseException | None = r.error
        while exc is not None and exc not in seen:
            seen.append(exc)
            exc = exc.__cause__ or exc.__context__
    assert seen
    for exc in seen:
        text = repr(exc) + str(exc) + repr(vars(exc))
        for value in vars(exc).values():
            text += repr(getattr(value, "request_info", ""))
        assert secret not in text


async def test_no_exception_reachable_from_a_result_holds_the_credential() -> None:
    secret = "sk-live-do-not-leak-0123456789"
    faults = ["reset-early", "truncated", "lost", "malformed", "500"]
    async with Sandbox(faults=faults) as sb, CascadeClient(api_key=secret, base_url=sb.url, retry=None) as client:
        results = []
        for i in range(len(faults)):
            results += [r async for r in client.stream([Message.from_dict({**MESSAGE, "id": f"s{i}"})])]
    assert len(results) == len(faults)
    assert_no_secret(results, secret)


@pytest.mark.parametrize(
    "url",
    ["ftp://user:sk-url-SECRET@host", "https://user:sk-url-SECRET@", "htps//sk-url-SECRET@host", "https//u:SECRET@h"],
)
@pytest.mark.parametrize("name", ["base_url", "status_base_url"])
def test_a_refused_base_url_is_not_quoted_in_the_error_since_it_may_hold_a_key(url: str, name: str) -> None:
    options: dict[str, Any] = {name: url}
    with pytest.raises(ValueError, match=name) as caught:
        CascadeClient(api_key="k", **options)
    assert "SECRET" not in str(caught.value)
