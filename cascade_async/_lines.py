"""Lines of a binary stream as they come, for readers that run in a worker thread.

A read takes what the stream has at that moment (``read1``: at most one read of the file or
pipe), so the lines of a slow pipe (``tail -f log | cascade-async send -``) are handed on as
they arrive instead of waiting for a chunk of thousands to fill; a file still comes in reads
of up to 1 MiB. ``ready()`` tells a chunking reader whether the next line can be had without
blocking, so that it hands over what it has before it waits.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Iterator
from typing import IO, Final

__all__ = ["Lines", "read_text_chunk"]

_READ: Final = 1 << 20


class Lines(Iterator[bytes]):
    """The stream's lines, each without its ``\\n``; with ``universal``, split at ``\\n``,
    ``\\r\\n`` or a lone ``\\r`` and each kept with its ending (what ``csv`` wants)."""

    def __init__(self, stream: IO[bytes], *, universal: bool = False) -> None:
        self._read = getattr(stream, "read1", None) or stream.read
        self._universal = universal
        self._lines: deque[bytes] = deque()
        self._tail = b""  # the start of a line whose end has not come yet
        self._eof = False

    def ready(self) -> bool:
        """Whether the next line (or the end) is known without another read."""
        return bool(self._lines) or self._eof

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
            if len(out) >= most or not self._lines:
                break
        return out

    def text(self) -> Iterator[str]:
        """The lines decoded as UTF-8, a byte order mark at the start dropped."""
        first = True
        for raw in self:
            yield raw.decode("utf-8-sig" if first else "utf-8")
            first = False

    def _fill(self) -> None:
        data = self._read(_READ)
        if not data:
            self._eof = True
            if self._tail:
                self._lines.append(self._tail)
                self._tail = b""
            return
        data = self._tail + data if self._tail else data
        if self._universal:
            parts = data.splitlines(keepends=True)
            last = parts[-1]
            # Unfinished, or a "\r" that the next read may show to be half of a "\r\n".
            self._tail = parts.pop() if last[-1:] not in (b"\n", b"\r") or last[-1:] == b"\r" else b""
            self._lines.extend(parts)
        else:
            cut = data.rfind(b"\n")
            if cut < 0:
                self._tail = data
                return
            self._lines.extend(data[:cut].split(b"\n"))
            self._tail = data[cut + 1 :]


def read_text_chunk(stream: IO[bytes], decoder: codecs.IncrementalDecoder) -> str | None:
    """What the stream has now (one read, as ``Lines``), decoded; None at the end."""
    read = getattr(stream, "read1", None) or stream.read
    while data := read(1 << 16):
        if text := decoder.decode(data):
            return text  # else the read ended inside a character: read on
    return decoder.decode(b"", final=True) or None
