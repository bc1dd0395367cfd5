"""Templates: one text, personalised per recipient, as items the client can stream.

>>> template = Template("Hi {name}! Order {order} shipped: {link:short_url}")
>>> items = template.messages(rows, from_name="Shop", message_type="transaction")

Fields render on the client (``{name}``, ``{amount:.2f}``) except those marked ``:short_url`` or
``:url``, which become provider variables: the text gets ``%short_url=N%`` and the value is uploaded
under id N. ``{{`` and ``}}`` are literal braces; a ``%`` in the text is literal unless it forms a
placeholder (see ``_variables``); placeholders written into the template are passed through as they are.

``messages()`` is an async generator yielding, per row and in row order, one of:

- a wire dict (camelCase keys, as ``Message.from_dict`` takes) when the template has no variable
  fields;
- ``Personalised(message, variables)``: the wire dict and every ``Variable`` its text references;
- ``Rejected(tracking_id, error, row)`` for a row that cannot become a message: a missing or blank
  value (``ErrorCode.MISSING_VARIABLE``), or a value that would carry or complete a placeholder, an invalid
  URL, a format spec that does not fit (``INVALID_FIELD``). Each names the field.

Why the variables travel with each message: the sender must upload a variable before the first
message that uses it, and must not send a message whose variables failed to upload. With the
variables on the item, the engine needs no lookup into the template: it keeps the set of ids
uploaded so far, uploads (in bodies of up to 1000, ``variable_batches``) any the admitted items
reference that are not in it yet, and posts a batch only once every variable of its messages is
uploaded; a message whose upload failed for good becomes a REJECTED result carrying the upload's
error. Uploading the same id with the same value twice is harmless, so a resumed job may re-upload.

Ids come from a ``VariablePool`` (same value, same id; ``snapshot()`` for the journal); pass the
job's pool to ``messages()`` to keep ids across a resume. Rendered texts are not checked against
message rules here (survey length, the id's length): the engine validates each wire dict as it does
any other input, so those rows become REJECTED results there.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import operator
import string
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import msgspec

from ._errors import ErrorCode, ValidationError
from ._inputs import BadLine
from ._models import MessageType
from ._variable_ids import VariablePool
from ._variables import PLACEHOLDER, Variable, VariableType, find_placeholders

__all__ = ["Personalised", "Rejected", "Template", "TemplateItem", "TemplateItems"]

_VARIABLE_SPECS: Final = {"url": VariableType.URL, "short_url": VariableType.SHORT_URL}
_KEYWORDS: Final = tuple(f"{t.value}=" for t in VariableType)
_HOLE: Final = "\x00"  # stands for a client-side value in the static analysis below


# gc=False: it holds a wire dict of strings and Variables (themselves untracked), so it can never
# be part of a reference cycle; a bulk job makes one per message.
class Personalised(msgspec.Struct, frozen=True, gc=False):
    """A message in wire form and the variables its text references (to upload before it is sent)."""

    message: dict[str, Any]
    variables: tuple[Variable, ...]


class Rejected(msgspec.Struct, frozen=True):
    """A row that did not become a message; the engine reports it as a REJECTED result."""

    tracking_id: str
    error: ValidationError
    row: int | None = None


TemplateItem: TypeAlias = dict[str, Any] | Personalised | Rejected
#: Rows of column to value; a reader's ``BadLine`` in a row's place becomes that row's ``Rejected``.
Rows: TypeAlias = Iterable[Mapping[str, Any] | BadLine] | AsyncIterable[Mapping[str, Any] | BadLine]


class Template:
    """A message text with ``{field}`` slots, compiled once and rendered per recipient.

    >>> Template("Hi {name}, 50% off: {link:short_url}").fields
    ('name', 'link')
    """

    def __init__(self, source: str) -> None:
        self.source = source
        literals: list[str] = []
        fields: list[tuple[str, str, VariableType | None]] = []
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise ValueError(f"template: {exc}") from None
        pending = ""  # "{{" and "}}" split a literal into several parsed pieces
        for literal, name, spec, conversion in parsed:
            pending += literal
            if name is None:
                continue
            literals.append(pending)
            pending = ""
            if not name or (not name.isidentifier() and not _plain(name)):
                raise ValueError(f"template: field {{{name}}} needs a plain name (no attribute or index access)")
            if conversion:
                raise ValueError(f"template: field {{{name}!{conversion}}}: conversions are not supported")
            if spec and "{" in spec:
                raise ValueError(f"template: field {{{name}:{spec}}}: nested fields are not supported")
            fields.append((name, "" if spec in _VARIABLE_SPECS else spec or "", _VARIABLE_SPECS.get(spec or "")))
        literals.append(pending)
        self._literals = tuple(literals)
        self._fields = tuple(fields)
        self._expected: list[list[tuple[str, str]]] = []
        for literal in literals:
            try:
                self._expected.append([(p.type.value, str(p.id)) for p in find_placeholders(literal)])
            except ValidationError as exc:
                raise ValueError(f"template: {exc.problem}") from None
        if not "".join(literals).strip() and not fields:
            raise ValueError("template: no text")
        self._percent_sensitive = _percent_sensitive(self._literals, self._fields)
        if not self._percent_sensitive and not self._placeholders_intact(_skeleton(literals, fields), None):
            raise ValueError("template: a placeholder written in the text runs into a field")
        # The checked path renders with one str.format call on (phone, *row values, *placeholders):
        # the format string applies each client field's spec and puts each placeholder in place.
        count = len(fields)
        var_slots: list[tuple[int, VariableType]] = []
        pieces: list[str] = []
        for i, lit in enumerate(literals):
            pieces.append(lit.replace("{", "{{").replace("}", "}}"))
            if i < count:
                _, spec, kind = fields[i]
                if kind is None:
                    pieces.append(f"{{{i + 1}:{spec}}}" if spec else f"{{{i + 1}}}")
                else:
                    pieces.append(f"{{{1 + count + len(var_slots)}}}")
                    var_slots.append((i + 1, kind))
        self._format = "".join(pieces)
        self._var_slots = tuple(var_slots)
        self._fast = _compile(self._literals, self._fields)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field name, in order of first use."""
        return tuple(dict.fromkeys(name for name, _, _ in self._fields))

    @property
    def variable_fields(self) -> tuple[str, ...]:
        """The fields that become provider variables (``:url``, ``:short_url``)."""
        return tuple(dict.fromkeys(name for name, _, kind in self._fields if kind is not None))

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def messages(
        self,
        rows: Rows,
        *,
        from_name: str,
        message_type: MessageType | str,
        id_field: str = "id",
        phone_field: str = "toPhone",
        ttl: int | None = None,
        scheduled_sent: _dt.datetime | None = None,
        survey_options: Sequence[str] | None = None,
        id_prefix: str = "row",
        pool: VariablePool | None = None,
    ) -> TemplateItems:
        """One item per row, in order (see the module docstring).

        A row's id is its ``id_field`` value, or ``{id_prefix}-{n}`` for the n-th row (from 1)
        when that is absent or empty: pass a prefix that is stable for the job (the CLI uses the
        file's stem) so that a resumed job derives the same ids.
        """
        kind = MessageType(message_type)
        if kind is MessageType.FLASHCALL:
            raise ValueError("a template needs a message type with text; flashcall has none")
        extra: dict[str, Any] = {}
        if ttl is not None:
            extra["ttl"] = ttl
        if scheduled_sent is not None:
            if scheduled_sent.utcoffset() is None:
                raise ValueError("scheduled_sent must be timezone-aware (a naive datetime is not guessed)")
            extra["scheduledSent"] = msgspec.to_builtins(scheduled_sent.astimezone(_dt.UTC))
        if survey_options is not None:
            extra["surveyOptions"] = list(survey_options)
        if pool is None and self.variable_fields:
            pool = VariablePool()
        job = _Job(self, from_name, kind.value, id_field, phone_field, id_prefix, extra, pool)
        return TemplateItems(job, rows)

    def _item(self, job: _Job, tid: str, phone: Any, text: str, variables: list[Variable]) -> TemplateItem:
        message = {
            "id": tid,
            "fromName": job.from_name,
            "toPhone": phone,
            "messageType": job.message_type,
            "text": text,
        }
        if job.extra:
            message.update(job.extra)
        if not variables:
            return message
        return Personalised(message, (variables[0],) if len(variables) == 1 else tuple(dict.fromkeys(variables)))

    # A row the fast path (_renderer) does not take is rendered here, one check at a time, so that
    # the rejection names the field and the problem.
    def _render_checked(self, job: _Job, row: Mapping[str, Any] | BadLine, n: int) -> TemplateItem | None:
        if not isinstance(row, Mapping):
            made = f"{job.id_prefix}-{n}"
            if isinstance(row, BadLine):  # a reader's unreadable row keeps its line and reason
                err = row.error
                bad = ValidationError(err.problem, field=err.field, tracking_id=made, code=err.code, line=row.line)
                return Rejected(made, bad, n)
            return _reject(made, n, None, f"a row must be a mapping of column to value, not {type(row).__name__}")
        tid = row.get(job.id_field)
        if tid is None or tid == "":
            tid = f"{job.id_prefix}-{n}"
        elif type(tid) is not str:
            tid = str(tid)
        phone = row.get(job.phone_field)
        if _blank(phone):
            return _reject(tid, n, job.phone_field, "no phone number in this row", ErrorCode.MISSING_VARIABLE)
        values: list[Any] = [phone]
        variables: list[Variable] = []
        clients: list[tuple[str, str]] = []
        percent = self._percent_sensitive
        for name, spec, kind in self._fields:
            value = row.get(name)
            if _blank(value):
                return _reject(tid, n, name, f"no value for template field {name!r}", ErrorCode.MISSING_VARIABLE)
            values.append(value)
            if kind is not None:
                if not isinstance(value, str):
                    return _reject(tid, n, name, f"must be a URL string, not {type(value).__name__}")
                try:
                    var = job.pool.get(kind, value) if job.pool is not None else None
                except ValidationError as exc:
                    return _reject(tid, n, name, exc.problem)
                if var is None:
                    return None
                variables.append(var)
                continue
            try:
                shown = format(value, spec)
            except (TypeError, ValueError) as exc:
                return _reject(tid, n, name, f"cannot format {value!r} with {{{name}:{spec}}}: {exc}")
            if "%" in shown:
                if PLACEHOLDER.search(shown):
                    return _reject(tid, n, name, "must not contain a placeholder (%name=…%, %url=…%, %short_url=…%)")
                percent = True
            clients.append((name, shown))
        text = self._format.format(*values, *[v.placeholder for v in variables])
        if percent and not self._placeholders_intact(text, variables):
            blamed = next((name for name, shown in clients if "%" in shown), clients[0][0] if clients else "text")
            return _reject(tid, n, blamed, "a value must not complete or break a placeholder in the text")
        return self._item(job, tid, phone, text, variables)

    def _placeholders_intact(self, text: str, variables: list[Variable] | None) -> bool:
        """Whether ``text`` holds exactly the placeholders the template put there, in order.

        ``variables`` None checks the skeleton, where each variable's id is 1.
        """
        expected: list[tuple[str, str]] = list(self._expected[0])
        vars_left = iter(variables or ())
        for i, (_, _, kind) in enumerate(self._fields):
            if kind is not None:
                var = next(vars_left) if variables is not None else Variable(1, kind, "https://x")
                expected.append((var.type.value, str(var.id)))
            expected.extend(self._expected[i + 1])
        return [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)] == expected


