"""Polling delivery status: one ``GET`` per ``status()``, and ``track()`` for any number of messages.

``track`` keeps a bounded window of messages in a heap ordered by when each is next due,
a few worker tasks that poll the head of it, and a bounded queue of input read ahead: memory
does not grow with the number of messages, and there is no task per message. The data
endpoint's bucket paces every request, so however many messages are tracked the rate stays
within it; a message is polled again at least ``MIN_GAP`` seconds after its last answer, with a
gap that grows from ``every`` to ``every * MAX_GAP_FACTOR``.

The window is sized from the bucket's rate so that each message in it gets polled about once
per ``every`` seconds: tracking more at once would only make every message wait longer, and a
message's timeout counts from when it enters the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import heapq
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Final, TypeAlias
from urllib.parse import quote

import msgspec

from ._delivery import DeliveryReport, DeliveryStatus, report_from_json
from ._errors import AuthenticationError, CascadeError, ClientClosedError, EndpointError, MessageNotFoundError
from ._models import Result, Status
from ._plain_requests import request_json
from ._ratelimit import Priority, RateLimiter
from ._sending import BatchSender

__all__ = ["StatusFetcher", "TrackItem", "track"]

logger = logging.getLogger("cascade_async")

MIN_GAP: Final = 1.0  # never more than one poll per message per second (the provider's advice)
MAX_GAP_FACTOR: Final = 4.0  # the gap between polls grows to every * this
GROWTH: Final = 1.5
NOT_FOUND_GRACE: Final = 30.0  # a 404 this soon after tracking starts means "not visible yet"
WORKERS: Final = 16
MIN_WINDOW: Final = 64
READ_AHEAD: Final = 1024

TrackItem: TypeAlias = Result | str | tuple[str | None, str]
Fetch: TypeAlias = Callable[[str, Priority], Awaitable[DeliveryReport]]


class StatusFetcher:
    """``GET {status_base_url}/bat/message/{messageId}`` through the sender's retry loop."""

    def __init__(
        self,
        sender: BatchSender,
        base_url: str,
        headers: dict[str, str] | None,
        limiter: RateLimiter | None,
        rate: float | None,
    ) -> None:
        self._sender = sender
        self.base_url = base_url
        self._headers = headers
        self.limiter = limiter
        self.rate = rate

    def check(self) -> None:
        if self._headers is None:
            raise ValueError(
                "delivery status needs an API key (X-Authorization-Key): the status host does not take "
                "Viber or Telegram bot tokens; pass api_key= or set CASCADE_API_KEY"
            )

    async def __call__(self, message_id: str, priority: Priority = Priority.INTERACTIVE) -> DeliveryReport:
        self.check()
        assert self._headers is not None
        if not isinstance(message_id, str) or not message_id.strip():
            raise ValueError("message_id must be a non-empty string (the messageId of an accepted message)")
        raw = await request_json(
            self._sender,
            "GET",
            f"{self.base_url}/bat/message/{quote(message_id, safe='')}",
            headers=self._headers,
            limiter=self.limiter,
            priority=priority,
            errors={404: MessageNotFoundError},
        )
        return report_from_json(raw.body, message_id=message_id, observed_at=_dt.datetime.now(_dt.UTC))


class _Tracked:
    __slots__ = ("deadline", "gap", "last", "message_id", "started", "tracking_id")

    def __init__(self, tracking_id: str | None, message_id: str, now: float, timeout: float, every: float) -> None:
        self.tracking_id = tracking_id
        self.message_id = message_id
        self.started = now
        self.deadline = now + timeout
        self.gap = every
        self.last: DeliveryReport | None = None


def _pair(item: object) -> tuple[str | None, str] | None:
    """(tracking id, message id) of one input item, or None to skip it."""
    if isinstance(item, Result):
        if item.status is not Status.ACCEPTED or not item.message_id:
            return None
        return item.tracking_id, item.message_id
    if isinstance(item, str):
        return None, item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
        tid = item[0]
        return (tid if isinstance(tid, str) else None), item[1]
    raise TypeError(f"track() takes Results, message ids or (tracking_id, message_id) pairs, not {item!r}")


def _timed_out(entry: _Tracked) -> DeliveryReport:
    last = entry.last
    if last is None:
        return DeliveryReport(
            message_id=entry.message_id,
            tracking_id=entry.tracking_id,
            status=DeliveryStatus.UNKNOWN,
            final=False,
            error="no status seen before the timeout",
        )
    return _with_tracking(last, entry.tracking_id, final=False)


def _blank(tracking_id: str | None, message_id: str) -> DeliveryReport:
    return DeliveryReport(
        message_id=message_id,
        tracking_id=tracking_id,
        status=DeliveryStatus.UNKNOWN,
        final=False,
        error="not a messageId: the id is empty",
    )


