"""Injected faults and the sandbox's own rate limit: what a flaky provider does to a request."""

from __future__ import annotations

import collections
import random
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Final

from aiohttp import web

__all__ = ["FAULTS", "FaultPlan", "RateGate", "check_fault", "drop"]

FAULTS: Final = frozenset(
    {
        "ok",
        "429",
        "500",
        "502",
        "503",
        "504",
        "reset",
        "reset-early",
        "lost",
        "truncated",
        "hang",
        "slow",
        "malformed",
        "wrong-shape",
        "missing-ids",
        "dup-ids",
    }
)


def check_fault(name: str) -> None:
    base, _, arg = name.partition(":")
    if base not in FAULTS or (arg and (base != "429" or not arg.replace(".", "", 1).isdigit())):
        raise ValueError(f"unknown sandbox fault {name!r}; known: {', '.join(sorted(FAULTS))} (429:SECONDS)")


class FaultPlan:
    """Scripted faults first, in order; then each fault by its probability; then ``ok``."""

    def __init__(self, rng: random.Random, faults: Iterable[str], rates: Mapping[str, float] | None) -> None:
        self._rng = rng
        self._script: collections.deque[str] = collections.deque()
        self.script(faults)
        self._rates = dict(rates or {})
        for name in self._rates:
            check_fault(name)

    def script(self, faults: Iterable[str]) -> None:
        for name in faults:
            check_fault(name)
            self._script.append(name)

    def next(self) -> str:
        if self._script:
            return self._script.popleft()
        for name, p in self._rates.items():
            if self._rng.random() < p:
                return name
        return "ok"


class RateGate:
    """A token bucket counted in requests; ``over()`` takes a token or says the request is over the rate."""

    def __init__(self, rate: float | None, burst: int | None) -> None:
        self._rate = rate
        self._burst = float(burst or (rate or 0))
        self._tokens = self._burst
        self._last = time.monotonic()

    def over(self) -> bool:
        if self._rate is None:
            return False
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return True
        self._tokens -= 1
        return False


def drop(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashed peer or proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