class _Job:
    __slots__ = (
        "extra",
        "from_name",
        "getter",
        "id_field",
        "id_prefix",
        "message_type",
        "phone_field",
        "pool",
        "template",
    )

    def __init__(
        self,
        template: Template,
        from_name: str,
        message_type: str,
        id_field: str,
        phone_field: str,
        id_prefix: str,
        extra: dict[str, Any],
        pool: VariablePool | None,
    ) -> None:
        self.template = template
        self.from_name = from_name
        self.message_type = message_type
        self.id_field = id_field
        self.phone_field = phone_field
        self.id_prefix = id_prefix
        self.extra = extra
        self.pool = pool
        # One C call fetches the phone and every field value; with one key itemgetter returns the
        # value itself, so a template without fields gets a getter that returns a 1-tuple.
        names = [name for name, _, _ in template._fields]
        self.getter: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            operator.itemgetter(phone_field, *names) if names else lambda row: (row[phone_field],)
        )


class TemplateItems(AsyncIterator[TemplateItem]):
    """What ``Template.messages()`` returns: an async iterator of items, one per row.

    ``client.stream()`` reads it a chunk at a time (``chunks``), so that whole chunks are checked
    in C as pre-rendered wire dicts are. Iterate it once, either way.
    """

    def __init__(self, job: _Job, rows: Rows) -> None:
        self._job = job
        self._rows = rows
        self._items: AsyncIterator[TemplateItem] | None = None
        #: Items of ``chunks`` rendered from rows already taken, not handed out yet (a reader
        #: stopped while the rows pause settles them).
        self.held: list[TemplateItem] = []

    async def __anext__(self) -> TemplateItem:
        if self._items is None:
            self._items = _generate(self._job, self._rows)
        return await self._items.__anext__()

    async def chunks(self, size: int) -> AsyncIterator[list[TemplateItem]]:
        """The items in lists of up to ``size``. Rows from an async source that pauses wait in
        the current list until the next row comes or the rows end."""
        job, rows = self._job, self._rows
        render = _renderer(job)
        chunk = self.held
        n = 0
        source: Iterable[Any] = rows if not isinstance(rows, AsyncIterable) else ()
        async_rows = rows.__aiter__() if isinstance(rows, AsyncIterable) else None
        sync_rows = iter(source)
        while True:
            if async_rows is not None:
                try:
                    row = await async_rows.__anext__()
                except StopAsyncIteration:
                    break
            else:
                got: Any = next(sync_rows, _END)
                if got is _END:
                    break
                row = got
            n += 1
            item = render(row, n)
            while item is None:
                await _refill(job)
                item = render(row, n)
            chunk.append(item)
            if len(chunk) >= size:
                self.held = []
                yield chunk
                chunk = self.held
        if chunk:
            self.held = []
            yield chunk


