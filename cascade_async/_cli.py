"""Command-line bulk sender and standalone sandbox (click + rich)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ._client import DEFAULT_BASE_URL, CascadeClient
from ._errors import AuthenticationError
from ._inputs import FORMATS, BadLine, detect_format, read_messages
from ._journal import Journal
from ._models import Message, Result, Route, Status, failure
from ._outputs import ResultWriter, output_format
from ._ratelimit import RateLimit
from .sandbox import FAULTS, Sandbox

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
ROUTES = {"cascade": Route.CASCADE, "tg-viber": Route.TELEGRAM_VIBER}


class Tally:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(Status, 0)
        self.unknown = 0
        self.skipped = 0  # left out by the journal
        self.started = time.monotonic()

    def add(self, result: Result) -> None:
        self.counts[result.status] += 1
        if result.outcome_unknown:
            self.unknown += 1

    @property
    def sent(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return self.sent + self.skipped

    def line(self) -> str:
        c = self.counts
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = (
            f"{self.done} done: {c[Status.ACCEPTED]} accepted, {c[Status.REJECTED]} rejected, {c[Status.FAILED]} failed"
        )
        if self.unknown:
            text += f" ({self.unknown} unknown outcome)"
        if self.skipped:
            text += f", {self.skipped} skipped (journal)"
        return text + f" | {elapsed:.1f} s, {rate:,.0f} msg/s"


@click.group()
@click.version_option(package_name="cascade-async")
def cli() -> None:
    """Send messages through SMSBAT's Cascade Messages API, or run a local sandbox of it."""


