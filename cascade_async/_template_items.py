"""``Template.messages()`` items: rows in, one item per row out, a row or a list of rows at a time."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, TypeAlias, cast

from ._errors import CascadeError
from ._inputs import BadLine
from ._models import Result, Status, failure
from ._template_codegen import Renderer, compile_renderer, compile_rows
from ._template_rows import Job, Rejected, TemplateItem, duplicate, render_checked, row_id
from ._variable_ids import VariablePool
from ._variables import VariableRun

__all__ = ["RowLists", "Rows", "TemplateItems", "ids_unavailable"]

#: Rows of column to value; a reader's ``BadLine`` in a row's place becomes that row's ``Rejected``.
Rows: TypeAlias = Iterable[Mapping[str, Any] | BadLine] | AsyncIterable[Mapping[str, Any] | BadLine]
_Chunk: TypeAlias = tuple[list[TemplateItem], list[VariableRun] | None]


class TemplateItems(AsyncIterator[TemplateItem]):
    """What ``Template.messages()`` returns: an async iterator of items, one per row.

    ``client.stream()`` reads it a chunk at a time (``chunks``), so that whole chunks are checked
    in C as pre-rendered wire dicts are. Iterate it once, either way.
    """

    def __init__(self, job: Job, rows: Rows) -> None:
        self._job = job
        self._rows = rows
        self._items: AsyncIterator[TemplateItem] | None = None
        #: Items of ``chunks`` rendered from rows already taken, not handed out yet (a reader
        #: stopped while the rows pause settles them).
        self.held: list[TemplateItem] = []
        #: Rows taken from the input but not rendered, when waiting for the pool's next block of
        #: ids failed or was cancelled: the rows and the number of the first (``unrendered_results``).
        self._unrendered: tuple[list[Any], int] = ([], 0)
        #: Iterated a row at a time from a ``RowLists``: its current list, the number of the row
        #: before its first, and the index of its first row not handed on (``unread_results``).
        self._list: tuple[list[Any], int] = ([], 0)
        self._at = 0

    async def __anext__(self) -> TemplateItem:
        if self._items is None:
            rows = self._rows
            self._items = self._one_by_one(rows) if isinstance(rows, RowLists) else self._generate(rows)
        return await self._items.__anext__()

    async def _generate(self, rows: Rows) -> AsyncIterator[TemplateItem]:
        """Plain rows a row at a time; a row waiting for the pool's next block of ids is known
        (``unread_results``) until it is rendered: it was taken from the input."""
        render = compile_renderer(self._job)
        if isinstance(rows, AsyncIterable):
            n = 0
            async for row in rows:
                n += 1
                item = render(row, n)
                yield item if item is not None else await self._after_refill(render, [row], n)
            return
        for n, row in enumerate(rows, 1):
            item = render(row, n)
            yield item if item is not None else await self._after_refill(render, [row], n)

    async def _after_refill(self, render: Renderer, rows: list[Any], n: int) -> TemplateItem:
        """``rows[0]`` (row ``n``) rendered after the pool's next block of ids. Until then ``rows``
        (it and the rows after it already taken from the input) are known as unrendered: if the
        wait fails or is cancelled, each gets its result (``unrendered_results``)."""
        self._unrendered = (rows, n)
        item = None
        while item is None:
            await _refill(self._job)
            item = render(rows[0], n)
        self._unrendered = ([], 0)
        return item

    async def _one_by_one(self, lists: RowLists) -> AsyncIterator[TemplateItem]:
        """A reader's lists a row at a time (a journal reads them so); the rows of the current
        list not handed on yet are known, for a reader stopped mid-list (``unread_results``)."""
        job = self._job
        render = compile_renderer(job)
        n = 0
        async for rows in lists.lists:
            self._list = (rows, n)
            for i, row in enumerate(rows):
                n += 1
                self._at = i
                item = render(row, n)
                if item is None:
                    item = await self._after_refill(render, [row], n)
                self._at = i + 1
                yield item
            self._list = ([], n)

    def unread_results(self, error: CascadeError) -> list[Result | Rejected]:
        """Iterated a row at a time: a result (as ``unrendered_results``) for each row of the
        current list of a ``RowLists`` not handed on yet, or for the plain row waiting for ids."""
        rows, n = self._list
        self._list = ([], n)
        if rows[self._at :]:
            self._unrendered = (rows[self._at :], n + self._at + 1)
        return self.unrendered_results(error)

    async def chunks(self, size: int) -> AsyncIterator[list[TemplateItem]]:
        """The items in lists of up to ``size``. Rows from an async source that pauses wait in
        the current list until the next row comes or the rows end."""
        async for chunk, _ in self._chunks(size, blocks=False):
            yield chunk

    async def blocks(self, size: int) -> AsyncIterator[_Chunk]:
        """As ``chunks``, each list with the variables first used in it, as ``VariableRun`` lists
        of ids and values (None: none are, as each message is then a ``Personalised`` item that
        carries its own).

        The messages of a list need its variables and those of the lists before it, and no
        others, so the engine uploads a list's variables before any batch holding its messages
        and keeps nothing per message. The job's pool must be fresh for that (every variable it
        hands out is then in a list): a pool that already holds values, or that another job
        takes its blocks from, gives ``Personalised`` items as ``chunks`` does, with None.
        """
        pool = self._job.pool
        async for chunk, fresh in self._chunks(size, blocks=pool is not None and pool.claim_fresh()):
            yield chunk, fresh

    async def _chunks(self, size: int, *, blocks: bool) -> AsyncIterator[_Chunk]:
        job = self._job
        job.blocks = blocks
        render, render_many = compile_rows(job)
        pending = self.held  # rendered, not handed out yet
        # A reader's lists end where its input paused (or at its chunk size): what came is
        # handed on then, for the engine's linger to send, instead of waiting for a full chunk.
        whole_lists = isinstance(self._rows, RowLists)
        n = 0
        async for rows in _row_lists(self._rows, size):
            # The whole list first: no row taken from the source waits unrendered across a yield,
            # so a reader stopped there finds every one of them in ``held``.
            i, end = 0, len(rows)
            while i < end:
                first = n
                n, spent = render_many(rows, i, end, n, pending)
                i += n - first
                if spent:  # row n (rows[i - 1]) needs a new id and the block is used up
                    pending.append(await self._after_refill(render, rows[i - 1 : end], n))
            while len(pending) >= size or (whole_lists and pending):
                # A list's new variables go with its first chunk (sooner than its later chunks
                # need them, never later); the rows left in ``held`` keep theirs in the pool.
                fresh = self._hand_over()
                if len(pending) == size:  # the usual case: the list is the chunk
                    self.held = []
                    yield pending, fresh
                    pending = self.held
                else:
                    chunk = pending[:size]
                    del pending[:size]
                    yield chunk, fresh
        if pending:
            self.held = []
            yield pending, self._hand_over()

    def take_held(self) -> _Chunk:
        """The items rendered but not handed out (the rows failed after them), with the new
        variables they may use, as ``blocks`` would have handed them out."""
        held, self.held = self.held, []
        return held, self._hand_over()

    def _hand_over(self) -> list[VariableRun] | None:
        """Before rendered items are handed out: the new variables they may use (in blocks), and
        a journaled pool's ids recorded (``_save``)."""
        pool = self._job.pool
        fresh = pool.take_fresh() if self._job.blocks and pool is not None else None
        _save(pool)
        return fresh

    def unrendered_results(self, error: CascadeError) -> list[Result | Rejected]:
        """A result for each row taken but never rendered (the wait for ids failed or was
        cancelled): FAILED with ``error``, nothing sent; a repeated id is still a repeat, and a row
        that is no mapping (a reader's ``BadLine``) is REJECTED as it would have been."""
        rows, first = self._unrendered
        self._unrendered = ([], 0)
        job = self._job
        out: list[Result | Rejected] = []
        for n, row in enumerate(rows, first):
            if not isinstance(row, Mapping):  # an unreadable line needs no id: refused for what it is
                out.append(cast(Rejected, render_checked(job, row, n)))
                continue
            tid, derived = row_id(job, row, n)
            if job.ids.derived(n) if derived else job.ids.explicit(tid, n):
                out.append(failure(tid, Status.FAILED, error.for_message(tid), 0))
            else:
                out.append(duplicate(tid, n))
        return out


def ids_unavailable(cause: BaseException) -> CascadeError:
    """The error of rows taken but never rendered because the pool's next block of ids could not
    be had (``unrendered_results``)."""
    return CascadeError(f"no variable id could be had for it: {cause!r}")


def _save(pool: VariablePool | None) -> None:
    """Before a chunk is handed out: a journaled pool records the ids its rows took (a job killed
    once the chunk is out resumes with them; their messages may be at the provider)."""
    if pool is not None and pool.on_block is not None and pool.unsaved():
        pool.on_block(pool)


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
        while True:
            read: list[Any] = []
            try:
                read.extend(itertools.islice(it, size))  # keeps the rows read before an error
            except Exception:
                if read:
                    yield read
                raise
            if not read:
                return
            yield read


async def _refill(job: Job) -> None:
    assert job.pool is not None
    await job.pool.refill()
