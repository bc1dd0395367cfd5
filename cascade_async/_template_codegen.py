"""The per-row work of a template job as generated Python: one call per row, or one per list.

``compile_rows(job)`` builds, once per job, Python functions whose body is the template itself: one
``itemgetter`` call fetches the phone and every field, one f-string joins literals, values and
placeholders, and the wire dict is built in the same frame. ``render_many`` loops over a slice of a
list of rows in that same frame (no call per row). The text and specs are bound as globals, never
pasted into code. They take rows whose values are all non-blank strings that add no ``%``; any
other row goes to ``render_checked``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from ._template_rows import Job, Personalised, TemplateItem, duplicate, render_checked
from ._variables import GOOD_URL_STARTS, VariableType

__all__ = ["ManyRenderer", "Renderer", "compile_renderer", "compile_rows"]

Renderer: TypeAlias = Callable[[Any, int], TemplateItem | None]
ManyRenderer: TypeAlias = Callable[[list[Any], int, int, int, list[TemplateItem]], tuple[int, bool]]
_SLOW: Final = object()  # stands for the id of a row the generated code hands to render_checked


def compile_renderer(job: Job) -> Renderer:
    """The job's row function (see the module docstring)."""
    return compile_rows(job)[0]


def compile_rows(job: Job) -> tuple[Renderer, ManyRenderer]:
    """The job's row function, and its loop over a slice of a list of rows.

    ``render_many(rows, start, stop, n, out)`` renders ``rows[start:stop]`` (the first one is row
    ``n + 1``) and appends their items to ``out``; it returns the number of the last row it took,
    and True when that row's item is missing because the pool's block is spent.
    """
    template = job.template
    fields = template._fields
    pool = job.pool
    # A spec may add "%" (a fill character, a percentage): only the checked path looks at the result.
    percent_spec = any("%" in spec for _, spec, _ in fields)
    if template._percent_sensitive or percent_spec or (pool is None and template.variable_fields):

        def render(row: Any, n: int) -> TemplateItem | None:
            return render_checked(job, row, n)

        return render, _many(render)
    names: dict[str, Any] = {
        "islice": itertools.islice,
        "SLOW": _SLOW,
        "getter": job.getter,
        "checked": render_checked,
        "job": job,
        "claimed": job.ids.claimed,
        "explicit": job.ids.explicit,
        "duplicate": duplicate,
        "Personalised": Personalised,
        "id_field": job.id_field,
        "prefix": job.id_prefix,
        "from_name": job.from_name,
        "message_type": job.message_type,
        "extra": job.extra,
        # In blocks, a value's id is all the row needs; otherwise its Variable goes with the item.
        "new": None if pool is None else pool.new_id if job.blocks else pool.get,
        "free": pool.free_ids() if pool is not None else None,
        "good": GOOD_URL_STARTS,
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
            known = pool.ids(kind) if job.blocks else pool.variables(kind)
            names[f"k{len(slots)}"], names[f"K{len(slots)}"] = known, kind
            lookups += _lookup(var, len(slots), value, inline=job.blocks)
            parts.append(f"%{kind.value}={{{var}}}%" if job.blocks else f"%{kind.value}={{{var}.id}}%")
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
    if not slots or job.blocks:  # in blocks, the job's new variables travel by the chunk
        item = "message"
    elif len(slots) == 1:
        item = f"Personalised(message, ({slots[0]},))"
    else:
        item = f"Personalised(message, tuple(dict.fromkeys(({', '.join(slots)},))))"
    body = [
        "try:",
        f"    {unpack}, = getter(row)",
        f"    if {' and '.join(checks)}:",
        *[f"        {line}" for line in lookups],
        f"        text = f'{''.join(parts)}'",
        "        tid = row.get(id_field)",
        "    else:",
        "        tid = SLOW",
        "except (KeyError, TypeError, ValueError, AttributeError):  # a ValidationError is a ValueError",
        "    tid = SLOW",
        "if tid is SLOW:",
        "    item = checked(job, row, n)",
        "    if item is None:",
        "        return SPENT",
        "    DONE(item)",
        "elif tid is None or tid == '':",
        "    tid = f'{prefix}-{n}'",
        "    if claimed and n in claimed:",
        "        DONE(duplicate(tid, n))",
        "else:",
        "    if type(tid) is not str:",
        "        tid = str(tid)",
        "    if not explicit(tid, n):",
        "        DONE(duplicate(tid, n))",
        f"message = {message}",
        f"DONE({item})",
    ]
    one = [line.replace("return SPENT", "return None").replace("DONE(", "return (") for line in body]
    many = [
        line.replace("return SPENT", "return n, True").replace("DONE(item)", "append(item)\n    continue")
        for line in body
    ]
    many = [_done_in_loop(line) for line in many]
    source = "\n".join(
        [
            "def render(row, n):",
            *[f"    {line}" for line in "\n".join(one).splitlines()],
            "",
            "def render_many(rows, start, stop, n, out):",
            "    append = out.append",
            "    for row in islice(rows, start, stop):",
            "        n += 1",
            *[f"        {line}" for line in "\n".join(many).splitlines()],
            "    return n, False",
            "",
        ]
    )
    exec(source, names)
    return names["render"], names["render_many"]


def _lookup(var: str, slot: int, value: str, *, inline: bool) -> list[str]:
    """The lines that set ``var`` to the id (inline) or the Variable of the row's ``value``.

    Inline, a new value's id is taken as ``pool.new_id`` would for the usual valid URL (the same
    quick checks as ``url_ok``, the start among those seen valid): a call saved per new value.
    Anything else goes to ``new`` (``pool.new_id``, or ``pool.get``), which checks it in full.
    """
    lines = [f"{var} = k{slot}.get({value})", f"if {var} is None:"]
    if inline:
        quick = f"'%' not in {value} and ' ' not in {value} and {value}.isprintable() and {value}.startswith(good[0])"
        lines += [
            f"    {var} = free[0]",
            f"    if {var} < free[1] and {quick}:",
            f"        k{slot}[{value}] = {var}",
            f"        free[0] = {var} + 1",
            "    else:",
            f"        {var} = new(K{slot}, {value})",
            f"        if {var} is None:",
            "            return SPENT",
        ]
    else:
        lines += [f"    {var} = new(K{slot}, {value})", f"    if {var} is None:", "        return SPENT"]
    return lines


def _done_in_loop(line: str) -> str:
    """``DONE(x)`` at the end of a branch, in the loop: append it and take the next row."""
    if "DONE(" not in line:
        return line
    indent = line[: len(line) - len(line.lstrip())]
    return f"{indent}append({line.strip()[5:-1]})\n{indent}continue"


def _many(render: Renderer) -> ManyRenderer:
    def render_many(rows: list[Any], start: int, stop: int, n: int, out: list[TemplateItem]) -> tuple[int, bool]:
        for row in itertools.islice(rows, start, stop):
            n += 1
            item = render(row, n)
            if item is None:
                return n, True
            out.append(item)
        return n, False

    return render_many


# The wire form of a variable type in a placeholder, checked once: it is pasted into generated code.
assert all(t.value.isidentifier() for t in VariableType)
