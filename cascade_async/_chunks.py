"""The fast path for wire dicts: a whole chunk converted to Messages, every rule checked in C."""

from __future__ import annotations

import builtins
import re
from operator import attrgetter
from typing import Annotated, Any, Final

import msgspec

from ._message import _CONTROL, MAX_ID_LENGTH, MAX_TTL, Message, MessageType

__all__ = ["convert_chunk"]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _Checked(
    Message,
    frozen=True,
    kw_only=True,
    rename="camel",
    omit_defaults=True,
    forbid_unknown_fields=True,
    gc=False,
):
    """A Message made by ``convert_chunk``: the plain kind (a transaction or a promo with text,
    no survey options, no schedule). msgspec checks each field's type and length in C, and
    refuses anything else outright; ``convert_chunk`` checks the remaining rules for a whole
    chunk at once, so no Python runs per message. Anything unusual takes the full path."""

    id: _Id
    from_name: _NonEmpty
    to_phone: Annotated[str, msgspec.Meta(min_length=9, max_length=16)]
    message_type: MessageType
    text: _NonEmpty  # required here: a flashcall takes the full path
    ttl: Annotated[int, msgspec.Meta(gt=0, le=MAX_TTL)] | None = None
    fallback: None = None  # only flashcalls carry one, and they take the full path
    scheduled_sent: None = None  # a schedule takes the full path
    survey_options: None = None  # so does a survey
    __post_init__ = builtins.id  # type: ignore[assignment,misc]  # a no-op in C: the rules run per chunk


_Checked.__name__ = "Message"  # what users see in a repr; __qualname__ stays, for pickle
_CHECKED: Final = list[_Checked]
_PLAIN: Final = frozenset({MessageType.TRANSACTION, MessageType.PROMO})
#: Phones joined by newlines, in one regex pass. A phone holding a newline cannot pass: two
#: valid phones need at least 19 characters, and msgspec caps a phone at 16.
_PHONES = re.compile(r"(?:\+[1-9][0-9]{7,14}\n)*")
_get_kind = attrgetter("message_type")
_get_text = attrgetter("text")
_get_phone = attrgetter("to_phone")
_get_id = attrgetter("id")
_get_from = attrgetter("from_name")
#: Where a placeholder starts but no valid id follows: the full path then checks that text. An id
#: of up to 15 digits is always below MAX_VARIABLE_ID; a longer one is checked there too. A match
#: across two joined texts holds the newline that joins them, so it is never taken for valid.
_SUSPECT_PLACEHOLDER = re.compile(r"%(?:name|url|short_url)=(?![1-9][0-9]{0,14}%)")


def convert_chunk(items: list[Any]) -> list[Message] | None:
    """Wire dicts to Messages with every rule checked, in a few C-level passes over the chunk.

    None when any item needs a closer look (it is invalid, or of a kind with more rules):
    then ``Message.from_dict`` each, which names the field and the tracking id.
    """
    try:
        messages: list[Message] = msgspec.convert(items, _CHECKED)
    except msgspec.ValidationError:
        return None
    if not set(map(_get_kind, messages)) <= _PLAIN:
        return None
    if not _PHONES.fullmatch("\n".join(map(_get_phone, messages)) + "\n"):
        return None
    ids = "".join(map(_get_id, messages))
    if not ids.isprintable() and _CONTROL.search(ids):  # isprintable: a fast pass in C
        return None
    # Non-empty is checked in C already, so blank means all whitespace (no copies made).
    texts = list(map(_get_text, messages))
    if any(map(str.isspace, texts)) or any(map(str.isspace, map(_get_from, messages))):
        return None
    joined = "\n".join(texts)
    if "%" in joined and _SUSPECT_PLACEHOLDER.search(joined):
        return None
    return messages
