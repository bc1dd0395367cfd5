"""Templates through the engine: variables uploaded before use, one request per 1000 new values,
missing values, failed uploads, and resumed jobs that keep their ids; against a real sandbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cascade_async import (
    CascadeClient,
    ErrorCode,
    LocalIdAllocator,
    Message,
    MessageType,
    Personalised,
    RetryPolicy,
    Status,
    Template,
    Variable,
    VariablePool,
    VariableType,
)
from cascade_async._uploads import Uploads
from cascade_async.sandbox import Sandbox
from cascade_async.sandbox._records import Query
from cascade_async.sandbox._variables import SHORT_HOST

from .support import FakeTransport, ok_for, run_virtual

ITEMS = "/api/items"
SEND = "/api/CascadeMessage/send_message/async"
LINKED = Template("Hi {name}! Track it: {link:short_url}")


def rows(n: int, *, links: int | None = None) -> list[dict[str, str]]:
    return [
        {
            "toPhone": f"+38050{i:07d}",
            "name": f"N{i}",
            "link": f"https://shop.example/t/{i if links is None else i % links}",
        }
        for i in range(1, n + 1)
    ]


def client(sb: Sandbox, **kwargs: Any) -> CascadeClient:
    kwargs.setdefault("rate_limit", None)
    return CascadeClient(api_key="k", base_url=sb.url, **kwargs)


async def test_variables_are_at_the_sandbox_before_the_messages_that_use_them(sandbox: Sandbox) -> None:
    async with client(sandbox, batch_size=100) as c:
        report = await c.send_many(LINKED.messages(rows(250), from_name="Shop", message_type="promo"))
    assert report.ok, report.summary()
    assert sandbox.stats().statuses == {"200": 3}  # none refused as UNKNOWN_VARIABLE
    assert sandbox.inbox is not None
    seen = sandbox.inbox.messages(Query(), limit=300)
    assert len(seen) == 250
    for m in seen:
        assert m.text is not None
        assert "%short_url=" in m.text
        assert m.rendered_text is not None
        assert "%" not in m.rendered_text
        assert m.rendered_text.startswith(f"Hi N{int(m.to_phone[-7:])}! Track it: {SHORT_HOST}")


async def test_a_message_sent_before_its_variables_is_refused_by_the_sandbox(sandbox: Sandbox) -> None:
    msg = Message(id="a", from_name="S", to_phone="+380501234567", message_type=MessageType.PROMO, text="Hi %name=77%")
    async with client(sandbox, retry=RetryPolicy(max_attempts=1)) as c:
        report = await c.send_many([msg])
        assert report["a"].status is Status.REJECTED
        assert getattr(report["a"].error, "code", None) == "UNKNOWN_VARIABLE"
        assert (await c.upload_variables([Variable(77, VariableType.NAME, "Ann")])).ok
        assert (await c.send_many([msg.to_dict() | {"id": "b"}])).ok


@pytest.mark.parametrize(
    ("count", "links", "batch_size", "uploads"),
    [
        pytest.param(2500, None, 500, 3, id="a new link per row, batches of 500"),
        pytest.param(2000, None, 1000, 2, id="a new link per row, batches of 1000"),
        pytest.param(3000, 100, 500, 1, id="100 links shared by every row"),
        pytest.param(10, None, 500, 1, id="fewer values than one request"),
    ],
)
async def test_uploads_take_one_request_per_1000_distinct_values(
    sandbox: Sandbox, count: int, links: int | None, batch_size: int, uploads: int
) -> None:
    async with client(sandbox, batch_size=batch_size) as c:
        report = await c.send_many(LINKED.messages(rows(count, links=links), from_name="S", message_type="promo"))
    assert report.ok, report.summary()
    assert sandbox.route_counts[ITEMS] == uploads
    assert len(sandbox.variables) == (count if links is None else links)


async def test_ids_stay_unique_across_batches_and_the_same_value_keeps_its_id(sandbox: Sandbox) -> None:
    pool = VariablePool(LocalIdAllocator(), block_size=50)  # many blocks, many batches
    data = rows(400, links=150)
    async with client(sandbox, batch_size=64) as c:
        report = await c.send_many(LINKED.messages(data, from_name="S", message_type="promo", pool=pool))
    assert report.ok
    sent = {m["toPhone"]: m["text"].rsplit(" ", 1)[1] for m in sandbox.accepted}
    by_link: dict[str, set[str]] = {}
    for row in data:
        by_link.setdefault(row["link"], set()).add(sent[row["toPhone"]])
    assert all(len(placeholders) == 1 for placeholders in by_link.values())  # one id per link
    assert len({p for ps in by_link.values() for p in ps}) == 150  # a different id for each link


async def test_a_resumed_job_uploads_and_sends_with_the_ids_it_had(sandbox: Sandbox) -> None:
    records: list[dict[str, Any]] = []
    pool = VariablePool(block_size=10, on_block=lambda p: records.append(json.loads(json.dumps(p.changes()))))
    data = rows(35)
    first = [item async for item in LINKED.messages(data[:25], from_name="S", message_type="promo", pool=pool)]
    records.append(pool.changes())  # the job ends (or crashes after its last block record)
    resumed = VariablePool.replay(records)
    again = [item async for item in LINKED.messages(data, from_name="S", message_type="promo", pool=resumed)]
    before = {item.message["id"]: item.variables for item in first if isinstance(item, Personalised)}
    after = {item.message["id"]: item.variables for item in again if isinstance(item, Personalised)}
    assert all(after[tid] == before[tid] for tid in before)
    old_ids = {v.id for vs in before.values() for v in vs}
    new_ids = {v.id for tid, vs in after.items() if tid not in before for v in vs}
    assert not old_ids & new_ids
    async with client(sandbox) as c:
        assert (await c.send_many(again)).ok


async def test_a_crash_inside_a_block_never_reuses_its_ids_for_other_values() -> None:
    records: list[dict[str, Any]] = []
    pool = VariablePool(block_size=10, on_block=lambda p: records.append(p.changes()))
    used = [await pool.variable(VariableType.URL, f"https://a.example/{i}") for i in range(15)]
    # crash: the five assignments of the second block were never recorded
    resumed = VariablePool.replay(records)
    fresh = [await resumed.variable(VariableType.URL, f"https://b.example/{i}") for i in range(15)]
    assert not {v.id for v in used} & {v.id for v in fresh}
    assert [await resumed.variable(VariableType.URL, f"https://a.example/{i}") for i in range(10)] == used[:10]


async def test_missing_values_are_rejected_per_recipient_and_the_rest_are_sent(sandbox: Sandbox) -> None:
    data = rows(5)
    data[1]["name"] = ""
    del data[3]["link"]
    async with client(sandbox) as c:
        report = await c.send_many(LINKED.messages(data, from_name="S", message_type="promo", id_prefix="job"))
    assert [tid for tid, r in report.items() if not r.ok] == ["job-2", "job-4"]
    for tid, field in (("job-2", "name"), ("job-4", "link")):
        err = report[tid].error
        assert getattr(err, "code", None) == ErrorCode.MISSING_VARIABLE
        assert getattr(err, "field", None) == field
    assert sandbox.stats().accepted_messages == 3
    assert all(m["text"].startswith("Hi N") and "None" not in m["text"] for m in sandbox.accepted)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        pytest.param(400, Status.REJECTED, id="a refused upload rejects its messages"),
        pytest.param(500, Status.FAILED, id="an upload that keeps failing leaves them failed for a resend"),
    ],
)
def test_messages_whose_variables_failed_to_upload_are_never_sent(status: int, outcome: Status) -> None:
    from cascade_async import RawResponse

    def respond(body: Any, n: int) -> RawResponse:
        if isinstance(body, dict):  # an /api/items body
            return RawResponse(status, {}, b'{"error": {"code": "NOPE", "message": "no"}}')
        return ok_for(body)

    transport = FakeTransport(respond)

    async def main() -> dict[str, Status]:
        policy = RetryPolicy(max_attempts=2, initial_wait=0.01)
        async with CascadeClient(api_key="k", transport=transport, retry=policy, rate_limit=None) as c:
            items: list[Any] = [
                Message(id="plain", from_name="S", to_phone="+380501234567", message_type=MessageType.PROMO, text="x")
            ]
            items += [item async for item in LINKED.messages(rows(3), from_name="S", message_type="promo")]
            report = await c.send_many(items)
        return {tid: r.status for tid, r in report.items()}

    got = run_virtual(main())
    assert got == {"plain": Status.ACCEPTED, "row-1": outcome, "row-2": outcome, "row-3": outcome}
    sent = [m["id"] for call in transport.calls if isinstance(call[3], list) for m in call[3]]
    assert sent == ["plain"]
    assert sum(1 for call in transport.calls if call[1].endswith(ITEMS)) == (1 if status == 400 else 2)


async def test_upload_variables_batches_by_1000_and_reports(sandbox: Sandbox) -> None:
    variables = [Variable(i, VariableType.NAME, f"v{i}") for i in range(1, 2502)]
    async with client(sandbox) as c:
        report = await c.upload_variables([*variables, variables[0]])
    assert (report.uploaded, report.requests, report.ok) == (2501, 3, True)
    assert sandbox.route_counts[ITEMS] == 3
    assert sandbox.variables.get("X-Authorization-Key:k", 2501) == ("name", "v2501")


def test_a_trickle_of_values_waits_at_most_linger_for_company() -> None:
    transport = FakeTransport(lambda body, n: ok_for(body) if isinstance(body, list) else ok_for([]))

    async def main() -> float:
        async with CascadeClient(api_key="k", transport=transport, rate_limit=None, linger=0.05) as c:
            uploads = Uploads(c._sender, linger=0.05)
            msg = Message(
                id="a", from_name="S", to_phone="+380501234567", message_type=MessageType.PROMO, text="%url=5%"
            )
            uploads.register([msg], [(Variable(5, VariableType.URL, "https://a.example"),)])
            start = asyncio.get_running_loop().time()
            assert await uploads.ensure([msg]) == ([msg], [])
            return asyncio.get_running_loop().time() - start

    assert run_virtual(main()) == pytest.approx(0.05)
    assert len(transport.calls) == 1


def test_batches_wait_for_a_full_upload_while_values_keep_coming() -> None:
    transport = FakeTransport(lambda body, n: ok_for(body) if isinstance(body, list) else ok_for([]))

    async def trickle() -> Any:
        for row in rows(1000):
            await asyncio.sleep(0)  # the batch tasks run between rows
            yield row

    async def main() -> bool:
        async with CascadeClient(
            api_key="k", transport=transport, rate_limit=None, batch_size=100, max_in_flight=16
        ) as c:
            report = await c.send_many(LINKED.messages(trickle(), from_name="S", message_type="promo"))
        return report.ok

    assert run_virtual(main())
    uploads = [call for call in transport.calls if call[1].endswith(ITEMS)]
    assert [len(call[3]["variables"]) for call in uploads] == [1000]
    assert transport.calls[0][1].endswith(ITEMS)  # before any message


async def test_an_upload_is_retried_like_a_batch_and_the_messages_then_go(sandbox: Sandbox) -> None:
    sandbox.script(["503", "429"])  # the first two requests: both uploads
    policy = RetryPolicy(max_attempts=3, initial_wait=0.01, max_retry_after=0.01)
    async with client(sandbox, retry=policy) as c:
        report = await c.send_many(LINKED.messages(rows(20), from_name="S", message_type="promo"))
    assert report.ok, report.summary()
    assert sandbox.route_counts[ITEMS] == 3
    assert sandbox.stats().statuses == {"200": 1}


class _Keeper:
    """A recorder that keeps the variables it is told of, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.kept: list[int] = []
        self.sent: list[str] = []

    def variables_uploading(self, variables: Any) -> None:
        if self.fail:
            raise OSError("disk full")
        self.kept.extend(v.id for v in variables)

    def dispatched(self, batch: Any) -> None:
        self.sent.extend(m.id for m in batch)

    def not_sent(self, batch: Any) -> None:
        pass

    def completed(self, results: Any) -> None:
        pass


async def test_a_recorder_is_told_of_each_upload_before_it_leaves_and_can_stop_the_job(sandbox: Sandbox) -> None:
    keeper = _Keeper()
    async with client(sandbox) as c:
        items = [item async for item in LINKED.messages(rows(30), from_name="S", message_type="promo")]
        async with c.stream(items, recorder=keeper) as results:
            assert len([r async for r in results]) == 30
    assert sorted(keeper.kept) == sorted(
        v.id for item in items if isinstance(item, Personalised) for v in item.variables
    )
    failing = _Keeper(fail=True)
    sandbox.reset()
    async with client(sandbox) as c, c.stream(items, recorder=failing) as results:
        with pytest.raises(OSError, match="disk full"):
            async for _ in results:
                pass
    assert failing.sent == []
    assert sandbox.route_counts[ITEMS] == 0
