"""Isolating the bad messages of a batch refused as a whole: cheap, and never above the cap."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cascade_async import BadRequestError, ErrorCode, RawResponse, Result, Status

from .support import FakeTransport, error, make, msg, ok_for, run_virtual


def run(t: FakeTransport, source: list[dict[str, Any]], **kw: Any) -> dict[str, Result]:
    async def main() -> list[Result]:
        async with make(t, batch_size=len(source), **kw) as c:
            return [r async for r in c.stream(source)]

    return {r.tracking_id: r for r in run_virtual(main())}


def unregistered_sender(messages: list[dict[str, Any]], n: int) -> RawResponse:
    if any(m["fromName"] == "Nobody" for m in messages):
        return error(400, "SENDER_NOT_REGISTERED", "fromName")
    return ok_for(messages)


def bad_phones(messages: list[dict[str, Any]], n: int) -> RawResponse:
    if any(m["toPhone"].startswith("+999") for m in messages):
        return error(400, "INVALID_PHONE", "toPhone")
    return ok_for(messages)


@pytest.mark.parametrize("n", [2, 100, 500])
def test_a_batch_whose_messages_share_the_offending_value_costs_at_most_three_requests(n: int) -> None:
    t = FakeTransport(unregistered_sender)
    by_id = run(t, [msg(i, fromName="Nobody") for i in range(n)])
    assert len(t.calls) <= 3
    assert all(r.status is Status.REJECTED for r in by_id.values())
    err = by_id["m0"].error
    assert isinstance(err, BadRequestError)
    assert err.code == "SENDER_NOT_REGISTERED"


@pytest.mark.parametrize(
    ("n", "bad"), [(100, {7}), (256, {5, 77, 78, 200}), (500, {0, 499}), (64, set(range(0, 64, 9)))]
)
def test_k_bad_messages_among_n_cost_at_most_1_plus_2k_log2_n_requests(n: int, bad: set[int]) -> None:
    t = FakeTransport(bad_phones)
    source = [msg(i, toPhone=f"+9990{i:07d}" if i in bad else f"+38050{i:07d}") for i in range(n)]
    by_id = run(t, source, max_isolation_requests=10_000)
    assert {tid for tid, r in by_id.items() if r.status is Status.REJECTED} == {f"m{i}" for i in bad}
    assert all(r.ok for tid, r in by_id.items() if int(tid[1:]) not in bad)
    assert len(t.calls) <= 1 + 2 * len(bad) * math.ceil(math.log2(n))


def test_when_the_cap_runs_out_the_rest_end_failed_not_isolated_and_resendable() -> None:
    t = FakeTransport(bad_phones)
    bad = set(range(0, 200, 7))
    source = [msg(i, toPhone=f"+9990{i:07d}" if i in bad else f"+38050{i:07d}") for i in range(200)]
    by_id = run(t, source, max_isolation_requests=20)
    assert len(t.calls) <= 1 + 20
    not_isolated = [r for r in by_id.values() if r.error is not None and r.error.code == ErrorCode.NOT_ISOLATED]
    assert not_isolated
    assert all(r.status is Status.FAILED for r in not_isolated)
    assert len(by_id) == 200
    rejected = {tid for tid, r in by_id.items() if r.status is Status.REJECTED}
    assert rejected <= {f"m{i}" for i in bad}  # nothing good is ever called bad
