"""The per-row work of a template job: one row in, one item out.

``compile_renderer(job)`` builds, once per job, a Python function whose body is the template
itself: one ``itemgetter`` call fetches the phone and every field, one f-string joins literals,
values and placeholders, and the wire dict is built in the same frame (one Python call per row).
The text and specs are bound as globals, never pasted into code. It takes rows whose values are all
non-blank strings that add no ``%``; any other row goes to ``render_checked``, which does one check
at a time so that the rejection names the field and the problem.

Both return None when the pool's block is spent (the caller refills it and renders the row again);
a row's id is checked against the job's earlier rows (``RowIds``) only once its item is decided.
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
from ._variables import PLACEHOLDER, Variable, VariableType

if TYPE_CHECKING:
    from ._templates import Template

__all__ = ["Job", "Personalised", "Rejected", "TemplateItem", "compile_renderer", "render_checked"]


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
Renderer: TypeAlias = Callable[[Any, int], TemplateItem | None]


class Job:
    """One ``Template.messages()`` call: the template, the fields common to every row, the pool."""

    __slots__ = (
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
        # One C call fetches the phone and every field value; with one key itemgetter returns the
        # value itself, so a template without fields gets a getter that returns a 1-tuple.
        names = [name for name, _, _ in template._fields]
        self.getter: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            operator.itemgetter(phone_field, *names) if names else lambda row: (row[phone_field],)
        )


def compile_renderer(job: Job) -> Renderer:
    """The job's row function (see the module docstring)."""
    template = job.template
    fields = template._fields
    pool = job.pool
    # A spec may add "%" (a fill character, a percentage): only the checked path looks at the result.
    percent_spec = any("%" in spec for _, spec, _ in fields)
    if template._percent_sensitive or percent_spec or (pool is None and template.variable_fields):
        return lambda row, n: render_checked(job, row, n)
    names: dict[str, Any] = {
        "getter": job.getter,
        "checked": render_checked,
        "job": job,
        "claimed": job.ids.claimed,
        "explicit": job.ids.explicit,
        "duplicate": _duplicate,
        "Personalised": Personalised,
        "id_field": job.id_field,
        "prefix": job.id_prefix,
        "from_name": job.from_name,
        "message_type": job.message_type,
        "extra": job.extra,
        "new": pool.new if pool is not None else None,
    }
    count = len(fields)
    checks = ["f0.strip()"]
    lookups: list[str] = []
    parts: list[str] = []
    slots: list[str] = []
    for i, literal in enumerate(template._literals):
        if literal:
            names[f"l{i}"] = literal
            parts.append(f"{{l{i}}}")
        if i == count:
            break
        _, spec, kind = fields[i]
        value = f"f{i + 1}"
        if kind is not None:  # the pool checks the value when it gives it an id
            assert pool is not None
            var = f"v{len(slots)}"
            names[f"k{len(slots)}"], names[f"K{len(slots)}"] = pool.known(kind), kind
            lookups += [
                f"        {var} = k{len(slots)}.get({value})",
                f"        if {var} is None:",
                f"            {var} = new(K{len(slots)}, {value})",
                f"            if {var} is None:",
                "                return None",
            ]
            parts.append(f"%{kind.value}={{{var}.id}}%")
            slots.append(var)
            continue
        checks += [f"{value}.strip()", f"'%' not in {value}"]
        if spec:
            names[f"s{i}"] = spec
            parts.append(f"{{{value}:{{s{i}}}}}")
        else:
            parts.append(f"{{{value}}}")
    unpack = ", ".join(f"f{i}" for i in range(count + 1))
    message = "{'id': tid, 'fromName': from_name, 'toPhone': f0, 'messageType': message_type, 'text': text"
    message += ", **extra}" if job.extra else "}"
    if not slots:
        item = "message"
    elif len(slots) == 1:
        item = f"Personalised(message, ({slots[0]},))"
    else:
        item = f"Personalised(message, tuple(dict.fromkeys(({', '.join(slots)},))))"
    source = "\n".join(
        [
            "def render(row, n):",
            "    try:",
            f"        {unpack}, = getter(row)",
            f"        if not ({' and '.join(checks)}):",
            "            return checked(job, row, n)",
            *lookups,
            f"        text = f'{''.join(parts)}'",
            "        tid = row.get(id_field)",
            "    except (KeyError, TypeError, ValueError, AttributeError):  # a ValidationError is a ValueError",
            "        return checked(job, row, n)",
            "    if tid is None or tid == '':",
            "        tid = f'{prefix}-{n}'",
            "        if claimed and n in claimed:",
            "            return duplicate(tid, n)",
            "    else:",
            "        if type(tid) is not str:",
            "            tid = str(tid)",
            "        if not explicit(tid, n):",
            "            return duplicate(tid, n)",
            f"    message = {message}",
            f"    return {item}",
            "",
        ]
    )
    exec(source, names)
    render: Renderer = names["render"]
    return render


def render_checked(job: Job, row: Mapping[str, Any] | BadLine, n: int) -> TemplateItem | None:
    """One row, one check at a time; its id checked once the item is decided."""
    tid: Any = row.get(job.id_field) if isinstance(row, Mapping) else None
    derived = tid is None or tid == ""
    tid = f"{job.id_prefix}-{n}" if derived else tid if type(tid) is str else str(tid)
    item = _decide(job, row, n, tid)
    if item is None:
        return None
    fresh = job.ids.derived(n) if derived else job.ids.explicit(tid, n)
    return item if fresh else _duplicate(tid, n)


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
    if not variables:
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


def _duplicate(tid: str, n: int) -> Rejected:
    problem = "repeats a tracking id already used in this call; not sent twice"
    return Rejected(tid, ValidationError(problem, field="id", tracking_id=tid, code=ErrorCode.DUPLICATE_ID), n)


# The wire form of a variable type in a placeholder, checked once: it is pasted into generated code.
assert all(t.value.isidentifier() for t in VariableType)
