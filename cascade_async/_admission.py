"""Admission: everything that can refuse an input item before a request, with no slot held.

Each item becomes either a ``Message`` to batch (with an upper bound of its encoded size)
or its REJECTED ``Result``: invalid fields, a mapping that is not a message, a line the
reader could not parse, a message too large for any batch, or a repeated tracking id
(only with ``dedupe``; the id set is the one per-message cost of that promise).

Whole chunks of a synchronous source go through in C when they can (``admit_chunk``): one
``msgspec.convert`` for a list of wire dicts, one encode to learn the chunk's exact size,
one set operation for the duplicate check. Anything unusual falls back to ``admit``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final

from ._errors import ErrorCode, ValidationError
from ._inputs import BadLine
from ._models import Message, Result, Status, convert_chunk, failure
from ._templates import Personalised, Rejected
from ._variables import Variable
from ._wire import encode_batch

_ids = attrgetter("id")
#: Keys, quotes, the type name, ttl digits, a timestamp and punctuation of one message.
_FIXED_BYTES: Final = 240
#: ``,"fallback":{"messageType":"transaction","text":""}`` and some slack.
_FALLBACK_BYTES: Final = 64


def size_bound(m: Message) -> int:
    """An upper bound of the message's encoded size: 6 bytes a character (a ``\\u00XX``
    escape is the longest form of one code point) plus the fixed part."""
    n = len(m.id) + len(m.from_name) + len(m.to_phone)
    if m.text is not None:
        n += len(m.text)
    if m.survey_options is not None:
        n += sum(map(len, m.survey_options)) + 3 * len(m.survey_options)
    if m.fallback is not None:
        return 6 * (n + len(m.fallback.text)) + _FIXED_BYTES + _FALLBACK_BYTES
    return 6 * n + _FIXED_BYTES


class Admission:
    def __init__(
        self,
        *,
        dedupe: bool,
        max_bytes: int,
        on_variables: Callable[[Sequence[Message], Sequence[tuple[Variable, ...]]], None] | None = None,
        ordered: bool = False,
    ) -> None:
        #: The tracking ids admitted so far; None without ``dedupe``, which then costs no memory
        #: per message. A set: it grows by whole chunks at a time, cheaper than an ordered dict.
        self.seen: set[str] | None = set() if dedupe else None
        #: First occurrences in input order, kept only when asked (``send_many``'s report).
        self.order: list[str] | None = [] if ordered else None
        self.count = 0  # items read so far
        self._max_message = max_bytes - 2  # one message alone in a batch: "[" + it + "]"
        #: Told of admitted ``Personalised`` messages and their variables (to upload before they go).
        self.on_variables = on_variables

    def admit(self, item: object) -> tuple[Message, int] | Result:
        """One item: the message to send with its size bound, or its REJECTED result."""
        self.count += 1
        index = self.count
        try:
            if type(item) is Message or isinstance(item, Message):
                msg = item
            elif isinstance(item, Mapping):
                msg = Message.from_dict(item)
            elif isinstance(item, BadLine):
                return self._refuse(_with_line(item), item)
            elif isinstance(item, Personalised):
                msg = Message.from_dict(item.message)
            elif isinstance(item, Rejected):
                return self._refuse(item.error, item)
            elif isinstance(item, Result):
                # Decided before admission (a journal's answer for a resumed job): its id still
                # counts, so that the same id again is a repeat, not a second result for one id.
                return duplicate(item.tracking_id) if self._repeated(item.tracking_id) else item
            else:
                raise ValidationError(
                    f"input #{index} is a {type(item).__name__}, not a Message, a mapping or a template item",
                    field=None,
                    tracking_id=None,
                )
            size = size_bound(msg)
            if size > self._max_message:
                size = len(encode_batch([msg])) - 2
                if size > self._max_message:
                    raise ValidationError(
                        f"encodes to {size} bytes, above max_batch_bytes={self._max_message + 2}",
                        field=None,
                        tracking_id=msg.id,
                        code=ErrorCode.MESSAGE_TOO_LARGE,
                    )
        except ValidationError as exc:
            return self._refuse(exc, item)
        except (ValueError, TypeError, OverflowError) as exc:
            # Anything else an item can make the checks raise is still that item's problem alone.
            return self._refuse(ValidationError(f"cannot be read: {exc}", field=None, tracking_id=None), item)
        if self._repeated(msg.id):
            return duplicate(msg.id)
        if type(item) is Personalised and self.on_variables is not None:
            self.on_variables((msg,), (item.variables,))
        return msg, size

    def admit_chunk(self, chunk: list[Any]) -> tuple[list[Message], int, bytes] | None:
        """A whole chunk at once, with its exact encoded length and its encoding; None when any
        item needs a closer look (then ``admit`` each). Nothing is counted or remembered on None."""
        kinds = set(map(type, chunk))
        variables: list[tuple[Variable, ...]] | None = None
        try:
            if kinds == {Message}:
                messages: list[Message] = chunk
            elif kinds == {dict}:
                converted = convert_chunk(chunk)
                if converted is None:
                    return None
                messages = converted
            elif kinds == {Personalised} and self.on_variables is not None:
                converted = convert_chunk([p.message for p in chunk])
                if converted is None:
                    return None
                messages = converted
                variables = [p.variables for p in chunk]
            else:
                return None
            body = encode_batch(messages)
        except (ValueError, TypeError, OverflowError):  # e.g. a lone surrogate: let admit() name it
            return None
        nbytes = len(body)
        if nbytes > self._max_message + 2:
            return None  # maybe one message too large for any batch: look at each
        seen = self.seen
        if seen is not None:
            fresh = set(map(_ids, messages))
            if len(fresh) != len(messages) or not seen.isdisjoint(fresh):
                return None
            seen |= fresh
        if self.order is not None:
            self.order.extend(map(_ids, messages))
        self.count += len(messages)
        if variables is not None:
            assert self.on_variables is not None
            self.on_variables(messages, variables)
        return messages, nbytes, body

    def _repeated(self, tid: str) -> bool:
        """Whether ``tid`` was admitted before in this call; remembers it when not."""
        seen = self.seen
        if seen is not None:
            if tid in seen:
                return True
            seen.add(tid)
        if self.order is not None:
            self.order.append(tid)
        return False

    def _refuse(self, exc: ValidationError, item: object) -> Result:
        tid = exc.tracking_id or raw_id(item) or (f"<line {exc.line}>" if exc.line else f"<input #{self.count}>")
        if self._repeated(tid):
            return duplicate(tid)
        return failure(tid, Status.REJECTED, exc, 0)


def duplicate(tid: str) -> Result:
    err = ValidationError(
        "repeats a tracking id already used in this call; not sent twice",
        field="id",
        tracking_id=tid,
        code=ErrorCode.DUPLICATE_ID,
    )
    return failure(tid, Status.REJECTED, err, 0)


def is_duplicate(result: Result) -> bool:
    """Whether ``result`` is the rejection of a tracking id repeated within one call."""
    return result.error is not None and result.error.code == ErrorCode.DUPLICATE_ID


def _with_line(bad: BadLine) -> ValidationError:
    err = bad.error
    if err.line is None:
        err = err.for_message(err.tracking_id) if err.tracking_id else err
        err = ValidationError(err.problem, field=err.field, tracking_id=err.tracking_id, code=err.code, line=bad.line)
    return err


def raw_id(item: object) -> str | None:
    """The tracking id an input names, valid or not (None when it names none)."""
    if isinstance(item, Mapping):
        tid = item.get("id")
        if isinstance(tid, str) and tid:
            return tid
    elif isinstance(item, BadLine | Rejected):
        return item.error.tracking_id
    elif isinstance(item, Personalised):
        tid = item.message.get("id")
        return tid if isinstance(tid, str) and tid else None
    return None
