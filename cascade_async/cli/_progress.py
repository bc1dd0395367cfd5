"""Progress while a job runs: a rich bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .._models import Status
from .._report import Tally


class Reporter:
    def __init__(self, tally: Tally, total: int | None, bar: bool, console: Console) -> None:
        self._tally = tally
        self._total = total
        self._bar = bar
        self._console = console
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._progress: Progress | None = None

    def line(self) -> str:
        elapsed = time.monotonic() - self._started
        done = self._tally.total + self._tally.duplicates
        return f"{self._tally.line()} | {elapsed:.1f} s, {done / max(elapsed, 1e-9):,.0f} msg/s"

    def start(self) -> None:
        self._started = time.monotonic()
        if self._bar:
            self._progress = Progress(
                TextColumn("[bold]sending"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _render(self, bar: TaskID) -> None:
        assert self._progress is not None
        c = self._tally.counts
        elapsed = time.monotonic() - self._started
        done = self._tally.total + self._tally.duplicates
        self._progress.update(
            bar,
            completed=done,
            counts=(
                f"[green]{c[Status.ACCEPTED]} ok[/] [yellow]{c[Status.REJECTED]} rejected[/] "
                f"[red]{c[Status.FAILED]} failed[/] {done / max(elapsed, 1e-9):,.0f} msg/s"
            ),
        )

    async def _run(self) -> None:
        if self._progress is not None:
            bar = self._progress.add_task("send", total=self._total, counts="")
            while True:
                self._render(bar)
                await asyncio.sleep(0.1)
        else:
            while True:
                await asyncio.sleep(2.0)
                total = f"/{self._total}" if self._total else ""
                self._console.print(f"progress{total}: {self.line()}", markup=False)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._progress is not None:
            for task in self._progress.tasks:  # end the bar at the real counts
                self._render(task.id)
            self._progress.stop()
            self._progress = None
