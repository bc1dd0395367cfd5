"""Reading and waiting on the inbox from test code, whichever thread or loop the sandbox runs on."""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._inbox import Inbox
from ._records import InboxMessage, Query

__all__ = ["InboxHelpers"]

T = TypeVar("T")


def _query(phone: str | None, q: str, since: int | _dt.datetime | None) -> Query:
    if isinstance(since, _dt.datetime):
        when = since if since.tzinfo else since.astimezone()
        return Query(phone=phone, q=q, after_time=when.timestamp())
    return Query(phone=phone, q=q, after_seq=-1 if since is None else since)


class InboxHelpers:
    """``wait_for`` / ``wait_for_async`` / ``messages`` / ``clear_inbox`` for the ``Sandbox``.

    The sandbox may run on the caller's loop (``async with Sandbox()``) or on its own loop in a
    thread (the ``cascade_sandbox`` fixture); the inbox is only touched on the sandbox's loop.
    """

    inbox: Inbox | None
    _loop: asyncio.AbstractEventLoop | None

    def _inbox_on_loop(self) -> tuple[Inbox, asyncio.AbstractEventLoop]:
        if self.inbox is None:
            raise RuntimeError("this sandbox runs without an inbox (inbox=False)")
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("the sandbox is not running")
        return self.inbox, self._loop

    def _call(self, fn: Callable[[Inbox], T]) -> T:
        inbox, loop = self._inbox_on_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn(inbox)

        async def call() -> T:
            return fn(inbox)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    def messages(self, *, phone: str | None = None, q: str = "", limit: int = 100) -> list[InboxMessage]:
        """Stored messages matching ``phone`` (exact) and ``q`` (phone, tracking id or text), newest first."""
        return self._call(lambda inbox: inbox.messages(_query(phone, q, None), limit))

    def clear_inbox(self) -> None:
        """Empty the inbox; ``stats()`` and ``counts`` keep counting."""
        self._call(lambda inbox: inbox.clear())

    def wait_for(
        self,
        *,
        phone: str | None = None,
        q: str = "",
        since: int | _dt.datetime | None = None,
        timeout: float = 10.0,
    ) -> InboxMessage:
        """Block until a message matches, and return the newest match; for sync tests.

        ``since`` is a ``seq`` from an earlier message or a time: only newer messages count.
        Raises ``TimeoutError``. In async code use ``await wait_for_async(...)``: blocking would
        freeze the loop your app sends from.
        """
        inbox, loop = self._inbox_on_loop()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("wait_for() blocks the running event loop; use `await sandbox.wait_for_async(...)`")
        future = asyncio.run_coroutine_threadsafe(inbox.wait(_query(phone, q, since), timeout), loop)
        return future.result(timeout=timeout + 5)

    async def wait_for_async(
        self,
        *,
        phone: str | None = None,
        q: str = "",
        since: int | _dt.datetime | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 (the same knob as wait_for and ?timeout=)
    ) -> InboxMessage:
        """``wait_for`` for async tests: waits without blocking the caller's loop."""
        inbox, loop = self._inbox_on_loop()
        waiting: Coroutine[Any, Any, InboxMessage] = inbox.wait(_query(phone, q, since), timeout)
        if asyncio.get_running_loop() is loop:
            return await waiting
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(waiting, loop))
