"""Tracking ids of a template job: repeated ones refused in (almost) no memory per row.

A row's id is its ``id`` column value, or ``{prefix}-{n}`` for the n-th row (from 1) when the cell
is empty or absent. Derived ids are unique by construction, so they cost nothing to check; what can
repeat is a column id, and a column id that spells another row's derived id. ``RowIds`` decides, as
rows come in order, whether a row's id was used by an earlier row of the job:

- column ids go into ``HashSet64``: 8 bytes of a 64-bit hash each, in a table kept at most half
  full (16 to 32 bytes an id, against about 110 for a set of the strings). The price of not keeping
  the strings: two different ids with the same 64-bit hash count as a repeat, so a job of n column
  ids wrongly refuses one with probability about n² / 2**65 (1 in 3.7 billion for 100,000 ids, 1 in
  37 million for a million). Python's string hash is salted per process, so no input can aim at it.
- a column id ``{prefix}-{m}`` also claims row m's derived id: a later row m without an id is then
  the repeat; an earlier one (found in the runs of rows that had a column id) makes this the repeat.
  That costs one int per such id, and per run of consecutive rows with a column id.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Final

__all__ = ["HashSet64", "RowIds"]

_MIN_SLOTS: Final = 1024


class HashSet64:
    """A set of 64-bit hashes in one ``array`` (open addressing, linear probing)."""

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self) -> None:
        self._table = array("q", bytes(8 * _MIN_SLOTS))
        self._mask = _MIN_SLOTS - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._table.itemsize * len(self._table)

    def add(self, h: int) -> bool:
        """Add ``h``: False if it was there already."""
        h = h or 1  # 0 marks a free slot
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            slot = table[i]
            if slot == 0:
                table[i] = h
                self._count += 1
                if 2 * self._count > mask:
                    self._grow()
                return True
            if slot == h:
                return False
            i = (i + 1) & mask

    def _grow(self) -> None:
        old = self._table
        self._table = array("q", bytes(16 * len(old)))
        self._mask = 2 * len(old) - 1
        self._count = 0
        for h in old:
            if h:
                self.add(h)


class RowIds:
    """Which tracking ids the rows of one job used so far (rows given in order, from 1)."""

    __slots__ = ("_hashes", "_prefix", "_run_ends", "_run_starts", "claimed")

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix + "-"
        self._hashes = HashSet64()
        #: Rows whose derived id a column id took (for rows not read yet): a row n without an id
        #: repeats an id if ``n in claimed``.
        self.claimed: set[int] = set()
        self._run_starts = array("q")  # runs of consecutive rows with a column id
        self._run_ends = array("q")

    def derived(self, n: int) -> bool:
        """Row ``n`` has no id of its own: whether ``{prefix}-{n}`` is still free."""
        return not (self.claimed and n in self.claimed)

    def explicit(self, tid: str, n: int) -> bool:
        """Row ``n`` has the column id ``tid``: whether no earlier row used it."""
        ends = self._run_ends
        if ends and ends[-1] == n - 1:
            ends[-1] = n
        else:
            self._run_starts.append(n)
            ends.append(n)
        if not self._hashes.add(hash(tid)):
            return False
        if not tid.startswith(self._prefix):
            return True
        digits = tid[len(self._prefix) :]
        if not (digits.isascii() and digits.isdigit()) or digits[0] == "0" or len(digits) > 18:
            return True
        m = int(digits)
        if m > n:
            self.claimed.add(m)
        elif m < n and not self._had_column_id(m):
            return False  # row m went out as {prefix}-{m}
        return True

    def _had_column_id(self, m: int) -> bool:
        i = bisect.bisect_right(self._run_starts, m) - 1
        return i >= 0 and m <= self._run_ends[i]
