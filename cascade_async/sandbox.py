"""A local stand-in for the Cascade Messages API, for demos, tests and benchmarks.

It follows the contract: both routes, the three auth headers, the documented error body,
batches of 1-1000, the field rules, and ``[{"messageId", "trackinId"}]`` on success. On top
it injects latency and faults, limits its own request rate, refuses chosen messages, and
records every message it accepted, so tests can prove exactly-once delivery.

>>> async with Sandbox(latency=0.01, faults=["500", "ok"]) as sb:
...     async with CascadeClient(api_key="test", base_url=sb.url) as client:
...         report = await client.send_many(messages)
...     assert sb.stats().max_count == 1       # nothing delivered twice

It binds 127.0.0.1 unless told otherwise. Fault names: ``ok``, ``429`` (``429:2`` adds
``Retry-After: 2``), ``500``, ``502``, ``503``, ``504``, ``reset`` (connection dropped,
nothing accepted), ``reset-early`` (dropped before the body is read: a reset mid-request),
``lost`` (accepted, then the connection dropped before the answer), ``truncated`` (accepted,
then half the answer and a reset: mid-response),
``hang`` (no answer for ``hang_seconds``), ``slow`` (accepted, answered after
``hang_seconds``), ``malformed`` (a 200 that is not JSON), ``wrong-shape`` (a 200 of the
wrong shape), ``missing-ids`` (a 200 that leaves out the last message), ``dup-ids`` (a 200 that
repeats an entry).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as _dt
import random
import re
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import msgspec
from aiohttp import web

from ._models import Route

__all__ = ["FAULTS", "Sandbox", "SandboxStats", "sandbox_process"]

FAULTS: Final = frozenset(
    {
        "ok",
        "429",
        "500",
        "502",
        "503",
        "504",
        "reset",
        "reset-early",
        "lost",
        "truncated",
        "hang",
        "slow",
        "malformed",
        "wrong-shape",
        "missing-ids",
        "dup-ids",
    }
)
MAX_BATCH: Final = 1000
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_TYPES = frozenset({"transaction", "promo", "viber_survey", "flashcall"})
_AUTH_HEADERS = ("X-Authorization-Key", "X-Viber-Auth-Token", "X-Tg-Bot-Key")
_decode = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


class SandboxStats(msgspec.Struct, frozen=True):
    requests: int  # every POST to a cascade route
    accepted_requests: int
    accepted_messages: int  # counting repeats
    unique_ids: int
    max_count: int  # the most times one tracking id was accepted (1 = exactly once)
    duplicated_ids: int  # ids accepted more than once
    statuses: dict[str, int]  # answers by status, and dropped connections as "reset"


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _error(status: int, code: str, message: str, field: str | None = None, **headers: str) -> web.Response:
    detail: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return web.Response(
        status=status, body=_encode.encode({"error": detail}), content_type="application/json", headers=headers
    )


def check_message(m: Any, now: _dt.datetime) -> None:
    """The server-side rules, written from the contract independently of the client's."""
    if not isinstance(m, dict):
        raise _Reject(400, "INVALID_REQUEST", "each message must be a JSON object")
    tid = m.get("id")
    if not isinstance(tid, str) or not 1 <= len(tid) <= 255:
        raise _Reject(400, "INVALID_ID", "id must be a string of 1 to 255 characters", "id")
    for name in ("fromName", "toPhone", "messageType"):
        if not isinstance(m.get(name), str) or not m[name]:
            raise _Reject(400, "MISSING_FIELD", f"{name} is required", name)
    if not _E164.fullmatch(m["toPhone"]):
        raise _Reject(400, "INVALID_PHONE", "Invalid phone number format", "toPhone")
    kind = m["messageType"]
    if kind not in _TYPES:
        raise _Reject(400, "INVALID_MESSAGE_TYPE", f"unknown messageType {kind!r}", "messageType")
    text = m.get("text")
    if kind != "flashcall" and (not isinstance(text, str) or not text):
        raise _Reject(400, "MISSING_FIELD", "text is required", "text")
    if text is not None and not isinstance(text, str):
        raise _Reject(400, "INVALID_FIELD", "text must be a string", "text")
    options = m.get("surveyOptions")
    if kind == "viber_survey":
        if (
            not isinstance(options, list)
            or not 2 <= len(options) <= 5
            or not all(isinstance(o, str) and o for o in options)
        ):
            raise _Reject(400, "INVALID_SURVEY", "surveyOptions needs 2 to 5 options", "surveyOptions")
        if isinstance(text, str) and len(text) > 85:
            raise _Reject(400, "INVALID_SURVEY", "survey text is at most 85 characters", "text")
    ttl = m.get("ttl")
    if ttl is not None and (type(ttl) is not int or ttl <= 0):
        raise _Reject(400, "INVALID_TTL", "ttl must be a positive integer", "ttl")
    when = m.get("scheduledSent")
    if when is not None:
        try:
            parsed = _dt.datetime.fromisoformat(when) if isinstance(when, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise _Reject(400, "INVALID_DATE", "scheduledSent must be an ISO 8601 UTC date-time", "scheduledSent")
        if parsed - now > _dt.timedelta(days=30):
            raise _Reject(400, "INVALID_DATE", "scheduledSent is at most 30 days ahead", "scheduledSent")


class Sandbox:
    """A real HTTP server on loopback that behaves like the Cascade Messages API."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float | tuple[float, float] = 0.0,
        faults: Iterable[str] = (),
        fault_rates: Mapping[str, float] | None = None,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        reject_senders: Iterable[str] = (),
        reject_prefixes: Iterable[str] = (),
        api_keys: Iterable[str] | None = None,
        hang_seconds: float = 3600.0,
        record: bool = True,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self._script: collections.deque[str] = collections.deque()
        self.script(faults)
        self._rates = dict(fault_rates or {})
        for name in self._rates:
            _check_fault(name)
        self._rate = rate_limit
        self._burst = float(rate_burst or (rate_limit or 0))
        self._tokens = self._burst
        self._last = time.monotonic()
        self.reject_senders = frozenset(reject_senders)
        self.reject_prefixes = tuple(reject_prefixes)
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.hang_seconds = hang_seconds
        self.record = record
        self._ssl = ssl_context
        self._rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.accepted: list[dict[str, Any]] = []  # every accepted message, in order (when recording)
        self.request_times: list[float] = []  # loop time of every POST's arrival (when recording)
        self.route_counts: collections.Counter[str] = collections.Counter()  # POSTs by path
        self._requests = 0
        self._accepted_requests = 0
        self._accepted_messages = 0
        self._statuses: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None

    # --- control --------------------------------------------------------------------

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults: each later request takes the next one (then normal service)."""
        for name in faults:
            _check_fault(name)
            self._script.append(name)

    def reset(self) -> None:
        """Forget what was recorded (not the configuration)."""
        self.counts.clear()
        self.accepted.clear()
        self.request_times.clear()
        self.route_counts.clear()
        self._requests = self._accepted_requests = self._accepted_messages = 0
        self._statuses.clear()

    def stats(self) -> SandboxStats:
        counts = self.counts
        return SandboxStats(
            requests=self._requests,
            accepted_requests=self._accepted_requests,
            accepted_messages=self._accepted_messages,
            unique_ids=len(counts),
            max_count=max(counts.values(), default=0),
            duplicated_ids=sum(1 for c in counts.values() if c > 1),
            statuses=dict(self._statuses),
        )

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the sandbox is not running")
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for route in Route:
            app.router.add_post(route.value, self._handle)
        app.router.add_get("/sandbox/stats", self._handle_stats)
        app.router.add_post("/sandbox/reset", self._handle_reset)
        return app

    async def start(self) -> Sandbox:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        sockets: Sequence[socket.socket] = server.sockets  # type: ignore[attr-defined]
        self.port = sockets[0].getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- serving --------------------------------------------------------------------

    def _next_fault(self) -> str:
        if self._script:
            return self._script.popleft()
        for name, p in self._rates.items():
            if self._rng.random() < p:
                return name
        return "ok"

    def _over_rate(self) -> bool:
        if self._rate is None:
            return False
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return True
        self._tokens -= 1
        return False

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(self.stats()), content_type="application/json")

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._requests += 1
        self.route_counts[request.path] += 1
        if self.record:
            self.request_times.append(asyncio.get_running_loop().time())
        response = await self._answer(request)
        self._statuses[str(response.status) if response is not None else "reset"] += 1
        if response is None:
            _drop(request)
            raise asyncio.CancelledError  # nothing more to send on a dropped connection
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse | None:
        latency = self.latency
        delay = self._rng.uniform(*latency) if isinstance(latency, tuple) else latency
        fault = self._next_fault()  # every request takes one, whatever happens next
        if fault == "reset-early":
            return None
        body = await request.read()
        if delay:
            await asyncio.sleep(delay)
        headers = request.headers
        present = [h for h in _AUTH_HEADERS if headers.get(h)]
        if not present:
            return _error(
                401, "UNAUTHORIZED", "missing credentials: send X-Authorization-Key, X-Viber-Auth-Token or X-Tg-Bot-Key"
            )
        if self.api_keys is not None and not any(headers[h] in self.api_keys for h in present):
            return _error(401, "UNAUTHORIZED", "invalid credentials")
        if self._over_rate():
            return web.json_response(
                {"error": "Too Many Requests", "message": "rate limit exceeded", "status": 429},
                status=429,
                headers={"Retry-After": "1"},
            )
        name, _, arg = fault.partition(":")
        if name == "429":
            extra = {"Retry-After": arg} if arg else {}
            return _error(429, "RATE_LIMITED", "Too many requests", **extra)
        if name in ("500", "502", "503", "504"):
            return _error(int(name), "SERVER_ERROR", f"injected {name}")
        if name in ("reset", "reset-early"):
            return None
        if name == "hang":
            await asyncio.sleep(self.hang_seconds)
            return None
        if request.content_type != "application/json":
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
        try:
            messages = _decode.decode(body)
        except msgspec.DecodeError:
            return _error(400, "INVALID_REQUEST", "body is not valid JSON")
        if not isinstance(messages, list):
            return _error(400, "INVALID_REQUEST", "body must be a JSON array of messages")
        if not 1 <= len(messages) <= MAX_BATCH:
            return _error(400, "INVALID_BATCH_SIZE", f"a request holds 1 to {MAX_BATCH} messages, got {len(messages)}")
        now = _dt.datetime.now(_dt.UTC)
        try:
            for m in messages:
                check_message(m, now)
                if m["fromName"] in self.reject_senders:
                    raise _Reject(400, "SENDER_NOT_ALLOWED", "sender name is not registered", "fromName")
                if self.reject_prefixes and m["toPhone"].startswith(self.reject_prefixes):
                    raise _Reject(400, "INVALID_PHONE", "Invalid phone number format", "toPhone")
        except _Reject as r:
            return _error(r.status, r.code, r.message, r.field)
        # Accepted from here on: the provider has the messages whatever happens to the answer.
        self._accept(messages)
        if name == "lost":
            return None
        if name == "slow":
            await asyncio.sleep(self.hang_seconds)
        if name == "malformed":
            return web.Response(body=b'[{"messageId": "', content_type="application/json")
        if name == "wrong-shape":
            return web.json_response({"accepted": len(messages)})
        acks = [{"messageId": str(uuid.uuid4()), "trackinId": m["id"]} for m in messages]
        if name == "truncated":
            full = _encode.encode(acks)
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(full))})
            await resp.prepare(request)
            await resp.write(full[: len(full) // 2])
            return None
        if name == "missing-ids":
            acks.pop()
        elif name == "dup-ids":
            acks.append(dict(acks[0], messageId=str(uuid.uuid4())))
        return web.Response(body=_encode.encode(acks), content_type="application/json")

    def _accept(self, messages: list[dict[str, Any]]) -> None:
        self._accepted_requests += 1
        self._accepted_messages += len(messages)
        if self.record:
            self.counts.update(m["id"] for m in messages)
            self.accepted.extend(messages)


def _check_fault(name: str) -> None:
    base, _, arg = name.partition(":")
    if base not in FAULTS or (arg and (base != "429" or not arg.replace(".", "", 1).isdigit())):
        raise ValueError(f"unknown sandbox fault {name!r}; known: {', '.join(sorted(FAULTS))} (429:SECONDS)")


def _drop(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashed peer or proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@contextlib.contextmanager
def sandbox_process(*options: str, start_timeout: float = 20.0) -> Iterator[str]:
    """``cascade-async sandbox`` in a child process on a free loopback port; yields its URL.

    For benchmarks and crash tests that need the server out of the client's process.
    ``options`` are the command's flags (``"--latency", "0.05"``); needs the ``cli`` extra.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "cascade_async.cli", "sandbox", "--port", str(port), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the sandbox process did not start: {' '.join(cmd)}") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
