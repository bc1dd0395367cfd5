"""A server that echoes the credentials it was sent (in an error body, a redirect) never puts them
in an error, a result, a log line, the command line's output or its result file."""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cascade_async import CascadeClient, CascadeError, Message, RetryPolicy

KEY, VIBER, TG = "sk-echo-KEY-1111", "viber-echo-TOKEN-2222", "tg-echo-KEY-3333"
SECRETS = (KEY, VIBER, TG)
HEADERS = ("X-Authorization-Key", "X-Viber-Auth-Token", "X-Tg-Bot-Key")
MESSAGE = {"id": "e1", "fromName": "S", "toPhone": "+380501234567", "messageType": "transaction", "text": "hi"}


def echo(headers: Any) -> str:
    return " ".join(f"{name}={headers.get(name, '')}" for name in HEADERS)


@pytest.fixture
async def echoing() -> AsyncIterator[str]:
    """Answers every request with the status in its path's first part, echoing the credentials."""

    async def answer(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        said = echo(request.headers)
        body = {"error": {"code": f"BAD {said}", "message": f"not valid: {said}", "field": said}}
        extra = {"Location": f"https://elsewhere.example/?{said.replace(' ', '&')}"} if status == 302 else {}
        return web.json_response(body, status=status, headers=extra)

    app = web.Application()
    app.router.add_route("*", "/{status}/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def everything_said(exc: BaseException) -> str:
    text = ""
    while exc is not None:
        text += repr(exc) + str(exc) + repr(vars(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return text


@pytest.mark.parametrize("status", [400, 500, 401, 302, 404])
async def test_credentials_a_server_echoes_in_an_error_appear_in_no_error_result_or_log(
    echoing: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cascade_async")
    said: list[str] = []
    credentials: dict[str, Any] = {"api_key": KEY, "viber_token": VIBER, "telegram_key": TG}
    base = f"{echoing}/{status}"
    async with CascadeClient(**credentials, base_url=base, retry=RetryPolicy(max_attempts=2)) as client:
        try:
            report = await client.send_many([Message.from_dict(MESSAGE)])
            said += [everything_said(r.error) + repr(r) for r in report.values() if r.error is not None]
        except CascadeError as exc:
            said.append(everything_said(exc))
        try:
            await client.status("00000000-0000-0000-0000-000000000000")
        except CascadeError as exc:
            said.append(everything_said(exc))
    said.append(caplog.text)
    assert said
    assert "***" in said[0]  # the echo came back, hidden
    for secret in SECRETS:
        assert all(secret not in text for text in said), secret


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = int(self.path.split("/")[1])
        body = json.dumps({"error": {"code": "AUTH", "message": f"key {echo(self.headers)} is not valid"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_thread() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "exit_code"), [(400, 1), (401, 2)])
def test_the_command_line_never_prints_or_writes_a_key_the_server_echoes(
    echoing_thread: str, tmp_path: Path, status: int, exit_code: int
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    src.write_text(json.dumps(MESSAGE) + "\n")
    base = f"{echoing_thread}/{status}"
    args = ["send", str(src), "--base-url", base, "--api-key", KEY, "--output", str(out)]
    p = subprocess.run(
        [sys.executable, "-m", "cascade_async.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == exit_code, p.stdout + p.stderr
    assert "***" in p.stdout + p.stderr + out.read_text()
    assert KEY not in p.stdout + p.stderr + out.read_text()
