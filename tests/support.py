"""Test doubles: a programmable transport and an event loop whose clock is virtual."""

from __future__ import annotations

import asyncio
import collections
import json
import selectors
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from cascade_async import CascadeClient, RawResponse, TransportError
from cascade_async import TimeoutError as CascadeTimeoutError

T = TypeVar("T")

Respond = Callable[[list[dict[str, Any]], int], "RawResponse | BaseException | Awaitable[RawResponse]"]


def ok_for(messages: list[dict[str, Any]]) -> RawResponse:
    """A 200 acknowledging every message, in reverse order (position must not matter)."""
    acks = [{"messageId": f"mid-{m['id']}", "trackinId": m["id"]} for m in reversed(messages)]
    return RawResponse(200, {}, json.dumps(acks).encode())


def error(status: int, code: str = "ERR", field: str | None = None, **headers: str) -> RawResponse:
    detail = {"code": code, "message": f"status {status}"}
    if field:
        detail["field"] = field
    return RawResponse(status, headers, json.dumps({"error": detail}).encode())


class FakeTransport:
    """Answers each request with ``respond(messages, call_number)``; records every call.

    ``respond`` may return a RawResponse, an exception to raise, or an awaitable.
    ``latency`` is awaited before answering (virtual seconds under ``run_virtual``).
    """

    def __init__(self, respond: Respond | None = None, *, latency: float = 0.0) -> None:
        self.respond = respond or (lambda messages, n: ok_for(messages))
        self.latency = latency
        #: (time, url, headers, decoded body): a list of wire dicts, or an upload's ``{"variables": ...}``.
        self.calls: list[tuple[float, str, Mapping[str, str], Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    @property
    def batches(self) -> list[list[str]]:
        return [[m["id"] for m in call[3]] for call in self.calls]

    async def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> RawResponse:
        messages = json.loads(body)
        self.calls.append((asyncio.get_running_loop().time(), url, headers, messages))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            answer = self.respond(messages, len(self.calls))
            if isinstance(answer, BaseException):
                raise answer
            if not isinstance(answer, RawResponse):
                answer = await answer
            return answer
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


def fault_answer(
    outcome: str, messages: list[dict[str, Any]], slowest: float, wait: float, *error_args: str, delay: float = 0.0
) -> Any:
    """What a FakeTransport's ``respond`` gives for one scripted outcome: "ok"; "slow" (ok after
    ``delay`` seconds, at most ``slowest``); "timeout" and "lost" (outcome unknown); "refused"
    (certainly not sent); or an HTTP status ("429" with ``Retry-After: wait``)."""
    if outcome == "ok":
        return ok_for(messages)
    if outcome == "slow":
        return asyncio.sleep(min(delay, slowest), ok_for(messages))
    if outcome == "timeout":
        return timeout_error()
    if outcome == "lost":
        return TransportError("reset", outcome_unknown=True)
    if outcome == "refused":
        return TransportError("connection refused")
    return error(int(outcome), *error_args, **({"Retry-After": str(wait)} if outcome == "429" else {}))


def timeout_error() -> TransportError:
    return CascadeTimeoutError("request timed out", outcome_unknown=True)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of sleeping.

    Only for code that does no real I/O (use it with FakeTransport): when nothing is ready,
    the loop advances its clock by the select timeout and carries on.
    """

    def __init__(self) -> None:
        self.now = 0.0
        selector = selectors.DefaultSelector()
        real_select = selector.select

        def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            events = real_select(0)
            if events or timeout == 0:
                # Like a real clock, tick at least a nanosecond per pass: code that re-arms a
                # timer for a float-rounding remainder (aiolimiter does) would spin otherwise.
                self.now += 1e-9
                return events
            if timeout is None:
                raise RuntimeError("deadlock: nothing is scheduled and no I/O can arrive")
            self.now += timeout
            return []

        selector.select = select  # type: ignore[method-assign]
        super().__init__(selector)

    def time(self) -> float:
        return self.now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def msg(i: int | str, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": f"m{i}" if isinstance(i, int) else i,
        "fromName": "Shop",
        "toPhone": "+380501234567",
        "messageType": "transaction",
        "text": f"hello {i}",
    }
    d.update(over)
    return d


def scripted(*answers: Any) -> FakeTransport:
    queue = collections.deque(answers)

    def respond(messages: list[dict[str, Any]], n: int) -> Any:
        answer = queue.popleft() if queue else "ok"
        return ok_for(messages) if answer == "ok" else answer

    return FakeTransport(respond)


def make(transport: Any, **kw: Any) -> CascadeClient:
    """A client on a fake transport, with the rate limit off unless a test sets one."""
    kw.setdefault("rate_limit", None)
    return CascadeClient(api_key="k", transport=transport, **kw)
