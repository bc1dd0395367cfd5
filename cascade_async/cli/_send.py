"""``cascade-async send``: a bulk job from a file, thin over ``CascadeClient.stream``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import click
from rich.console import Console

from .._admission import is_duplicate
from .._client import CascadeClient
from .._errors import AuthenticationError, EndpointError, JournalError
from .._inputs import detect_format, read_messages
from .._journal import Journal
from .._outputs import ResultWriter, output_format
from .._ratelimit import Priority, RateLimit
from .._report import Tally
from ..sandbox import Sandbox
from ._common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, ROUTES, connection_options, consoles, refuse_overwriting
from ._dry_run import dry_run as _dry_run
from ._progress import Reporter
from ._send_options import send_options
from ._template_source import TemplateJob, check_resumable, template_job, template_options

__all__ = ["send"]


@dataclasses.dataclass
class Job:
    stream: IO[bytes]
    fmt: str
    writer: ResultWriter | None
    client_options: dict[str, Any]
    use_sandbox: bool
    sandbox_latency: float
    total: int | None
    show_bar: bool
    journal_path: str | None
    resend_unknown: bool
    journal: Journal | None = None
    allow_changes: bool = False
    input_name: str | None = None
    template: TemplateJob | None = None
    priority: Priority = Priority.BULK


@click.command()
@click.argument("file", type=click.Path(exists=True, allow_dash=True, dir_okay=False))
@connection_options
@send_options
@template_options
def send(file: str, output: str | None, dry_run: bool, fmt: str, progress: bool | None, **options: Any) -> None:
    """Send every message in FILE (JSONL, a JSON array, or CSV with wire-form columns; - for stdin).

    With --template, FILE holds one recipient per row (CSV or JSONL): a phone column and the
    template's fields.
    """
    out, err = consoles()
    refuse_overwriting("--output", output, inputs=(file,), journal=options["journal_path"])
    template = template_job(file, options)
    try:
        # Before --output is opened: a second sender must not truncate the first one's output.
        journal = _open_journal(options) if not dry_run else None
    except (JournalError, sqlite3.Error, OSError) as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_USAGE)
    try:
        check_resumable(template, journal)
    except JournalError as exc:
        if journal is not None:
            journal.close()
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_USAGE)
    with _closing(journal), _opened(file) as stream, _writer(output) as writer:
        if fmt == "auto":
            head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
            fmt = detect_format("" if file == "-" else file, head)
        if template and fmt not in ("csv", "jsonl"):
            raise click.UsageError("--template reads CSV or JSONL rows (one recipient per row)")
        if dry_run:
            code = asyncio.run(_dry_run(stream, fmt, writer, out, template))
        else:
            job = Job(
                stream=stream,
                fmt=fmt,
                writer=writer,
                client_options=_client_options(options),
                use_sandbox=options["use_sandbox"],
                sandbox_latency=options["sandbox_latency"],
                total=_count_lines(file, fmt),
                show_bar=err.is_terminal if progress is None else progress,
                journal_path=options["journal_path"],
                resend_unknown=options["resend_unknown"],
                journal=journal,
                allow_changes=options["allow_changes"],
                input_name="-" if file == "-" else os.path.abspath(file),
                template=template,
                priority=Priority(options["priority"]),
            )
            code = asyncio.run(run(job, out, err))
    sys.exit(code)


@contextlib.contextmanager
def _closing(journal: Journal | None) -> Iterator[None]:
    try:
        yield
    finally:
        if journal is not None:
            journal.close()  # releases the sender lock


def _open_journal(options: dict[str, Any]) -> Journal | None:
    path = options["journal_path"]
    return Journal(path, synchronous=options["synchronous"]) if path else None


def _client_options(options: dict[str, Any]) -> dict[str, Any]:
    rate = options["rate"]
    return {
        "api_key": options["api_key"],
        "viber_token": options["viber_token"],
        "telegram_key": options["telegram_key"],
        "base_url": options["base_url"],
        "route": ROUTES[options["route"]],
        "batch_size": options["batch_size"],
        "max_in_flight": options["max_in_flight"],
        "rate_limit": RateLimit(
            requests_per_second=rate, burst=max(1, int(rate * 1.5)), redis_url=options["redis_url"] or None
        ),
    }


@contextlib.contextmanager
def _opened(file: str) -> Iterator[IO[bytes]]:
    if file == "-":
        yield _stdin()
    else:
        with open(file, "rb") as stream:
            yield stream


def _stdin() -> IO[bytes]:
    """Standard input through a reader of its own, never closed: a read of it waiting in a reader
    thread when the run is interrupted then holds no lock that the interpreter's exit wants
    (that of ``sys.stdin.buffer``, a fatal error), and nothing waits for that read to end."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # replaced (tests): no descriptor to read
        return sys.stdin.buffer
    return open(fd, "rb", closefd=False)


