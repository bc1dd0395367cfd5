"""Reading message files lazily: JSONL, a JSON array, or CSV, each item with its line number.

A file is never loaded whole: blocking reads happen in a worker thread in chunks, so the
event loop stays free for sending while a 10-million-line file is read. A chunk holds what the
stream has at hand (``_lines``): a slow pipe's lines go on as they come.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any, Final, TypeAlias

import msgspec

from ._errors import ErrorCode, ValidationError
from ._lines import Lines, read_text_chunk
from ._models import Message
from ._off_loop import off_loop

__all__ = ["BadLine", "detect_format", "read_csv", "read_json_array", "read_jsonl", "read_messages"]

FORMATS: Final = ("jsonl", "json", "csv")
_CHUNK_LINES = 2000
_MAX_OBJECT = 1 << 20
_message_decoder = msgspec.json.Decoder(Message)
# CSV cells are strings; these wire fields are not.
_INT_FIELDS = frozenset({"ttl"})


class BadLine(msgspec.Struct, frozen=True):
    """An input item that could not become a message: where it was and why.

    ``client.stream()`` takes it as it is: it becomes a REJECTED result whose error names
    the line.
    """

    line: int
    error: ValidationError


def detect_format(path: str, first_bytes: bytes = b"") -> str:
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".json"):
        return "json"
    if lower.endswith(".csv"):
        return "csv"
    head = first_bytes.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return {b"[": "json", b"{": "jsonl"}.get(head, "csv")


def _bad(line: int, exc: Exception, tracking_id: str | None = None) -> BadLine:
    if isinstance(exc, ValidationError):
        err = exc
    else:
        err = ValidationError(str(exc), field=None, tracking_id=tracking_id, code=ErrorCode.UNPARSEABLE, line=line)
    return BadLine(line, err)


def parse_jsonl_line(raw: bytes, line: int) -> Message | BadLine | None:
    if not raw.strip():
        return None
    try:
        return _message_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        if isinstance(exc.__cause__, ValidationError):
            return BadLine(line, exc.__cause__)
        # Type errors: let from_dict name the field and id from the loose form.
        try:
            Message.from_dict(msgspec.json.decode(raw))
        except ValidationError as err:
            return BadLine(line, err)
        return _bad(line, exc)  # pragma: no cover - from_dict refuses what decode refused
    except msgspec.DecodeError as exc:
        return _bad(line, ValueError(f"not valid JSON: {exc}"))
    except UnicodeDecodeError as exc:  # msgspec checks a string's UTF-8 on its own
        return _bad(line, ValueError(f"not UTF-8: {exc}"))


def _from_csv_row(row: dict[str, str | None]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:  # more cells than headers
            raise ValueError("row has more cells than the header")
        if value is None or value == "":
            continue
        if key in _INT_FIELDS:
            try:
                data[key] = int(value)
            except ValueError:
                data[key] = value  # validation names the field and the id
        elif key == "surveyOptions":
            data[key] = json.loads(value) if value.lstrip().startswith("[") else value.split("|")
        else:
            data[key] = value
    return data


async def read_messages(stream: IO[bytes], fmt: str) -> AsyncIterator[Message | BadLine]:
    """Yield every item of ``stream`` as a Message or a BadLine with its line number."""
    if fmt == "jsonl":
        line = 0
        lines = Lines(stream)
        while chunk := await off_loop(lines.take, _CHUNK_LINES):
            for raw in chunk:
                line += 1
                item = parse_jsonl_line(raw, line)
                if item is not None:
                    yield item
    elif fmt == "csv":
        async for item in _read_csv(stream):
            yield item
    elif fmt == "json":
        async for item in _read_json_array(stream):
            yield item
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


CsvRow: TypeAlias = tuple[int, dict[str, str | None] | Exception]


def csv_rows(stream: IO[bytes], size: int = _CHUNK_LINES) -> Iterator[list[CsvRow]]:
    """CSV rows as (line, row), in lists of up to ``size`` that end where the input pauses (what
    came is handed on before a read waits). An unreadable line ends them, as (line, its error)."""
    lines = Lines(stream, universal=True)
    reader = csv.DictReader(lines.text())
    chunk: list[CsvRow] = []
    try:
        for row in reader:
            chunk.append((reader.line_num, row))
            if len(chunk) >= size or not lines.ready():
                yield chunk
                chunk = []
    except (csv.Error, UnicodeDecodeError) as exc:
        # A line that did not decode was not counted yet; one that csv refused was.
        chunk.append((reader.line_num + isinstance(exc, UnicodeDecodeError), exc))
    if chunk:
        yield chunk


async def _read_csv(stream: IO[bytes]) -> AsyncIterator[Message | BadLine]:
    chunks = csv_rows(stream)
    while chunk := await off_loop(next, chunks, None):
        for line, row in chunk:
            if isinstance(row, Exception):
                yield _bad(line, row)
                return
            try:
                yield Message.from_dict(_from_csv_row(row))
            except ValidationError as exc:
                yield BadLine(line, exc)
            except ValueError as exc:
                yield _bad(line, exc, row.get("id"))


class _NotUtf8(Exception):
    def __init__(self, line: int, exc: UnicodeDecodeError) -> None:
        super().__init__(f"not UTF-8 ({exc.reason}); the rest of the file was not read")
        self.line = line


async def _read_json_array(stream: IO[bytes]) -> AsyncIterator[Message | BadLine]:
    """An incremental reader for one top-level JSON array of objects."""
    try:
        async for item in _json_array_items(stream):
            yield item
    except _NotUtf8 as exc:
        yield _bad(exc.line, ValueError(str(exc)))


def _may_go_on(buf: str, end: int) -> bool:
    """Whether a value that the decoder ended at ``end`` may be longer once more input comes:
    it ends the buffer, or only the start of a number's fraction or exponent follows it."""
    return buf[end - 1 : end] not in '}]"' and len(buf) - end < 8 and not buf[end:].strip("0123456789.eE+-")


