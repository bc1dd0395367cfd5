"""The shared limiter's link to Redis: calls with a timeout, the heartbeat, the fallback while Redis is away.

Every call has ``redis_timeout``; a timeout counts as unreachable. Then the link logs one warning, emits
``SharedLimitFallback`` and hands out a local limiter at ``fallback_share`` of the rate (default 1/K, K being
the number of live processes last counted by the heartbeat set ``<key>:procs``). The heartbeat keeps trying
once a second; when Redis answers, shared mode is back (``SharedLimitRecovered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec

from ._limit_settings import LimiterEvent, LimiterEventHook, RateLimit, SharedLimitFallback, SharedLimitRecovered
from ._local_limit import Limiter
from ._shared_scripts import HEARTBEAT

__all__ = ["RedisLink"]

logger = logging.getLogger("cascade_async")
T = TypeVar("T")

HEARTBEAT_INTERVAL: Final = 1.0  # seconds between heartbeats, and between reconnection attempts
HEARTBEAT_STALE: Final = 5.0  # a process not seen for this long no longer counts in K


class RedisLink:
    """One process's connection to the Redis behind a shared limit, with its heartbeat and fallback."""

    def __init__(
        self, config: RateLimit, *, batch_size: int, key: str, url: str, on_event: LimiterEventHook | None
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ImportError("a shared rate limit needs redis: pip install 'cascade-async[redis]'") from None
        assert config.redis_url is not None
        self._config = config
        self._batch_size = batch_size
        self._key = key
        self._procs_key = key + ":procs"
        self._member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._on_event = on_event
        self._url = url
        self._timeout = config.redis_timeout
        try:
            # Our own timeout decides when Redis is down; redis-py's retries would only delay that.
            self.redis = aioredis.Redis.from_url(
                config.redis_url,
                socket_timeout=config.redis_timeout,
                socket_connect_timeout=config.redis_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            raise ValueError(f"invalid redis_url {url}") from None
        self.down: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._heartbeat_script = self.script(HEARTBEAT)
        self.live = 1  # K, the number of processes last seen on the key
        self.fallback: Limiter | None = None  # the local limiter while Redis is unreachable
        self._down_since = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False

    def script(self, text: str) -> Callable[..., Awaitable[Any]]:
        return self.redis.register_script(text)

    async def call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except self.down:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py may turn our task's cancellation into a connection error: cancel, don't fall back.
                raise asyncio.CancelledError from None
            raise

    def start(self) -> None:
        if self._heartbeat is None and not self._closed:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while not self._closed:  # not only cancellation: a swallowed one must not keep it beating forever
            try:
                live = await self.call(
                    self._heartbeat_script(
                        keys=[self._procs_key],
                        args=[self._member, int(HEARTBEAT_STALE * 1000), int(HEARTBEAT_STALE * 2000)],
                    )
                )
            except self.down as exc:
                self.go_local(exc)
            else:
                self.live = max(1, int(live))
                if self.fallback is not None:
                    # Connections opened before the outage are dead: the next acquisition must not find one
                    # in the pool and fall back again at once.
                    with contextlib.suppress(*self.down):
                        await self.redis.connection_pool.disconnect()
                    self._go_shared()
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _emit(self, event: LimiterEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("limiter event hook raised; ignored")

    def go_local(self, exc: BaseException) -> Limiter:
        """The local limiter to use now that Redis failed with ``exc`` (made, logged and announced once)."""
        if self.fallback is not None:
            return self.fallback
        share = self._config.fallback_share or 1.0 / self.live
        self.fallback = Limiter(self._local_config(share), batch_size=self._batch_size)
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
        return self.fallback

    def _go_shared(self) -> None:
        assert self.fallback is not None
        self.fallback = None  # waiters already inside it finish there
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

    async def aclose(self) -> None:
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(*self.down):
            await self.call(self.redis.zrem(self._procs_key, self._member))
        with contextlib.suppress(*self.down):
            await self.call(self.redis.aclose())
        if self.fallback is not None:
            await self.fallback.aclose()
