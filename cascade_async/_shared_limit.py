"""The shared limiter: one bucket in Redis for every process and host on an account.

Each acquisition is one Lua script, run atomically on the server and timed by the server's clock (``TIME``), so
clock skew between hosts doesn't matter. It is the local limiter's bucket (``_ratelimit.Bucket``) written in Lua:

- An interactive acquisition always takes its token, going into debt if need be, and gets back the exact
  wait until its slot: one round trip, then one sleep.
- A bulk acquisition takes a token only if ``interactive_reserve`` tokens stay behind; otherwise it takes
  nothing and gets back the exact time when it could, sleeps that long and asks again. Bulk never books
  future slots, which is what keeps the reserve free for interactive traffic in every process. A process
  sends one bulk head at a time to Redis, so at worst each admission costs the other K - 1 processes one
  extra round trip.
- A 429 (``penalize``) writes the pause and the lowered rate into the same hash, so every process honours it
  on its next acquisition. One key per script keeps it usable on Redis Cluster.

Rate and burst are stored with the key; a process configured differently logs a warning, and the stricter
setting is the one stored and used. A heartbeat sorted set (``<key>:procs``) counts the live processes K.

If Redis cannot be reached (every call has ``redis_timeout``; a timeout counts as unreachable), the limiter
logs one warning, emits ``SharedLimitFallback`` and limits this process locally at ``fallback_share`` of the
rate (default 1/K). The heartbeat keeps trying; when Redis answers, shared mode is back
(``SharedLimitRecovered``). No acquisition ever raises because of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import msgspec

from ._ratelimit import (
    FLOOR_FACTOR,
    LOWER_FACTOR,
    RECOVERY_PER_SECOND,
    Limiter,
    LimiterEvent,
    LimiterEventHook,
    Priority,
    RateLimit,
    SharedLimitFallback,
    SharedLimitRecovered,
    pause_for,
    redact_url,
)

__all__ = ["SharedLimiter"]

logger = logging.getLogger("cascade_async")
T = TypeVar("T")

HEARTBEAT_INTERVAL: Final = 1.0  # seconds between heartbeats, and between reconnection attempts
HEARTBEAT_STALE: Final = 5.0  # a process not seen for this long no longer counts in K
KEY_TTL_MS: Final = 60_000  # an idle bucket (and its stored settings) is forgotten after this long

# Shared by both scripts: the clock, the stored settings, the adaptive factor and the levels.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local s = redis.call('HMGET', KEYS[1], 'rate', 'burst', 'mrate', 'mburst', 'level', 'at', 'mlevel', 'pause',
                     'low', 'rfrom')
local mismatch = 0
local function stricter(stored, mine)
  stored = tonumber(stored)
  if stored == nil then return mine end
  if stored ~= mine then mismatch = 1 end
  if stored == 0 then return mine end  -- 0: no message bucket
  if mine == 0 then return stored end
  return math.min(stored, mine)
end
local rate = stricter(s[1], tonumber(ARGV[1]))
local burst = stricter(s[2], tonumber(ARGV[2]))
local mrate = stricter(s[3], tonumber(ARGV[3]))
local mburst = stricter(s[4], tonumber(ARGV[4]))
local pause = tonumber(s[8]) or 0
local low = tonumber(s[9]) or 1
local rfrom = tonumber(s[10]) or 0
local factor = low
if now > rfrom then factor = math.min(1, low + tonumber(ARGV[5]) * (now - rfrom) / 1e6) end
local function level_at(stored, cap, per_us)
  local lvl, at = tonumber(stored), tonumber(s[6])
  if lvl == nil or at == nil then return cap end
  if now <= at then return lvl end
  return math.min(cap, lvl + (now - at) * per_us)
end
local per_us = rate * factor / 1e6
local mper_us = mrate * factor / 1e6
local level = level_at(s[5], burst, per_us)
local mlevel = 0
if mrate > 0 then mlevel = level_at(s[7], mburst, mper_us) end
local function f(x) return string.format('%.17g', x) end
redis.call('HSET', KEYS[1], 'rate', f(rate), 'burst', f(burst), 'mrate', f(mrate), 'mburst', f(mburst))
"""

