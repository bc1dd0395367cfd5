"""A local stand-in for the Cascade Messages API, for demos, tests and benchmarks.

It follows the contract: both routes, the three auth headers, the documented error body,
batches of 1-1000, the field rules, and ``[{"messageId", "trackinId"}]`` on success. On top
it injects latency and faults, limits its own request rate, refuses chosen messages, and
records every message it accepted, so tests can prove exactly-once delivery.

>>> async with Sandbox(latency=0.01, faults=["500", "ok"]) as sb:
...     async with CascadeClient(api_key="test", base_url=sb.url) as client:
...         report = await client.send_many(messages)
...     assert sb.stats().max_count == 1       # nothing delivered twice

It binds 127.0.0.1 unless told otherwise. Fault names: ``ok``, ``429`` (``429:2`` adds
``Retry-After: 2``), ``500``, ``502``, ``503``, ``504``, ``reset`` (connection dropped,
nothing accepted), ``reset-early`` (dropped before the body is read: a reset mid-request),
``lost`` (accepted, then the connection dropped before the answer), ``truncated`` (accepted,
then half the answer and a reset: mid-response),
``hang`` (no answer for ``hang_seconds``), ``slow`` (accepted, answered after
``hang_seconds``), ``malformed`` (a 200 that is not JSON), ``wrong-shape`` (a 200 of the
wrong shape), ``missing-ids`` (a 200 that leaves out the last message), ``dup-ids`` (a 200 that
repeats an entry).

``POST /api/items`` stores message variables per account (``sb.variables``); accepted texts are
rendered as the recipient reads them (``renderedText``, short links ``https://sho.rt/...``), and a
placeholder whose id was never uploaded is refused with 400 ``UNKNOWN_VARIABLE`` (``_variables``).

Every sandbox also has an inbox: a live web page at ``/`` showing each message as the recipient
would see it, a JSON API (``GET /sandbox/messages``, ``GET /sandbox/messages/wait``,
``DELETE /sandbox/messages``) and test helpers:

>>> otp = sb.wait_for(phone="+380501234567")           # sync tests (the pytest fixture)
>>> otp = await sb.wait_for_async(phone="+380501234567")
>>> otp.text, otp.channel, otp.message_id

Modules: ``_contract`` (the request rules), ``_faults`` (faults and the rate gate), ``_server``
(the ``Sandbox``: settings, control, lifecycle), ``_routes`` (its answers on the message and
variable routes), ``_delivery`` (simulated delivery: the status store and
``GET /bat/message/{id}``), ``_delivery_status`` (a status by time, phone and route, and its
answer), ``_webhooks`` (status changes POSTed to ``webhook_url``), ``_variables`` (stored
variables and rendering), ``_inbox`` (bounded storage and waiting), ``_records`` (what it hands
out), ``_inbox_web`` (page, JSON, events, Host check), ``_helpers`` (thread-safe test helpers),
``_process`` (the standalone sandbox in a child process), ``static/`` (the page).
"""

from ._faults import FAULTS
from ._process import sandbox_process
from ._records import InboxMessage, Rejection
from ._server import Sandbox, SandboxStats

__all__ = ["FAULTS", "InboxMessage", "Rejection", "Sandbox", "SandboxStats", "sandbox_process"]