_END: Final = object()


async def _generate(
    job: _Job, rows: Rows
) -> AsyncIterator[TemplateItem]:
    render = _renderer(job)
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


def _renderer(job: _Job) -> Callable[[Any, int], TemplateItem | None]:
    """The per-row work of one job, with everything it reads bound to local names.

    Two closures, for templates without and with provider variables; both build the same wire
    dict as ``Template._item``, inlined because this is the per-message cost.

    The fast path takes rows whose values are all non-blank strings that add no ``%``; it hands
    any other row to ``Template._render_checked``. None means the pool's block is spent: refill
    it, then render the row again.
    """
    template = job.template
    getter, fast, checked = job.getter, template._fast, template._render_checked
    var_slots = [(i, kind, f"%{kind.value}=") for i, kind in template._var_slots]
    sensitive = template._percent_sensitive
    id_field, id_prefix, from_name, message_type = job.id_field, job.id_prefix, job.from_name, job.message_type
    extra = job.extra
    pool_get = job.pool.get if job.pool is not None else None
    no_placeholders: list[str] = []

    def wire(row: Any, n: int, phone: str, text: str) -> dict[str, Any]:
        tid = row.get(id_field)
        if tid is None or tid == "":
            tid = f"{id_prefix}-{n}"
        elif type(tid) is not str:
            tid = str(tid)
        message = {"id": tid, "fromName": from_name, "toPhone": phone, "messageType": message_type, "text": text}
        if extra:
            message.update(extra)
        return message

    def render_plain(row: Any, n: int) -> TemplateItem | None:
        try:
            text = fast(values := getter(row), no_placeholders)
        except (KeyError, TypeError, ValueError, AttributeError):
            return checked(job, row, n)
        if text is None or sensitive:
            return checked(job, row, n)
        return wire(row, n, values[0], text)

    if not var_slots or pool_get is None:
        return render_plain

    def render(row: Any, n: int) -> TemplateItem | None:
        variables: list[Variable] = []
        try:
            values = getter(row)
            placeholders = []
            for i, kind, prefix in var_slots:
                var = pool_get(kind, values[i])
                if var is None:
                    return None
                variables.append(var)
                placeholders.append(f"{prefix}{var.id}%")
            text = fast(values, placeholders)
        except (KeyError, TypeError, ValueError, AttributeError):  # ValidationError is a ValueError
            return checked(job, row, n)
        if text is None or sensitive:
            return checked(job, row, n)
        message = wire(row, n, values[0], text)
        return Personalised(message, (variables[0],) if len(variables) == 1 else tuple(dict.fromkeys(variables)))

    return render


