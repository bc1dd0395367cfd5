"""The client's side of a shared rate limit: the default through ``$CASCADE_REDIS_URL``, events, redaction."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis

from cascade_async import (
    CascadeClient,
    Event,
    RateLimit,
    SharedLimitFallback,
    SharedLimitRecovered,
    credential_key,
)

from .redis_support import PASSWORD, RedisServer, free_port, require_server
from .support import FakeTransport, msg

SECRET = "sk-shared-client-SECRET"


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_REDIS_URL", raising=False)


@pytest.mark.parametrize(
    ("env", "passed", "shared"),
    [
        pytest.param(None, "unset", False, id="no-env-local"),
        pytest.param("redis://h/0", "unset", True, id="env-and-nothing-passed-shared"),
        pytest.param("redis://h/0", RateLimit(), False, id="env-but-a-local-limit-passed"),
        pytest.param("redis://h/0", None, False, id="env-but-limiting-turned-off"),
    ],
)
def test_the_environment_shares_the_default_limit_only_when_none_is_passed(
    monkeypatch: pytest.MonkeyPatch, env: str | None, passed: object, shared: bool
) -> None:
    if env is not None:
        monkeypatch.setenv("CASCADE_REDIS_URL", env)
    kwargs = {} if passed == "unset" else {"rate_limit": passed}
    client = CascadeClient(api_key=SECRET, transport=FakeTransport(), **kwargs)  # type: ignore[arg-type]
    limit = client.rate_limit
    assert (limit is not None and limit.redis_url is not None) is shared
    if shared:
        assert limit is not None
        assert limit.redis_url == env
    if passed is None:
        assert limit is None


async def test_a_client_on_the_environments_redis_uses_the_credentials_hash_as_key(
    monkeypatch: pytest.MonkeyPatch, valkey: RedisServer
) -> None:
    monkeypatch.setenv("CASCADE_REDIS_URL", valkey.url)
    async with CascadeClient(api_key=SECRET, transport=FakeTransport()) as client:
        assert (await client.send(msg(1))).ok
    with redis.Redis.from_url(valkey.url) as r:
        keys = {k.decode() for k in r.keys("*")}
        assert credential_key(SECRET) in keys
        assert not any(SECRET in k for k in keys)
        assert all(SECRET.encode() not in (r.dump(k) or b"") for k in keys)


async def test_the_redis_password_never_shows_in_reprs_errors_logs_or_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cascade_async")
    down = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens: the limiter falls back
    events: list[Event] = []
    seen: list[str] = []
    client = CascadeClient(
        api_key=SECRET,
        transport=FakeTransport(),
        rate_limit=RateLimit(redis_url=down, redis_timeout=0.2),
        on_event=events.append,
    )
    async with client:
        assert (await client.send(msg(1))).ok
        seen += [repr(client), repr(client.rate_limit), str(client.rate_limit)]
    assert [type(e) for e in events if not hasattr(e, "route")] == [SharedLimitFallback]
    seen += [repr(e) for e in events]
    with pytest.raises(ValueError, match="redis_url") as bad:
        CascadeClient(api_key=SECRET, rate_limit=RateLimit(redis_url=f"nope://:{PASSWORD}@host:1/0"))
    seen.append(str(bad.value))
    seen += [r.getMessage() for r in caplog.records]
    assert any(":***@" in text for text in seen)
    assert not [text for text in seen if PASSWORD in text or SECRET in text]


async def test_limiter_events_reach_on_event_when_redis_comes_back(valkey: RedisServer) -> None:
    own = RedisServer(require_server())
    events: list[Event] = []
    async with CascadeClient(
        api_key=SECRET,
        transport=FakeTransport(),
        rate_limit=RateLimit(redis_url=own.url, redis_timeout=0.2),
        on_event=events.append,
    ) as client:
        assert (await client.send(msg(1))).ok  # Redis is not up yet: local
        own.start()
        try:
            for _ in range(50):
                if any(isinstance(e, SharedLimitRecovered) for e in events):
                    break
                await asyncio.sleep(0.1)
            assert (await client.send(msg(2))).ok
        finally:
            own.kill()
    assert [type(e) for e in events if not hasattr(e, "route")] == [SharedLimitFallback, SharedLimitRecovered]


async def test_closing_ends_the_heartbeat_even_when_a_redis_call_swallows_the_cancellation(
    valkey: RedisServer,
) -> None:
    """Seen in the benchmark: aclose() waited forever for a heartbeat that went on beating after its cancellation."""
    limit = RateLimit(redis_url=valkey.url, redis_timeout=30)
    client = CascadeClient(api_key=SECRET, transport=FakeTransport(), rate_limit=limit)
    assert (await client.send(msg(1))).ok
    limiter: Any = client._limiter
    link = limiter._link
    real = link._heartbeat_script
    inside = asyncio.Event()

    async def swallowing(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 1  # as if the answer had come: the cancellation is lost
        return await real(*args, **kwargs)

    link._heartbeat_script = swallowing
    await inside.wait()  # the heartbeat is inside a Redis call
    async with asyncio.timeout(3):
        await client.aclose()
