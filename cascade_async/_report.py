"""The outcome of ``send_many``: one result per tracking id, in input order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from ._models import Result, Status

__all__ = ["BulkReport", "Tally"]


class Tally:
    """Running counts of results, in constant memory: what a long job reports as it goes.

    ``BulkReport.summary()`` and the command line print the same line from it.
    """

    __slots__ = ("counts", "duplicates", "unknown")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(Status, 0)
        self.unknown = 0
        self.duplicates = 0

    def add(self, result: Result, *, duplicate: bool = False) -> None:
        if duplicate:
            self.duplicates += 1
            return
        self.counts[result.status] += 1
        if result.outcome_unknown:
            self.unknown += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def all_accepted(self) -> bool:
        return self.counts[Status.ACCEPTED] == self.total and not self.duplicates

    def line(self) -> str:
        c = self.counts
        text = (
            f"{self.total} messages: {c[Status.ACCEPTED]} accepted, {c[Status.REJECTED]} rejected, "
            f"{c[Status.FAILED]} failed"
        )
        if self.unknown:
            text += f" ({self.unknown} with unknown outcome)"
        return text + f", {self.duplicates} duplicates"


class BulkReport(Mapping[str, Result]):
    """A read-only mapping of tracking id → ``Result`` (the first occurrence's), in input order.

    >>> report = await client.send_many(messages)
    >>> print(report.summary())
    1000 messages: 997 accepted, 2 rejected, 1 failed, 0 duplicates (12.3 s)
    >>> for result in report.rejected: ...

    Results of repeated tracking ids are not in the mapping: ``duplicates`` holds them.
    """

    __slots__ = ("_by_id", "_tally", "duplicates", "elapsed")

    def __init__(self, by_id: dict[str, Result], duplicates: Sequence[Result], elapsed: float) -> None:
        self._by_id = by_id
        self.duplicates: tuple[Result, ...] = tuple(duplicates)
        self.elapsed = elapsed
        tally = Tally()
        for result in by_id.values():
            tally.add(result)
        tally.duplicates = len(self.duplicates)
        self._tally = tally

    def __getitem__(self, tracking_id: str) -> Result:
        return self._by_id[tracking_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def _with(self, status: Status) -> list[Result]:
        return [r for r in self._by_id.values() if r.status is status]

    @property
    def accepted(self) -> list[Result]:
        return self._with(Status.ACCEPTED)

    @property
    def rejected(self) -> list[Result]:
        return self._with(Status.REJECTED)

    @property
    def failed(self) -> list[Result]:
        return self._with(Status.FAILED)

    def count(self, status: Status) -> int:
        return self._tally.counts[status]

    @property
    def ok(self) -> bool:
        """True when every message was accepted and no id was repeated."""
        return self._tally.all_accepted

    def summary(self) -> str:
        return f"{self._tally.line()} ({self.elapsed:.1f} s)"

    def __repr__(self) -> str:
        return f"<BulkReport {self.summary()}>"