@cli.command()
@click.argument("file", type=click.Path(exists=True, allow_dash=True, dir_okay=False))
@click.option(
    "--api-key",
    envvar="CASCADE_API_KEY",
    show_envvar=True,
    default=None,
    help="SMSBAT API key (default: $CASCADE_API_KEY). Never printed.",
)
@click.option("--viber-token", default=None, help="Viber bot credentials (X-Viber-Auth-Token).")
@click.option("--telegram-key", default=None, help="Telegram bot key (X-Tg-Bot-Key).")
@click.option("--base-url", default=DEFAULT_BASE_URL, show_default=True)
@click.option("--route", type=click.Choice(sorted(ROUTES)), default="cascade", show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", *FORMATS]),
    default="auto",
    show_default=True,
    help="Input format; auto goes by extension, then by the first character.",
)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=500, show_default=True)
@click.option("--max-in-flight", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=100.0,
    show_default=True,
    help="Requests per second (burst 1.5x).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write one result row per input: .csv for CSV, anything else JSONL.",
)
@click.option("--dry-run", is_flag=True, help="Validate only; report bad lines; send nothing.")
@click.option(
    "--sandbox",
    "use_sandbox",
    is_flag=True,
    help="Start an embedded local sandbox and send to it; nothing leaves this machine.",
)
@click.option(
    "--sandbox-latency",
    type=float,
    default=0.1,
    show_default=True,
    help="Latency of the embedded sandbox per request, seconds.",
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite journal of every outcome: running the same job again sends only what is left.",
)
@click.option(
    "--resend-unknown",
    is_flag=True,
    help="With --journal: also resend messages whose outcome is unknown (they may arrive twice).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def send(
    file: str,
    api_key: str | None,
    viber_token: str | None,
    telegram_key: str | None,
    base_url: str,
    route: str,
    fmt: str,
    batch_size: int,
    max_in_flight: int,
    rate: float,
    output: str | None,
    dry_run: bool,
    use_sandbox: bool,
    sandbox_latency: float,
    journal_path: str | None,
    resend_unknown: bool,
    progress: bool | None,
) -> None:
    """Send every message in FILE (JSONL, a JSON array, or CSV with wire-form columns; - for stdin)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    stream: IO[bytes] = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    try:
        if fmt == "auto":
            head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
            fmt = detect_format("" if file == "-" else file, head)
        total = _count_lines(file, fmt) if file != "-" and fmt in ("jsonl", "csv") else None
        writer_file = open(output, "w", encoding="utf-8", newline="") if output else None  # noqa: SIM115
        try:
            writer = ResultWriter(writer_file, output_format(output)) if writer_file and output else None
            show_bar = err.is_terminal if progress is None else progress
            if dry_run:
                code = asyncio.run(_dry_run(stream, fmt, writer, out))
            else:
                options = dict(
                    api_key=api_key,
                    viber_token=viber_token,
                    telegram_key=telegram_key,
                    base_url=base_url,
                    route=ROUTES[route],
                    batch_size=batch_size,
                    max_in_flight=max_in_flight,
                    rate=rate,
                )
                job = _Job(
                    stream,
                    fmt,
                    writer,
                    options,
                    use_sandbox,
                    sandbox_latency,
                    total,
                    show_bar,
                    journal_path,
                    resend_unknown,
                )
                code = asyncio.run(_send(job, out, err))
        finally:
            if writer_file:
                writer_file.close()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    sys.exit(code)


def _count_lines(path: str, fmt: str) -> int | None:
    """Lines in the file (a cheap total for the progress bar); CSV less its header."""
    n = 0
    last = b"\n"
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    if last != b"\n":
        n += 1
    return max(0, n - 1) if fmt == "csv" else n


async def _dry_run(stream: IO[bytes], fmt: str, writer: ResultWriter | None, out: Console) -> int:
    good = bad = 0
    async for item in read_messages(stream, fmt):
        if isinstance(item, BadLine):
            bad += 1
            out.print(f"line {item.line}: {item.error}", markup=False)
            if writer:
                writer.write(_bad_result(item), item.line)
        else:
            good += 1
    out.print(f"dry run: {good} valid, {bad} invalid; nothing was sent")
    return EXIT_OK if bad == 0 else EXIT_SOME_FAILED


def _bad_result(item: BadLine) -> Result:
    tid = item.error.tracking_id or f"<line {item.line}>"
    return failure(tid, Status.REJECTED, item.error, 0)


@dataclasses.dataclass
class _Job:
    stream: IO[bytes]
    fmt: str
    writer: ResultWriter | None
    options: dict[str, Any]
    use_sandbox: bool
    sandbox_latency: float
    total: int | None
    show_bar: bool
    journal_path: str | None
    resend_unknown: bool


async def _send(job: _Job, out: Console, err: Console) -> int:
    options = dict(job.options)
    sandbox: Sandbox | None = None
    if job.use_sandbox:
        sandbox = await Sandbox(latency=job.sandbox_latency).start()
        options["base_url"] = sandbox.url
        if not (options["api_key"] or options["viber_token"] or options["telegram_key"]):
            options["api_key"] = "sandbox"
        err.print(
            f"[bold]Sandbox mode:[/] sending to an embedded local server at {sandbox.url}; nothing leaves this machine."
        )
    tally = Tally()
    rejected_lines: list[str] = []
    writer = job.writer

    async def messages() -> AsyncIterator[Message]:
        async for item in read_messages(job.stream, job.fmt):
            if isinstance(item, BadLine):
                result = _bad_result(item)
                tally.add(result)
                if writer:
                    writer.write(result, item.line)
                if len(rejected_lines) < 20:
                    rejected_lines.append(f"line {item.line}: {item.error}")
            else:
                yield item

    rate = options.pop("rate")
    journal = None
    try:
        client = CascadeClient(rate_limit=RateLimit(requests_per_second=rate, burst=max(1, int(rate * 1.5))), **options)
        journal = Journal(job.journal_path) if job.journal_path else None
    except (ValueError, sqlite3.Error) as exc:
        err.print(f"error: {exc}", markup=False)
        if sandbox:
            await sandbox.stop()
        return EXIT_USAGE
    reporter = _Reporter(tally, job.total, job.show_bar, err)
    try:
        async with client:
            results = (
                journal.stream(client, messages(), resend_unknown=job.resend_unknown)
                if journal
                else client.stream(messages())
            )
            async with results:
                reporter.start()
                async for result in results:
                    tally.add(result)
                    if writer:
                        writer.write(result)
                    if journal:
                        tally.skipped = journal.skipped_done + journal.skipped_unknown
    except AuthenticationError as exc:
        reporter.stop()
        err.print(f"authentication failed: {exc}; no further messages were sent", markup=False)
        return EXIT_USAGE
    finally:
        reporter.stop()
        if sandbox:
            await sandbox.stop()
    for text in rejected_lines:
        err.print(text, markup=False)
    unknown: list[str] = []
    if journal:
        tally.skipped = journal.skipped_done + journal.skipped_unknown
        unknown = journal.unknown()
    out.print(f"Done. {tally.line()}")
    if journal:
        out.print(
            f"journal {job.journal_path}: skipped {journal.skipped_done} already settled, "
            f"{journal.skipped_unknown} of unknown outcome"
            + ("" if job.resend_unknown else " (not resent: --resend-unknown sends them, and they may arrive twice)"),
            markup=False,
        )
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            out.print(f"{len(unknown)} message(s) of unknown outcome: {shown}", markup=False)
        journal.close()
    if sandbox:
        out.print("(sandbox: nothing left this machine)")
    c = tally.counts
    return EXIT_OK if c[Status.ACCEPTED] == tally.sent and not unknown else EXIT_SOME_FAILED


class _Reporter:
    """A rich progress bar on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, tally: Tally, total: int | None, bar: bool, console: Console) -> None:
        self._tally = tally
        self._total = total
        self._bar = bar
        self._console = console
        self._task: asyncio.Task[None] | None = None
        self._progress: Progress | None = None

    def start(self) -> None:
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
        tally = self._tally
        c = tally.counts
        elapsed = time.monotonic() - tally.started
        self._progress.update(
            bar,
            completed=tally.done,
            counts=(
                f"[green]{c[Status.ACCEPTED]} ok[/] [yellow]{c[Status.REJECTED]} rejected[/] "
                f"[red]{c[Status.FAILED]} failed[/] {tally.done / max(elapsed, 1e-9):,.0f} msg/s"
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
                self._console.print(f"progress{total}: {self._tally.line()}", markup=False)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._progress is not None:
            for task in self._progress.tasks:  # end the bar at the real counts
                self._render(task.id)
            self._progress.stop()
            self._progress = None


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback unless told).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--latency", type=float, default=0.0, show_default=True, help="Seconds per request.")
@click.option("--latency-max", type=float, default=None, help="With --latency, a uniform range.")
@click.option("--fault", "faults", multiple=True, help=f"Scripted faults, in order: {', '.join(sorted(FAULTS))}.")
@click.option(
    "--fault-rate",
    "fault_rates",
    multiple=True,
    metavar="FAULT=P",
    help="Inject FAULT with probability P on each request, e.g. 500=0.05.",
)
@click.option("--rate-limit", type=float, default=None, help="Requests per second before answering 429.")
@click.option("--rate-burst", type=int, default=None)
@click.option("--reject-sender", multiple=True, help="fromName values answered with 400.")
@click.option("--reject-prefix", multiple=True, help="toPhone prefixes answered with 400 INVALID_PHONE.")
@click.option("--no-record", is_flag=True, help="Do not keep accepted messages (long benchmark runs).")
@click.option("--no-inbox", is_flag=True, help="Serve no inbox page (it keeps a bounded number of messages).")
@click.option("--allow-host", multiple=True, help="Host names the inbox answers to besides loopback and --host.")
@click.option("--seed", type=int, default=None)
def sandbox_command(
    host: str,
    port: int,
    latency: float,
    latency_max: float | None,
    faults: tuple[str, ...],
    fault_rates: tuple[str, ...],
    rate_limit: float | None,
    rate_burst: int | None,
    reject_sender: tuple[str, ...],
    reject_prefix: tuple[str, ...],
    no_record: bool,
    no_inbox: bool,
    allow_host: tuple[str, ...],
    seed: int | None,
) -> None:
    """Run the sandbox API server until interrupted (Ctrl-C)."""
    rates: dict[str, float] = {}
    for spec in fault_rates:
        name, _, p = spec.partition("=")
        try:
            rates[name] = float(p)
        except ValueError:
            raise click.BadParameter(f"{spec!r} is not FAULT=PROBABILITY", param_hint="--fault-rate") from None
    try:
        sb = Sandbox(
            host=host,
            port=port,
            latency=(latency, latency_max) if latency_max else latency,
            faults=faults,
            fault_rates=rates,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            reject_senders=reject_sender,
            reject_prefixes=reject_prefix,
            record=not no_record,
            seed=seed,
            inbox=not no_inbox,
            allowed_hosts=allow_host,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    asyncio.run(_serve(sb))


async def _serve(sb: Sandbox) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sb:
        print(f"cascade-async sandbox listening on {sb.url} (stats: {sb.url}/sandbox/stats)", flush=True)
        if sb.inbox is not None:
            print(f"inbox: {sb.url}/ (open it in a browser; send with --base-url {sb.url})", flush=True)
        await stop.wait()
    print(f"sandbox stopped: {sb.stats()}", flush=True)


__all__ = ["cli"]
