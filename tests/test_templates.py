from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_async import (
    BadLine,
    ErrorCode,
    LocalIdAllocator,
    Message,
    Personalised,
    Rejected,
    Template,
    TemplateItem,
    Variable,
    VariablePool,
    VariableType,
    sms_segments,
)
from cascade_async._template_codegen import compile_renderer
from cascade_async._template_rows import Job, render_checked

PHONE = "+380501234567"
MISSING = ErrorCode.MISSING_VARIABLE
SHORT = VariableType.SHORT_URL


async def collect(template: Template, rows: Iterable[Mapping[str, Any] | BadLine], **kwargs: Any) -> list[TemplateItem]:
    kwargs.setdefault("from_name", "Shop")
    kwargs.setdefault("message_type", "promo")
    return [item async for item in template.messages(rows, **kwargs)]


async def texts(source: str, *rows: dict[str, Any]) -> list[str]:
    items = await collect(Template(source), [{"toPhone": PHONE, **r} for r in rows])
    out = []
    for item in items:
        assert not isinstance(item, Rejected), item.error
        out.append((item.message if isinstance(item, Personalised) else item)["text"])
    return out


def rejection(item: TemplateItem) -> tuple[str | None, str]:
    assert isinstance(item, Rejected), item
    return item.error.field, item.error.code


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "row", "text"),
    [
        pytest.param("Hi {name}!", {"name": "Ann"}, "Hi Ann!", id="one field"),
        pytest.param("{a}{b}", {"a": "x", "b": "y"}, "xy", id="adjacent fields"),
        pytest.param("{a} and {a}", {"a": "x"}, "x and x", id="a field used twice"),
        pytest.param("{{name}} is {name}", {"name": "Ann"}, "{name} is Ann", id="doubled braces are literal"),
        pytest.param("}}{{", {}, "}{", id="only literal braces"),
        pytest.param("Sale today", {}, "Sale today", id="no fields at all"),
        pytest.param("{n:>4}|", {"n": "7"}, "   7|", id="a format spec on a string"),
        pytest.param("{n:.2f}", {"n": 3.14159}, "3.14", id="a format spec on a number"),
        pytest.param("Order {n}", {"n": 0}, "Order 0", id="zero is a value not a missing one"),
        pytest.param("Order {n}", {"n": 42}, "Order 42", id="an int value"),
        pytest.param("50% off, {name}", {"name": "Ann"}, "50% off, Ann", id="a literal percent"),
        pytest.param("Save {pct} today", {"pct": "50%"}, "Save 50% today", id="a value with a lone percent"),
        pytest.param("Hi %name=5%, {x}", {"x": "y"}, "Hi %name=5%, y", id="a written placeholder passes through"),
        pytest.param("Code: {first name}", {"first name": "A"}, "Code: A", id="a csv header with a space"),
        pytest.param("Привіт, {name} 🎉", {"name": "Олена"}, "Привіт, Олена 🎉", id="non-ascii text and values"),
        pytest.param("{a}\\n{b}", {"a": "x", "b": "y"}, "x\\ny", id="backslashes stay literal"),
        pytest.param('it\'s "{a}"', {"a": "'"}, "it's \"'\"", id="quotes stay literal"),
    ],
)
async def test_client_side_fields_render_into_the_text(source: str, row: dict[str, Any], text: str) -> None:
    assert await texts(source, row) == [text]


async def test_a_good_row_becomes_a_valid_wire_dict_with_the_fixed_fields() -> None:
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    when = tomorrow.astimezone(dt.timezone(dt.timedelta(hours=2)))
    [item] = await collect(
        Template("How was order {order}?"),
        [{"id": "o-1", "toPhone": PHONE, "order": "7"}],
        message_type="viber_survey",
        ttl=600,
        scheduled_sent=when,
        survey_options=("Good", "Bad"),
    )
    assert item == {
        "id": "o-1",
        "fromName": "Shop",
        "toPhone": PHONE,
        "messageType": "viber_survey",
        "text": "How was order 7?",
        "ttl": 600,
        "scheduledSent": tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "surveyOptions": ["Good", "Bad"],
    }
    assert isinstance(item, dict)
    assert Message.from_dict(item).scheduled_sent == tomorrow


@pytest.mark.parametrize(
    ("row", "n_id"),
    [
        pytest.param({"id": "mine"}, "mine", id="from the id column"),
        pytest.param({"id": 77}, "77", id="a numeric id column as text"),
        pytest.param({}, "contacts-2", id="derived from prefix and row number"),
        pytest.param({"id": ""}, "contacts-2", id="an empty id cell is derived"),
    ],
)
async def test_ids_come_from_the_id_column_or_prefix_and_row_number(row: dict[str, Any], n_id: str) -> None:
    rows = [{"toPhone": PHONE, "x": "a"}, {"toPhone": PHONE, "x": "b", **row}]
    items = await collect(Template("{x}"), rows, id_prefix="contacts")
    assert items[1]["id"] == n_id  # type: ignore[index]


