from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import aioresponses.core
import pytest

from cascade_async.sandbox import Sandbox

from .redis_support import RedisServer, require_server

pytest_plugins = ["pytester"]


# --- aioresponses 0.7.9 vs aiohttp 3.14 ------------------------------------------------------
# aiohttp 3.14 made ``stream_writer`` a required keyword of ClientResponse; aioresponses does
# not pass it yet (open upstream issue), so every mocked response would fail. This subclass
# supplies it (aiohttp reads only its ``output_size`` when no request writer is running).
# Delete once aioresponses passes the argument itself.
class _NoWriter:
    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoWriter())
        super().__init__(*args, **kwargs)


aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[attr-defined]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=1) as sb:
        yield sb


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from .test_faults import FAULT_TABLE, format_table

    if FAULT_TABLE:
        terminalreporter.section("fault injection over real sockets")
        format_table(FAULT_TABLE, terminalreporter.write_line)
    from .test_journal_processes import KILL_TABLE

    if KILL_TABLE:
        terminalreporter.section("kill -9 during a journaled job, then resume")
        for scenario, numbers in KILL_TABLE.items():
            terminalreporter.write_line(f"{scenario}:")
            for key, value in numbers.items():
                terminalreporter.write_line(f"    {key}: {value}")


# --- a real Valkey/Redis server, one per test module that asks for it ---------------------------
@pytest.fixture(scope="module")
def valkey() -> Iterator[RedisServer]:
    s = RedisServer(require_server())
    s.start()
    yield s
    s.kill()
