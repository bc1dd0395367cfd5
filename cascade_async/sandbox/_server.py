"""The sandbox server: its settings, control (script, reset, stats) and lifecycle on real sockets.

What it answers on each route is ``_routes.MessageRoutes``."""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import msgspec
from aiohttp import web

from .._models import Route
from ._delivery import DeliverySim
from ._faults import FaultPlan, RateGate
from ._helpers import InboxHelpers
from ._inbox import DEFAULT_MAX_AGE, DEFAULT_MAX_MESSAGES, Inbox
from ._inbox_web import install_inbox, local_only
from ._routes import MessageRoutes
from ._variables import VariableStore

__all__ = ["Sandbox", "SandboxStats"]


class SandboxStats(msgspec.Struct, frozen=True):
    requests: int  # every POST to a cascade route
    accepted_requests: int
    accepted_messages: int  # counting repeats
    unique_ids: int
    max_count: int  # the most times one tracking id was accepted (1 = exactly once)
    duplicated_ids: int  # ids accepted more than once
    statuses: dict[str, int]  # answers by status, and dropped connections as "reset"


class Sandbox(MessageRoutes, InboxHelpers):
    """A real HTTP server on loopback that behaves like the Cascade Messages API.

    Its inbox (``inbox=True``) serves a live web page at ``/`` and a JSON API under
    ``/sandbox/messages``; it keeps at most ``inbox_max_messages`` for ``inbox_max_age`` seconds.
    ``counts``, ``accepted`` and ``stats()`` are separate and unbounded (``record=False`` turns
    them off). ``allowed_hosts`` adds names the inbox answers to besides loopback and ``host``.

    Delivery (``GET /bat/message/{id}``, see ``_delivery``): each message spends
    ``delivery_steps[0]`` seconds ``scheduled`` and ``delivery_steps[1]`` ``processing``, then
    ends by its phone number (…13 undeliverable, …66 permanenterror, else delivered).
    ``status_rate_limit``/``status_rate_burst`` answer 429 above that rate; ``webhook_url`` gets
    each status change POSTed, with ``webhook_faults`` ``duplicate`` and ``out-of-order``.
    ``delivery`` counts polls per message (``delivery.polls``, ``delivery.poll_times``).
    """

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
        inbox: bool = True,
        delivery: bool = True,
        inbox_max_messages: int = DEFAULT_MAX_MESSAGES,
        inbox_max_age: float = DEFAULT_MAX_AGE,
        allowed_hosts: Iterable[str] = (),
        delivery_steps: tuple[float, float] = (0.5, 1.0),
        status_rate_limit: float | None = None,
        status_rate_burst: int | None = None,
        webhook_url: str | None = None,
        webhook_faults: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self._rng = random.Random(seed)
        self._faults = FaultPlan(self._rng, faults, fault_rates)
        self._gate = RateGate(rate_limit, rate_burst)
        self.reject_senders = frozenset(reject_senders)
        self.reject_prefixes = tuple(reject_prefixes)
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.hang_seconds = hang_seconds
        self.record = record
        self._ssl = ssl_context
        self.counts: collections.Counter[str] = collections.Counter()
        self.accepted: list[dict[str, Any]] = []  # every accepted message, in order (when recording)
        self.request_times: list[float] = []  # loop time of every POST's arrival (when recording)
        self.route_counts: collections.Counter[str] = collections.Counter()  # POSTs by path
        self._requests = 0
        self._accepted_requests = 0
        self._accepted_messages = 0
        self._statuses: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inbox = Inbox(max_messages=inbox_max_messages, max_age=inbox_max_age) if inbox else None
        self.allowed_hosts = frozenset({host, *allowed_hosts})
        self.delivery = DeliverySim(
            steps=delivery_steps,
            rate_limit=status_rate_limit,
            rate_burst=status_rate_burst,
            webhook_url=webhook_url,
            webhook_faults=webhook_faults,
            record=record,
        )
        if self.inbox is not None:
            self.inbox.delivery = self.delivery.progress  # the inbox shows the moving status and channel
        self.variables = VariableStore()  # POST /api/items, per account
        #: False: no delivery statuses are kept (long send benchmarks; status GETs then 404).
        self.simulate_delivery = delivery

    # --- control --------------------------------------------------------------------

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults: each later request takes the next one (then normal service)."""
        self._faults.script(faults)

    def reset(self) -> None:
        """Forget what was recorded, the inbox too (not the configuration)."""
        if self.inbox is not None:
            self.inbox.clear()
        self.counts.clear()
        self.accepted.clear()
        self.request_times.clear()
        self.route_counts.clear()
        self._requests = self._accepted_requests = self._accepted_messages = 0
        self._statuses.clear()
        self.delivery.clear_counts()  # not the statuses: an accepted message never turns into a 404
        self.variables.clear()

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
        app.router.add_post("/api/items", self._handle_items)
        app.router.add_get("/sandbox/stats", local_only(self._handle_stats, self.allowed_hosts))
        app.router.add_post("/sandbox/reset", local_only(self._handle_reset, self.allowed_hosts))
        self.delivery.install(app)
        if self.inbox is not None:
            install_inbox(app, self.inbox, self.allowed_hosts)
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
        self._loop = asyncio.get_running_loop()
        if self.inbox is not None:
            self.inbox.closed = False  # a restarted sandbox serves its inbox again
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

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(self.stats()), content_type="application/json")

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)