@contextlib.contextmanager
def _writer(output: str | None) -> Iterator[ResultWriter | None]:
    if output is None:
        yield None
    else:
        with open(output, "w", encoding="utf-8", newline="") as f:
            yield ResultWriter(f, output_format(output))


def _count_lines(path: str, fmt: str) -> int | None:
    """Lines in the file (a cheap total for the progress bar); CSV less its header."""
    if path == "-" or fmt not in ("jsonl", "csv"):
        return None
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


@contextlib.asynccontextmanager
async def _target(job: Job, err: Console) -> AsyncIterator[dict[str, Any]]:
    """The client's options, pointed at an embedded sandbox when asked."""
    options = dict(job.client_options)
    if not job.use_sandbox:
        yield options
        return
    async with Sandbox(latency=job.sandbox_latency) as sandbox:
        options["base_url"] = sandbox.url
        if not (options["api_key"] or options["viber_token"] or options["telegram_key"]):
            options["api_key"] = "sandbox"
        err.print(f"Sandbox mode: sending to an embedded local server at {sandbox.url}; nothing leaves this machine.")
        yield options


async def run(job: Job, out: Console, err: Console) -> int:
    async with _target(job, err) as options:
        try:
            client = CascadeClient(**options)
        except (ValueError, ImportError) as exc:
            err.print(f"error: {exc}", markup=False)
            return EXIT_USAGE
        tally = Tally()
        reporter = Reporter(tally, job.total, job.show_bar, err)
        rejected: list[str] = []
        try:
            async with client:
                source = _source(job)
                results = _stream(job, client, source)
                async with results:
                    reporter.start()
                    async for batch in results.batches():
                        for result in batch:
                            tally.add(result, duplicate=is_duplicate(result))
                            if job.writer:
                                job.writer.write(result)
                            if result.error is not None and not result.ok and len(rejected) < 20:
                                rejected.append(str(result.error))
        except AuthenticationError as exc:
            reporter.stop()
            err.print(f"authentication failed: {exc}; no further messages were sent", markup=False)
            return EXIT_USAGE
        except EndpointError as exc:
            reporter.stop()
            err.print(f"the endpoint is wrong: {exc}; nothing was settled, fix --base-url and run again", markup=False)
            return EXIT_USAGE
        finally:
            reporter.stop()
        for text in rejected:
            err.print(text, markup=False)
        out.print(f"Done. {reporter.line()}", markup=False)
        if job.template:
            job.template.finish()
        unknown = _journal_summary(job.journal, job, out, err) if job.journal else []
        if job.use_sandbox:
            out.print("(sandbox: nothing left this machine)")
        return EXIT_OK if tally.all_accepted and not unknown else EXIT_SOME_FAILED


def _source(job: Job) -> Any:
    if job.template is None:
        return read_messages(job.stream, job.fmt)
    return job.template.source(job.stream, job.fmt, job.journal)


def _stream(job: Job, client: CascadeClient, source: Any) -> Any:
    if job.journal is None:
        return client.stream(source, priority=job.priority)
    return job.journal.stream(
        client,
        source,
        resend_unknown=job.resend_unknown,
        allow_changes=job.allow_changes,
        input_name=job.input_name,
        priority=job.priority,
    )


def _journal_summary(journal: Journal, job: Job, out: Console, err: Console) -> list[str]:
    if (warning := journal.changed_warning()) is not None:
        err.print(f"warning: {warning}", markup=False)
    unknown = journal.unknown(limit=10)
    total = journal.count_unknown()
    note = "" if job.resend_unknown else " (not resent: --resend-unknown sends them, and they may arrive twice)"
    out.print(
        f"journal {job.journal_path}: {journal.skipped_done} settled by an earlier run (not sent again), "
        f"{journal.skipped_unknown} of unknown outcome{note}, {journal.changed} changed",
        markup=False,
    )
    if total:
        shown = ", ".join(unknown) + (" ..." if total > len(unknown) else "")
        out.print(f"{total} message(s) of unknown outcome: {shown}", markup=False)
    return unknown
