"""``CascadeClient``: one session, one sending policy, every way of sending."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import ipaddress
import os
import ssl as _ssl
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

from ._admission import is_duplicate
from ._coalesce import Coalescer
from ._delivery import DeliveryReport
from ._errors import ClientClosedError, ErrorCode, ValidationError
from ._events import EventHook, emit
from ._models import Message, Result, Route, Status
from ._ratelimit import LimiterEvent, Priority, RateLimit, RateLimiter, credential_key, make_limiter
from ._report import BulkReport
from ._retry import NO_RETRY, RetryPolicy
from ._sending import BatchSender, Recorder, StopCall
from ._stream import MessageSource, ResultStream
from ._tracking import StatusFetcher, TrackItem, track
from ._transport import AiohttpTransport, Transport
from ._uploads import UploadReport, upload_variables
from ._variables import Variable
from ._version import __version__
from ._wire import encode_batch

__all__ = ["DATA_RATE_LIMIT", "DEFAULT_BASE_URL", "DEFAULT_STATUS_URL", "CascadeClient"]

DEFAULT_BASE_URL: Final = "https://restapi.smsbat.com"
DEFAULT_STATUS_URL: Final = "https://api.smsbat.com"  # the delivery status host
#: The provider's limit on data endpoints (status, balance), apart from the sending limit.
DATA_RATE_LIMIT: Final = RateLimit(requests_per_second=50.0, burst=75)
MAX_BATCH: Final = 1000
_DEFAULT_RATE_LIMIT: Final = RateLimit()
_DEFAULT_RETRY: Final = RetryPolicy()
REDIS_URL_ENV: Final = "CASCADE_REDIS_URL"


class _Unset(enum.Enum):
    UNSET = "the default"  # ``rate_limit`` not passed: tells it apart from an explicit RateLimit or None


_UNSET: Final = _Unset.UNSET


class CascadeClient:
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
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"cascade-async/{__version__}",
        }
        self._credentials: list[str] = []
        for name, header, value in (
            ("api_key", "X-Authorization-Key", api_key),
            ("viber_token", "X-Viber-Auth-Token", viber_token),
            ("telegram_key", "X-Tg-Bot-Key", telegram_key),
        ):
            if value is None:
                continue
            _check_credential(name, value)
            headers[header] = value
            self._credentials.append(name)
        if not self._credentials:
            raise ValueError("no credentials: pass api_key (or set CASCADE_API_KEY), viber_token or telegram_key")
        self._base_url = _check_base_url(base_url, allow_insecure)
        self._route = Route(route)
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}, got {batch_size}")
        if max_batch_bytes < 1024:
            raise ValueError("max_batch_bytes must be at least 1024")
        if linger < 0:
            raise ValueError("linger must not be negative")
        if send_linger < 0:
            raise ValueError("send_linger must not be negative")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError("send_timeout must be positive (or None for no limit)")
        if max_isolation_requests < 2:
            raise ValueError("max_isolation_requests must be at least 2 (one split)")
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
        self._status = _status_fetcher(
            self._sender, base_url, status_base_url, allow_insecure, api_key, headers, status_rate_limit
        )
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    # --- settings: fixed at construction ----------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def route(self) -> Route:
        return self._route

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def max_batch_bytes(self) -> int:
        return self._max_batch_bytes

    @property
    def linger(self) -> float:
        return self._linger

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def send_linger(self) -> float:
        return self._send_linger

    @property
    def send_timeout(self) -> float | None:
        return self._send_timeout

    @property
    def dedupe(self) -> bool:
        return self._dedupe

    @property
    def rate_limit(self) -> RateLimit | None:
        """The rate limit in force (its repr hides a Redis password)."""
        return self._rate_limit

    def _limiter_event(self, event: LimiterEvent) -> None:
        emit(self._hook, event)

    def __repr__(self) -> str:
        # Names the credentials it holds, never their values.
        return f"CascadeClient(base_url={self.base_url!r}, route={self.route.name}, credentials={self._credentials})"

    # --- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> CascadeClient:
        self._ensure_open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop everything the client runs, then close the connection pool (unless it was passed in).

        Streams read no more input and start no new batch; queued ``send()`` calls are flushed.
        Then nothing more leaves: batches in flight finish within ``close_timeout`` seconds or
        end FAILED with their outcome unknown, each stream ends with ``ClientClosedError``
        after the results already in flight, and sends still pending fail with it. Nothing is
        dropped silently. Safe to call twice.
        """
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._close())
        # shield: a second caller (or a cancelled one) must not cut the first one's close short
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout  # one budget for the whole close
        streams = list(self._streams)
        for stream in streams:
            await stream.stop_intake()
        coalescers, self._coalescers = list(self._coalescers.values()), {}
        for coalescer in coalescers:
            await coalescer.aclose(max(0.0, deadline - loop.time()))
        self._sender.closed = True
        if streams:
            left = max(0.0, deadline - loop.time())
            await asyncio.gather(*(s.close_for_client(left) for s in streams))
        if self._limiter is not None:
            await self._limiter.aclose()
        await self._transport.aclose()
        if self._status.limiter is not None:
            await self._status.limiter.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this CascadeClient is closed")

    def _started(self, stream: ResultStream) -> None:
        self._ensure_open()
        self._streams.add(stream)

    # --- sending --------------------------------------------------------------------

    async def send_batch(
        self,
        messages: Iterable[Message],
        *,
        route: Route | None = None,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> list[Result]:
        """POST 1-1000 messages once: no retries, no splitting (a 429 still pauses the rate limiter).

        Results are matched by tracking id, in the order of ``messages``. A message the
        answer does not mention ends FAILED with a ``ProtocolError``. A non-200 answer raises
        the matching ``APIError``; a connection failure raises ``TransportError``.
        """
        self._ensure_open()
        batch = list(messages)
        if not 1 <= len(batch) <= MAX_BATCH:
            raise ValueError(f"send_batch takes 1 to {MAX_BATCH} messages, got {len(batch)}")
        ids: set[str] = set()
        for m in batch:
            if not isinstance(m, Message):
                raise TypeError(f"send_batch takes Message objects, not {type(m).__name__}")
            if m.id in ids:
                raise ValidationError(
                    "appears twice in one batch", field="id", tracking_id=m.id, code=ErrorCode.DUPLICATE_ID
                )
            ids.add(m.id)
        capacity = _message_capacity(self._rate_limit)
        if capacity is not None and len(batch) > capacity:
            raise ValidationError(
                f"a batch of {len(batch)} messages can never pass the message bucket: "
                f"RateLimit.message_burst is {capacity}; send at most that many at once",
                field=None,
                tracking_id=None,
            )
        body = encode_batch(batch)
        if len(body) > self._max_batch_bytes:
            raise ValidationError(
                f"the batch encodes to {len(body)} bytes, above max_batch_bytes={self._max_batch_bytes}",
                field=None,
                tracking_id=None,
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        return await self._sender.post(batch, body, route or self._route, 1, Priority(priority))

    async def send(self, message: Message | Mapping[str, Any], *, route: Route | None = None) -> Result:
        """Send one message with the client's retries; return its ACCEPTED result or raise.

        Concurrent calls share batches (see ``send_linger``; ``coalesce=False`` sends one
        request per message). Raises ``ValidationError`` for invalid input, the ``APIError``
        that rejected it, or the ``TransportError`` / ``ProtocolError`` it failed with.
        """
        self._ensure_open()
        msg = message if isinstance(message, Message) else Message.from_dict(message)
        route = route or self._route
        coalescer = self._coalescers.get(route)
        if coalescer is None:
            coalescer = self._coalescers[route] = Coalescer(
                self._sender,
                route,
                batch_size=self._batch_size if self._coalesce else 1,
                linger=self._send_linger if self._coalesce else 0.0,
                max_in_flight=self._max_in_flight if self._coalesce else MAX_BATCH,
                max_batch_bytes=self._max_batch_bytes,
                isolate=self._isolate,
            )
        return await coalescer.send(msg, self._send_timeout)

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
        ``recorder`` is told of every batch before it leaves and of every result (the
        ``Journal`` is one). ``priority``: bulk (the default) leaves the rate limit's
        ``interactive_reserve`` to ``send()``; "interactive" goes ahead of bulk. Stops with
        ``AuthenticationError`` on 401/403 and ``EndpointError`` on a wrong endpoint (3xx, 404,
        405, 415): those messages stay unsettled.
        """
        return self._stream(messages, route=route, dedupe=dedupe, recorder=recorder, priority=priority)

    def _stream(
        self,
        messages: MessageSource,
        *,
        route: Route | None,
        dedupe: bool | None,
        recorder: Recorder | None,
        priority: Priority | Literal["bulk", "interactive"],
        ordered: bool = False,
    ) -> ResultStream:
        self._ensure_open()
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
            ordered=ordered,
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
        stream = self._stream(messages, route=route, dedupe=True, recorder=recorder, priority=priority, ordered=True)

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

    # --- delivery status (logic in _tracking) ------------------------------------------

    @property
    def status_base_url(self) -> str:
        return self._status.base_url

    async def status(self, message_id: str) -> DeliveryReport:
        """The delivery status of one accepted message: ``GET /bat/message/{messageId}``.

        Raises ``MessageNotFoundError`` when the status host does not know the id (a message
        accepted a moment ago may not show yet), or the ``CascadeError`` the request failed with.
        """
        self._ensure_open()
        return await self._status(message_id, Priority.INTERACTIVE)

    def track(
        self,
        items: Iterable[TrackItem] | AsyncIterable[TrackItem],
        *,
        timeout: float = 120.0,
        every: float = 5.0,
    ) -> AsyncIterator[DeliveryReport]:
        """Poll until each message's status is final: yields one ``DeliveryReport`` per message.

        ``items``: Results (those not ACCEPTED are skipped), message ids, or ``(tracking_id,
        message_id)`` pairs, from any iterable or async iterable. Each message is polled about
        every ``every`` seconds, backing off, never more than once a second, and all of them
        within the data endpoints' bucket. After ``timeout`` seconds from the start of its
        tracking, a message yields a report with ``final=False`` and its last status seen.
        Reports come in the order they become final. Close it early with ``aclose()``.
        """
        self._ensure_open()
        self._status.check()
        return track(self._status, items, timeout=timeout, every=every, rate=self._status.rate)

    async def wait_delivered(
        self,
        result: Result | str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (a per-message deadline: the documented API)
    ) -> DeliveryReport:
        """Wait for one message's final status (the OTP flow): never raises for an undelivered one.

        Returns the final report (check ``report.delivered``), or one with ``final=False`` when
        ``timeout`` seconds pass first. Polls about once a second, ahead of bulk tracking.
        """
        self._ensure_open()
        self._status.check()
        if isinstance(result, Result) and (result.status is not Status.ACCEPTED or not result.message_id):
            raise ValueError(f"{result.tracking_id!r} was not accepted ({result.status.value}): nothing to wait for")
        stream = track(
            self._status, [result], timeout=timeout, every=1.0, rate=self._status.rate, priority=Priority.INTERACTIVE
        )
        try:
            async for report in stream:
                return report
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        raise AssertionError("track() yields one report per message")  # pragma: no cover


def default_rate_limit() -> RateLimit:
    """The limit a client gets when none is passed: shared through ``$CASCADE_REDIS_URL`` when it is set."""
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    return RateLimit(redis_url=url) if url else _DEFAULT_RATE_LIMIT


def _message_capacity(config: RateLimit | None) -> int | None:
    if config is None or config.messages_per_second is None:
        return None
    return config.message_burst or max(1, round(config.messages_per_second))


def _check_credential(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} must not contain CR, LF or NUL")


def _check_base_url(url: str, allow_insecure: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ValueError(
            "base_url must use https (plain http is allowed only for loopback hosts or with allow_insecure=True)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not hold credentials, a query or a fragment")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _status_fetcher(
    sender: BatchSender,
    base_url: str,
    status_base_url: str | None,
    allow_insecure: bool,
    api_key: str | None,
    headers: Mapping[str, str],
    config: RateLimit | None,
) -> StatusFetcher:
    if status_base_url is None:
        status_base_url = DEFAULT_STATUS_URL if base_url.rstrip("/") == DEFAULT_BASE_URL else base_url
    url = _check_base_url(status_base_url, allow_insecure)
    limiter: RateLimiter | None = None
    status_headers: dict[str, str] | None = None
    if api_key is not None:
        status_headers = {k: v for k, v in headers.items() if k not in ("X-Viber-Auth-Token", "X-Tg-Bot-Key")}
        status_headers.pop("Content-Type", None)
        if config is not None:
            if config.redis_url is not None and config.key is None:
                # its own bucket in Redis: the data endpoints' limit is apart from the sending one
                config = msgspec.structs.replace(config, key=credential_key(api_key) + ":data")
            digest = hashlib.sha256(api_key.encode()).hexdigest()
            limiter = make_limiter(config, batch_size=1, credential_hash=digest)
    return StatusFetcher(sender, url, status_headers, limiter, None if config is None else config.requests_per_second)
