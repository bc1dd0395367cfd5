"""The sandbox keeps the contract, over real sockets."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import aiohttp
import pytest

from cascade_async import CascadeClient, Route, Status
from cascade_async.sandbox import Sandbox

from .test_models import DOCUMENTED, DOCUMENTED_IDS

KEY = {"X-Authorization-Key": "test-key"}


async def post(
    sb: Sandbox,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    route: Route = Route.CASCADE,
    raw: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    hdrs = {"Content-Type": "application/json", **(KEY if headers is None else headers)}
    data = raw if raw is not None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as s, s.post(sb.url + route.value, data=data, headers=hdrs) as resp:
        text = await resp.read()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return resp.status, parsed, dict(resp.headers)


def m(**over: Any) -> dict[str, Any]:
    d = {"id": "a1", "fromName": "Shop", "toPhone": "+380501234567", "messageType": "promo", "text": "Hi"}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("route", list(Route), ids=lambda r: r.name)
async def test_accepts_and_echoes_tracking_ids(sandbox: Sandbox, route: Route) -> None:
    status, body, _ = await post(sandbox, [m(id="x1"), m(id="x2")], route=route)
    assert status == 200
    assert [b["trackinId"] for b in body] == ["x1", "x2"]
    assert all(len(b["messageId"]) == 36 for b in body)
    assert sandbox.counts == {"x1": 1, "x2": 1}


@pytest.mark.parametrize("header", ["X-Authorization-Key", "X-Viber-Auth-Token", "X-Tg-Bot-Key"])
async def test_any_one_auth_header_is_enough(sandbox: Sandbox, header: str) -> None:
    assert (await post(sandbox, [m()], headers={header: "v"}))[0] == 200


async def test_401_without_credentials(sandbox: Sandbox) -> None:
    status, body, _ = await post(sandbox, [m()], headers={})
    assert status == 401
    assert body["error"]["code"] == "UNAUTHORIZED"
    assert sandbox.counts == {}


RULES = [
    pytest.param([m(id="")], "INVALID_ID", "id", id="id-empty"),
    pytest.param([m(id="x" * 256)], "INVALID_ID", "id", id="id-too-long"),
    pytest.param([m(fromName=None)], "MISSING_FIELD", "fromName", id="from-missing"),
    pytest.param([m(toPhone="380501234567")], "INVALID_PHONE", "toPhone", id="phone-no-plus"),
    pytest.param([m(toPhone="0501234567")], "INVALID_PHONE", "toPhone", id="phone-national"),
    pytest.param([m(messageType="sms")], "INVALID_MESSAGE_TYPE", "messageType", id="type"),
    pytest.param([m(text=None)], "MISSING_FIELD", "text", id="text-missing"),
    pytest.param([m(messageType="viber_survey")], "INVALID_SURVEY", "surveyOptions", id="survey-no-options"),
    pytest.param(
        [m(messageType="viber_survey", surveyOptions=list("abcdef"))], "INVALID_SURVEY", "surveyOptions", id="survey-6"
    ),
    pytest.param(
        [m(messageType="viber_survey", surveyOptions=["a", "b"], text="x" * 86)],
        "INVALID_SURVEY",
        "text",
        id="survey-text",
    ),
    pytest.param([m(ttl=0)], "INVALID_TTL", "ttl", id="ttl-zero"),
    pytest.param([m(ttl="60")], "INVALID_TTL", "ttl", id="ttl-string"),
    pytest.param([m(scheduledSent="2025-01-25T10:00:00")], "INVALID_DATE", "scheduledSent", id="naive-date"),
    pytest.param(
        [m(scheduledSent=(dt.datetime.now(dt.UTC) + dt.timedelta(days=40)).isoformat())],
        "INVALID_DATE",
        "scheduledSent",
        id="too-far",
    ),
    pytest.param([], "INVALID_BATCH_SIZE", None, id="empty-array"),
    pytest.param([m(id=f"i{i}") for i in range(1001)], "INVALID_BATCH_SIZE", None, id="1001"),
    pytest.param({"id": "x"}, "INVALID_REQUEST", None, id="not-an-array"),
    pytest.param([m(), "x"], "INVALID_REQUEST", None, id="array-of-junk"),
]


@pytest.mark.parametrize(("body", "code", "field"), RULES)
async def test_each_documented_rule_gives_the_documented_error(
    sandbox: Sandbox, body: Any, code: str, field: str | None
) -> None:
    status, answer, _ = await post(sandbox, body)
    assert status == 400
    assert answer["error"]["code"] == code
    assert answer["error"].get("field") == field
    assert answer["error"]["message"]
    assert sandbox.counts == {}


async def test_not_json_and_wrong_content_type(sandbox: Sandbox) -> None:
    assert (await post(sandbox, None, raw=b"{nope"))[0] == 400
    async with (
        aiohttp.ClientSession() as s,
        s.post(sandbox.url + Route.CASCADE.value, data=b"[]", headers={**KEY, "Content-Type": "text/plain"}) as r,
    ):
        assert r.status == 415


@pytest.mark.parametrize("doc", DOCUMENTED, ids=DOCUMENTED_IDS)
async def test_documented_examples_are_accepted_unchanged(sandbox: Sandbox, doc: str) -> None:
    status, body, _ = await post(sandbox, None, raw=doc.encode())
    assert status == 200
    assert [b["trackinId"] for b in body] == [x["id"] for x in json.loads(doc)]


async def test_scripted_faults_then_normal_service() -> None:
    async with Sandbox(faults=["429:2", "503", "malformed"]) as sb:
        s1, _, h1 = await post(sb, [m()])
        s2, _, _ = await post(sb, [m()])
        s3, b3, _ = await post(sb, [m()])
        s4, _, _ = await post(sb, [m()])
    assert (s1, h1["Retry-After"], s2, s3, s4) == (429, "2", 503, 200, 200)
    assert isinstance(b3, bytes)


async def test_server_side_rate_limit_answers_429() -> None:
    async with Sandbox(rate_limit=1, rate_burst=2) as sb:
        statuses = [(await post(sb, [m(id=f"r{i}")]))[0] for i in range(4)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]


async def test_reject_rules_and_stats_endpoint() -> None:
    async with Sandbox(reject_senders={"Spammer"}, reject_prefixes=["+7"]) as sb:
        assert (await post(sb, [m(fromName="Spammer")]))[1]["error"]["code"] == "SENDER_NOT_ALLOWED"
        assert (await post(sb, [m(toPhone="+79161234567")]))[1]["error"]["field"] == "toPhone"
        await post(sb, [m(id="ok")])
        async with aiohttp.ClientSession() as s, s.get(sb.url + "/sandbox/stats") as r:
            stats = await r.json()
    assert stats["accepted_messages"] == 1
    assert stats["requests"] == 3
    assert stats["statuses"] == {"400": 2, "200": 1}


def test_unknown_fault_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sandbox fault"):
        Sandbox(faults=["418"])


def test_binds_loopback_by_default() -> None:
    assert Sandbox().host == "127.0.0.1"


# --- the client against the real server ----------------------------------------------------


async def test_bulk_job_is_delivered_exactly_once(sandbox: Sandbox) -> None:
    sandbox.script(["500", "429:0", "503"])
    source = [m(id=f"b{i}") for i in range(2500)]
    async with CascadeClient(api_key="k", base_url=sandbox.url, batch_size=200) as c:
        report = await c.send_many(source)
    assert report.ok, report.summary()
    stats = sandbox.stats()
    assert stats.unique_ids == 2500
    assert stats.max_count == 1
    assert len({r.message_id for r in report.values()}) == 2500


async def test_bisection_against_the_sandbox(sandbox: Sandbox) -> None:
    sandbox.reject_prefixes = ("+7",)
    source = [m(id=f"c{i}", toPhone="+79161234567" if i in (3, 250) else "+380501234567") for i in range(300)]
    async with CascadeClient(api_key="k", base_url=sandbox.url, batch_size=300) as c:
        report = await c.send_many(source)
    assert {r.tracking_id for r in report.rejected} == {"c3", "c250"}
    assert len(report.accepted) == 298
    assert sandbox.stats().max_count == 1


async def test_fixture_plugin_works_for_users(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        from cascade_async import CascadeClient

        @pytest.mark.cascade_sandbox(reject_prefixes=["+7"])
        def test_user_code(cascade_sandbox):
            async def job():
                async with CascadeClient(api_key="k", base_url=cascade_sandbox.url) as c:
                    return await c.send({"id": "u1", "fromName": "S", "toPhone": "+380501234567",
                                         "messageType": "promo", "text": "hi"})
            result = asyncio.run(job())
            assert result.ok
            assert cascade_sandbox.counts["u1"] == 1
            assert cascade_sandbox.reject_prefixes == ("+7",)
        """
    )
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=1)


async def test_statuses_of_results(sandbox: Sandbox) -> None:
    async with CascadeClient(api_key="k", base_url=sandbox.url) as c:
        report = await c.send_many([m(id="s1"), m(id="s2", toPhone="bad")])
    assert report["s1"].status is Status.ACCEPTED
    assert report["s2"].status is Status.REJECTED


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Host": "evil.example"}, id="rebound-host"),
        pytest.param({"Origin": "http://evil.example"}, id="cross-site-form"),
    ],
)
async def test_the_control_routes_refuse_callers_that_are_not_local(headers: dict[str, str]) -> None:
    import aiohttp

    async with Sandbox() as sb, aiohttp.ClientSession() as http:
        async with http.post(sb.url + "/sandbox/reset", headers=headers) as resp:
            assert resp.status == 403
        async with http.get(sb.url + "/sandbox/stats", headers=headers) as resp:
            assert resp.status == 403
        async with http.post(sb.url + "/sandbox/reset") as resp:
            assert resp.status in (200, 204)
