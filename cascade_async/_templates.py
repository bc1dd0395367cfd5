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
- ``Personalised(message, variables)``: the wire dict and every ``Variable`` its text references
  (a wire dict instead when the engine takes the variables in blocks, see below);
- ``Rejected(tracking_id, error, row)`` for a row that cannot become a message: a missing or blank
  value (``ErrorCode.MISSING_VARIABLE``), or a value that would carry or complete a placeholder, an invalid
  URL, a value that is neither text nor a finite number (``True``, a list), a format spec that does not
  fit (``INVALID_FIELD``); each names the field. Or a tracking id an earlier row used (``DUPLICATE_ID``,
  checked in about no memory per row, see ``_template_ids``): ``client.stream()`` then keeps no id set of
  its own for the job, so a template job streams in flat memory.

How the variables reach the engine: the sender must upload a variable before the first message
that uses it, and must not send a message whose variables failed to upload. The engine keeps the set
of ids uploaded so far, uploads (in bodies of up to 1000, ``variable_batches``) the ones it has not,
and posts a batch only once its messages' variables are uploaded; a message whose upload failed for
good becomes a REJECTED result carrying the upload's error. Uploading the same id with the same
value twice is harmless, so a resumed job may re-upload. Two ways, one protocol:

- ``client.stream(items)`` reads the items in chunks (``TemplateItems.blocks``) and gets, with each
  chunk, the values first used in it and their ids (``VariableRun`` lists, no ``Variable`` per
  value), straight from the pool that allocated them; their uploads are encoded in one go
  (``BlockUploads``). A message of chunk k needs chunk k's variables or earlier ones, so every batch
  that leaves waits for the blocks handed over before it: plain wire dicts, no work per message.
  That needs a fresh pool (then
  every id the pool hands out is in a block); otherwise, and when the items are iterated one by one
  (a journal, the dry run, a hand-made list), a templated message is a ``Personalised`` item that
  carries its variables, and the engine tracks them per message (slower, same promises).

Ids come from a ``VariablePool`` (same value, same id; ``snapshot()`` for the journal); pass the
job's pool to ``messages()`` to keep ids across a resume. Rendered texts are not checked against
message rules here (survey length, the id's length): the engine validates each wire dict as it does
any other input, so those rows become REJECTED results there.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import string
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from ._errors import ValidationError
from ._models import MessageType
from ._template_items import RowLists, Rows, TemplateItems
from ._template_rows import Job, Personalised, Rejected, TemplateItem
from ._variable_ids import VariablePool
from ._variables import PLACEHOLDER, Variable, VariableType, find_placeholders

__all__ = ["Personalised", "Rejected", "RowLists", "Template", "TemplateItem", "TemplateItems"]

_VARIABLE_SPECS: Final = {"url": VariableType.URL, "short_url": VariableType.SHORT_URL}
_KEYWORDS: Final = tuple(f"{t.value}=" for t in VariableType)
_HOLE: Final = "\x00"  # stands for a client-side value in the static analysis below


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
        # The checked path renders with one str.format call on (phone, *shown values, *placeholders):
        # it formats each client value with its spec first, then the format string puts each value
        # and placeholder in place.
        count = len(fields)
        var_slots = 0
        pieces: list[str] = []
        for i, lit in enumerate(literals):
            pieces.append(lit.replace("{", "{{").replace("}", "}}"))
            if i < count:
                kind = fields[i][2]
                if kind is None:
                    pieces.append(f"{{{i + 1}}}")
                else:
                    pieces.append(f"{{{1 + count + var_slots}}}")
                    var_slots += 1
        self._format = "".join(pieces)

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
        job = Job(self, from_name, kind.value, id_field, phone_field, id_prefix, extra, pool)
        return TemplateItems(job, rows)

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
