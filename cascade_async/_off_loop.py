"""Blocking reads off the event loop, in threads that never hold the process up.

``asyncio.to_thread`` runs on the loop's default executor, which ``asyncio.run`` joins at
its end: a read waiting on a pipe that stays open (``tail -f log | cascade-async send -``,
then Ctrl-C; or a client closed while its reader waits) kept the process alive until the pipe
gave a line or ended. A reader's call here runs in a daemon thread of its own instead; when
nobody waits for its answer any more, the answer is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["off_loop"]

T = TypeVar("T")
P = ParamSpec("P")


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a daemon thread; its answer (or exception) once it returns."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if answer.done():  # cancelled while the call ran
            return
        if error is None:
            answer.set_result(value)
        else:
            answer.set_exception(error)

    def work() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = fn(*args, **kwargs)
        except StopIteration as exc:  # a future refuses it; it is a failure of fn here
            error = RuntimeError(f"{fn!r} raised StopIteration")
            error.__cause__ = exc
        except BaseException as exc:  # handed to the awaiting task, as to_thread does
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="cascade-async-reader", daemon=True).start()
    return await answer
