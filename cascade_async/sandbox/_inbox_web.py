"""The inbox over HTTP: the page, its JSON API, Server-Sent Events, and the Host check.

The page shows OTPs, so every inbox route checks the ``Host`` header against DNS rebinding: a
hostile site that points its own name at 127.0.0.1 gets a 403, not the inbox. IP literals, the
``localhost`` names, the bound host and any ``allowed_hosts`` pass. The API routes are not
guarded: apps in containers reach the sandbox by service name.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import math
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from ._inbox import Inbox
from ._records import Query

__all__ = ["install_inbox"]

STATIC: Final = Path(__file__).parent / "static"
MAX_WAIT: Final = 600.0
_SSE_COALESCE: Final = 0.05  # at most ~20 pushes a second per browser, whatever the send rate
_SSE_MAX_PUSH: Final = 1000  # more new messages than this in one push: tell the page to reload its view
_SSE_KEEPALIVE: Final = 15.0
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
}
_COMMON_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_encode = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost") or host in allowed:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True  # an IP literal cannot be rebound to another origin


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    detail = {"code": code, "message": message} | ({"field": field} if field else {})
    return web.Response(status=status, body=_encode.encode({"error": detail}), content_type="application/json")


class _BadParameter(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _json(payload: object) -> web.Response:
    return web.Response(body=_encode.encode(payload), content_type="application/json")


def _phone(request: web.Request) -> str | None:
    """The phone filter; ``+`` decodes to a space in a query string, so a bare number gets its ``+`` back."""
    raw = request.query.get("phone")
    if raw is None or not raw.strip():
        return None
    phone = raw.strip()
    return phone if phone.startswith("+") else "+" + phone


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _BadParameter(name, f"{name} must be a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _BadParameter(name, f"{name} must be between {low:g} and {high:g}")
    return value


def _query(request: web.Request) -> Query:
    """phone, q and since (a ``seq`` from an earlier answer, or an ISO 8601 time)."""
    since = request.query.get("since", "")
    after_seq, after_time = -1, 0.0
    if since.lstrip("-").isdigit():
        after_seq = int(since)
    elif since:
        try:
            when = _dt.datetime.fromisoformat(since.replace(" ", "+"))
        except ValueError:
            raise _BadParameter("since", "since must be a seq number or an ISO 8601 date-time") from None
        after_time = (when if when.tzinfo else when.replace(tzinfo=_dt.UTC)).timestamp()
    return Query(
        phone=_phone(request), q=request.query.get("q", "").strip(), after_seq=after_seq, after_time=after_time
    )


def local_only(handler: Handler, allowed_hosts: Iterable[str]) -> Handler:
    """For the sandbox's own control routes (stats, reset): the inbox's Host check, and no
    request sent by a web page of another origin (a cross-site form POST needs no preflight)."""
    allowed = frozenset(h.lower() for h in allowed_hosts)

    async def checked(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        origin_host = urlsplit(origin).netloc if origin else None
        if not host_allowed(request.headers.get("Host"), allowed) or (
            origin_host is not None and not host_allowed(origin_host, allowed)
        ):
            return _error(403, "FORBIDDEN_HOST", "the sandbox's control routes answer only to local callers")
        return await handler(request)

    return checked


def install_inbox(app: web.Application, inbox: Inbox, allowed_hosts: Iterable[str]) -> None:
    """Add the inbox's routes, its Host check and its headers to the sandbox's application."""
    allowed = frozenset(h.lower() for h in allowed_hosts)

    def guarded(handler: Handler) -> Handler:
        # A wrapper per inbox route rather than a middleware: the send routes stay exactly as fast.
        async def checked(request: web.Request) -> web.StreamResponse:
            response: web.StreamResponse
            if not host_allowed(request.headers.get("Host"), allowed):
                response = _error(403, "FORBIDDEN_HOST", "this sandbox does not answer to that Host (DNS rebinding)")
            else:
                try:
                    response = await handler(request)
                except _BadParameter as exc:
                    response = _error(400, "INVALID_PARAMETER", str(exc), exc.name)
            if not response.prepared:
                response.headers.update(_COMMON_HEADERS)
            return response

        return checked

    files = {path.name: path for path in STATIC.iterdir() if path.is_file()}

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(files["index.html"], headers=_PAGE_HEADERS)

    async def static(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def list_messages(request: web.Request) -> web.Response:
        limit = int(_number(request, "limit", 100, 1, inbox.max_messages))
        before = request.query.get("before")
        if before is not None and not before.isdigit():
            raise _BadParameter("before", "before must be a seq number")
        found = inbox.messages(_query(request), limit, int(before) if before else None)
        return _json({"messages": found})

    async def wait_message(request: web.Request) -> web.Response:
        timeout = _number(request, "timeout", 30.0, 0, MAX_WAIT)
        try:
            return _json(await inbox.wait(_query(request), timeout))
        except TimeoutError as exc:
            return _error(408, "TIMEOUT", str(exc))
        except RuntimeError as exc:
            return _error(503, "STOPPED", str(exc))

    async def clear(request: web.Request) -> web.Response:
        inbox.clear()
        return web.Response(status=204)

    async def list_rejections(request: web.Request) -> web.Response:
        limit = int(_number(request, "limit", 100, 1, 10_000))
        phone = request.query.get("phone")
        return _json({"rejections": inbox.rejections(None if phone is None else phone.strip(), limit)})

    async def threads(request: web.Request) -> web.Response:
        return _json({"threads": inbox.threads(), "lastSeq": inbox.last_seq, "total": len(inbox)})

    async def mark_read(request: web.Request) -> web.Response:
        upto = request.query.get("upto", "")
        inbox.mark_read(request.query.get("phone", "").strip(), int(upto) if upto.isdigit() else None)
        return web.Response(status=204)

    async def events(request: web.Request) -> web.StreamResponse:
        return await _stream_events(request, inbox)

    async def closing(app: web.Application) -> None:
        inbox.close()

    app.on_shutdown.append(closing)
    router = app.router
    router.add_get("/", guarded(page))
    router.add_get("/static/{name}", guarded(static))
    router.add_get("/sandbox/messages", guarded(list_messages))
    router.add_delete("/sandbox/messages", guarded(clear))
    router.add_get("/sandbox/messages/wait", guarded(wait_message))
    router.add_get("/sandbox/rejections", guarded(list_rejections))
    router.add_get("/sandbox/threads", guarded(threads))
    router.add_post("/sandbox/threads/read", guarded(mark_read))
    router.add_get("/sandbox/events", guarded(events))


def _event(name: str, payload: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode.encode(payload) + b"\n\n"


async def _stream_events(request: web.Request, inbox: Inbox) -> web.StreamResponse:
    """``messages``, ``rejected``, ``cleared`` and ``resync`` (reload your view) events, coalesced."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **_COMMON_HEADERS}
    )
    await response.prepare(request)
    cursor, generation = inbox.last_seq, inbox.generation
    try:
        await response.write(b"retry: 1000\n" + _event("hello", {"lastSeq": cursor}))
        with inbox.listen() as changed:
            while not inbox.closed:
                try:
                    async with asyncio.timeout(_SSE_KEEPALIVE):
                        await changed.wait()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                changed.clear()
                if inbox.closed:
                    break
                if generation != inbox.generation:
                    cursor, generation = inbox.last_seq, inbox.generation
                    await response.write(_event("cleared", {"lastSeq": cursor}))
                elif inbox.count_newer(cursor, _SSE_MAX_PUSH) > _SSE_MAX_PUSH:
                    cursor = inbox.last_seq
                    await response.write(_event("resync", {"lastSeq": cursor}))
                else:
                    messages, rejections = inbox.newer(cursor)
                    cursor = inbox.last_seq
                    chunk = b""
                    if messages:
                        chunk += _event("messages", messages)
                    for rejection in rejections:
                        chunk += _event("rejected", rejection)
                    if chunk:
                        await response.write(chunk)
                await asyncio.sleep(_SSE_COALESCE)
    except ConnectionError:
        pass  # the page went away
    return response
