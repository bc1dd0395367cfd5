"""``send --template``: CSV or JSONL rows rendered through a ``Template`` into stream items.

Rows are read in a worker thread in chunks, as raw dicts (CSV cells stay strings; an empty cell is
a missing value). A line that cannot be read becomes a ``BadLine`` in its place, so every row
yields exactly one item (then a ``Rejected`` with the line's number and reason). Ids come from an
``id`` column, or ``{file stem}-{data row}``.

With ``--journal``, the job's variable ids survive a crash: each block of ids is recorded in
``<journal>.variables.jsonl`` (``VariablePool.changes()``) before any id of it is used, the values
given ids before an upload carries them (the journal's ``variables_hook``), and a resumed job
replays that file, so it gives the same values the same ids and never hands out an id
it may have used for another value.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any, Final, TypeVar

import click
import msgspec

from .._errors import ErrorCode, JournalError, ValidationError
from .._inputs import BadLine, csv_rows
from .._journal import Journal
from .._lines import Lines
from .._models import MessageType
from .._off_loop import off_loop
from .._templates import RowLists, Template, TemplateItems
from .._variable_ids import VariablePool

__all__ = ["TemplateJob", "check_resumable", "read_rows", "template_job", "template_options"]

_CHUNK: Final = 2000
Row = dict[str, Any] | BadLine


@dataclasses.dataclass
class TemplateJob:
    template: Template
    message_type: str
    from_name: str
    phone_column: str
    id_prefix: str
    ttl: int | None
    scheduled: _dt.datetime | None
    survey_options: tuple[str, ...] | None
    finish: Callable[[], None] = lambda: None  # records the variable ids at the end of a journaled job

    def source(self, stream: IO[bytes], fmt: str, journal: Journal | None) -> AsyncIterator[Any]:
        """The items to send; with a journal, its variable ids recorded (the journal itself
        gives settled rows their recorded results)."""
        if journal is None:
            return self.items(stream, fmt)
        pool, record = journal_pool(journal.path)
        self.finish = lambda: record(pool)
        journal.variables_hook = lambda _variables: record(pool) if pool.unsaved() else None
        return self.items(stream, fmt, pool)

    def items(self, stream: IO[bytes], fmt: str, pool: VariablePool | None = None) -> TemplateItems:
        """One stream item per row: a wire dict, ``Personalised`` or ``Rejected`` (an unreadable row
        too, with its line number)."""
        return self.template.messages(
            read_rows(stream, fmt),
            from_name=self.from_name,
            message_type=self.message_type,
            phone_field=self.phone_column,
            id_prefix=self.id_prefix,
            ttl=self.ttl,
            scheduled_sent=self.scheduled,
            survey_options=self.survey_options,
            pool=pool,
        )


F = TypeVar("F", bound=Callable[..., Any])


def template_options(command: F) -> F:
    """``--template`` and the fields that are the same for every recipient."""
    for option in reversed(
        [
            click.option(
                "--template",
                default=None,
                help="Render each row through this text ({field}, {link:short_url}); @PATH reads a file.",
            ),
            click.option("--message-type", type=click.Choice([t.value for t in MessageType if t.value != "flashcall"])),
            click.option("--from-name", default=None, help="Sender name, for --template."),
            click.option("--phone-column", default="toPhone", show_default=True, help="The column with the phone."),
            click.option("--ttl", type=click.IntRange(min=1), default=None, help="Seconds to live, for --template."),
            click.option("--scheduled", default=None, help="ISO 8601 date-time with a zone, for --template."),
            click.option("--survey-option", multiple=True, help="A viber_survey option (repeat 2 to 5 times)."),
        ]
    ):
        command = option(command)
    return command


def template_job(file: str, options: dict[str, Any]) -> TemplateJob | None:
    """The ``--template`` job the options describe, or None; a ``click.UsageError`` if incomplete."""
    source = options["template"]
    if source is None:
        return None
    if not options["message_type"] or not options["from_name"]:
        raise click.UsageError("--template needs --message-type and --from-name")
    if source.startswith("@"):
        source = pathlib.Path(source[1:]).read_text(encoding="utf-8")
    try:
        template = Template(source.rstrip("\n"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    scheduled = None
    if options["scheduled"]:
        try:
            scheduled = _dt.datetime.fromisoformat(options["scheduled"])
        except ValueError:
            raise click.UsageError(f"--scheduled: not an ISO 8601 date-time: {options['scheduled']!r}") from None
        if scheduled.utcoffset() is None:
            raise click.UsageError("--scheduled needs a time zone, e.g. 2026-01-25T10:00:00Z")
    return TemplateJob(
        template=template,
        message_type=options["message_type"],
        from_name=options["from_name"],
        phone_column=options["phone_column"],
        id_prefix="stdin" if file == "-" else pathlib.Path(file).stem,
        ttl=options["ttl"],
        scheduled=scheduled,
        survey_options=tuple(options["survey_option"]) or None,
    )


def check_resumable(job: TemplateJob | None, journal: Journal | None) -> None:
    """Refuse to resume a journaled template job whose variable ids were lost: new ids would change
    every text with a link, and each such message would come out as CONTENT_CHANGED."""
    if job is None or journal is None or not job.template.variable_fields:
        return
    path = journal.path + ".variables.jsonl"
    if not os.path.exists(path) and any(journal.counts().values()):
        raise JournalError(
            f"{path} is missing: it holds the variable ids this job used, and the journal has messages "
            "from an earlier run. Restore the file, or start the job with a new journal."
        )


def journal_pool(journal_path: str) -> tuple[VariablePool, Any]:
    """The job's pool, replayed from ``<journal>.variables.jsonl`` when it exists, and a function
    that records what changed (called at each new block, and once at the end)."""
    path = journal_path + ".variables.jsonl"

    def record(pool: VariablePool) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(pool.changes()) + "\n")
            f.flush()
            os.fsync(f.fileno())

    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return VariablePool.replay(records, on_block=record), record
    return VariablePool(on_block=record), record


def read_rows(stream: IO[bytes], fmt: str) -> RowLists:
    """Every data row of a CSV or JSONL stream as a dict, or a ``BadLine`` where one cannot be read;
    in the reader's chunks, so that the template renders a chunk at a time."""
    if fmt == "csv":
        chunks = _csv_chunks(stream)
    elif fmt == "jsonl":
        chunks = _jsonl_chunks(stream)
    else:
        raise click.UsageError("--template reads CSV or JSONL rows")

    async def lists() -> AsyncIterator[list[Row]]:
        while chunk := await off_loop(next, chunks, None):
            yield chunk

    return RowLists(lists())


