"""Simulated delivery: each accepted message walks scheduled -> processing -> a final status.

The status is computed from the time since acceptance (``steps``: seconds in ``scheduled``, then
in ``processing``), so there is no timer per message. Outcomes are deterministic by phone
number: ending in 13 -> ``undeliverable``, in 66 -> ``permanenterror``, anything else
``delivered``. The channel follows the message type and route: transaction and promo go
Telegram -> Viber -> RCS -> SMS (the tg-viber route: Telegram -> Viber -> SMS), a survey Viber then
SMS, a flashcall is a call; which channel delivers is picked by the phone's second-to-last digit.

The status store is apart from the inbox and its retention (``max_messages`` ids, oldest
dropped first), so a message the sandbox accepted is never a 404. With ``webhook_url`` each
status change is POSTed there; ``webhook_faults`` adds ``duplicate`` (each report twice) and
``out-of-order`` (the processing report after the final one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as _dt
import heapq
import itertools
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web

from .._models import Route
from ._faults import RateGate

__all__ = ["WEBHOOK_FAULTS", "DeliverySim", "outcome_for"]

WEBHOOK_FAULTS: Final = frozenset({"duplicate", "out-of-order"})
_CASCADES: Final = {
    "transaction": ("telegram", "viber", "rcs", "sms"),
    "promo": ("telegram", "viber", "rcs", "sms"),
    "viber_survey": ("viber", "sms"),
    "flashcall": ("call",),
}
_TG_VIBER: Final = ("telegram", "viber", "sms")
_PRICES: Final = {
    "telegram": Decimal("0.01"),
    "viber": Decimal("0.02"),
    "rcs": Decimal("0.03"),
    "sms": Decimal("0.05"),
    "call": Decimal("0.04"),
}
_CURRENCY: Final = "UAH"
_encode = msgspec.json.Encoder(decimal_format="number")


def outcome_for(phone: str) -> str:
    """The final status the sandbox gives a phone number (documented in the README)."""
    if phone.endswith("13"):
        return "undeliverable"
    if phone.endswith("66"):
        return "permanenterror"
    return "delivered"


def _chain(message_type: str, path: str) -> tuple[str, ...]:
    chain = _CASCADES.get(message_type, ("sms",))
    return _TG_VIBER if path == Route.TELEGRAM_VIBER.value and len(chain) == 4 else chain


def _parts(text: Any) -> int:
    return max(1, -(-len(text) // 160)) if isinstance(text, str) else 1


class _Entry(msgspec.Struct, array_like=True):
    at: float  # wall-clock acceptance time
    seq: int
    outcome: str
    chain: tuple[str, ...]
    winner: int  # index in chain of the delivering channel
    parts: int


class DeliverySim:
    def __init__(
        self,
        *,
        steps: tuple[float, float] = (0.5, 1.0),
        max_messages: int = 1_000_000,
        webhook_url: str | None = None,
        webhook_faults: Iterable[str] = (),
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        record: bool = True,
    ) -> None:
        if steps[0] < 0 or steps[1] < 0:
            raise ValueError("delivery steps must not be negative")
        faults = frozenset(webhook_faults)
        if faults - WEBHOOK_FAULTS:
            unknown = sorted(faults - WEBHOOK_FAULTS)
            raise ValueError(f"unknown webhook faults {unknown}; known: {sorted(WEBHOOK_FAULTS)}")
        self.steps = steps
        self.max_messages = max_messages
        self.webhook_url = webhook_url
        self.webhook_faults = faults
        self.record = record
        self._gate = RateGate(rate_limit, rate_burst)
        self._store: dict[str, _Entry] = {}
        self._seq = itertools.count(1)
        self.polls: collections.Counter[str] = collections.Counter()  # GETs per message id (when recording)
        self.poll_times: list[float] = []  # monotonic time of every status GET (when recording)
        self.answers: collections.Counter[str] = collections.Counter()  # status GETs by HTTP status
        # Aggregates kept even without recording (benchmarks read them at /sandbox/delivery):
        self.per_second: collections.Counter[int] = collections.Counter()  # GETs by whole second
        self.min_gap = float("inf")  # the shortest time between two GETs of one message
        self._last_poll: dict[str, float] = {}
        self.webhooks_sent: list[dict[str, Any]] = []
        self._due: list[tuple[float, int, str, str]] = []  # (time, order, message id, status) to POST
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- the store ------------------------------------------------------------------

    def add(self, messages: list[dict[str, Any]], ids: list[str], path: str) -> None:
        now = time.time()
        for m, mid in zip(messages, ids, strict=True):
            phone = m["toPhone"]
            chain = _chain(m["messageType"], path)
            digit = phone[-2] if len(phone) > 1 and phone[-2].isdigit() else "0"
            winner = int(digit) % len(chain)
            entry = _Entry(now, next(self._seq), outcome_for(phone), chain, winner, _parts(m.get("text")))
            self._store[mid] = entry
            if self.webhook_url is not None:
                self._schedule_webhooks(mid, entry)
        while len(self._store) > self.max_messages:
            del self._store[next(iter(self._store))]

    def status(self, message_id: str, now: float | None = None) -> str | None:
        entry = self._store.get(message_id)
        return None if entry is None else self._status_at(entry, time.time() if now is None else now)

    def _status_at(self, entry: _Entry, now: float) -> str:
        age = now - entry.at
        if age < self.steps[0]:
            return "scheduled"
        if age < self.steps[0] + self.steps[1]:
            return "processing"
        return entry.outcome

    def answer(self, message_id: str, now: float | None = None) -> dict[str, Any] | None:
        """The documented status answer for one message, or None when unknown."""
        entry = self._store.get(message_id)
        if entry is None:
            return None
        status = self._status_at(entry, time.time() if now is None else now)
        answer: dict[str, Any] = {
            "messagelistId": entry.seq,
            "messageId": message_id,
            "deliverystatus": status,
            "partscount": entry.parts,
        }
        extended = self._extended(entry, status)
        if len(entry.chain) > 1:
            answer["fallbacks"] = [{"type": ch, "status": extended[ch]} for ch in entry.chain[1:]]
        answer["extendedStatuses"] = extended
        if status in ("delivered", "undeliverable", "permanenterror"):
            price = _PRICES[entry.chain[entry.winner]] if status == "delivered" else Decimal(0)
            cost = price * entry.parts
            answer.update(
                cost=cost,
                rate=price,
                rateAmount=price,
                rateCurrency=_CURRENCY,
                billAmount=cost,
                billCurrency=_CURRENCY,
            )
        return answer

    def _extended(self, entry: _Entry, status: str) -> dict[str, str]:
        if status == "scheduled":
            return {ch: "pending" for ch in entry.chain}
        if status == "processing":
            return {ch: ("processing" if i == 0 else "pending") for i, ch in enumerate(entry.chain)}
        if status == "delivered":
            return {
                ch: ("undeliverable" if i < entry.winner else "delivered" if i == entry.winner else "not_used")
                for i, ch in enumerate(entry.chain)
            }
        return dict.fromkeys(entry.chain, status)

    # --- HTTP ------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        app.router.add_get("/bat/message/{message_id}", self._handle)
        app.router.add_get("/sandbox/delivery", self._handle_stats)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)

    async def _handle(self, request: web.Request) -> web.Response:
        response = self._answer(request)
        self.answers[str(response.status)] += 1
        return response

    def _answer(self, request: web.Request) -> web.Response:
        mid = request.match_info["message_id"]
        now = time.monotonic()
        self.per_second[int(now)] += 1
        last = self._last_poll.get(mid)
        if last is not None:
            self.min_gap = min(self.min_gap, now - last)
        self._last_poll[mid] = now
        if len(self._last_poll) > self.max_messages:
            del self._last_poll[next(iter(self._last_poll))]
        if self.record:
            self.polls[mid] += 1
            self.poll_times.append(now)
        if not request.headers.get("X-Authorization-Key") and not request.headers.get("Authorization"):
            return _json(401, {"error": {"code": "UNAUTHORIZED", "message": "send X-Authorization-Key"}})
        if self._gate.over():
            body = {"error": "Too Many Requests", "message": "rate limit exceeded", "status": 429}
            return _json(429, body, {"Retry-After": "1"})
        answer = self.answer(mid)
        if answer is None:
            return _json(404, {"error": {"code": "NOT_FOUND", "message": "message not found"}})
        return _json(200, answer)

    def clear_counts(self) -> None:
        self.polls.clear()
        self.poll_times.clear()
        self.answers.clear()
        self.per_second.clear()
        self.min_gap = float("inf")
        self._last_poll.clear()
        self.webhooks_sent.clear()

    def stats(self) -> dict[str, Any]:
        """Status GETs: total, the busiest whole second, the shortest gap for one message, answers."""
        return {
            "polls": sum(self.per_second.values()),
            "messagesPolled": len(self._last_poll),
            "maxPerSecond": max(self.per_second.values(), default=0),
            "perSecond": [self.per_second[s] for s in sorted(self.per_second)],
            "minGap": None if self.min_gap == float("inf") else self.min_gap,
            "answers": dict(self.answers),
            "tracked": len(self._store),
        }

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return _json(200, self.stats())

    # --- webhooks ----------------------------------------------------------------------

    def _schedule_webhooks(self, mid: str, entry: _Entry) -> None:
        final_at = entry.at + self.steps[0] + self.steps[1]
        processing_at = entry.at + self.steps[0]
        if "out-of-order" in self.webhook_faults:
            processing_at = final_at + 0.05  # arrives after the final report
        for at, status in ((processing_at, "processing"), (final_at, entry.outcome)):
            for _ in range(2 if "duplicate" in self.webhook_faults else 1):
                heapq.heappush(self._due, (at, next(self._order), mid, status))
        self._wake.set()

    async def _on_startup(self, app: web.Application) -> None:
        if self.webhook_url is not None:
            self._task = asyncio.create_task(self._post_webhooks())

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post_webhooks(self) -> None:
        assert self.webhook_url is not None
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
        assert self.webhook_url is not None
        entry = self._store.get(mid)
        body: dict[str, Any] = {
            "messageId": mid,
            "deliverystatus": status,
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if entry is not None and status == "delivered":
            body["cost"] = _PRICES[entry.chain[entry.winner]] * entry.parts
        for attempt in range(3):  # the provider's retry policy is not documented; a little one here
            try:
                async with self._session.post(self.webhook_url, data=_encode.encode(body), headers=_JSON) as resp:
                    if resp.status < 300:
                        self.webhooks_sent.append(body)
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2 * 2**attempt)


_JSON: Final = {"Content-Type": "application/json"}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_encode.encode(body), content_type="application/json", headers=headers)
