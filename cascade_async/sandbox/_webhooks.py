"""The sandbox's delivery webhooks: each status change POSTed to ``webhook_url`` when it happens.

``webhook_faults`` adds ``duplicate`` (each report twice) and ``out-of-order`` (the processing
report after the final one). One task posts the reports in time order, from ``start`` (the app's
startup) to ``stop`` (its cleanup).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web

from ._delivery_status import PRICES, Entry

__all__ = ["WEBHOOK_FAULTS", "WebhookPoster"]

WEBHOOK_FAULTS: Final = frozenset({"duplicate", "out-of-order"})
_JSON: Final = {"Content-Type": "application/json"}
_encode = msgspec.json.Encoder(decimal_format="number")


class WebhookPoster:
    def __init__(
        self,
        url: str | None,
        faults: Iterable[str],
        lookup: Callable[[str], Entry | None],
    ) -> None:
        known = frozenset(faults)
        if known - WEBHOOK_FAULTS:
            unknown = sorted(known - WEBHOOK_FAULTS)
            raise ValueError(f"unknown webhook faults {unknown}; known: {sorted(WEBHOOK_FAULTS)}")
        self.url = url
        self.faults = known
        self._lookup = lookup  # the message's entry when its report is posted (None once dropped)
        self.sent: list[dict[str, Any]] = []
        self._due: list[tuple[float, int, str, str]] = []  # (time, order, message id, status) to POST
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def schedule(self, mid: str, entry: Entry, steps: tuple[float, float]) -> None:
        """Queue the processing and final reports of a message accepted now."""
        final_at = entry.at + steps[0] + steps[1]
        processing_at = entry.at + steps[0]
        if "out-of-order" in self.faults:
            processing_at = final_at + 0.05  # arrives after the final report
        for at, status in ((processing_at, "processing"), (final_at, entry.outcome)):
            for _ in range(2 if "duplicate" in self.faults else 1):
                heapq.heappush(self._due, (at, next(self._order), mid, status))
        self._wake.set()

    async def start(self, app: web.Application) -> None:
        if self.url is not None:
            self._task = asyncio.create_task(self._post_webhooks())

    async def stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post_webhooks(self) -> None:
        assert self.url is not None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            at, _, mid, status = self._due[0]
            delay = at - time.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            heapq.heappop(self._due)
            await self._post(mid, status)

    async def _post(self, mid: str, status: str) -> None:
        assert self._session is not None
        assert self.url is not None
        entry = self._lookup(mid)
        body: dict[str, Any] = {
            "messageId": mid,
            "deliverystatus": status,
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if entry is not None and status == "delivered":
            body["cost"] = PRICES[entry.chain[entry.winner]] * entry.parts
        for attempt in range(3):  # the provider's retry policy is not documented; a little one here
            try:
                async with self._session.post(self.url, data=_encode.encode(body), headers=_JSON) as resp:
                    if resp.status < 300:
                        self.sent.append(body)
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2 * 2**attempt)
