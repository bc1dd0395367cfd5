"""The sandbox's answers on the message routes and ``POST /api/items``: checks, faults, recording."""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import random
import uuid
from typing import Any

import msgspec
from aiohttp import web

from ._contract import Reject, check_auth, check_message, decode_batch
from ._delivery import DeliverySim
from ._faults import FaultPlan, RateGate, drop
from ._inbox import Inbox
from ._variables import VariableStore, account_of

__all__ = ["MessageRoutes"]

_encode = msgspec.json.Encoder()


def _error(status: int, code: str, message: str, field: str | None = None, **headers: str) -> web.Response:
    detail: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return web.Response(
        status=status, body=_encode.encode({"error": detail}), content_type="application/json", headers=headers
    )


class MessageRoutes:
    """The ``Sandbox``'s request handlers: answer each POST as the contract and the faults say,
    and record what was accepted (``counts``, ``accepted``, the inbox, delivery)."""

    latency: float | tuple[float, float]
    reject_senders: frozenset[str]
    reject_prefixes: tuple[str, ...]
    api_keys: frozenset[str] | None
    hang_seconds: float
    record: bool
    counts: collections.Counter[str]
    accepted: list[dict[str, Any]]
    request_times: list[float]
    route_counts: collections.Counter[str]
    inbox: Inbox | None
    delivery: DeliverySim
    variables: VariableStore
    simulate_delivery: bool
    _rng: random.Random
    _faults: FaultPlan
    _gate: RateGate
    _requests: int
    _accepted_requests: int
    _accepted_messages: int
    _statuses: collections.Counter[str]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._requests += 1
        self.route_counts[request.path] += 1
        if self.record:
            self.request_times.append(asyncio.get_running_loop().time())
        response = await self._answer(request)
        self._statuses[str(response.status) if response is not None else "reset"] += 1
        if response is None:
            drop(request)
            raise asyncio.CancelledError  # nothing more to send on a dropped connection
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse | None:
        latency = self.latency
        delay = self._rng.uniform(*latency) if isinstance(latency, tuple) else latency
        fault = self._faults.next()  # every request takes one, whatever happens next
        if fault == "reset-early":
            return None
        body = await request.read()
        if delay:
            await asyncio.sleep(delay)
        try:
            check_auth(request.headers, self.api_keys)
        except Reject as r:
            return self._refuse(r, request, body, None)
        if self._gate.over():
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
        messages: Any = None
        try:
            messages = decode_batch(request.content_type, body)
            self._check_messages(messages, account_of(request.headers))
        except Reject as r:
            return self._refuse(r, request, body, messages)
        # Accepted from here on: the provider has the messages whatever happens to the answer.
        ids = [str(uuid.uuid4()) for _ in messages]
        self._accept(messages, ids, request.path)
        if name == "lost":
            return None
        if name == "slow":
            await asyncio.sleep(self.hang_seconds)
        if name == "malformed":
            return web.Response(body=b'[{"messageId": "', content_type="application/json")
        if name == "wrong-shape":
            return web.json_response({"accepted": len(messages)})
        acks = [{"messageId": mid, "trackinId": m["id"]} for m, mid in zip(messages, ids, strict=True)]
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

    def _check_messages(self, messages: list[Any], account: str) -> None:
        now = _dt.datetime.now(_dt.UTC)
        for i, m in enumerate(messages):
            try:
                check_message(m, now)
                self.variables.render(account, m)
                if m["fromName"] in self.reject_senders:
                    raise Reject(400, "SENDER_NOT_ALLOWED", "sender name is not registered", "fromName")
                if self.reject_prefixes and m["toPhone"].startswith(self.reject_prefixes):
                    raise Reject(400, "INVALID_PHONE", "Invalid phone number format", "toPhone")
            except Reject as r:
                r.index = i
                raise

    async def _handle_items(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/items``: auth, latency, the rate gate and faults as for messages, then store."""
        self.route_counts[request.path] += 1
        fault = self._faults.next()
        body = await request.read()
        latency = self.latency
        delay = self._rng.uniform(*latency) if isinstance(latency, tuple) else latency
        if delay:
            await asyncio.sleep(delay)
        name = fault.partition(":")[0]
        if name in ("reset", "reset-early", "lost"):
            drop(request)
            raise asyncio.CancelledError
        try:
            check_auth(request.headers, self.api_keys)
            if self._gate.over() or name == "429":
                return _error(429, "RATE_LIMITED", "Too many requests", **{"Retry-After": "1"})
            if name in ("500", "502", "503", "504"):
                return _error(int(name), "SERVER_ERROR", f"injected {name}")
            if request.content_type != "application/json":
                raise Reject(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
            stored = self.variables.store(account_of(request.headers), body)
        except Reject as r:
            return self._refuse(r, request, body, None)
        return web.json_response({"stored": stored})

    def _refuse(self, r: Reject, request: web.Request, body: bytes, messages: Any) -> web.Response:
        if self.inbox is not None:
            detail = {"code": r.code, "message": r.message} | ({"field": r.field} if r.field else {})
            self.inbox.reject(r.status, detail, request.path, body, messages, r.index)
        return _error(r.status, r.code, r.message, r.field)

    def _accept(self, messages: list[dict[str, Any]], ids: list[str], path: str) -> None:
        if self.simulate_delivery:
            self.delivery.add(messages, ids, path)
        if self.inbox is not None:
            self.inbox.add(messages, ids, path)
        self._accepted_requests += 1
        self._accepted_messages += len(messages)
        if self.record:
            self.counts.update(m["id"] for m in messages)
            self.accepted.extend(messages)
