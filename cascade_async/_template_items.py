"""``Template.messages()`` items: rows in, one item per row out, a row or a list of rows at a time."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, TypeAlias

from ._inputs import BadLine
from ._template_codegen import compile_renderer, compile_rows
from ._template_rows import Job, TemplateItem

__all__ = ["RowLists", "Rows", "TemplateItems"]

#: Rows of column to value; a reader's ``BadLine`` in a row's place becomes that row's ``Rejected``.
Rows: TypeAlias = Iterable[Mapping[str, Any] | BadLine] | AsyncIterable[Mapping[str, Any] | BadLine]


class TemplateItems(AsyncIterator[TemplateItem]):
    """What ``Template.messages()`` returns: an async iterator of items, one per row.

    ``client.stream()`` reads it a chunk at a time (``chunks``), so that whole chunks are checked
    in C as pre-rendered wire dicts are. Iterate it once, either way.
    """

    def __init__(self, job: Job, rows: Rows) -> None:
        self._job = job
        self._rows = rows
        self._items: AsyncIterator[TemplateItem] | None = None

    async def __anext__(self) -> TemplateItem:
        if self._items is None:
            self._items = _generate(self._job, self._rows)
        return await self._items.__anext__()

    async def chunks(self, size: int) -> AsyncIterator[list[TemplateItem]]:
        """The items in lists of up to ``size``. Rows from an async source that pauses wait in
        the current list until the next row comes or the rows end."""
        job = self._job
        render, render_many = compile_rows(job)
        chunk: list[TemplateItem] = []
        n = 0
        async for rows in _row_lists(self._rows, size):
            i, end = 0, len(rows)
            while i < end:
                first = n
                n, spent = render_many(rows, i, min(end, i + size - len(chunk)), n, chunk)
                i += n - first
                if spent:  # row n (rows[i - 1]) needs a new id and the block is used up
                    item = None
                    while item is None:
                        await _refill(job)
                        item = render(rows[i - 1], n)
                    chunk.append(item)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


class RowLists:
    """Rows that come in lists (a reader's chunks): a template job renders them a list at a time.

    Iterated directly, it yields the rows one by one.
    """

    def __init__(self, lists: AsyncIterable[list[Any]]) -> None:
        self.lists = lists

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for rows in self.lists:
            for row in rows:
                yield row


async def _row_lists(rows: Rows | RowLists, size: int) -> AsyncIterator[list[Any]]:
    if isinstance(rows, RowLists):
        async for part in rows.lists:
            yield part
    elif isinstance(rows, AsyncIterable):
        async for row in rows:  # one at a time: a pause in the source must not hold rows back
            yield [row]
    else:
        it = iter(rows)
        while part := list(itertools.islice(it, size)):
            yield part


async def _generate(job: Job, rows: Rows) -> AsyncIterator[TemplateItem]:
    render = compile_renderer(job)
    if isinstance(rows, AsyncIterable):
        n = 0
        async for row in rows:
            n += 1
            item = render(row, n)
            while item is None:
                await _refill(job)
                item = render(row, n)
            yield item
        return
    for n, row in enumerate(rows, 1):
        item = render(row, n)
        while item is None:
            await _refill(job)
            item = render(row, n)
        yield item


async def _refill(job: Job) -> None:
    assert job.pool is not None
    await job.pool.refill()
