"""Receiving delivery reports the provider POSTs: parse them, and ready handlers for aiohttp and FastAPI.

>>> from cascade_async import webhooks
>>> async def on_report(report: DeliveryReport) -> None:
...     await orders.mark(report.message_id, report.status)      # your code
>>> app.include_router(webhooks.fastapi_router(on_report, token=os.environ["HOOK_SECRET"]))
>>> # aiohttp: app.router.add_post("/webhook", webhooks.aiohttp_handler(on_report, token=...))

The provider signs nothing, so the handlers demand a shared secret in the URL you give its
account manager (``https://you.example/webhook?token=SECRET``), compared in constant time;
without it the answer is 401. ``token`` defaults to ``$CASCADE_WEBHOOK_TOKEN``.

By default the callback is awaited before the answer: 204 once it returned, 503 when it failed
or took longer than ``timeout`` seconds (it is then cancelled), so no report is acknowledged
unprocessed. ``background=True`` answers 202 at once and runs the callback afterwards: a crash
or a failing callback then loses that report (at most once). Whether the provider retries after
a 503 is not documented.

``on_report`` may be a coroutine function or a plain one; a plain one runs inline on the event
loop (keep it quick, like one SQLite commit), so ``timeout`` cannot cut it short.

Duplicates and out-of-order reports are expected: each handler remembers the latest status of
the last ``remember`` message ids and does not call back for a report that would not move a
message forward (the ``forward`` rule). Across restarts, keep the rule where you store
statuses (the journal does it in SQL).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from ._delivery import DeliveryReport, forward, report_from_json
from ._errors import ProtocolError

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["OnReport", "aiohttp_handler", "fastapi_router", "parse_report"]

logger = logging.getLogger("cascade_async")

OnReport = Callable[[DeliveryReport], Awaitable[None] | None]
MAX_BODY: Final = 64 * 1024
TOKEN_ENV: Final = "CASCADE_WEBHOOK_TOKEN"


def parse_report(body: bytes) -> DeliveryReport:
    """One webhook body -> a ``DeliveryReport``. Raises ``ProtocolError`` naming what is wrong.

    Needs ``messageId`` and ``deliverystatus``; ``timestamp`` and ``cost`` are read when present
    and any other field is kept in ``raw``.
    """
    report = report_from_json(body)
    if "messageId" not in report.raw:
        raise ProtocolError("a webhook report needs a 'messageId'")
    return report


class _Receiver:
    """What both frameworks share: the token check, parsing, dedupe and the callback's deadline."""

    def __init__(self, on_report: OnReport, token: str | None, timeout: float, background: bool, remember: int) -> None:
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"a webhook needs a shared secret: pass token= or set {TOKEN_ENV}")
        if timeout <= 0 or remember < 0:
            raise ValueError("timeout must be positive and remember not negative")
        self._token = token.encode()
        self._on_report = on_report
        self._timeout = timeout
        self._background = background
        self._remember = remember
        self._latest: collections.OrderedDict[str, DeliveryReport] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def authorized(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def handle(self, given_token: str | None, body: bytes) -> tuple[int, str]:
        """(HTTP status, short text) for one POST."""
        if not self.authorized(given_token):
            return 401, "missing or wrong token"
        if len(body) > MAX_BODY:
            return 413, "body too large"
        try:
            report = parse_report(body)
        except ProtocolError as exc:
            return 400, exc.message
        old = self._latest.get(report.message_id)
        if old is not None and (forward(old, report) is old or old == report):
            return 200, "duplicate or older: ignored"
        if self._background:
            task = asyncio.create_task(self._call(report))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return 202, "accepted"
        try:
            await asyncio.wait_for(self._call(report), self._timeout)
        except TimeoutError:
            logger.warning("webhook callback for %s took over %gs: answered 503", report.message_id, self._timeout)
            return 503, "not processed in time"
        except Exception:
            logger.exception("webhook callback for %s failed: answered 503", report.message_id)
            return 503, "not processed"
        return 204, ""

    async def _call(self, report: DeliveryReport) -> None:
        try:
            got = self._on_report(report)
            if inspect.isawaitable(got):
                await got
        except Exception:
            if self._background:
                logger.exception("webhook callback for %s failed; the report is lost", report.message_id)
                return
            raise
        self._note(report)

    def _note(self, report: DeliveryReport) -> None:
        if not self._remember:
            return
        self._latest[report.message_id] = forward(self._latest.get(report.message_id), report)
        self._latest.move_to_end(report.message_id)
        while len(self._latest) > self._remember:
            self._latest.popitem(last=False)


def aiohttp_handler(
    on_report: OnReport,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    background: bool = False,
    remember: int = 100_000,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler: ``app.router.add_post("/webhook", aiohttp_handler(on_report, token=...))``."""
    from aiohttp import web

    receiver = _Receiver(on_report, token, timeout, background, remember)

    async def handler(request: web.Request) -> web.Response:
        if not receiver.authorized(request.query.get("token")):
            return web.Response(status=401, text="missing or wrong token")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="body too large")
        body = await request.read()  # whole, however it was chunked (aiohttp caps it at client_max_size)
        status, text = await receiver.handle(request.query.get("token"), body)
        return web.Response(status=status, text=text or None)

    return handler


def fastapi_router(
    on_report: OnReport,
    *,
    token: str | None = None,
    path: str = "/webhook",
    timeout: float = 10.0,
    background: bool = False,
    remember: int = 100_000,
) -> Any:
    """A FastAPI ``APIRouter`` with ``POST {path}``: ``app.include_router(fastapi_router(on_report, token=...))``.

    FastAPI is not a dependency of cascade-async: install it yourself.
    """
    try:
        from fastapi import APIRouter, Request, Response
    except ImportError:
        raise ImportError("webhooks.fastapi_router needs FastAPI: pip install fastapi") from None
    receiver = _Receiver(on_report, token, timeout, background, remember)
    router = APIRouter()

    async def receive(request: Request) -> Response:
        given = request.query_params.get("token")
        if not receiver.authorized(given):
            return Response(status_code=401, content="missing or wrong token")
        status, text = await receiver.handle(given, await request.body())
        return Response(status_code=status, content=text or None)

    # FastAPI reads the signature; with postponed annotations "Request" would be a local name it cannot see.
    receive.__annotations__ = {"request": Request, "return": Response}
    router.add_api_route(path, receive, methods=["POST"], include_in_schema=True)
    return router
