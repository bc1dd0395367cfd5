from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from cascade_async import (
    LocalIdAllocator,
    Placeholder,
    RedisIdAllocator,
    TransportError,
    ValidationError,
    Variable,
    VariablePool,
    VariableType,
    check_placeholders,
    find_placeholders,
    variable_batches,
)

NAME, URL, SHORT = VariableType.NAME, VariableType.URL, VariableType.SHORT_URL


# --- Variable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vid", "kind", "value"),
    [
        pytest.param(1, NAME, "John", id="a name"),
        pytest.param(2, NAME, "Олена <3", id="a less-than sign that opens no tag"),
        pytest.param(3, NAME, "Tom & Jerry", id="an ampersand that is no character reference"),
        pytest.param(4, URL, "https://shop.example/o/1?x=%20", id="an https url with percent-encoding"),
        pytest.param(5, SHORT, "http://shop.example/", id="a plain http url is allowed"),
        pytest.param(2**53 - 1, NAME, "x", id="the largest id"),
    ],
)
def test_valid_variables_are_accepted(vid: int, kind: VariableType, value: str) -> None:
    var = Variable(vid, kind, value)
    assert var.placeholder == f"%{kind.value}={vid}%"


@pytest.mark.parametrize(
    ("vid", "kind", "value", "field"),
    [
        pytest.param(0, NAME, "John", "id", id="a zero id"),
        pytest.param(-3, NAME, "John", "id", id="a negative id"),
        pytest.param(True, NAME, "John", "id", id="a bool id"),
        pytest.param("7", NAME, "John", "id", id="a string id"),
        pytest.param(2**53, NAME, "John", "id", id="an id past 2**53 - 1"),
        pytest.param(1, "phone", "John", "type", id="an unknown type"),
        pytest.param(1, NAME, "", "value", id="an empty value"),
        pytest.param(1, NAME, "   ", "value", id="a blank value"),
        pytest.param(1, NAME, "<b>John</b>", "value", id="an html tag in a name"),
        pytest.param(1, NAME, "John&nbsp;Smith", "value", id="an html entity in a name"),
        pytest.param(1, NAME, "John\x00", "value", id="a control character in a name"),
        pytest.param(1, NAME, "%name=2%", "value", id="a placeholder in a name"),
        pytest.param(1, URL, "ftp://shop.example/", "value", id="a non-http scheme"),
        pytest.param(1, URL, "shop.example/o/1", "value", id="a url without a scheme"),
        pytest.param(1, SHORT, "https://", "value", id="a url without a host"),
        pytest.param(1, URL, "https://shop.example/a b", "value", id="a url with a space"),
        pytest.param(1, URL, "https://[::1/", "value", id="a url urllib cannot parse"),
        pytest.param(1, SHORT, "https://x.example/%url=3%", "value", id="a placeholder in a url"),
        pytest.param(1, URL, 42, "value", id="a non-string value"),
    ],
)
def test_invalid_variables_are_refused_naming_the_field(vid: Any, kind: Any, value: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Variable(vid, kind, value)
    assert info.value.field == field
    assert info.value.code == "INVALID_FIELD"


def test_a_type_given_as_a_string_becomes_the_enum() -> None:
    assert Variable(1, "short_url", "https://x.example/").type is SHORT  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "https"),
    [
        pytest.param("https://x.example/", True, id="https"),
        pytest.param("HTTPS://x.example/", True, id="upper-case scheme"),
        pytest.param("http://x.example/", False, id="http is flagged"),
    ],
)
def test_the_https_flag_marks_urls_the_provider_advises_against(value: str, https: bool) -> None:
    assert Variable(1, URL, value).https is https