async def test_custom_id_and_phone_columns_are_read() -> None:
    [item] = await collect(
        Template("{x}"), [{"ref": "r-9", "mobile": PHONE, "x": "a"}], id_field="ref", phone_field="mobile"
    )
    assert (item["id"], item["toPhone"]) == ("r-9", PHONE)  # type: ignore[index]


async def test_rows_may_come_from_an_async_iterable() -> None:
    async def rows() -> AsyncIterator[dict[str, str]]:
        for name in ("A", "B"):
            yield {"toPhone": PHONE, "name": name}

    items = [i async for i in Template("Hi {name}").messages(rows(), from_name="S", message_type="promo")]
    assert [i["text"] for i in items] == ["Hi A", "Hi B"]  # type: ignore[index]
    assert [i["id"] for i in items] == ["row-1", "row-2"]  # type: ignore[index]


# --- provider variables --------------------------------------------------------------------------


async def test_a_short_url_field_becomes_a_placeholder_and_travels_with_its_variable() -> None:
    pool = VariablePool(LocalIdAllocator(500))
    [item] = await collect(
        Template("Shipped: {link:short_url} ({site:url})"),
        [{"toPhone": PHONE, "link": "https://x.example/t/1", "site": "https://x.example/"}],
        pool=pool,
    )
    assert isinstance(item, Personalised)
    assert item.message["text"] == "Shipped: %short_url=500% (%url=501%)"
    assert item.variables == (
        Variable(500, SHORT, "https://x.example/t/1"),
        Variable(501, VariableType.URL, "https://x.example/"),
    )


async def test_the_same_value_gets_the_same_id_across_rows() -> None:
    rows = [
        {"toPhone": PHONE, "link": link} for link in ("https://a.example/", "https://b.example/", "https://a.example/")
    ]
    items = await collect(Template("{link:short_url}"), rows, pool=VariablePool(LocalIdAllocator(1)))
    assert [i.message["text"] for i in items] == ["%short_url=1%", "%short_url=2%", "%short_url=1%"]  # type: ignore[union-attr]


async def test_a_value_used_twice_in_one_text_is_listed_once() -> None:
    [item] = await collect(
        Template("{a:short_url} {b:short_url}"),
        [{"toPhone": PHONE, "a": "https://a.example/", "b": "https://a.example/"}],
        pool=VariablePool(LocalIdAllocator(1)),
    )
    assert isinstance(item, Personalised)
    assert item.variables == (Variable(1, SHORT, "https://a.example/"),)


async def test_ids_are_allocated_across_blocks_without_gaps_or_repeats() -> None:
    pool = VariablePool(LocalIdAllocator(10), block_size=3)
    rows = [{"toPhone": PHONE, "link": f"https://x.example/{i}"} for i in range(8)]
    items = await collect(Template("{link:short_url}"), rows, pool=pool)
    assert [i.variables[0].id for i in items] == list(range(10, 18))  # type: ignore[union-attr]


async def test_a_resumed_job_renders_the_same_texts_and_gives_new_values_new_ids() -> None:
    template = Template("Track {link:short_url}")
    rows = [{"toPhone": PHONE, "link": f"https://x.example/{i % 5}"} for i in range(12)]
    pool = VariablePool(block_size=4)
    first = await collect(template, rows[:7], pool=pool, id_prefix="job")
    state = json.loads(json.dumps(pool.snapshot()))

    resumed = await collect(template, rows, pool=VariablePool.restore(state), id_prefix="job")
    assert resumed[:7] == first
    fresh = await collect(
        template, [{"toPhone": PHONE, "link": "https://y.example/"}], pool=VariablePool.restore(state)
    )
    used = {v.id for i in first for v in i.variables}  # type: ignore[union-attr]
    assert fresh[0].variables[0].id not in used  # type: ignore[union-attr]


async def test_the_preview_counts_a_short_link_at_the_assumed_length() -> None:
    [item] = await collect(Template("Track {link:short_url}"), [{"toPhone": PHONE, "link": "https://x.example/"}])
    assert isinstance(item, Personalised)
    info = sms_segments(item.message["text"], values={v.id: v.value for v in item.variables})
    assert info.segments == 1
    assert info.assumed


