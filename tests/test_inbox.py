"""The sandbox inbox without a browser: storage, retention, the JSON API, events, the Host check, helpers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cascade_async import CascadeClient, Message, MessageType
from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import InboxMessage, Sandbox
from cascade_async.sandbox import _inbox as inbox_module
from cascade_async.sandbox._inbox import Inbox
from cascade_async.sandbox._inbox_web import STATIC, host_allowed
from cascade_async.sandbox._records import Query

PHONE = "+380501234567"
KEY = {"X-Authorization-Key": "k", "Content-Type": "application/json"}
SEND = "/api/CascadeMessage/send_message/async"


def wire(i: int | str, phone: str = PHONE, text: str = "Hi", kind: str = "promo", **more: Any) -> dict[str, Any]:
    return {"id": f"m{i}", "fromName": "Shop", "toPhone": phone, "messageType": kind, "text": text, **more}


async def post(sb: Sandbox, body: Any, path: str = SEND) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as s, s.post(sb.url + path, data=data, headers=KEY) as r:
        return r.status


async def get(sb: Sandbox, path: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(sb.url + path, headers=headers) as r:
        body = await r.read()
        return r.status, json.loads(body) if r.content_type == "application/json" else body


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


# --- the JSON API ------------------------------------------------------------------------------


async def test_messages_api_lists_newest_first_with_the_documented_fields(sb: Sandbox) -> None:
    assert await post(sb, [wire(1, text="first"), wire(2, text="second")]) == 200
    status, body = await get(sb, "/sandbox/messages")
    assert status == 200
    newest, oldest = body["messages"]
    assert (newest["trackingId"], oldest["trackingId"]) == ("m2", "m1")
    fields = {"trackingId", "messageId", "toPhone", "fromName", "messageType", "text", "renderedText"}
    fields |= {"surveyOptions", "channel", "status", "receivedAt"}
    assert fields <= newest.keys()
    assert newest["renderedText"] == newest["text"] == "second"
    assert newest["status"] in ("scheduled", "processing", "delivered")  # the simulated delivery status (#13)
    assert newest["messageId"] == sb.messages()[0].message_id


async def test_the_message_id_in_the_inbox_is_the_one_the_client_got(sb: Sandbox) -> None:
    async with CascadeClient(api_key="k", base_url=sb.url) as client:
        result = await client.send(
            Message(id="c1", from_name="S", to_phone=PHONE, message_type=MessageType.PROMO, text="x")
        )
    assert sb.messages()[0].message_id == result.message_id


@pytest.mark.parametrize(
    ("kind", "channel"),
    [
        pytest.param("transaction", "telegram", id="transaction goes first to Telegram"),
        pytest.param("promo", "telegram", id="promo goes first to Telegram"),
        pytest.param("viber_survey", "viber", id="a survey goes to Viber"),
        pytest.param("flashcall", "call", id="a flashcall is a call"),
    ],
)
async def test_each_type_shows_the_first_channel_of_its_cascade(sb: Sandbox, kind: str, channel: str) -> None:
    message = wire(1, kind=kind, surveyOptions=["a", "b"]) if kind == "viber_survey" else wire(1, kind=kind)
    if kind == "flashcall":
        del message["text"]
    assert await post(sb, [message]) == 200
    assert sb.messages()[0].channel == channel


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("phone=%2B380500000002", ["m2"], id="phone, escaped plus"),
        pytest.param("phone=+380500000002", ["m2"], id="phone, plus decoded to a space"),
        pytest.param("phone=380500000002", ["m2"], id="phone without plus"),
        pytest.param("q=00000001", ["m1"], id="q matches a phone"),
        pytest.param("q=M3", ["m3"], id="q matches a tracking id, any case"),
        pytest.param("q=parcel", ["m2"], id="q matches text"),
        pytest.param("limit=2", ["m3", "m2"], id="limit keeps the newest"),
        pytest.param("q=nothing-like-it", [], id="no match"),
    ],
)
async def test_messages_api_filters_by_phone_q_and_limit(sb: Sandbox, query: str, expected: list[str]) -> None:
    batch = [wire(1, "+380500000001"), wire(2, "+380500000002", "Your Parcel"), wire(3, "+380500000003")]
    assert await post(sb, batch) == 200
    _, body = await get(sb, "/sandbox/messages?" + query)
    assert [m["trackingId"] for m in body["messages"]] == expected


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=x", "timeout=-1", "since=yesterday"],
)
async def test_bad_parameters_get_400_with_the_error_body(sb: Sandbox, query: str) -> None:
    path = "/sandbox/messages/wait?" if "timeout" in query or "since" in query else "/sandbox/messages?"
    status, body = await get(sb, path + query)
    assert status == 400
    assert body["error"]["code"] == "INVALID_PARAMETER"
    assert body["error"]["field"] == query.partition("=")[0]


async def test_wait_answers_at_once_when_a_match_is_stored(sb: Sandbox) -> None:
    assert await post(sb, [wire(1), wire(2, "+380500000009")]) == 200
    status, body = await get(sb, f"/sandbox/messages/wait?phone=%2B{PHONE[1:]}&timeout=0")
    assert status == 200
    assert body["trackingId"] == "m1"


async def test_wait_blocks_until_a_match_arrives(sb: Sandbox) -> None:
    waiting = asyncio.create_task(get(sb, "/sandbox/messages/wait?q=otp&timeout=5"))
    await asyncio.sleep(0)  # let the request start; the answer must still wait for the message
    assert await post(sb, [wire(1, text="no code here")]) == 200
    assert not waiting.done()
    assert await post(sb, [wire(2, text="Your OTP is 1234")]) == 200
    status, body = await asyncio.wait_for(waiting, 5)
    assert (status, body["trackingId"]) == (200, "m2")


async def test_wait_answers_408_with_the_error_body_on_timeout(sb: Sandbox) -> None:
    status, body = await get(sb, "/sandbox/messages/wait?phone=%2B380500000000&timeout=0.05")
    assert status == 408
    assert body["error"]["code"] == "TIMEOUT"


async def test_wait_since_a_seq_or_a_time_ignores_older_matches(sb: Sandbox) -> None:
    assert await post(sb, [wire(1)]) == 200
    old = sb.messages()[0]
    assert (await get(sb, f"/sandbox/messages/wait?since={old.seq}&timeout=0.05"))[0] == 408
    since = (old.received_at + dt.timedelta(microseconds=1)).isoformat()
    assert (await get(sb, f"/sandbox/messages/wait?since={since}&timeout=0.05"))[0] == 408
    assert (await get(sb, f"/sandbox/messages/wait?since={old.seq - 1}&timeout=0"))[0] == 200


async def test_delete_clears_the_inbox_but_not_the_stats(sb: Sandbox) -> None:
    assert await post(sb, [wire(1), wire(2)]) == 200
    async with aiohttp.ClientSession() as s, s.delete(sb.url + "/sandbox/messages") as r:
        assert r.status == 204
    assert (await get(sb, "/sandbox/messages"))[1] == {"messages": []}
    assert sb.stats().accepted_messages == 2
    assert sb.counts == {"m1": 1, "m2": 1}


async def test_rejected_requests_are_kept_with_their_error_even_without_a_phone(sb: Sandbox) -> None:
    assert await post(sb, [wire(1), wire(2, "0501234567")]) == 400
    assert await post(sb, b"{not json") == 400
    async with aiohttp.ClientSession() as s, s.post(sb.url + SEND, json=[wire(3)]) as r:  # no credentials
        assert r.status == 401
    _, body = await get(sb, "/sandbox/rejections")
    unauthorized, not_json, bad_phone = body["rejections"]
    assert bad_phone["error"] == {"code": "INVALID_PHONE", "message": "Invalid phone number format", "field": "toPhone"}
    assert (bad_phone["toPhone"], bad_phone["trackingId"], bad_phone["index"]) == ("0501234567", "m2", 1)
    assert not_json["toPhone"] is None
    assert not_json["request"] == "{not json"
    assert (unauthorized["status"], unauthorized["toPhone"]) == (401, PHONE)
    _, threads = await get(sb, "/sandbox/threads")
    assert {t["phone"]: t["rejected"] for t in threads["threads"]} == {PHONE: 1, "0501234567": 1, "": 1}


# --- retention ---------------------------------------------------------------------------------


async def test_retention_by_count_is_exact_and_keeps_the_newest() -> None:
    async with Sandbox(inbox_max_messages=5) as sb:
        assert await post(sb, [wire(i) for i in range(3)]) == 200
        assert await post(sb, [wire(i) for i in range(3, 7)]) == 200
        assert [m.tracking_id for m in sb.messages()] == ["m6", "m5", "m4", "m3", "m2"]
        assert sb.stats().accepted_messages == 7  # exactly-once checks still see everything
        assert len(sb.counts) == 7


def test_retention_by_age_drops_old_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(inbox_module.time, "time", lambda: now[0])  # type: ignore[attr-defined]
    inbox = Inbox(max_messages=100, max_age=60)
    inbox.add([wire(1)], ["id-1"], SEND)
    now[0] += 59
    inbox.add([wire(2)], ["id-2"], SEND)
    assert [m.tracking_id for m in inbox.messages(Query())] == ["m2", "m1"]
    now[0] += 2
    assert [m.tracking_id for m in inbox.messages(Query())] == ["m2"]
    assert len(inbox) == 1


def test_retention_has_defaults_and_refuses_nonsense() -> None:
    inbox = Inbox()
    assert inbox.max_messages >= 10_000
    assert inbox.max_age > 0
    with pytest.raises(ValueError, match="retention"):
        Inbox(max_messages=0)


async def test_an_inbox_can_be_turned_off() -> None:
    async with Sandbox(inbox=False) as sb:
        assert await post(sb, [wire(1)]) == 200
        assert (await get(sb, "/"))[0] == 404
        assert sb.stats().accepted_messages == 1
        with pytest.raises(RuntimeError, match="inbox=False"):
            sb.messages()


# --- the page, events and the Host check -------------------------------------------------------


async def test_the_page_is_served_with_a_strict_content_security_policy(sb: Sandbox) -> None:
    async with aiohttp.ClientSession() as s, s.get(sb.url + "/") as r:
        assert r.status == 200
        assert "Cascade sandbox inbox" in await r.text()
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("inbox.js", "inbox.css"):
        assert (await get(sb, "/static/" + name))[0] == 200


def test_the_page_fetches_nothing_from_elsewhere_and_never_writes_html() -> None:
    for path in Path(STATIC).iterdir():
        text = path.read_text()
        assert "http://" not in text, path
        assert "https://" not in text, path
        assert "innerHTML" not in text, path
        assert "insertAdjacentHTML" not in text, path


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        pytest.param("127.0.0.1:8080", True, id="loopback IP"),
        pytest.param("localhost:8080", True, id="localhost"),
        pytest.param("[::1]:8080", True, id="IPv6 loopback"),
        pytest.param("app.localhost", True, id="a .localhost name"),
        pytest.param("192.168.1.20:8080", True, id="any IP literal (cannot be rebound)"),
        pytest.param("sandbox:8080", True, id="a configured name"),
        pytest.param("attacker.example:8080", False, id="a foreign name (DNS rebinding)"),
        pytest.param("localhost.attacker.example", False, id="a name that only starts like localhost"),
        pytest.param("", False, id="no Host"),
    ],
)
def test_the_host_header_is_checked_against_dns_rebinding(host: str, allowed: bool) -> None:
    assert host_allowed(host, frozenset({"sandbox"})) is allowed


async def test_inbox_routes_refuse_a_foreign_host_but_the_api_does_not(sb: Sandbox) -> None:
    for path in ("/", "/sandbox/messages", "/sandbox/events", "/static/inbox.js"):
        status, _body = await get(sb, path, Host="attacker.example")
        assert status == 403, path
    headers = {**KEY, "Host": "sandbox-in-compose"}
    async with aiohttp.ClientSession() as s, s.post(sb.url + SEND, json=[wire(1)], headers=headers) as r:
        assert r.status == 200


async def test_events_push_new_messages_to_an_open_page(sb: Sandbox) -> None:
    async with aiohttp.ClientSession() as s, s.get(sb.url + "/sandbox/events") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert (await r.content.readuntil(b"\n\n")).startswith(b"retry:")
        assert await post(sb, [wire(1, text="live!")]) == 200
        async with asyncio.timeout(1):
            event = await r.content.readuntil(b"\n\n")
    name, data = event.decode().split("\n")[:2]
    assert name == "event: messages"
    assert json.loads(data.removeprefix("data: "))[0]["text"] == "live!"


# --- the Python helpers ------------------------------------------------------------------------


async def test_wait_for_async_on_the_sandbox_loop(sb: Sandbox) -> None:
    waiting = asyncio.create_task(sb.wait_for_async(phone=PHONE, timeout=5))
    await asyncio.sleep(0)
    assert await post(sb, [wire(1, text="code 77")]) == 200
    found = await waiting
    assert isinstance(found, InboxMessage)
    assert found.text == "code 77"
    with pytest.raises(TimeoutError):
        await sb.wait_for_async(phone="+380500000000", timeout=0.01)


async def test_sync_wait_for_refuses_to_block_a_running_loop(sb: Sandbox) -> None:
    with pytest.raises(RuntimeError, match="wait_for_async"):
        sb.wait_for(phone=PHONE)


def send_from_a_thread(url: str, text: str) -> threading.Thread:
    async def job() -> None:
        async with CascadeClient(api_key="k", base_url=url) as client:
            await client.send(
                Message(id="t1", from_name="S", to_phone=PHONE, message_type=MessageType.PROMO, text=text)
            )

    thread = threading.Thread(target=asyncio.run, args=(job(),))
    thread.start()
    return thread


def test_sync_wait_for_works_with_a_sandbox_in_a_thread() -> None:
    with SandboxThread() as sb:
        sender = send_from_a_thread(sb.url, "Your code is 5150")
        assert sb.wait_for(phone=PHONE, timeout=5).text == "Your code is 5150"
        sender.join()
        with pytest.raises(TimeoutError):
            sb.wait_for(phone=PHONE, since=sb.messages()[0].seq, timeout=0.01)


async def test_wait_for_async_works_with_a_sandbox_in_a_thread() -> None:
    with SandboxThread() as sb:
        waiting = asyncio.create_task(sb.wait_for_async(q="5151", timeout=5))
        async with CascadeClient(api_key="k", base_url=sb.url) as client:
            await client.send(
                Message(id="t2", from_name="S", to_phone=PHONE, message_type=MessageType.PROMO, text="code 5151")
            )
        assert (await waiting).tracking_id == "t2"


async def test_the_fixture_offers_wait_for_to_users(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, threading
        import pytest
        from cascade_async import CascadeClient

        def signup(base_url):  # the user's app, sending an OTP from its own thread and loop
            async def job():
                async with CascadeClient(api_key="k", base_url=base_url) as c:
                    await c.send({"id": "otp-1", "fromName": "App", "toPhone": "+380501234567",
                                  "messageType": "transaction", "text": "Code 9042"})
            threading.Thread(target=asyncio.run, args=(job(),)).start()

        def test_sync(cascade_sandbox):
            signup(cascade_sandbox.url)
            assert cascade_sandbox.wait_for(phone="+380501234567").text == "Code 9042"

        @pytest.mark.asyncio
        async def test_async(cascade_sandbox):
            signup(cascade_sandbox.url)
            otp = await cascade_sandbox.wait_for_async(phone="+380501234567")
            assert otp.channel == "telegram"
        """
    )
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=2)


def test_the_sandbox_command_prints_the_inbox_url_and_serves_the_page() -> None:
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "cascade_async.cli", "sandbox", "--port", str(port)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline(), proc.stdout.readline()]  # blocks until printed, or EOF if it died
            inbox = [line for line in lines if line.startswith("inbox: ")]
            assert inbox, lines
            url = inbox[0].split()[1]
            assert url == f"http://127.0.0.1:{port}/"
            with urllib.request.urlopen(url, timeout=5) as page:
                assert b"Cascade sandbox inbox" in page.read()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_a_restarted_sandbox_still_waits_and_keeps_its_inbox() -> None:
    sb = Sandbox()
    await sb.start()
    assert await post(sb, [wire(1)]) == 200
    await sb.stop()
    await sb.start()
    try:
        assert [m.tracking_id for m in sb.messages()] == ["m1"]
        waiting = asyncio.create_task(sb.wait_for_async(q="again", timeout=5))
        await asyncio.sleep(0)
        assert await post(sb, [wire(2, text="again")]) == 200
        assert (await waiting).tracking_id == "m2"
    finally:
        await sb.stop()
