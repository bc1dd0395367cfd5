"""``CascadeClient``: one session, one sending policy, every way of sending."""

from __future__ import annotations

import ipaddress
import os
import ssl as _ssl
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from ._coalesce import Coalescer
from ._engine import BatchSender
from ._errors import ValidationError
from ._events import EventHook
from ._models import Message, Result, Route, Status
from ._ratelimit import Limiter, RateLimit
from ._report import BulkReport
from ._retry import NO_RETRY, RetryPolicy
from ._stream import DUPLICATE_ID, MessageSource, Recorder, ResultStream, is_duplicate
from ._transport import AiohttpTransport, Transport
from ._version import __version__
from ._wire import encode_batch

__all__ = ["DEFAULT_BASE_URL", "CascadeClient"]

DEFAULT_BASE_URL: Final = "https://restapi.smsbat.com"
MAX_BATCH: Final = 1000
_DEFAULT_RATE_LIMIT: Final = RateLimit()
_DEFAULT_RETRY: Final = RetryPolicy()


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
    (partial batches from slow sources), ``max_in_flight``, ``rate_limit``, ``retry``,
    ``isolate_bad_messages`` (split 400s to find the bad messages), ``dedupe`` (refuse repeated
    ids within a call). Single sends: ``coalesce``, ``send_linger``, ``close_timeout``.
    Observability: ``on_event``.
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
        rate_limit: RateLimit | None = _DEFAULT_RATE_LIMIT,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        isolate_bad_messages: bool = True,
        dedupe: bool = True,
        coalesce: bool = True,
        send_linger: float = 0.002,
        close_timeout: float = 10.0,
        on_event: EventHook | None = None,
        transport: Transport | None = None,
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
        self.base_url = _check_base_url(base_url, allow_insecure)
        self.route = Route(route)
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
        self.batch_size = batch_size
        self.linger = linger
        self.max_in_flight = max_in_flight
        self.send_linger = send_linger
        self._coalesce = coalesce
        self.dedupe = dedupe
        self._coalescers: dict[Route, Coalescer] = {}
        self._close_timeout = close_timeout
        self._hook = on_event
        limiter = Limiter(rate_limit, batch_size=batch_size) if rate_limit is not None else None
        self._transport: Transport = transport or AiohttpTransport(
            timeout=timeout, session=session, ssl=ssl, pool_size=max(100, max_in_flight)
        )
        self._sender = BatchSender(
            transport=self._transport,
            base_url=self.base_url,
            headers=headers,
            limiter=limiter,
            policy=retry or NO_RETRY,
            isolate_bad_messages=isolate_bad_messages,
            max_batch_bytes=max_batch_bytes,
            on_event=on_event,
        )
        self._closed = False

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
        """Flush queued ``send()`` calls, then close the connection pool (unless it was passed in).

        Sends still pending after ``close_timeout`` seconds fail with a clear ``CascadeError``;
        nothing is dropped silently. Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        coalescers, self._coalescers = list(self._coalescers.values()), {}
        for coalescer in coalescers:
            await coalescer.aclose(self._close_timeout)
        await self._transport.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("this CascadeClient is closed")

    # --- sending --------------------------------------------------------------------

    async def send_batch(self, messages: Iterable[Message], *, route: Route | None = None) -> list[Result]:
        """POST 1-1000 messages once: no retries, no splitting.

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
                raise ValidationError("appears twice in one batch", field="id", tracking_id=m.id, code=DUPLICATE_ID)
            ids.add(m.id)
        return await self._sender.post(batch, encode_batch(batch), route or self.route, 1)

    async def send(self, message: Message | Mapping[str, Any], *, route: Route | None = None) -> Result:
        """Send one message with the client's retries; return its ACCEPTED result or raise.

        Concurrent calls share batches (see ``send_linger``; ``coalesce=False`` sends one
        request per message). Raises ``ValidationError`` for invalid input, the ``APIError``
        that rejected it, or the ``TransportError`` / ``ProtocolError`` it failed with.
        """
        self._ensure_open()
        msg = message if isinstance(message, Message) else Message.from_dict(message)
        route = route or self.route
        if self._coalesce:
            coalescer = self._coalescers.get(route)
            if coalescer is None:
                coalescer = self._coalescers[route] = Coalescer(
                    self._sender,
                    route,
                    batch_size=self.batch_size,
                    linger=self.send_linger,
                    max_in_flight=self.max_in_flight,
                )
            return await coalescer.send(msg)
        (result,) = await self._sender.deliver([msg], route)
        if result.status is not Status.ACCEPTED:
            assert result.error is not None
            raise result.error
        return result

    def stream(
        self, messages: MessageSource, *, route: Route | None = None, dedupe: bool | None = None
    ) -> ResultStream:
        """Send any number of messages; yields one ``Result`` per input message as batches complete.

        ``messages`` is any iterable or async iterable of ``Message`` or wire-form dicts; it is
        read lazily. Invalid items come out REJECTED without being sent, and so do repeated
        tracking ids (``DUPLICATE_ID``), which costs memory for every id of the call (about
        90 bytes each). ``dedupe=False`` (or the client's ``dedupe=False``) keeps memory flat
        for endless streams whose ids are unique by construction: repeats are then sent too.
        Raises ``AuthenticationError`` at once on 401/403.
        """
        return self._open_stream(messages, route=route, dedupe=self.dedupe if dedupe is None else dedupe)

    def _open_stream(
        self, messages: MessageSource, *, route: Route | None, dedupe: bool, recorder: Recorder | None = None
    ) -> ResultStream:
        self._ensure_open()
        return ResultStream(
            messages,
            sender=self._sender,
            route=route or self.route,
            batch_size=self.batch_size,
            linger=self.linger,
            max_in_flight=self.max_in_flight,
            on_event=self._hook,
            dedupe=dedupe,
            recorder=recorder,
        )

    async def send_many(self, messages: MessageSource, *, route: Route | None = None) -> BulkReport:
        """Send everything and wait: a ``BulkReport`` keyed by tracking id, in input order."""
        started = time.monotonic()
        duplicates: list[Result] = []
        async with self.stream(messages, route=route, dedupe=True) as results:
            by_id: dict[str, Result] = {}
            async for result in results:
                if is_duplicate(result):
                    duplicates.append(result)
                else:
                    by_id[result.tracking_id] = result
            # ``seen`` holds first occurrences in input order.
            ordered = {tid: by_id[tid] for tid in results.seen}
        return BulkReport(ordered, duplicates, time.monotonic() - started)


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