def _unreadable(line: int, problem: str) -> BadLine:
    err = ValidationError(problem, field=None, tracking_id=None, code=ErrorCode.UNPARSEABLE, line=line)
    return BadLine(line, err)


def _csv_chunks(stream: IO[bytes]) -> Iterator[list[Row]]:
    for chunk in csv_rows(stream, _CHUNK):
        yield [_csv_row(line, row) for line, row in chunk]


def _csv_row(line: int, row: dict[str, str | None] | Exception) -> Row:
    if isinstance(row, Exception):
        return _unreadable(line, f"unreadable CSV: {row}; the rest was not read")
    if None in row:
        return _unreadable(line, "row has more cells than the header")
    return row


def _jsonl_chunks(stream: IO[bytes]) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    lines = Lines(stream)
    for line, raw in enumerate(lines, 1):
        if raw.strip():
            try:
                row = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                chunk.append(_unreadable(line, f"not valid JSON: {exc}"))
            except UnicodeDecodeError as exc:  # msgspec checks a string's UTF-8 on its own
                chunk.append(_unreadable(line, f"not UTF-8: {exc}"))
            else:
                chunk.append(row if isinstance(row, dict) else _unreadable(line, "a row must be a JSON object"))
        if chunk and (len(chunk) >= _CHUNK or not lines.ready()):
            yield chunk
            chunk = []
    if chunk:
        yield chunk