async def _refill(job: _Job) -> None:
    assert job.pool is not None
    await job.pool.refill()


_Fast: TypeAlias = Callable[[tuple[Any, ...], list[str]], "str | None"]


def _compile(literals: tuple[str, ...], fields: tuple[tuple[str, str, VariableType | None], ...]) -> _Fast:
    """The template as one Python function with an f-string: the cheapest way CPython joins text.

    ``render(values, placeholders)`` takes (phone, *field values) and the variables' placeholders,
    and returns None if any value is blank or a client-side one holds ``%``; a non-string value
    raises AttributeError. The generated source holds only generated names: the template's text
    and specs are bound as globals, never pasted into code.
    """
    names: dict[str, Any] = {}
    count = len(fields)
    params = ", ".join(f"f{i}" for i in range(count + 1))
    checks = " and ".join(f"f{i}.strip()" for i in range(count + 1))
    checks += "".join(f" and '%' not in f{i + 1}" for i, (_, _, kind) in enumerate(fields) if kind is None)
    parts: list[str] = []
    slot = 0
    for i, literal in enumerate(literals):
        if literal:
            names[f"l{i}"] = literal
            parts.append(f"{{l{i}}}")
        if i == count:
            break
        _, spec, kind = fields[i]
        if kind is not None:
            parts.append(f"{{p[{slot}]}}")
            slot += 1
        elif spec:
            names[f"s{i}"] = spec
            parts.append(f"{{f{i + 1}:{{s{i}}}}}")
        else:
            parts.append(f"{{f{i + 1}}}")
    source = (
        f"def render(v, p):\n"
        f"    {params}, = v\n"
        f"    if not ({checks}):\n"
        f"        return None\n"
        f"    return f'{''.join(parts)}'\n"
    )
    exec(source, names)
    render: _Fast = names["render"]
    return render


