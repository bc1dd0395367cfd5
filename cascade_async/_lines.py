"""Lines of a binary stream as they come, for readers that run in a worker thread.

A read takes what the stream has at that moment (``read1``: at most one read of the file or
pipe), so the lines of a slow pipe (``tail -f log | cascade-async send -``) are handed on as
they arrive instead of waiting for a chunk of thousands to fill; a file still comes in reads
of up to 1 MiB. ``ready()`` tells a chunking reader whether the next line can be had without
blocking, so that it hands over what it has before it waits.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, Final

__all__ = ["Lines", "byte_reader", "read_text_chunk"]

_READ: Final = 1 << 20
_BOM: Final = codecs.BOM_UTF8


class Lines(Iterator[bytes]):
    """The stream's lines, each without its ``\\n``; with ``universal``, split at ``\\n``,
    ``\\r\\n`` or a lone ``\\r`` and each kept with its ending (what ``csv`` wants). A UTF-8
    byte order mark at the start of the stream is dropped."""

    def __init__(self, stream: IO[bytes], *, universal: bool = False) -> None:
        self._read = byte_reader(stream)
        #: A regular file (or bytes in memory) has its next line at hand even between reads: a
        #: chunk of it ends at the chunk size, not at a read's end (a template's lists then stay
        #: aligned with its batches).
        self._never_waits = _never_waits(stream)
        self._universal = universal
        self._lines: deque[bytes] = deque()
        # The start of a line whose end has not come yet, in the pieces it came in: joined once,
        # when its end comes, so that a line over many reads (a 50 MB line through a pipe) costs
        # one copy, not one per read.
        self._tail: list[bytes] = []
        self._eof = False
        self._first = True  # no line made yet: the first drops a UTF-8 byte order mark

    def ready(self) -> bool:
        """Whether the next line (or the end) is known without another read."""
        return self._never_waits or bool(self._lines) or self._eof

    def __next__(self) -> bytes:
        while not self._lines:
            if self._eof:
                raise StopIteration
            self._fill()
        return self._lines.popleft()

    def take(self, most: int) -> list[bytes]:
        """At least one line (waiting for it if need be), then as many as are at hand, up to
        ``most``; empty at the end."""
        out = []
        for line in self:
            out.append(line)
            if len(out) >= most or not self.ready():
                break
        return out

    def text(self) -> Iterator[str]:
        """The lines decoded as UTF-8 (the byte order mark at the start dropped, as for bytes)."""
        for raw in self:
            yield raw.decode("utf-8")

    def _fill(self) -> None:
        self._take_in()
        if self._first and self._lines:
            self._first = False
            if self._lines[0].startswith(_BOM):  # Windows tools write one, even in JSONL
                self._lines[0] = self._lines[0][len(_BOM) :]

    def _take_in(self) -> None:
        data = self._read(_READ)
        tail = self._tail
        if not data:
            self._eof = True
            if tail:
                self._lines.append(b"".join(tail))
                tail.clear()
            return
        if tail:
            ends = b"\n" in data or (self._universal and (b"\r" in data or tail[-1][-1:] == b"\r"))
            if not ends:
                tail.append(data)  # the line goes on
                return
            data = b"".join((*tail, data))
            tail.clear()
        if self._universal:
            parts = data.splitlines(keepends=True)
            # Unfinished, or a "\r" that the next read may show to be half of a "\r\n".
            if parts[-1][-1:] != b"\n":
                tail.append(parts.pop())
            self._lines.extend(parts)
        else:
            cut = data.rfind(b"\n")
            if cut < 0:
                tail.append(data)
                return
            self._lines.extend(data[:cut].split(b"\n"))
            if cut + 1 < len(data):
                tail.append(data[cut + 1 :])


def _never_waits(stream: object) -> bool:
    if isinstance(stream, io.BytesIO):
        return True
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # no descriptor: it may be a pipe's kind
        return False


def byte_reader(stream: IO[bytes] | IO[str]) -> Callable[[int], bytes]:
    """A read of at most n bytes that takes what the stream has: ``read1`` when it has one; a
    line at a time, as UTF-8, from a text stream (``io.StringIO``, ``sys.stdin``), which the
    JSONL reader has always taken although its type says bytes."""
    if isinstance(stream, io.TextIOBase):
        readline: Any = stream.readline
        return lambda n: readline(n).encode("utf-8")
    read: Callable[[int], bytes] = getattr(stream, "read1", None) or stream.read  # type: ignore[assignment]
    return read


def read_text_chunk(stream: IO[bytes], decoder: codecs.IncrementalDecoder) -> str | None:
    """What the stream has now (one read, as ``Lines``), decoded; None at the end."""
    read = byte_reader(stream)
    while data := read(1 << 16):
        if text := decoder.decode(data):
            return text  # else the read ended inside a character: read on
    return decoder.decode(b"", final=True) or None
