"""The ``cascade_sandbox`` pytest fixture, registered through the ``pytest11`` entry point.

>>> def test_signup_sends_otp(cascade_sandbox):
...     app = make_app(cascade_base_url=cascade_sandbox.url)   # your code, your loop
...     ...
...     assert cascade_sandbox.stats().accepted_messages == 1
...     otp = cascade_sandbox.wait_for(phone="+380501234567")  # blocks until it arrives
...     assert "code" in otp.text

Async tests wait with ``await cascade_sandbox.wait_for_async(phone=...)``; the inbox page is at
``cascade_sandbox.url + "/"``.

The sandbox runs on its own event loop in a background thread, so the fixture works for
sync tests and for async tests under any plugin or loop. Knobs come from a marker:
``@pytest.mark.cascade_sandbox(latency=0.01, faults=["500", "ok"])``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from .sandbox import Sandbox

__all__ = ["SandboxThread", "cascade_sandbox"]


class SandboxThread:
    """Runs a ``Sandbox`` on a private loop in a daemon thread."""

    def __init__(self, **options: Any) -> None:
        self.sandbox = Sandbox(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cascade-sandbox", daemon=True)

    def __enter__(self) -> Sandbox:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sandbox.start(), self._loop).result(timeout=10)
        return self.sandbox

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cascade_sandbox(**options): options for the cascade_sandbox fixture (see cascade_async.sandbox.Sandbox)",
    )


@pytest.fixture
def cascade_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A running cascade-async sandbox on 127.0.0.1; ``.url`` is its base URL."""
    marker = request.node.get_closest_marker("cascade_sandbox")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    with SandboxThread(**options) as sandbox:
        yield sandbox