def _blank(value: object) -> bool:
    return value is None or value == "" or (type(value) is str and value.isspace())


def _reject(tid: str, n: int, field: str | None, problem: str, code: str = ErrorCode.INVALID_FIELD) -> Rejected:
    return Rejected(tid, ValidationError(problem, field=field, tracking_id=tid, code=code), n)


def _plain(name: str) -> bool:
    # CSV headers such as "order-no" or "first name" are fine; attribute and index access are not.
    return not any(c in name for c in ".[]!:{}")


def _skeleton(literals: Sequence[str], fields: Sequence[tuple[str, str, VariableType | None]]) -> str:
    """The text with each variable's placeholder (id 1) and a hole for each client-side value."""
    skeleton = literals[0]
    for i, (_, _, kind) in enumerate(fields):
        skeleton += (f"%{kind.value}=1%" if kind is not None else _HOLE) + literals[i + 1]
    return skeleton


def _percent_sensitive(literals: tuple[str, ...], fields: tuple[tuple[str, str, VariableType | None], ...]) -> bool:
    """Whether a client-side value without ``%`` could still complete a placeholder.

    That needs a ``%`` before the value, the text between them being the start of ``name=``,
    ``url=`` or ``short_url=`` (or one of those then an id), and another ``%`` after it.
    """
    skeleton = _skeleton(literals, fields)
    marks = [i for i, c in enumerate(skeleton) if c == "%"]
    for start, end in itertools.pairwise(marks):
        between = skeleton[start + 1 : end]
        hole = between.find(_HOLE)
        if hole < 0:
            continue
        head = between[:hole]
        if any(kw.startswith(head) or head.startswith(kw) for kw in _KEYWORDS):
            return True
    return False
