"""The per-row work of a template job: one row in, one item out, one check at a time.

``render_checked`` takes any row the generated code (``_template_codegen``) does not: it checks one
thing at a time so that a rejection names the field and the problem. It returns None when the
pool's block is spent (the caller refills it and renders the row again); a row's id is checked
against the job's earlier rows (``RowIds``) only once its item is decided.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from ._errors import ErrorCode, ValidationError
from ._inputs import BadLine
from ._template_ids import RowIds
from ._variable_ids import VariablePool
from ._variables import PLACEHOLDER, Variable

if TYPE_CHECKING:
    from ._templates import Template

__all__ = ["Job", "Personalised", "Rejected", "TemplateItem", "duplicate", "render_checked", "row_id"]


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


class Job:
    """One ``Template.messages()`` call: the template, the fields common to every row, the pool."""

    __slots__ = (
        "blocks",
        "extra",
        "from_name",
        "getter",
        "id_field",
        "id_prefix",
        "ids",
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
        self.ids = RowIds(id_prefix)
        #: Whether the job's new variables go to the engine in blocks (``TemplateItems.blocks``):
        #: then a message is a plain wire dict, not a ``Personalised`` item.
        self.blocks = False
        # One C call fetches the phone and every field value; with one key itemgetter returns the
        # value itself, so a template without fields gets a getter that returns a 1-tuple.
        names = [name for name, _, _ in template._fields]
        self.getter: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            operator.itemgetter(phone_field, *names) if names else lambda row: (row[phone_field],)
        )


def row_id(job: Job, row: object, n: int) -> tuple[str, bool]:
    """Row ``n``'s tracking id, and whether it is derived (no id column value)."""
    tid: Any = row.get(job.id_field) if isinstance(row, Mapping) else None
    if tid is None or tid == "":
        return f"{job.id_prefix}-{n}", True
    return tid if type(tid) is str else str(tid), False


def render_checked(job: Job, row: Mapping[str, Any] | BadLine, n: int) -> TemplateItem | None:
    """One row, one check at a time; its id checked once the item is decided."""
    tid, derived = row_id(job, row, n)
    item = _decide(job, row, n, tid)
    if item is None:
        return None
    fresh = job.ids.derived(n) if derived else job.ids.explicit(tid, n)
    return item if fresh else duplicate(tid, n)


def _decide(job: Job, row: Mapping[str, Any] | BadLine, n: int, tid: str) -> TemplateItem | None:
    template = job.template
    if not isinstance(row, Mapping):
        if isinstance(row, BadLine):  # a reader's unreadable row keeps its line and reason
            err = row.error
            bad = ValidationError(err.problem, field=err.field, tracking_id=tid, code=err.code, line=row.line)
            return Rejected(tid, bad, n)
        return _reject(tid, n, None, f"a row must be a mapping of column to value, not {type(row).__name__}")
    phone = row.get(job.phone_field)
    if _blank(phone):
        return _reject(tid, n, job.phone_field, "no phone number in this row", ErrorCode.MISSING_VARIABLE)
    values: list[Any] = [phone]
    variables: list[Variable] = []
    clients: list[tuple[str, str]] = []
    percent = template._percent_sensitive
    for name, spec, kind in template._fields:
        value = row.get(name)
        if _blank(value):
            return _reject(tid, n, name, f"no value for template field {name!r}", ErrorCode.MISSING_VARIABLE)
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
            values.append(value)
            continue
        shown = _shown(value, spec)
        if isinstance(shown, _Problem):
            return _reject(tid, n, name, shown.problem)
        values.append(shown)
        if "%" in shown:
            if PLACEHOLDER.search(shown):
                return _reject(tid, n, name, "must not contain a placeholder (%name=…%, %url=…%, %short_url=…%)")
            percent = True
        clients.append((name, shown))
    text = template._format.format(*values, *[v.placeholder for v in variables])
    if percent and not template._placeholders_intact(text, variables):
        blamed = next((name for name, shown in clients if "%" in shown), clients[0][0] if clients else "text")
        return _reject(tid, n, blamed, "a value must not complete or break a placeholder in the text")
    message = {"id": tid, "fromName": job.from_name, "toPhone": phone, "messageType": job.message_type, "text": text}
    message.update(job.extra)
    if not variables or job.blocks:
        return message
    return Personalised(message, tuple(dict.fromkeys(variables)))


class _Problem:
    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _shown(value: object, spec: str) -> str | _Problem:
    """A client-side value as text. Strings and numbers only: ``True``, ``None`` or a list would
    render Python-style, and NaN or infinity is no amount, so those rows are rejected."""
    if isinstance(value, str):
        shown = value
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        if (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, Decimal) and not value.is_finite()
        ):
            return _Problem(f"must be a finite number, not {value}")
        shown = value  # type: ignore[assignment]  # formatted below, with its spec
    else:
        return _Problem(f"must be text or a number, not {type(value).__name__}")
    try:
        return format(shown, spec)
    except (TypeError, ValueError) as exc:
        return _Problem(f"cannot format this {type(value).__name__} with {{:{spec}}}: {exc}")


def _blank(value: object) -> bool:
    return value is None or value == "" or (type(value) is str and value.isspace())


def _reject(tid: str, n: int, field: str | None, problem: str, code: str = ErrorCode.INVALID_FIELD) -> Rejected:
    return Rejected(tid, ValidationError(problem, field=field, tracking_id=tid, code=code), n)


def duplicate(tid: str, n: int) -> Rejected:
    problem = "repeats a tracking id already used in this call; not sent twice"
    return Rejected(tid, ValidationError(problem, field="id", tracking_id=tid, code=ErrorCode.DUPLICATE_ID), n)