async def _json_array_items(stream: IO[bytes]) -> AsyncIterator[Message | BadLine]:
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8-sig")()
    buf = ""
    pos = 0
    line = 1
    eof = False
    broken: UnicodeDecodeError | None = None  # met after the text in ``buf``

    async def more() -> bool:
        nonlocal buf, pos, eof, broken
        if broken is not None:  # the items before the byte that did not decode are read
            raise _NotUtf8(line + buf.count("\n", pos), broken)
        try:
            chunk = None if eof else await off_loop(read_text_chunk, stream, text)
        except UnicodeDecodeError as exc:
            # The text before that byte first (as a pipe's earlier reads would have given it).
            broken = exc
            chunk = exc.object[: exc.start].decode("utf-8") if isinstance(exc.object, bytes) else ""
            if not chunk:
                return await more()
        if not chunk:
            eof = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    async def skip(separators: str) -> bool:
        """Move past whitespace (and separators); False at the end of input."""
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in separators:
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf):
                return True
            if not await more():
                return False

    if not await skip(" \t\r\n") or buf[pos] != "[":
        yield _bad(line, ValueError("expected a JSON array of messages"))
        return
    pos += 1
    while True:
        if not await skip(" \t\r\n,"):
            yield _bad(line, ValueError("the JSON array is not closed; the file may be truncated"))
            return
        if buf[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as exc:
            # Most likely the object goes on in the next chunk; give up on one over 1 MiB.
            if len(buf) - pos < _MAX_OBJECT and await more():
                continue
            yield _bad(line, ValueError(f"not valid JSON ({exc.msg}); the rest of the file was not read"))
            return
        if _may_go_on(buf, end) and await more():
            continue  # a number or literal may go on in the next chunk (an object cannot)
        item_line = line
        line += buf.count("\n", pos, end)
        pos = end
        try:
            yield Message.from_dict(obj)
        except ValidationError as exc:
            yield BadLine(item_line, exc)


Source = str | os.PathLike[str] | IO[bytes]


def read_jsonl(source: Source) -> AsyncIterator[Message | BadLine]:
    """Every line of a JSONL file (a path, or a binary stream) as a Message or a BadLine.

    >>> report = await client.send_many(read_jsonl("messages.jsonl"))
    """
    return _read(source, "jsonl")


def read_csv(source: Source) -> AsyncIterator[Message | BadLine]:
    """Every row of a CSV file with wire-form column names, as a Message or a BadLine."""
    return _read(source, "csv")


def read_json_array(source: Source) -> AsyncIterator[Message | BadLine]:
    """Every object of a file holding one JSON array, read incrementally."""
    return _read(source, "json")


async def _read(source: Source, fmt: str) -> AsyncIterator[Message | BadLine]:
    if isinstance(source, str | os.PathLike):
        stream = await off_loop(open, source, "rb")
        try:
            async for item in read_messages(stream, fmt):
                yield item
        finally:
            stream.close()
    else:
        async for item in read_messages(source, fmt):
            yield item
