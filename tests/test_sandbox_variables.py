"""The sandbox's ``POST /api/items`` and the texts it renders, over real sockets."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from cascade_async.sandbox import Sandbox
from cascade_async.sandbox._variables import SHORT_HOST, short_link

HEADERS = {"X-Authorization-Key": "k", "Content-Type": "application/json"}
SEND = "/api/CascadeMessage/send_message/async"


async def post(sb: Sandbox, path: str, body: Any, headers: dict[str, str] = HEADERS) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sb.url + path, data=json.dumps(body), headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def get(sb: Sandbox, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(sb.url + path) as resp:
        return await resp.json()


def message(text: str, **over: Any) -> dict[str, Any]:
    return {"id": "m1", "fromName": "S", "toPhone": "+380501234567", "messageType": "promo", "text": text} | over


VARIABLES = [
    {"id": 1, "type": "name", "value": "Олена"},
    {"id": 2, "type": "url", "value": "https://shop.example/o/42"},
    {"id": 3, "type": "short_url", "value": "https://shop.example/track/42"},
]


async def test_uploaded_variables_render_into_what_the_recipient_reads(sandbox: Sandbox) -> None:
    assert await post(sandbox, "/api/items", {"variables": VARIABLES}) == (200, {"stored": 3})
    status, _ = await post(sandbox, SEND, [message("Hi %name=1%! %url=2% or %short_url=3%, 50% off")])
    assert status == 200
    (shown,) = (await get(sandbox, "/sandbox/messages"))["messages"]
    link = short_link("X-Authorization-Key:k", 3)
    assert shown["text"] == "Hi %name=1%! %url=2% or %short_url=3%, 50% off"
    assert shown["renderedText"] == f"Hi Олена! https://shop.example/o/42 or {link}, 50% off"
    assert link.startswith(SHORT_HOST)
    assert len(link) == 23  # the length the client's cost preview assumes


async def test_variables_belong_to_the_account_that_uploaded_them(sandbox: Sandbox) -> None:
    await post(sandbox, "/api/items", {"variables": VARIABLES})
    other = HEADERS | {"X-Authorization-Key": "someone-else"}
    status, body = await post(sandbox, SEND, [message("Hi %name=1%")], other)
    assert status == 400
    assert body["error"]["code"] == "UNKNOWN_VARIABLE"


@pytest.mark.parametrize(
    ("text", "over", "field"),
    [
        pytest.param("Hi %name=9%", {}, "text", id="an id never uploaded"),
        pytest.param("Go %url=1%", {}, "text", id="an id uploaded with another type"),
        pytest.param(
            None,
            {"messageType": "flashcall", "fallback": {"messageType": "transaction", "text": "Code %name=9%"}},
            "fallback.text",
            id="an unknown id in a flashcall fallback",
        ),
    ],
)
async def test_placeholders_of_unknown_ids_are_refused_naming_the_field(
    sandbox: Sandbox, text: str | None, over: dict[str, Any], field: str
) -> None:
    await post(sandbox, "/api/items", {"variables": VARIABLES})
    m = message(text or "", **over)
    if text is None:
        del m["text"]
    status, body = await post(sandbox, SEND, [m])
    assert status == 400
    assert body["error"]["code"] == "UNKNOWN_VARIABLE"
    assert body["error"]["field"] == field
    assert sandbox.stats().accepted_messages == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"variables": []}, "variables", id="no variables"),
        pytest.param([VARIABLES[0]], "variables", id="not the documented object"),
        pytest.param({"variables": [{"id": 0, "type": "name", "value": "x"}]}, "variables[0].id", id="id zero"),
        pytest.param({"variables": [{"id": 1, "type": "nick", "value": "x"}]}, "variables[0].type", id="a bad type"),
        pytest.param(
            {"variables": [{"id": 1, "type": "url", "value": "ftp://x"}]}, "variables[0].value", id="not http"
        ),
        pytest.param({"variables": [{"id": 1, "type": "name", "value": " "}]}, "variables[0].value", id="blank"),
    ],
)
async def test_invalid_uploads_are_refused_naming_the_field(sandbox: Sandbox, body: Any, field: str) -> None:
    status, answer = await post(sandbox, "/api/items", body)
    assert status == 400
    assert answer["error"]["field"] == field
    assert len(sandbox.variables) == 0


async def test_uploads_need_credentials_and_take_injected_faults(sandbox: Sandbox) -> None:
    status, _ = await post(sandbox, "/api/items", {"variables": VARIABLES}, {"Content-Type": "application/json"})
    assert status == 401
    sandbox.script(["503"])
    assert (await post(sandbox, "/api/items", {"variables": VARIABLES}))[0] == 503
    assert (await post(sandbox, "/api/items", {"variables": VARIABLES}))[0] == 200


@pytest.mark.parametrize(
    ("m", "field"),
    [
        pytest.param(
            message("x", fallback={"messageType": "transaction", "text": "y"}), "fallback", id="not flashcall"
        ),
        pytest.param(
            {**message("x", messageType="flashcall", fallback={"messageType": "promo", "text": "y"})},
            "fallback.messageType",
            id="a promo fallback",
        ),
    ],
)
async def test_the_sandbox_checks_the_fallback_shape(sandbox: Sandbox, m: dict[str, Any], field: str) -> None:
    if m["messageType"] == "flashcall":
        del m["text"]
    status, body = await post(sandbox, SEND, [m])
    assert (status, body["error"]["field"]) == (400, field)