def _with_tracking(report: DeliveryReport, tracking_id: str | None, *, final: bool) -> DeliveryReport:
    return msgspec.structs.replace(report, tracking_id=tracking_id or report.tracking_id, final=final)


_END: Final = object()


async def track(
    fetch: Fetch,
    items: Iterable[TrackItem] | AsyncIterable[TrackItem],
    *,
    timeout: float,  # noqa: ASYNC109 (per message, not for the call)
    every: float,
    rate: float | None,
    priority: Priority = Priority.BULK,
) -> AsyncIterator[DeliveryReport]:
    """Yield one report per accepted message: its final one, or ``final=False`` at its timeout."""
    if timeout <= 0 or every <= 0:
        raise ValueError("timeout and every must be positive")
    every = max(every, MIN_GAP)
    window = max(MIN_WINDOW, int((rate or 1000.0) * every))
    loop = asyncio.get_running_loop()
    heap: list[tuple[float, int, _Tracked]] = []
    order = itertools.count()
    inbox: asyncio.Queue[tuple[str | None, str]] = asyncio.Queue(READ_AHEAD)
    work: asyncio.Queue[_Tracked | None] = asyncio.Queue(WORKERS)
    out: asyncio.Queue[object] = asyncio.Queue(READ_AHEAD)
    wake = asyncio.Event()
    state = {"active": 0, "source_done": False}

    def push(entry: _Tracked, due: float) -> None:
        heapq.heappush(heap, (due, next(order), entry))
        wake.set()

    async def read() -> None:
        async for item in _aiter(items):
            pair = _pair(item)
            if pair is not None and not pair[1].strip():
                # Its own report, as for an id the status host does not know: the status GET would refuse
                # it, and that ValueError ended the whole call (no report for any message).
                await out.put(_blank(*pair))
            elif pair is not None:
                await inbox.put(pair)
                wake.set()
        state["source_done"] = True
        wake.set()

    async def schedule() -> None:
        while True:
            now = loop.time()
            if heap and heap[0][0] <= now:
                await work.put(heapq.heappop(heap)[2])
                continue
            if state["active"] < window and not inbox.empty():
                tid, mid = inbox.get_nowait()
                state["active"] += 1
                push(_Tracked(tid, mid, now, timeout, every), now)
                continue
            if state["source_done"] and state["active"] == 0 and inbox.empty():
                break
            wake.clear()
            delay = heap[0][0] - now if heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
        for _ in range(WORKERS):
            await work.put(None)

    async def poll() -> None:
        while (entry := await work.get()) is not None:
            report = await _poll_once(fetch, entry, priority, loop.time)
            now = loop.time()
            if report is not None and report.final:
                done: DeliveryReport | None = _with_tracking(report, entry.tracking_id, final=True)
            elif now >= entry.deadline:
                done = _timed_out(entry)
            else:
                done = None
                push(entry, min(now + max(entry.gap, MIN_GAP), max(entry.deadline, now + MIN_GAP)))
                entry.gap = min(entry.gap * GROWTH, every * MAX_GAP_FACTOR)
            if done is not None:
                await out.put(done)
                state["active"] -= 1
                wake.set()

    async def run() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(read())
                group.create_task(schedule())
                for _ in range(WORKERS):
                    group.create_task(poll())
        except BaseExceptionGroup as eg:
            await out.put(eg.exceptions[0])
        else:
            await out.put(_END)

    runner = asyncio.create_task(run())
    try:
        while (got := await out.get()) is not _END:
            if isinstance(got, BaseException):
                raise got
            assert isinstance(got, DeliveryReport)
            yield got
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def _poll_once(
    fetch: Fetch, entry: _Tracked, priority: Priority, now: Callable[[], float]
) -> DeliveryReport | None:
    """Ask once; keep what came back in ``entry.last``. Errors that stop tracking propagate."""
    try:
        report = await fetch(entry.message_id, priority)
    except MessageNotFoundError as exc:
        if now() - entry.started < NOT_FOUND_GRACE:
            return None  # accepted a moment ago: not visible on the status host yet
        entry.last = DeliveryReport(
            message_id=entry.message_id,
            tracking_id=entry.tracking_id,
            status=DeliveryStatus.UNKNOWN,
            final=False,
            error=f"not found on the status host: {exc}",
        )
        entry.deadline = min(entry.deadline, now())  # no use asking again
        return None
    except (AuthenticationError, EndpointError, ClientClosedError):
        raise  # every later poll would fail the same way
    except CascadeError as exc:
        logger.debug("status of %s not read (will ask again): %s", entry.message_id, exc)
        return None
    if entry.last is None or report.final or report.status.rank >= entry.last.status.rank:
        entry.last = report
    return entry.last


async def _aiter(items: Iterable[TrackItem] | AsyncIterable[TrackItem]) -> AsyncIterator[TrackItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
