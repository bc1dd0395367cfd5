"""The outcome of ``send_many``: one result per tracking id, in input order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from ._models import Result, Status

__all__ = ["BulkReport"]


class BulkReport(Mapping[str, Result]):
    """A read-only mapping of tracking id → ``Result`` (the first occurrence's), in input order.

    >>> report = await client.send_many(messages)
    >>> print(report.summary())
    1000 messages: 997 accepted, 2 rejected, 1 failed, 0 duplicates (12.3 s)
    >>> for result in report.rejected: ...

    Results of repeated tracking ids are not in the mapping: ``duplicates`` holds them.
    """

    __slots__ = ("_by_id", "_counts", "duplicates", "elapsed")

    def __init__(self, by_id: dict[str, Result], duplicates: Sequence[Result], elapsed: float) -> None:
        self._by_id = by_id
        self.duplicates: tuple[Result, ...] = tuple(duplicates)
        self.elapsed = elapsed
        counts = dict.fromkeys(Status, 0)
        for result in by_id.values():
            counts[result.status] += 1
        self._counts = counts

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
        return self._counts[status]

    @property
    def ok(self) -> bool:
        """True when every message was accepted and no id was repeated."""
        return self._counts[Status.ACCEPTED] == len(self._by_id) and not self.duplicates

    def summary(self) -> str:
        c = self._counts
        unknown = sum(1 for r in self._by_id.values() if r.outcome_unknown)
        text = (
            f"{len(self._by_id)} messages: {c[Status.ACCEPTED]} accepted, {c[Status.REJECTED]} rejected, "
            f"{c[Status.FAILED]} failed"
        )
        if unknown:
            text += f" ({unknown} with unknown outcome)"
        return text + f", {len(self.duplicates)} duplicates ({self.elapsed:.1f} s)"

    def __repr__(self) -> str:
        return f"<BulkReport {self.summary()}>"