# --- rows that cannot become messages ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "code"),
    [
        pytest.param({"link": "https://x.example/"}, "name", MISSING, id="a missing column"),
        pytest.param({"name": None, "link": "https://x.example/"}, "name", MISSING, id="a null value"),
        pytest.param({"name": "", "link": "https://x.example/"}, "name", MISSING, id="an empty cell"),
        pytest.param({"name": "  \t", "link": "https://x.example/"}, "name", MISSING, id="a blank cell"),
        pytest.param({"name": "Ann"}, "link", MISSING, id="a missing url"),
        pytest.param({"name": "Ann", "link": "  "}, "link", MISSING, id="a blank url"),
        pytest.param({"name": "Ann", "toPhone": ""}, "toPhone", MISSING, id="an empty phone"),
        pytest.param({"name": "Ann", "toPhone": None}, "toPhone", MISSING, id="a null phone"),
        pytest.param({"name": "Ann", "link": "ftp://x.example/"}, "link", "INVALID_FIELD", id="a non-http url"),
        pytest.param({"name": "Ann", "link": "x.example"}, "link", "INVALID_FIELD", id="a url without a scheme"),
        pytest.param({"name": "Ann", "link": 42}, "link", "INVALID_FIELD", id="a number for a url"),
        pytest.param({"name": "Ann", "link": ["a"]}, "link", "INVALID_FIELD", id="a list for a url"),
        pytest.param(
            {"name": "%name=3%", "link": "https://x.example/"}, "name", "INVALID_FIELD", id="a placeholder in a value"
        ),
        pytest.param(
            {"name": "A %short_url=1% B", "link": "https://x.example/"},
            "name",
            "INVALID_FIELD",
            id="an embedded placeholder",
        ),
    ],
)
async def test_a_bad_row_is_rejected_naming_the_field_and_never_sent_empty(
    row: dict[str, Any], field: str, code: str
) -> None:
    rows = [{"toPhone": PHONE, **row}, {"toPhone": PHONE, "name": "Bo", "link": "https://x.example/"}]
    items = await collect(Template("Hi {name}: {link:short_url}"), rows, id_prefix="f")
    assert rejection(items[0]) == (field, code)
    assert isinstance(items[0], Rejected)
    assert (items[0].tracking_id, items[0].row, items[0].error.tracking_id) == ("f-1", 1, "f-1")
    assert isinstance(items[1], Personalised)  # the next row is unaffected


@pytest.mark.parametrize(
    ("source", "row", "field"),
    [
        pytest.param("%name={code}%", {"code": "5"}, "code", id="a value inside a written placeholder"),
        pytest.param("%{k}=5%", {"k": "name"}, "k", id="a value naming the placeholder type"),
        pytest.param("%na{k}%", {"k": "me=5"}, "k", id="a value finishing the type and id"),
        pytest.param("{a}{b}", {"a": "%name=", "b": "1%"}, "a", id="two values that make one together"),
        pytest.param("{x}%name=5%", {"x": "X%url=1"}, "x", id="a value that swallows a written placeholder"),
        pytest.param(
            "{x} {l:short_url}", {"x": "%name=", "l": "https://a.example/"}, "x", id="a value that breaks a variable"
        ),
    ],
)
async def test_a_value_cannot_complete_or_break_a_placeholder(source: str, row: dict[str, Any], field: str) -> None:
    [item] = await collect(Template(source), [{"toPhone": PHONE, **row}])
    assert rejection(item) == (field, "INVALID_FIELD")


@pytest.mark.parametrize(
    ("source", "row"),
    [
        pytest.param("%name={code}%", {"code": "hello"}, id="a value inside a placeholder makes an invalid id"),
        pytest.param("%name={code} %", {"code": "5"}, id="a space keeps it from being a valid id"),
    ],
)
async def test_a_value_that_would_make_an_invalid_placeholder_is_rejected(source: str, row: dict[str, Any]) -> None:
    [item] = await collect(Template(source), [{"toPhone": PHONE, **row}])
    assert rejection(item) == ("code", "INVALID_FIELD")


@pytest.mark.parametrize(
    ("source", "row", "field"),
    [
        pytest.param("{n:.2f}", {"n": "abc"}, "n", id="a float spec on text"),
        pytest.param("{n:d}", {"n": 1.5}, "n", id="an int spec on a float"),
    ],
)
async def test_a_value_its_format_spec_does_not_fit_is_rejected(source: str, row: dict[str, Any], field: str) -> None:
    [item] = await collect(Template(source), [{"toPhone": PHONE, **row}])
    assert rejection(item) == (field, "INVALID_FIELD")


