"""Odd and hostile bytes, whatever the reads they come in: every reader (messages and template
rows) names the line of what it cannot read, reads on where it can, and costs one copy of a
line however many reads it takes."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest

from cascade_async import BadLine, Message, read_csv, read_json_array, read_jsonl
from cascade_async._inputs import detect_format
from cascade_async._lines import Lines
from cascade_async.cli._template_source import read_rows

from .test_cli import wire

BOM = b"\xef\xbb\xbf"
HEAD = b"id,fromName,toPhone,messageType,text\n"


def jl(i: int, text: str = "") -> bytes:
    return json.dumps(wire(i, text=text or f"hi {i}")).encode().replace(b"BAD", b"h\xffi")


def cv(i: int, text: bytes = b"hi") -> bytes:
    return b"c%d,Shop,+380501234567,transaction,%s\n" % (i, text)


class Pieces(io.RawIOBase):
    """``data`` in reads of ``size`` bytes; without ``read1`` when ``read1`` is False (a user's
    own stream object)."""

    def __init__(self, data: bytes, size: int, *, read1: bool = True) -> None:
        self.rest, self.size = data, size
        if not read1:
            self.read1 = None  # type: ignore[assignment]

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out, self.rest = self.rest[: self.size], self.rest[self.size :]
        return out

    def read1(self, n: int = -1) -> bytes:
        return self.read(n)


def streams(data: bytes) -> list[Any]:
    return [io.BytesIO(data), Pieces(data, 1), Pieces(data, 3), Pieces(data, 7, read1=False)]


def summary(items: list[Any]) -> list[Any]:
    return [item.id if isinstance(item, Message) else ("bad", item.line) for item in items]


async def collect(reader: Any, stream: Any) -> list[Any]:
    return [item async for item in reader(stream)]


CASES = [
    # JSONL: a line with bytes that are not UTF-8 inside a string is one bad line; the rest go on.
    ("jsonl not UTF-8", read_jsonl, jl(0) + b"\n" + jl(1, "BAD") + b"\n" + jl(2) + b"\n", ["c0", ("bad", 2), "c2"]),
    # A byte order mark (Windows tools write one) is no part of the first line, in JSONL too.
    ("jsonl byte order mark", read_jsonl, BOM + jl(0) + b"\n" + jl(1) + b"\n", ["c0", "c1"]),
    ("csv byte order mark", read_csv, BOM + HEAD + cv(0), ["c0"]),
    # CSV: the line holding the byte that does not decode is named (the header is line 1).
    ("csv not UTF-8", read_csv, HEAD + cv(0) + cv(1, b"h\xffi") + cv(2), ["c0", ("bad", 3)]),
    ("csv cut character at end", read_csv, HEAD + cv(0) + cv(1, b"h\xd0")[:-1], ["c0", ("bad", 3)]),
    ("csv quoted newline then bad", read_csv, HEAD + cv(0, b'"a\nb"') + cv(1, b"\xff"), ["c0", ("bad", 4)]),
    # JSON array: a number cut by a read is still one number (an item that is not an object).
    ("json number cut", read_json_array, b"[1e5, " + jl(0) + b"]", [("bad", 1), "c0"]),
    ("json fraction cut", read_json_array, b"[-1.25,\n" + jl(0) + b"]", [("bad", 1), "c0"]),
]


@pytest.mark.parametrize(("name", "reader", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_reader_names_the_line_it_cannot_read_whatever_the_reads(
    name: str, reader: Any, data: bytes, expected: list[Any]
) -> None:
    for stream in streams(data):
        assert summary(asyncio.run(collect(reader, stream))) == expected, type(stream).__name__


def test_a_json_array_that_is_not_utf8_is_a_bad_line_not_an_exception() -> None:
    data = b"[" + jl(0) + b",\n" + jl(1, "BAD") + b",\n" + jl(2) + b"]"
    for stream in streams(data):  # what comes before it is read, whatever the reads
        first, last = asyncio.run(collect(read_json_array, stream))
        assert first.id == "c0"
        assert isinstance(last, BadLine)
        assert last.line == 2
        assert "not UTF-8" in str(last.error)


ROWS = [
    ("jsonl", BOM + jl(0) + b"\n" + jl(2) + b"\n", ["c0", "c2"]),
    ("jsonl", jl(0) + b"\n" + jl(1, "BAD") + b"\n" + jl(2) + b"\n", ["c0", ("bad", 2), "c2"]),
    ("csv", HEAD + cv(0) + cv(1, b"h\xffi") + cv(2), ["c0", ("bad", 3)]),
]


@pytest.mark.parametrize(("fmt", "data", "expected"), ROWS, ids=["jsonl byte order mark", "jsonl", "csv"])
def test_template_rows_drop_a_byte_order_mark_and_name_the_line_that_is_not_utf8(
    fmt: str, data: bytes, expected: list[Any]
) -> None:
    async def rows(stream: Any) -> list[Any]:
        return [r async for part in read_rows(stream, fmt).lists for r in part]

    for stream in streams(data):
        got = asyncio.run(rows(stream))
        assert [r["id"] if isinstance(r, dict) else ("bad", r.line) for r in got] == expected


@pytest.mark.parametrize("universal", [False, True])
def test_a_line_over_thousands_of_reads_is_joined_once(universal: bool) -> None:
    # 32 MiB in pipe-sized reads: joining the line so far at each read copies 32 GiB (tens of
    # seconds of CPU); joining once at its end takes about a tenth of a second.
    size = 32 << 20
    piece = b"x" * (16 << 10)

    class Long(io.RawIOBase):
        left = size // len(piece)

        def readable(self) -> bool:
            return True

        def read1(self, n: int = -1) -> bytes:
            if self.left == 0:
                return b"\r\nend" if universal else b"\nend"
            self.left -= 1
            return piece

    lines = Lines(Long(), universal=universal)  # type: ignore[arg-type]
    start = time.process_time()  # CPU, not wall time: a loaded machine does not fail it
    first = next(lines)
    assert time.process_time() - start < 10  # about 0.1 s joined once; quadratic copying takes tens
    assert len(first) == size + (2 if universal else 0)


TEXT = [
    (read_jsonl, jl(0).decode() + "\r\n" + jl(1).decode() + "\n"),
    (read_csv, HEAD.decode() + cv(0).decode() + cv(1).decode()),
    (read_json_array, "[" + jl(0).decode() + ",\n" + jl(1).decode() + "]"),
]


@pytest.mark.parametrize(("reader", "data"), TEXT, ids=["jsonl", "csv", "json array"])
def test_a_text_stream_is_read_as_utf8_lines(reader: Any, data: str) -> None:
    # read_jsonl(sys.stdin) or of an io.StringIO worked before readers took bytes with read1.
    for stream in (io.StringIO(data), io.TextIOWrapper(io.BytesIO(BOM + data.encode()), encoding="utf-8")):
        assert summary(asyncio.run(collect(reader, stream))) == ["c0", "c1"]


@pytest.mark.parametrize(("head", "fmt"), [(BOM + b"[{", "json"), (BOM + b' {"id"', "jsonl"), (BOM + b"id,", "csv")])
def test_stdin_with_a_byte_order_mark_is_still_told_apart(head: bytes, fmt: str) -> None:
    assert detect_format("", head) == fmt


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_files_template_rows_come_in_whole_batches_across_its_reads(tmp_path: Any, fmt: str) -> None:
    # Over 1 MiB, so more than one read: a list cut at each read's end would leave short chunks
    # that put every later chunk out of step with the batches (each then offered message by message).
    from cascade_async import Template

    path = tmp_path / f"rows.{fmt}"
    rows = [{"toPhone": f"+38050{i:07d}", "name": f"Name {i}", "note": "x" * 40} for i in range(25_000)]
    with open(path, "w", encoding="utf-8") as f:
        if fmt == "csv":
            f.write("toPhone,name,note\n" + "".join(f"{r['toPhone']},{r['name']},{r['note']}\n" for r in rows))
        else:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    assert path.stat().st_size > 1 << 20

    async def sizes(stream: Any) -> list[int]:
        items = Template("Hi {name}").messages(read_rows(stream, fmt), from_name="Shop", message_type="transaction")
        return [len(chunk) async for chunk, _ in items.blocks(1000)]

    with open(path, "rb") as stream:
        assert asyncio.run(sizes(stream)) == [1000] * 25