# --- placeholders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("50% off everything", id="a lone percent"),
        pytest.param("50% off, 20% more", id="two literal percents"),
        pytest.param("100%", id="a trailing percent"),
        pytest.param("%name%", id="no equals sign"),
        pytest.param("%phone=3%", id="an unknown type is literal"),
        pytest.param("Hi %name=1%, see %short_url=22% or %url=3%", id="valid placeholders"),
        pytest.param("%name= no closing percent", id="an unclosed placeholder is literal"),
    ],
)
def test_texts_with_literal_percents_and_valid_placeholders_pass(text: str) -> None:
    check_placeholders(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Hi %name=0%", id="a zero id"),
        pytest.param("Hi %name=-1%", id="a negative id"),
        pytest.param("Hi %name=%", id="an empty id"),
        pytest.param("Hi %name=abc%", id="a word for an id"),
        pytest.param("Hi %url=1.5%", id="a fractional id"),
        pytest.param("Hi %short_url=07%", id="leading zeros"),
        pytest.param("Hi %name= 1%", id="a space in the id"),
        pytest.param("Hi %name=\u0661%", id="non-ascii digits"),
        pytest.param("50% off %name=x%", id="a bad placeholder after a literal percent"),
    ],
)
def test_a_placeholder_without_a_positive_integer_id_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_placeholders(text, field="fallback.text", tracking_id="m-1")
    assert info.value.field == "fallback.text"
    assert info.value.tracking_id == "m-1"


def test_find_placeholders_lists_type_id_and_position_in_order() -> None:
    text = "Hi %name=1%, 50% off: %short_url=22%"
    found = find_placeholders(text)
    assert found == [
        Placeholder(NAME, 1, 3, 11),
        Placeholder(SHORT, 22, text.index("%short"), len(text)),
    ]


def test_find_placeholders_refuses_an_invalid_one() -> None:
    with pytest.raises(ValidationError):
        find_placeholders("%url=x%")


# --- upload bodies ----------------------------------------------------------------------------


def test_upload_bodies_have_the_documented_shape() -> None:
    body = next(variable_batches([Variable(1, NAME, "John"), Variable(4, SHORT, "https://x.example/")]))
    assert json.loads(body) == {
        "variables": [
            {"id": 1, "type": "name", "value": "John"},
            {"id": 4, "type": "short_url", "value": "https://x.example/"},
        ]
    }


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [
        pytest.param(0, 1000, [], id="nothing to upload sends nothing"),
        pytest.param(1000, 1000, [1000], id="exactly one full batch"),
        pytest.param(1001, 1000, [1000, 1], id="one over a batch"),
        pytest.param(5, 2, [2, 2, 1], id="small batches keep order"),
    ],
)
def test_uploads_are_batched_in_order(count: int, size: int, sizes: list[int]) -> None:
    variables = (Variable(i, NAME, f"v{i}") for i in range(1, count + 1))
    bodies = [json.loads(b)["variables"] for b in variable_batches(variables, size)]
    assert [len(b) for b in bodies] == sizes
    assert [v["id"] for b in bodies for v in b] == list(range(1, count + 1))


@pytest.mark.parametrize("size", [pytest.param(0, id="zero"), pytest.param(10_001, id="too large")])
def test_an_impossible_batch_size_is_a_value_error(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        next(variable_batches([], size))


# --- id allocation ------------------------------------------------------------------------------


class FakeIncrBy:
    """A tiny in-process stand-in for the single Redis command used, ``INCRBY key amount``.

    Not a Redis: the shared-Redis behaviour is tested against a real server elsewhere.
    """

    def __init__(self, start: int = 0) -> None:
        self.values: dict[str, int] = {}
        self.start = start
        self.calls: list[tuple[str, int]] = []

    async def incrby(self, name: str, amount: int = 1) -> int:
        self.calls.append((name, amount))
        self.values[name] = self.values.get(name, self.start) + amount
        return self.values[name]


class RedisLibraryError(Exception):
    """Like redis.exceptions.ConnectionError: not a subclass of the builtin ConnectionError."""


class DownRedis:
    async def incrby(self, name: str, amount: int = 1) -> int:
        raise RedisLibraryError("connection refused")


class SlowRedis:
    async def incrby(self, name: str, amount: int = 1) -> int:
        await asyncio.sleep(10)
        return amount


async def test_local_blocks_are_consecutive_and_never_overlap() -> None:
    alloc = LocalIdAllocator(5_000)
    a, b = await alloc.allocate(3), await alloc.allocate(2)
    assert (list(a), list(b)) == ([5_000, 5_001, 5_002], [5_003, 5_004])


async def test_local_ranges_start_at_a_random_base_above_2_to_the_32() -> None:
    first = [(await LocalIdAllocator().allocate(1))[0] for _ in range(20)]
    assert all(2**32 <= i < 2**48 for i in first)
    assert len(set(first)) == 20


async def test_a_local_range_that_is_used_up_raises_instead_of_wrapping() -> None:
    alloc = LocalIdAllocator(10, end=12)
    await alloc.allocate(2)
    with pytest.raises(OverflowError):
        await alloc.allocate(1)


async def test_redis_blocks_come_from_incrby_on_the_shared_key() -> None:
    redis = FakeIncrBy()
    one, two = RedisIdAllocator(redis, key="k"), RedisIdAllocator(redis, key="k")
    a, b = await one.allocate(1000), await two.allocate(10)
    assert (a, b) == (range(1, 1001), range(1001, 1011))
    assert redis.calls == [("k", 1000), ("k", 10)]


async def test_a_redis_key_set_below_zero_is_refused_not_turned_into_ids_of_zero_or_less() -> None:
    redis = FakeIncrBy(start=-5)
    with pytest.raises(ValueError, match="below zero"):
        await RedisIdAllocator(redis, key="k").allocate(3)


@pytest.mark.parametrize(
    "redis",
    [pytest.param(DownRedis(), id="refused"), pytest.param(SlowRedis(), id="timed out")],
)
async def test_redis_being_down_is_a_transport_error_not_a_guess(redis: Any) -> None:
    with pytest.raises(TransportError, match="Redis"):
        await RedisIdAllocator(redis, timeout=0.01).allocate(10)


def test_from_url_without_redis_py_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match="pip install"):
        RedisIdAllocator.from_url("redis://localhost:6379/0")


