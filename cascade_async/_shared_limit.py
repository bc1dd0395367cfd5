"""The shared limiter: one bucket in Redis for every process and host on an account.

Each acquisition is one call of a Lua script (``_shared_scripts.ACQUIRE``), run atomically and timed by the
server's clock, so clock skew between hosts doesn't matter. The script books the request a slot and returns
exactly how long to sleep; the caller sleeps and sends, without asking again. So a request costs one script
call whether one process shares the key or eight, and waiters are served in the order they booked:

- Interactive acquisitions go straight to Redis; up to ``interactive_reserve`` of them at a time may go
  ahead of slots bulk has booked, so an OTP does not queue behind a bulk job in any process.
- A process sends one bulk acquisition at a time to Redis and holds its booking until the slot (so each
  process has at most one bulk slot booked, and a killed process loses at most that one). A slot beyond
  the horizon (after a long pause) is not booked: the script says when to ask once more.
- A waiter cancelled before its slot gives the slot back (``RELEASE``), so a cancelled booking is not lost
  capacity; a process killed while holding one loses it (one request's worth, once).
- A 429 (``penalize``) writes the pause and the lowered rate into the same hash, so every process honours it
  on its next booking. Slots booked before the 429 are kept, except by the process that got it.

Rate and burst are stored with the key; a process configured differently logs a warning, and the stricter
setting is the one stored and used. Redis going away is ``_redis_link``'s job: a local fallback at 1/K of the
rate, and back to shared mode when Redis answers. No acquisition ever raises because of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Coroutine
from typing import Any, Final

from ._limit_settings import LimiterEventHook, Priority, RateLimit, redact_url
from ._local_limit import FLOOR_FACTOR, LOWER_FACTOR, RECOVERY_PER_SECOND, Limiter, pause_for
from ._redis_link import RedisLink
from ._shared_scripts import ACQUIRE, PENALIZE, RELEASE

__all__ = ["SharedLimiter"]

logger = logging.getLogger("cascade_async")

KEY_TTL_MS: Final = 60_000  # an idle bucket (and its stored settings) is forgotten after this long
RELEASE_AHEAD: Final = 0.002  # a booked slot less than this far away is not worth a call to give back


class SharedLimiter:
    """A ``RateLimiter`` whose bucket lives in Redis under ``key``; made by ``make_limiter``."""

    def __init__(
        self, config: RateLimit, *, batch_size: int, key: str, on_event: LimiterEventHook | None = None
    ) -> None:
        assert config.redis_url is not None
        Limiter(config, batch_size=batch_size)  # the same checks as the local limiter
        self._config = config
        self._key = key
        self._url = redact_url(config.redis_url)
        self._link = RedisLink(config, batch_size=batch_size, key=key, url=self._url, on_event=on_event)
        self._acquire_script = self._link.script(ACQUIRE)
        self._penalize_script = self._link.script(PENALIZE)
        self._release_script = self._link.script(RELEASE)
        keep = 1.0 - config.held_back
        mps = config.messages_per_second
        self._settings = [
            config.requests_per_second * keep,
            config.request_burst,
            mps * keep if mps is not None else 0,
            (config.message_burst or max(1, round(mps))) if mps is not None else 0,
            RECOVERY_PER_SECOND,
            KEY_TTL_MS,
        ]
        self._last_acquired = -math.inf  # loop time of this process's last acquisition, shared or not
        self._warned_mismatch = False
        self._streak = 0
        self._paused_until = 0.0  # loop time; this process's own 429s pause it before Redis hears of them
        self._bulk_line = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "fallback"
        return f"<SharedLimiter {self._key} at {self._url}, {mode}, {self._link.live} live>"

    @property
    def shared(self) -> bool:
        """True while the bucket in Redis is in force, False while limiting locally."""
        return self._link.fallback is None

    @property
    def live_processes(self) -> int:
        return self._link.live

    def _args(self, *extra: float) -> list[float]:
        # A bucket missing although this process acquired within its lifetime was lost with a Redis
        # restart: it starts empty, not full, since the server's own bucket is not full either.
        recent = asyncio.get_running_loop().time() - self._last_acquired < KEY_TTL_MS / 1000
        return [*self._settings, 0 if recent else 1, *extra]

    async def acquire(self, messages: int, *, priority: Priority = Priority.BULK) -> None:
        self._link.start()
        if priority is Priority.INTERACTIVE:
            await self._acquire(messages, priority)
        else:
            async with self._bulk_line:
                await self._acquire(messages, priority)
        self._last_acquired = asyncio.get_running_loop().time()

    async def _acquire(self, messages: int, priority: Priority) -> None:
        loop = asyncio.get_running_loop()
        interactive = priority is Priority.INTERACTIVE
        while True:
            if (fallback := self._link.fallback) is not None:
                return await fallback.acquire(messages, priority=priority)
            if (pause := self._paused_until - loop.time()) > 0:
                await asyncio.sleep(pause)
                continue
            args = self._args(messages, int(interactive), self._config.reserve)
            try:
                answer: list[Any] = await self._link.call(self._acquire_script(keys=[self._key], args=args))
            except self._link.down as exc:
                return await self._link.go_local(exc).acquire(messages, priority=priority)
            granted, wait = int(answer[0]), int(answer[1]) / 1e6
            if int(answer[2]):
                self._warn_mismatch([float(x) for x in answer[3:]])
            if not granted:  # beyond the booking horizon: ask once more when within it
                await asyncio.sleep(wait)
                continue
            if wait > 0:
                await self._sleep_booked(wait, messages)
            if self._paused_until <= loop.time():
                return
            # a 429 of our own arrived while we slept: the slot falls in the pause; book again after it

    async def _sleep_booked(self, wait: float, messages: int) -> None:
        loop = asyncio.get_running_loop()
        slot = loop.time() + wait
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            if slot - loop.time() > RELEASE_AHEAD:
                self._spawn(self._release(messages))
            raise

    async def _release(self, messages: int) -> None:
        with contextlib.suppress(*self._link.down):
            await self._link.call(self._release_script(keys=[self._key], args=self._args(messages)))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _warn_mismatch(self, stored: list[float]) -> None:
        if self._warned_mismatch:
            return
        self._warned_mismatch = True
        logger.warning(
            "shared rate limit %s: this process is configured for %s, other processes on the key differently; "
            "every process now uses the stricter %s",
            self._key,
            _describe(self._settings[:4]),
            _describe(stored),
        )

    def penalize(self, retry_after: float | None) -> None:
        loop = asyncio.get_running_loop()
        outside = loop.time() >= self._paused_until  # a pause lengthens the backoff once, as in ``Adaptive``
        pause = pause_for(retry_after, self._streak if outside else max(0, self._streak - 1))
        self._streak += outside
        self._paused_until = max(self._paused_until, loop.time() + pause)
        if self._link.fallback is not None:
            self._link.fallback.penalize(pause)
            return
        self._spawn(self._send_penalty(pause))

    async def _send_penalty(self, pause: float) -> None:
        args = self._args(int(pause * 1e6), LOWER_FACTOR, FLOOR_FACTOR)
        try:
            await self._link.call(self._penalize_script(keys=[self._key], args=args))
        except self._link.down as exc:
            self._link.go_local(exc).penalize(pause)

    def on_success(self) -> None:
        # The adaptive rate recovers with the server's clock after the pause; here only the backoff resets.
        self._streak = 0
        if self._link.fallback is not None:
            self._link.fallback.on_success()

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._link.aclose()


def _describe(settings: list[float]) -> str:
    rate, burst, mrate, mburst = settings
    text = f"{rate:g} req/s burst {burst:g}"
    return text + (f", {mrate:g} msg/s burst {mburst:g}" if mrate else "")
