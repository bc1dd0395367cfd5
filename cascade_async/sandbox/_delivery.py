"""Simulated delivery: each accepted message walks scheduled -> processing -> a final status.

How a status follows from the time since acceptance, the phone number and the route, and the
answer built from it, is ``_delivery_status``; the webhooks are ``_webhooks``.

The status store is apart from the inbox and its retention (``max_messages`` ids, oldest
dropped first), so a message the sandbox accepted is never a 404. With ``webhook_url`` each
status change is POSTed there; ``webhook_faults`` adds ``duplicate`` (each report twice) and
``out-of-order`` (the processing report after the final one).
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from ._delivery_status import FINAL, Entry, answer_body, chain_for, outcome_for, parts_of, status_at
from ._faults import RateGate
from ._webhooks import WebhookPoster

__all__ = ["DeliverySim"]

_encode = msgspec.json.Encoder(decimal_format="number")


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
        self.steps = steps
        self.max_messages = max_messages
        self.record = record
        self._gate = RateGate(rate_limit, rate_burst)
        self._store: dict[str, Entry] = {}
        self._seq = itertools.count(1)
        self._webhooks = WebhookPoster(webhook_url, webhook_faults, self._store.get)
        self.polls: collections.Counter[str] = collections.Counter()  # GETs per message id (when recording)
        self.poll_times: list[float] = []  # monotonic time of every status GET (when recording)
        self.answers: collections.Counter[str] = collections.Counter()  # status GETs by HTTP status
        # Aggregates kept even without recording (benchmarks read them at /sandbox/delivery):
        self.per_second: collections.Counter[int] = collections.Counter()  # GETs by whole second
        self.min_gap = float("inf")  # the shortest time between two GETs of one message
        self._last_poll: dict[str, float] = {}

    @property
    def webhook_url(self) -> str | None:
        return self._webhooks.url

    @property
    def webhook_faults(self) -> frozenset[str]:
        return self._webhooks.faults

    @property
    def webhooks_sent(self) -> list[dict[str, Any]]:
        """Every webhook body the receiver took (2xx), in order."""
        return self._webhooks.sent

    # --- the store ------------------------------------------------------------------

    def add(self, messages: list[dict[str, Any]], ids: list[str], path: str) -> None:
        now = time.time()
        for m, mid in zip(messages, ids, strict=True):
            phone = m["toPhone"]
            chain = chain_for(m["messageType"], path)
            digit = phone[-2] if len(phone) > 1 and phone[-2].isdigit() else "0"
            winner = int(digit) % len(chain)
            entry = Entry(now, next(self._seq), outcome_for(phone), chain, winner, parts_of(m.get("text")))
            self._store[mid] = entry
            if self.webhook_url is not None:
                self._webhooks.schedule(mid, entry, self.steps)
        while len(self._store) > self.max_messages:
            del self._store[next(iter(self._store))]

    def status(self, message_id: str, now: float | None = None) -> str | None:
        entry = self._store.get(message_id)
        return None if entry is None else status_at(entry, self.steps, time.time() if now is None else now)

    def progress(self, message_id: str, now: float | None = None) -> tuple[str, str] | None:
        """(status, channel) for the inbox: the channel being tried, then the one that delivered."""
        entry = self._store.get(message_id)
        if entry is None:
            return None
        status = status_at(entry, self.steps, time.time() if now is None else now)
        channel = entry.chain[entry.winner] if status == "delivered" else entry.chain[-1 if status in FINAL else 0]
        return status, channel

    def answer(self, message_id: str, now: float | None = None) -> dict[str, Any] | None:
        """The documented status answer for one message, or None when unknown."""
        entry = self._store.get(message_id)
        if entry is None:
            return None
        return answer_body(entry, message_id, status_at(entry, self.steps, time.time() if now is None else now))

    # --- HTTP ------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        app.router.add_get("/bat/message/{message_id}", self._handle)
        app.router.add_get("/sandbox/delivery", self._handle_stats)
        app.on_startup.append(self._webhooks.start)
        app.on_cleanup.append(self._webhooks.stop)

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


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_encode.encode(body), content_type="application/json", headers=headers)