async def test_the_same_value_gets_the_same_id_and_types_are_kept_apart() -> None:
    pool = VariablePool(LocalIdAllocator(100))
    a = await pool.variable(SHORT, "https://x.example/1")
    b = await pool.variable(SHORT, "https://x.example/1")
    c = await pool.variable(URL, "https://x.example/1")
    assert a is b
    assert c.id != a.id
    assert len(pool) == 2


async def test_ids_are_taken_in_blocks_across_many_values() -> None:
    redis = FakeIncrBy()
    pool = VariablePool(RedisIdAllocator(redis), block_size=3)
    ids = [(await pool.variable(NAME, f"v{i}")).id for i in range(7)]
    assert ids == [1, 2, 3, 4, 5, 6, 7]
    assert [amount for _, amount in redis.calls] == [3, 3, 3]


async def test_get_answers_without_waiting_until_the_block_is_spent() -> None:
    pool = VariablePool(LocalIdAllocator(1), block_size=1)
    assert pool.get(NAME, "a") is None
    await pool.refill()
    assert pool.get(NAME, "a") == Variable(1, NAME, "a")
    assert pool.get(NAME, "a") == Variable(1, NAME, "a")
    assert pool.get(NAME, "b") is None


async def test_an_invalid_value_takes_no_id() -> None:
    pool = VariablePool(LocalIdAllocator(1))
    with pytest.raises(ValidationError):
        await pool.variable(URL, "not a url")
    assert (await pool.variable(URL, "https://x.example/")).id == 1


@pytest.mark.parametrize(
    "make_allocator",
    [
        pytest.param(lambda redis: LocalIdAllocator(), id="local"),
        pytest.param(lambda redis: RedisIdAllocator(redis), id="redis"),
    ],
)
async def test_a_resumed_job_keeps_its_ids_and_hands_out_none_twice(make_allocator: Any) -> None:
    redis = FakeIncrBy()
    pool = VariablePool(make_allocator(redis), block_size=4)
    before = [await pool.variable(SHORT, f"https://x.example/{i}") for i in range(6)]
    state = json.loads(json.dumps(pool.snapshot()))  # what the journal stores

    resumed = VariablePool.restore(state, redis=redis)
    again = [await resumed.variable(SHORT, f"https://x.example/{i}") for i in range(6)]
    fresh = [await resumed.variable(SHORT, f"https://x.example/new{i}") for i in range(6)]

    assert again == before
    assert not {v.id for v in fresh} & {v.id for v in before}
    assert len({v.id for v in fresh}) == 6


def test_a_redis_job_cannot_be_resumed_without_redis() -> None:
    state = VariablePool(RedisIdAllocator(FakeIncrBy())).snapshot()
    with pytest.raises(ValueError, match="redis"):
        VariablePool.restore(state)


def test_an_unknown_snapshot_version_is_refused() -> None:
    state = VariablePool().snapshot() | {"version": 99}
    with pytest.raises(ValueError, match="version"):
        VariablePool.restore(state)