# ARGV: rate, burst, mrate, mburst, recovery, ttl_ms, messages, interactive (1/0), reserve
# Returns: granted (1/0), wait in µs, mismatch (1/0), and the settings in force as strings.
_ACQUIRE = (
    _PRELUDE
    + """
local messages, interactive, reserve = tonumber(ARGV[7]), ARGV[8] == '1', tonumber(ARGV[9])
if interactive then reserve = 0 end
local wait = 0
local short = 1 + reserve - level
if short > 0 then wait = short / per_us end
if pause - now > wait then wait = pause - now end
if mrate > 0 and messages - mlevel > 0 then wait = math.max(wait, (messages - mlevel) / mper_us) end
wait = math.ceil(wait)
local granted = interactive or wait <= 0
if granted then
  redis.call('HSET', KEYS[1], 'level', f(level - 1), 'at', f(now))
  if mrate > 0 then redis.call('HSET', KEYS[1], 'mlevel', f(mlevel - messages)) end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]) + math.max(0, math.floor((pause - now) / 1000)))
return {granted and 1 or 0, wait, mismatch, f(rate), f(burst), f(mrate), f(mburst)}
"""
)

# ARGV: rate, burst, mrate, mburst, recovery, ttl_ms, pause_us, lower, floor. Returns the pause left, in µs.
_PENALIZE = (
    _PRELUDE
    + """
local pause_us, lower, floor = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local pause_end = now + pause_us
if now >= pause then  -- 429s answered during a pause were sent before it: lower once, not each
  factor = math.max(floor, factor * lower)
  redis.call('HSET', KEYS[1], 'low', f(factor), 'rfrom', f(pause_end))
end
pause = math.max(pause, pause_end)
level = math.min(level, 1 - (pause_end - now) * rate * factor / 1e6)
redis.call('HSET', KEYS[1], 'level', f(level), 'at', f(now), 'pause', f(pause))
if mrate > 0 then redis.call('HSET', KEYS[1], 'mlevel', f(mlevel)) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]) + math.floor((pause - now) / 1000))
return math.floor(pause - now)
"""
)

# KEYS[1]: the heartbeat set. ARGV: member, stale_ms, ttl_ms. Returns K.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""