async def test_a_row_that_is_not_a_mapping_is_rejected_not_a_crash() -> None:
    items = await collect(Template("{x}"), [["not", "a", "row"], {"toPhone": PHONE, "x": "ok"}])  # type: ignore[list-item]
    assert isinstance(items[0], Rejected)
    assert items[1]["text"] == "ok"  # type: ignore[index]


# --- templates and arguments refused up front ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "match"),
    [
        pytest.param("Hi {name", "expected '}'", id="an unclosed brace"),
        pytest.param("Hi name}", "Single '}'", id="a stray closing brace"),
        pytest.param("Hi {}", "plain name", id="a positional field"),
        pytest.param("Hi {user.name}", "plain name", id="attribute access"),
        pytest.param("Hi {names[0]}", "plain name", id="index access"),
        pytest.param("Hi {name!r}", "conversions", id="a conversion"),
        pytest.param("Hi {name:{width}}", "nested", id="a nested field"),
        pytest.param("Hi %name=0%", "positive integer", id="a written placeholder with a bad id"),
        pytest.param("   ", "no text", id="no text"),
        pytest.param(
            "%name={l:short_url}", "runs into a field", id="a written placeholder left open before a variable"
        ),
        pytest.param("%url=1{l:short_url}", "runs into a field", id="a written placeholder that swallows a variable"),
    ],
)
def test_a_malformed_template_is_a_value_error(source: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Template(source)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"message_type": "flashcall"}, "flashcall", id="flashcall has no text"),
        pytest.param({"message_type": "sms"}, "sms", id="an unknown message type"),
        pytest.param({"scheduled_sent": dt.datetime(2030, 1, 1)}, "timezone", id="a naive schedule"),
    ],
)
def test_impossible_job_arguments_are_value_errors_before_any_row(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"from_name": "S", "message_type": "promo"} | kwargs
    with pytest.raises(ValueError, match=match):
        Template("{x}").messages([], **args)


def test_a_template_without_fields_takes_the_fast_path() -> None:
    job = Job(Template("Sale today"), "Shop", "promo", "id", "toPhone", "row", {}, None)
    calls: list[int] = []
    render = compile_renderer(job)
    render.__globals__["checked"] = lambda *args: calls.append(1)
    assert render({"toPhone": PHONE}, 1) == {
        "id": "row-1",
        "fromName": "Shop",
        "toPhone": PHONE,
        "messageType": "promo",
        "text": "Sale today",
    }
    assert calls == []


def test_fields_and_variable_fields_are_listed_once_in_order() -> None:
    template = Template("{b} {a:short_url} {b} {c:url}")
    assert template.fields == ("b", "a", "c")
    assert template.variable_fields == ("a", "c")


# --- the fast path agrees with the field-by-field path ----------------------------------------------

SOURCES = [
    "Hi {name}! 20% off order {order}: {link:short_url}",
    "{name}{order}",
    "%{name}% {order:>6} {link:url}",
    "Hi %name=4% {name} {{literal}}",
]
cells = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["%", "%name=", "1%", " ", "name=3"]), st.integers())


@pytest.mark.parametrize("source", SOURCES)
@settings(max_examples=150, deadline=None)
@given(name=cells, order=cells, link=st.sampled_from(["https://a.example/", "https://b.example/x", "", "ftp://x"]))
def test_the_fast_path_renders_exactly_what_the_checked_path_does(
    source: str, name: Any, order: Any, link: str
) -> None:
    template = Template(source)
    pool = VariablePool(LocalIdAllocator(1))
    row = {"toPhone": PHONE, "name": name, "order": order, "link": link}
    asyncio.run(pool.refill())
    # Two jobs on one pool: each row's id is fresh to its job.
    fast = compile_renderer(Job(template, "Shop", "promo", "id", "toPhone", "row", {}, pool))(row, 1)
    checked = render_checked(Job(template, "Shop", "promo", "id", "toPhone", "row", {}, pool), row, 1)
    if isinstance(checked, Rejected):
        assert isinstance(fast, Rejected)
        assert (fast.error.field, fast.error.code) == (checked.error.field, checked.error.code)
    else:
        assert fast == checked


async def test_a_readers_bad_line_in_a_rows_place_is_rejected_with_its_line_and_reason() -> None:
    from cascade_async import ValidationError

    bad = BadLine(7, ValidationError("not valid JSON", field=None, tracking_id=None, code="UNPARSEABLE", line=7))
    items = await collect(Template("Hi {name}"), [{"toPhone": PHONE, "name": "A"}, bad], id_prefix="f")
    rejected = items[1]
    assert isinstance(rejected, Rejected)
    assert (rejected.tracking_id, rejected.error.line, rejected.error.code) == ("f-2", 7, "UNPARSEABLE")
    assert "not valid JSON" in str(rejected.error)
