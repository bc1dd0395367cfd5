"""The models, gathered: a ``Message`` and its checks (``_message``), where it ended (``_result``),
and the fast path that converts a chunk of wire dicts at once (``_chunks``)."""

from __future__ import annotations

from ._chunks import convert_chunk
from ._message import Fallback, Message, MessageType, Route
from ._result import Result, Status, failure

__all__ = ["Fallback", "Message", "MessageType", "Result", "Route", "Status", "convert_chunk", "failure"]
