"""A slow pipe's lines go on as they come: readers, template rows and the CLI never wait for a
chunk of thousands to fill (``tail -f log | cascade-async send -``)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any

import pytest

from cascade_async import BadLine, Message, read_csv, read_json_array, read_jsonl
from cascade_async._lines import Lines
from cascade_async.cli._template_source import read_rows
from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import Sandbox

from .test_cli import SECRET, wire

CSV_HEAD = "id,fromName,toPhone,messageType,text\n"


def csv_row(i: int) -> str:
    return f"c{i},Shop,+380501234567,transaction,hi {i}\n"


def jsonl_row(i: int) -> str:
    return json.dumps(wire(i)) + "\n"


def json_item(i: int) -> str:
    return ("[" if i == 0 else ",") + json.dumps(wire(i)) + "\n"


@pytest.fixture
def pipe() -> Iterator[tuple[IO[bytes], Callable[[str], None], Callable[[], None]]]:
    """A real pipe: its read end as a binary stream, ``write`` (flushed at once) and ``close``."""
    r, w = os.pipe()
    reader = open(r, "rb")  # noqa: SIM115 - closed below
    writer = open(w, "wb", buffering=0)  # noqa: SIM115

    def write(text: str) -> None:
        writer.write(text.encode())

    def close() -> None:
        if not writer.closed:
            writer.close()

    yield reader, write, close
    close()
    reader.close()


async def first(items: AsyncIterator[Any], n: int) -> list[Any]:
    out = []
    async for item in items:
        out.append(item)
        if len(out) == n:
            break
    return out


async def within(aw: Any, close: Callable[[], None]) -> Any:
    """``aw``'s answer, or a failure after 10 s that first ends the pipe, so that a reader's
    thread stuck reading it returns and the loop can shut down."""
    try:
        return await asyncio.wait_for(aw, timeout=10)
    except TimeoutError:
        close()
        raise AssertionError("nothing came while the pipe stayed open") from None


READERS = [
    ("jsonl", read_jsonl, "", jsonl_row, ""),
    ("csv", read_csv, CSV_HEAD, csv_row, ""),
    ("json array", read_json_array, "", json_item, "]"),
]


@pytest.mark.parametrize(("kind", "reader", "head", "row", "end"), READERS, ids=[r[0] for r in READERS])
def test_a_reader_yields_the_lines_a_pipe_has_without_waiting_for_more(
    pipe: Any, kind: str, reader: Any, head: str, row: Callable[[int], str], end: str
) -> None:
    stream, write, close = pipe

    async def main() -> None:
        write(head + "".join(row(i) for i in range(3)))
        items = reader(stream)
        got = await within(first(items, 3), close)  # the pipe stays open
        assert [m.id for m in got] == ["c0", "c1", "c2"]
        write(row(3) + end)
        close()
        rest = [m async for m in items]
        assert [m.id for m in rest] == ["c3"]
        assert all(isinstance(m, Message) for m in [*got, *rest])

    asyncio.run(main())


@pytest.mark.parametrize(("fmt", "head", "row"), [("csv", "toPhone,name\n", "+38050123456{},Ann\n"), ("jsonl", "", "")])
def test_template_rows_from_a_pipe_come_as_they_arrive(pipe: Any, fmt: str, head: str, row: str) -> None:
    stream, write, close = pipe

    def line(i: int) -> str:
        return row.format(i) if row else json.dumps({"toPhone": f"+38050123456{i}", "name": "Ann"}) + "\n"

    async def main() -> None:
        write(head + line(0) + line(1))
        lists = aiter(read_rows(stream, fmt).lists)
        got: list[Any] = []
        while len(got) < 2:
            got += await within(anext(lists), close)
        assert [r["toPhone"] for r in got] == ["+380501234560", "+380501234561"]
        close()
        assert [r async for part in lists for r in part] == []

    asyncio.run(main())


@pytest.mark.parametrize(
    ("data", "universal", "expected"),
    [
        (b"a\nb\n\nc", False, [b"a", b"b", b"", b"c"]),
        (b"a\r\nb\rc\n", True, [b"a\r\n", b"b\r", b"c\n"]),
        (b"x,y\r", True, [b"x,y\r"]),
    ],
)
def test_lines_split_like_the_readers_did_whatever_the_reads(
    data: bytes, universal: bool, expected: list[bytes]
) -> None:
    class OneByteAtATime(io.RawIOBase):
        def __init__(self) -> None:
            self.rest = data

        def readable(self) -> bool:
            return True

        def read1(self, n: int = -1) -> bytes:
            out, self.rest = self.rest[:1], self.rest[1:]
            return out

    for stream in (io.BytesIO(data), OneByteAtATime()):
        assert list(Lines(stream, universal=universal)) == expected  # type: ignore[arg-type]


def test_a_bad_line_still_names_its_number_after_a_pause(pipe: Any) -> None:
    stream, write, close = pipe

    async def main() -> None:
        write(jsonl_row(0))
        items = read_jsonl(stream)
        assert [m.id for m in await within(first(items, 1), close)] == ["c0"]
        write("\n{not json\n")
        close()
        (bad,) = [m async for m in items]
        assert isinstance(bad, BadLine)
        assert bad.line == 3

    asyncio.run(main())


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with SandboxThread(api_keys={SECRET}) as sb:
        yield sb


@pytest.mark.parametrize("template", [False, True], ids=["messages", "template"])
def test_the_cli_sends_what_a_slow_stdin_has_before_it_ends(server: Sandbox, template: bool) -> None:
    args = [sys.executable, "-m", "cascade_async.cli", "send", "-", "--base-url", server.url, "--format", "jsonl"]
    if template:
        args += ["--template", "Hi {name}", "--message-type", "transaction", "--from-name", "Shop"]
    env = {**os.environ, "CASCADE_API_KEY": SECRET}
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdin is not None
        assert proc.stderr is not None
        try:
            for i in range(3):
                row = {"id": f"t{i}", "toPhone": "+380501234567", "name": "Ann"} if template else wire(i)
                proc.stdin.write((json.dumps(row) + "\n").encode())
            proc.stdin.flush()
            deadline = time.monotonic() + 30
            while len(server.accepted) < 3 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert len(server.accepted) == 3, proc.stderr.read().decode() if proc.poll() is not None else "not sent"
            assert proc.poll() is None  # sent while stdin is still open
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