class SharedLimiter:
    """A ``RateLimiter`` whose bucket lives in Redis under ``key``; made by ``make_limiter``."""

    def __init__(
        self, config: RateLimit, *, batch_size: int, key: str, on_event: LimiterEventHook | None = None
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ImportError("a shared rate limit needs redis: pip install 'cascade-async[redis]'") from None
        assert config.redis_url is not None
        Limiter(config, batch_size=batch_size)  # the same checks as the local limiter
        self._config = config
        self._batch_size = batch_size
        self._key = key
        self._procs_key = key + ":procs"
        self._member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._on_event = on_event
        self._url = redact_url(config.redis_url)
        self._timeout = config.redis_timeout
        try:
            # Our own timeout decides when Redis is down; redis-py's retries would only delay that.
            self._redis = aioredis.Redis.from_url(
                config.redis_url,
                socket_timeout=config.redis_timeout,
                socket_connect_timeout=config.redis_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            raise ValueError(f"invalid redis_url {self._url}") from None
        self._down: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._penalize_script = self._redis.register_script(_PENALIZE)
        self._heartbeat_script = self._redis.register_script(_HEARTBEAT)
        keep = 1.0 - config.headroom
        mps = config.messages_per_second
        self._settings = [
            config.requests_per_second * keep,
            config.request_burst,
            mps * keep if mps is not None else 0,
            (config.message_burst or max(1, round(mps))) if mps is not None else 0,
            RECOVERY_PER_SECOND,
            KEY_TTL_MS,
        ]
        self._live = 1  # K, the number of processes last seen on the key
        self._fallback: Limiter | None = None
        self._down_since = 0.0
        self._warned_mismatch = False
        self._streak = 0
        self._paused_until = 0.0  # loop time; this process's own 429s pause it before Redis hears of them
        self._bulk_line = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        mode = "fallback" if self._fallback is not None else "shared"
        return f"<SharedLimiter {self._key} at {self._url}, {mode}, {self._live} live>"

    @property
    def shared(self) -> bool:
        """True while the bucket in Redis is in force, False while limiting locally."""
        return self._fallback is None

    @property
    def live_processes(self) -> int:
        return self._live

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except self._down:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py may turn our task's cancellation into a connection error: cancel, don't fall back.
                raise asyncio.CancelledError from None
            raise

    def _start(self) -> None:
        if self._heartbeat is None and not self._closed:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while not self._closed:  # not only cancellation: a swallowed one must not keep it beating forever
            try:
                live = await self._call(
                    self._heartbeat_script(
                        keys=[self._procs_key],
                        args=[self._member, int(HEARTBEAT_STALE * 1000), int(HEARTBEAT_STALE * 2000)],
                    )
                )
            except self._down as exc:
                self._go_local(exc)
            else:
                self._live = max(1, int(live))
                if self._fallback is not None:
                    # Connections opened before the outage are dead: the next acquisition must not find one
                    # in the pool and fall back again at once.
                    with contextlib.suppress(*self._down):
                        await self._redis.connection_pool.disconnect()
                    self._go_shared()
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _emit(self, event: LimiterEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("limiter event hook raised; ignored")

    def _go_local(self, exc: BaseException) -> Limiter:
        if self._fallback is not None:
            return self._fallback
        share = self._config.fallback_share or 1.0 / self._live
        self._fallback = Limiter(self._local_config(share), batch_size=self._batch_size)
        self._down_since = asyncio.get_running_loop().time()
        reason = type(exc).__name__
        logger.warning(
            "shared rate limit: Redis at %s unreachable (%s); limiting this process locally at %.0f%% of the rate "
            "until it is back",
            self._url,
            reason,
            share * 100,
        )
        self._emit(SharedLimitFallback(key=self._key, reason=reason, share=share))
        return self._fallback

    def _go_shared(self) -> None:
        assert self._fallback is not None
        self._fallback = None  # waiters already inside it finish there
        outage = asyncio.get_running_loop().time() - self._down_since
        logger.info("shared rate limit: Redis at %s is back after %.1fs", self._url, outage)
        self._emit(SharedLimitRecovered(key=self._key, outage=outage))

    def _local_config(self, share: float) -> RateLimit:
        c = self._config
        burst = max(1, round(c.request_burst * share))
        return msgspec.structs.replace(
            c,
            redis_url=None,
            requests_per_second=c.requests_per_second * share,
            burst=burst,
            interactive_reserve=min(round(c.reserve * share), burst - 1),
            messages_per_second=c.messages_per_second * share if c.messages_per_second is not None else None,
            message_burst=max(self._batch_size, round(c.message_burst * share)) if c.message_burst else None,
        )

    async def acquire(self, messages: int, *, priority: Priority = Priority.BULK) -> None:
        self._start()
        if priority is Priority.INTERACTIVE:
            await self._acquire(messages, priority)
        else:
            async with self._bulk_line:
                await self._acquire(messages, priority)

    async def _acquire(self, messages: int, priority: Priority) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._fallback is not None:
                return await self._fallback.acquire(messages, priority=priority)
            if (pause := self._paused_until - loop.time()) > 0:
                await asyncio.sleep(pause)
                continue
            args = [*self._settings, messages, int(priority is Priority.INTERACTIVE), self._config.reserve]
            try:
                answer: list[Any] = await self._call(self._acquire_script(keys=[self._key], args=args))
            except self._down as exc:
                return await self._go_local(exc).acquire(messages, priority=priority)
            granted, wait_us, mismatch = int(answer[0]), int(answer[1]), int(answer[2])
            if mismatch:
                self._warn_mismatch([float(x) for x in answer[3:]])
            if wait_us > 0:
                await asyncio.sleep(wait_us / 1e6)
            if granted:
                return

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
        if self._fallback is not None:
            self._fallback.penalize(pause)
            return
        task = loop.create_task(self._send_penalty(pause))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_penalty(self, pause: float) -> None:
        args = [*self._settings, int(pause * 1e6), LOWER_FACTOR, FLOOR_FACTOR]
        try:
            await self._call(self._penalize_script(keys=[self._key], args=args))
        except self._down as exc:
            self._go_local(exc).penalize(pause)

    def on_success(self) -> None:
        # The adaptive rate recovers with the server's clock after the pause; here only the backoff resets.
        self._streak = 0
        if self._fallback is not None:
            self._fallback.on_success()

    async def aclose(self) -> None:
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*self._down):
            await self._call(self._redis.zrem(self._procs_key, self._member))
        with contextlib.suppress(*self._down):
            await self._call(self._redis.aclose())
        if self._fallback is not None:
            await self._fallback.aclose()


def _describe(settings: list[float]) -> str:
    rate, burst, mrate, mburst = settings
    text = f"{rate:g} req/s burst {burst:g}"
    return text + (f", {mrate:g} msg/s burst {mburst:g}" if mrate else "")
