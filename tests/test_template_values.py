"""What a template does with values that are not plain text, and with hostile ones."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_async import ErrorCode, Personalised, Rejected, Template, ValidationError, Variable, VariableType
from cascade_async._variables import _problem

from .test_templates import PHONE, collect

INVALID, MISSING = ErrorCode.INVALID_FIELD, ErrorCode.MISSING_VARIABLE


@pytest.mark.parametrize(
    ("source", "value", "text"),
    [
        pytest.param("{v}", 3, "3", id="an int"),
        pytest.param("{v}", 0, "0", id="zero is a value"),
        pytest.param("{v}", 19.5, "19.5", id="a float as JSON writes it"),
        pytest.param("{v}", 1.0, "1.0", id="a whole float keeps its .0"),
        pytest.param("{v:.2f}", 19.5, "19.50", id="a number with a spec"),
        pytest.param("{v:.2f}", Decimal("2.5"), "2.50", id="a Decimal with a spec"),
        pytest.param("{v:,}", 1234567, "1,234,567", id="thousands"),
        pytest.param("{v:>5}", "ab", "   ab", id="a string with a spec"),
        pytest.param("{v}", "Олена 🎉", "Олена 🎉", id="unicode"),
    ],
)
async def test_text_and_finite_numbers_render(source: str, value: Any, text: str) -> None:
    [item] = await collect(Template(source), [{"toPhone": PHONE, "v": value}])
    assert isinstance(item, dict), item
    assert item["text"] == text


@pytest.mark.parametrize(
    ("source", "value", "code", "words"),
    [
        pytest.param("{v}", True, INVALID, "not bool", id="a bool would read True"),
        pytest.param("{v}", False, INVALID, "not bool", id="False is no blank"),
        pytest.param("{v}", None, MISSING, "no value", id="None is missing"),
        pytest.param("{v}", math.nan, INVALID, "finite", id="NaN"),
        pytest.param("{v}", -math.inf, INVALID, "finite", id="infinity"),
        pytest.param("{v}", Decimal("sNaN"), INVALID, "finite", id="a signalling NaN Decimal"),
        pytest.param("{v}", [1, 2], INVALID, "not list", id="a list"),
        pytest.param("{v}", {"a": 1}, INVALID, "not dict", id="a dict"),
        pytest.param("{v}", b"x", INVALID, "not bytes", id="bytes"),
        pytest.param("{v:.2f}", "abc", INVALID, "cannot format", id="a spec that does not fit"),
        pytest.param("{v}", "%name=1%", INVALID, "placeholder", id="a placeholder in a value"),
        pytest.param("%{v}=1%", "url", INVALID, "placeholder", id="a value completing a placeholder"),
        pytest.param("{v:%>8}%", "name=1", INVALID, "placeholder", id="a fill character that makes a placeholder"),
        pytest.param("{v:.0%}", 0.5, None, None, id="a percentage is no placeholder"),
    ],
)
async def test_other_values_are_rejected_per_recipient_naming_the_field(
    source: str, value: Any, code: str | None, words: str | None
) -> None:
    [item] = await collect(Template("x" + source), [{"toPhone": PHONE, "v": value}])
    if code is None:
        assert not isinstance(item, Rejected), item.error
        return
    assert isinstance(item, Rejected), item
    assert (item.error.field, item.error.code) == ("v", code)
    assert words is not None
    assert words in str(item.error)


@pytest.mark.parametrize(
    ("link", "ok"),
    [
        pytest.param("https://shop.example/t/1", True, id="https"),
        pytest.param("HTTP://SHOP.EXAMPLE/", True, id="scheme in capitals"),
        pytest.param("https://[::1]:8443/x", True, id="IPv6 and a port"),
        pytest.param("https://shop.example/" + "a" * 100_000, True, id="a huge path"),
        pytest.param("http\u017f://shop.example/", False, id="a long s is no s"),
        pytest.param("https://shop.example/ x", False, id="a space after a known start"),
        pytest.param("https://shop.example/\u2028", False, id="a line separator"),
        pytest.param("https://shop.example/%url=1%", False, id="a placeholder in the path"),
        pytest.param("https://shop.example/<b>", True, id="angle brackets are fine in a URL"),
        pytest.param("javascript://shop.example/", False, id="another scheme"),
        pytest.param("https:///x", False, id="no host"),
        pytest.param("https://a:b:c/", False, id="a bad port"),
        pytest.param(" https://shop.example/", False, id="a leading space"),
    ],
)
async def test_a_link_is_checked_for_each_recipient(link: str, ok: bool) -> None:
    template = Template("Hi {name} {link:short_url}")
    first = {"toPhone": PHONE, "name": "A", "link": "https://shop.example/t/0"}  # its start is then known
    items = await collect(template, [first, {"toPhone": PHONE, "name": "B", "link": link}])
    assert isinstance(items[0], Personalised)
    if ok:
        assert isinstance(items[1], Personalised), items[1]
    else:
        assert isinstance(items[1], Rejected)
        assert (items[1].error.field, items[1].error.code) == ("link", INVALID)
    # In blocks (as client.stream() reads a template), the generated code takes new ids inline.
    rows = [first, {"toPhone": PHONE, "name": "B", "link": link}, {**first, "link": link}]
    [(chunk, fresh)] = [c async for c in template.messages(rows, from_name="S", message_type="promo").blocks(10)]
    assert fresh is not None
    handed = [value for run in fresh for value in run.values]
    if ok:
        assert [type(item) for item in chunk] == [dict, dict, dict]
        assert handed == [first["link"], link]
    else:
        assert [type(item) for item in chunk] == [dict, Rejected, Rejected]
        assert all(item.error.field == "link" for item in chunk[1:])  # type: ignore[union-attr]
        assert handed == [first["link"]]  # a value refused gets no id


async def test_an_int_too_long_to_print_is_that_recipients_problem() -> None:
    [item] = await collect(Template("{v}"), [{"toPhone": PHONE, "v": 10**5000}])
    if isinstance(item, Rejected):  # the interpreter's int_max_str_digits limit
        assert (item.error.field, item.error.code) == ("v", INVALID)
    else:
        assert item["text"] == str(10**5000)  # type: ignore[index]


def test_a_huge_name_value_is_checked_without_trouble() -> None:
    assert Variable(1, VariableType.NAME, "Ann " * 250_000).value.startswith("Ann")
    with pytest.raises(ValidationError, match="HTML"):
        Variable(1, VariableType.NAME, "a" * 500_000 + "<script>")


urls = st.one_of(
    st.text(max_size=30),
    st.builds(
        "".join,
        st.lists(
            st.sampled_from(
                [
                    "http",
                    "https",
                    "HTTPS",
                    "s",
                    "://",
                    "/",
                    "?",
                    "#",
                    "@",
                    ":",
                    "8",
                    "[",
                    "::1",
                    "]",
                    "a.b",
                    " ",
                    "%",
                    "url=1",
                    "\x00",
                    "\u017f",
                    "é",
                ]
            ),
            max_size=10,
        ),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(urls, min_size=1, max_size=6))
def test_the_remembered_url_starts_accept_exactly_what_the_full_check_accepts(values: list[str]) -> None:
    for value in ["https://a.b/", "http://a.b/", *values]:
        for kind in (VariableType.URL, VariableType.SHORT_URL):
            full = _problem(kind, value) is None
            try:
                Variable(1, kind, value)
                built = True
            except ValidationError:
                built = False
            assert built == full, value
