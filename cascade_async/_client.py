"""``CascadeClient``: one session, one sending policy, every way of sending."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl as _ssl
import time
import weakref
from collections.abc import Iterable
from typing import Literal

import aiohttp

from ._admission import is_duplicate
from ._client_delivery import DeliveryMethods, status_fetcher
from ._client_lifecycle import ClientLifecycle
from ._client_settings import (
    _DEFAULT_RETRY,
    _UNSET,
    DATA_RATE_LIMIT,
    DEFAULT_BASE_URL,
    DEFAULT_STATUS_URL,
    ClientSettings,
    _Unset,
    check_base_url,
    check_sending,
    credential_headers,
    default_rate_limit,
)
from ._client_single import SingleSends
from ._coalesce import Coalescer
from ._events import EventHook, emit
from ._models import Result, Route
from ._outcomes import Recorder, StopCall
from ._ratelimit import LimiterEvent, Priority, RateLimit, make_limiter
from ._report import BulkReport
from ._retry import NO_RETRY, RetryPolicy
from ._sending import BatchSender
from ._stream import MessageSource, ResultStream
from ._templates import TemplateItems
from ._transport import AiohttpTransport, Transport
from ._uploads import UploadReport, upload_variables
from ._variables import Variable

__all__ = ["DATA_RATE_LIMIT", "DEFAULT_BASE_URL", "DEFAULT_STATUS_URL", "CascadeClient"]


# One job per module: settings (_client_settings), closing (_client_lifecycle), single sends
# (_client_single), delivery status (_client_delivery); construction and bulk sending here.
class CascadeClient(ClientSettings, ClientLifecycle, SingleSends, DeliveryMethods):
    """The asyncio client for SMSBAT's Cascade Messages API.

    >>> async with CascadeClient(api_key="...") as client:
    ...     result = await client.send(Message(id="otp-1", from_name="Shop", to_phone="+380501234567",
    ...                                        message_type=MessageType.TRANSACTION, text="Code: 1234"))
    ...     report = await client.send_many(messages)      # any iterable or async iterable

    One client holds one connection pool, one rate limiter, one retry budget and one
    policy (batch size, concurrency, retries): create it once and share it.

    Credentials: ``api_key`` (or ``$CASCADE_API_KEY``), ``viber_token``, ``telegram_key``; at
    least one. Connection: ``base_url`` (https, or http on loopback / ``allow_insecure``),
    ``route``, ``timeout`` (seconds per request), ``session`` (borrowed, never closed),
    ``ssl`` (verification on; pass an ``SSLContext`` for a private CA), ``transport`` (the
    seam tests replace). Sending: ``batch_size`` (1-1000), ``max_batch_bytes``, ``linger``
    (partial batches from slow sources), ``max_in_flight``, ``rate_limit`` (default 100 req/s,
    burst 150; shared through Redis when ``$CASCADE_REDIS_URL`` is set and no ``rate_limit`` is
    passed; ``None`` turns limiting off), ``retry``,
    ``isolate_bad_messages`` (split a batch refused with 400/413/422 to find the bad messages,
    with at most ``max_isolation_requests`` extra requests per batch), ``dedupe`` (refuse
    repeated ids within a call). Single sends: ``coalesce``, ``send_linger``, ``send_timeout``
    (a ``send()`` waits at most this long, then raises ``TimeoutError`` and its message is not
    sent later), ``close_timeout``. Observability: ``on_event``. Delivery status:
    ``status_base_url`` (default: the provider's status host when ``base_url`` is the
    provider's, else ``base_url``, so a sandbox serves both), ``status_rate_limit`` (the data
    endpoints' own bucket, 50 requests/s with a burst of 75; shared through Redis like
    ``rate_limit`` when given a ``redis_url``).

    Settings are fixed at construction (read-only attributes). After ``aclose()`` every
    method raises ``ClientClosedError`` and no request leaves.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        viber_token: str | None = None,
        telegram_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        route: Route = Route.CASCADE,
        timeout: float | aiohttp.ClientTimeout = 30.0,
        session: aiohttp.ClientSession | None = None,
        allow_insecure: bool = False,
        ssl: _ssl.SSLContext | bool = True,
        batch_size: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        linger: float = 0.05,
        max_in_flight: int = 8,
        rate_limit: RateLimit | Literal[_Unset.UNSET] | None = _UNSET,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        isolate_bad_messages: bool = True,
        max_isolation_requests: int = 64,
        dedupe: bool = True,
        coalesce: bool = True,
        send_linger: float = 0.002,
        send_timeout: float | None = 30.0,
        close_timeout: float = 10.0,
        on_event: EventHook | None = None,
        transport: Transport | None = None,
        status_base_url: str | None = None,
        status_rate_limit: RateLimit | None = DATA_RATE_LIMIT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("CASCADE_API_KEY")
        headers, self._credentials = credential_headers(api_key, viber_token, telegram_key)
        self._base_url = check_base_url(base_url, allow_insecure)
        self._route = Route(route)
        check_sending(
            batch_size=batch_size,
            max_batch_bytes=max_batch_bytes,
            linger=linger,
            send_linger=send_linger,
            max_in_flight=max_in_flight,
            send_timeout=send_timeout,
            max_isolation_requests=max_isolation_requests,
            timeout=timeout,
            close_timeout=close_timeout,
        )
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._linger = linger
        self._max_in_flight = max_in_flight
        self._send_linger = send_linger
        self._send_timeout = send_timeout
        self._coalesce = coalesce
        self._dedupe = dedupe
        self._isolate = max_isolation_requests if isolate_bad_messages else 0
        self._coalescers: dict[Route, Coalescer] = {}
        self._streams: weakref.WeakSet[ResultStream] = weakref.WeakSet()
        self._close_timeout = close_timeout
        self._hook = on_event
        if rate_limit is _UNSET:
            rate_limit = default_rate_limit()
        self._rate_limit = rate_limit
        limiter = None
        if rate_limit is not None:
            secret = next(v for v in (api_key, viber_token, telegram_key) if v is not None)
            limiter = make_limiter(
                rate_limit,
                batch_size=batch_size,
                credential_hash=hashlib.sha256(secret.encode()).hexdigest(),
                on_event=self._limiter_event,
            )
        self._limiter = limiter
        self._transport: Transport = transport or AiohttpTransport(
            timeout=timeout, session=session, ssl=ssl, pool_size=max(100, max_in_flight)
        )
        self._sender = BatchSender(
            transport=self._transport,
            base_url=self._base_url,
            headers=headers,
            limiter=limiter,
            policy=retry or NO_RETRY,
            on_event=on_event,
        )
        self._status = status_fetcher(
            self._sender, base_url, status_base_url, allow_insecure, api_key, headers, status_rate_limit
        )
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    def _limiter_event(self, event: LimiterEvent) -> None:
        emit(self._hook, event)

    def __repr__(self) -> str:
        # Names the credentials it holds, never their values.
        return f"CascadeClient(base_url={self.base_url!r}, route={self.route.name}, credentials={self._credentials})"

    # --- bulk sending (send_batch and send: SingleSends) ---------------------------------

    async def upload_variables(self, variables: Iterable[Variable]) -> UploadReport:
        """Upload message variables (``POST /api/items``) in requests of up to 1000, through the
        client's rate limiter and retries. A request that fails for good is in the report (the
        others still go); wrong credentials raise ``AuthenticationError``. ``stream()`` and
        ``send_many()`` upload a template's variables themselves, before the messages that use them.
        """
        self._ensure_open()
        try:
            return await upload_variables(self._sender, variables)
        except StopCall as exc:
            raise exc.error from None

    def stream(
        self,
        messages: MessageSource,
        *,
        route: Route | None = None,
        dedupe: bool | None = None,
        recorder: Recorder | None = None,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> ResultStream:
        """Send any number of messages; yields one ``Result`` per input message as batches complete.

        ``messages`` is any iterable or async iterable of ``Message`` or wire-form dicts, or the
        items of ``Template.messages()`` (their variables are uploaded before the first batch
        that uses them); it is read lazily. Invalid items come out REJECTED without being sent, and so do repeated
        tracking ids (``DUPLICATE_ID``), which costs memory for every id of the call (about
        90 bytes each). ``dedupe=False`` (or the client's ``dedupe=False``) keeps memory flat
        for endless streams whose ids are unique by construction: repeats are then sent too.
        ``Template.messages()`` items refuse repeated ids themselves in far less memory, so by
        default the stream keeps no id set for them.
        ``recorder`` is told of every batch before it leaves and of every result (the
        ``Journal`` is one). ``priority``: bulk (the default) leaves the rate limit's
        ``interactive_reserve`` to ``send()``; "interactive" goes ahead of bulk. Stops with
        ``AuthenticationError`` on 401/403 and ``EndpointError`` on a wrong endpoint (3xx, 404,
        405, 415): those messages stay unsettled.
        """
        self._ensure_open()
        if dedupe is None and isinstance(messages, TemplateItems):
            dedupe = False  # the template's own check (see _template_ids)
        return ResultStream(
            messages,
            sender=self._sender,
            route=route or self._route,
            batch_size=self._batch_size,
            linger=self._linger,
            max_in_flight=self._max_in_flight,
            max_batch_bytes=self._max_batch_bytes,
            on_event=self._hook,
            dedupe=self._dedupe if dedupe is None else dedupe,
            recorder=recorder,
            isolate=self._isolate,
            on_start=self._started,
            priority=Priority(priority),
        )

    async def send_many(
        self,
        messages: MessageSource,
        *,
        route: Route | None = None,
        recorder: Recorder | None = None,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> BulkReport:
        """Send everything and wait: a ``BulkReport`` keyed by tracking id, in input order.

        When the call stops early (the input failed, 401, a wrong endpoint, the client was
        closed), the error raised carries what was settled so far as ``err.partial_report``.
        """
        started = time.monotonic()
        duplicates: list[Result] = []
        by_id: dict[str, Result] = {}
        stream = self.stream(messages, route=route, dedupe=True, recorder=recorder, priority=priority)
        stream.keep_order()

        def report() -> BulkReport:
            order = stream.first_occurrences or ()
            ordered = {tid: by_id[tid] for tid in order if tid in by_id}
            return BulkReport(ordered, duplicates, time.monotonic() - started)

        try:
            async with stream:
                async for batch in stream.batches():
                    for result in batch:
                        if is_duplicate(result):
                            duplicates.append(result)
                        else:
                            by_id[result.tracking_id] = result
        except Exception as exc:
            with contextlib.suppress(AttributeError):  # an input's own exception may refuse attributes
                exc.partial_report = report()  # type: ignore[attr-defined]
            raise
        return report()
