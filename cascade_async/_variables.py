"""Message variables: the provider substitutes ``%name=N%``, ``%url=N%`` and ``%short_url=N%`` at delivery.

>>> Variable(4, VariableType.SHORT_URL, "https://shop.example/o/42").placeholder
'%short_url=4%'

Values are uploaded first (``POST /api/items`` with ``{"variables": [...]}``; ``variable_batches``
builds those bodies), then messages that reference their ids are sent as usual.

Only ``%name=…%``, ``%url=…%`` and ``%short_url=…%`` are placeholders; any other ``%`` is literal
("50% off" is fine). What sits between ``=`` and the closing ``%`` must be a positive integer id
written without a sign or leading zeros, or the text is refused (``check_placeholders``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from itertools import islice, repeat
from typing import Final, NamedTuple

import msgspec

from ._errors import ValidationError

__all__ = [
    "GOOD_URL_STARTS",
    "MAX_VARIABLE_ID",
    "PLACEHOLDER",
    "Placeholder",
    "Variable",
    "VariableRun",
    "VariableType",
    "check_placeholders",
    "find_placeholders",
    "upload_body",
    "url_ok",
    "variable_batches",
]

#: The largest id accepted: 2**53 - 1, the largest integer every JSON parser reads exactly.
#: The provider documents no limit.
MAX_VARIABLE_ID: Final = 2**53 - 1
#: The provider advises batching uploads; 1000 matches its advice for message batches.
UPLOAD_BATCH: Final = 1000

#: A placeholder, valid or not: group 1 is the type, group 2 whatever stands where the id goes.
PLACEHOLDER: Final = re.compile(r"%(name|url|short_url)=([^%]*)%")

# scheme://[userinfo@]host[:port] then the end or one of / ? #; host a name or a bracketed IPv6
# address. Only the start is matched: the rest of the URL is checked by isprintable() and for
# spaces, which costs far less than a regex walking the whole path. Possessive quantifiers: a
# failed match never backtracks through the host (CPython 3.11 and later).
_HTTP_URL_START = re.compile(
    r"[hH][tT][tT][pP][sS]?://"  # not (?i:), which lets U+017F stand for "s"
    r"(?:[^/?#@]*+@)?+"
    r"(?:\[[0-9A-Fa-f:.]++\]|[^/?#@:\[\]]++)"
    r"(?::[0-9]*+)?+"
    r"(?:[/?#]|\Z)"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # newline and tab are fine in a name
# A tag opening (<b, </b, <!--, <?xml) or a character reference (&amp; &#60; &#x3c;).
_HTML = re.compile(r"<\s*/?\s*[A-Za-z!?]|&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);")


class VariableType(enum.StrEnum):
    """What the provider does with a value: insert it, insert a URL, or insert a shortened URL."""

    NAME = "name"
    URL = "url"
    SHORT_URL = "short_url"


# Module constants: an enum member looked up on its class is slow.
_NAME: Final = VariableType.NAME
_URL: Final = VariableType.URL
_SHORT_URL: Final = VariableType.SHORT_URL
_URL_START: Final = _HTTP_URL_START.match
#: URL starts, up to the first "/" past the scheme, seen valid (in a list: generated code reads it).
GOOD_URL_STARTS: Final[list[tuple[str, ...]]] = [()]
_GOOD_STARTS_MAX: Final = 16


class Placeholder(NamedTuple):
    type: VariableType
    id: int
    start: int
    end: int


class Variable(msgspec.Struct, frozen=True, gc=False):
    """One value the provider substitutes for ``%type=id%``, checked when it is built.

    ``url`` and ``short_url`` values must be http(s) URLs; https is advised, and ``https`` says
    whether a value uses it. ``name`` values must not hold HTML. No value may hold a placeholder.
    """

    id: int
    type: VariableType
    value: str

    def __post_init__(self) -> None:
        # The usual URL in one expression (a bulk job builds one Variable per distinct value);
        # anything else gets the full check and its reason.
        vid, kind, value = self.id, self.type, self.value
        if (
            type(vid) is int
            and 0 < vid <= MAX_VARIABLE_ID
            and (kind is _URL or kind is _SHORT_URL)
            and type(value) is str
            and "%" not in value
            and " " not in value
            and value.isprintable()
        ):
            # As url_ok, inline: a call saved per Variable.
            starts = GOOD_URL_STARTS[0]
            if value.startswith(starts):
                return
            if _URL_START(value) is not None:
                end = value.find("/", 8)
                if end > 0 and len(starts) < _GOOD_STARTS_MAX:
                    GOOD_URL_STARTS[0] = (*starts, value[: end + 1])
                return
        _check_variable(self)

    @property
    def placeholder(self) -> str:
        return f"%{self.type.value}={self.id}%"

    @property
    def https(self) -> bool:
        """False for an ``http://`` URL (the provider advises https) and for ``name`` values."""
        return self.type is not VariableType.NAME and self.value[:8].lower() == "https://"


def url_ok(value: str) -> bool:
    """Whether the string ``value`` is a valid ``url``/``short_url`` value, on the quick path: False
    may still be valid (``value_problem`` decides and says why)."""
    if "%" in value or " " in value or not value.isprintable():
        return False
    # Whether a URL is valid is decided before its first "/" past the scheme (the regex stops at
    # the first / ? or #), so a URL that starts like one already seen valid, up to and with that
    # "/", needs no regex: a campaign's links share a few such starts.
    starts = GOOD_URL_STARTS[0]
    if value.startswith(starts):
        return True
    if _URL_START(value) is None:
        return False
    end = value.find("/", 8)
    if end > 0 and len(starts) < _GOOD_STARTS_MAX:
        GOOD_URL_STARTS[0] = (*starts, value[: end + 1])
    return True


def _bad(field: str, problem: str) -> ValidationError:
    return ValidationError(problem, field=field, tracking_id=None)


def _check_variable(var: Variable) -> None:
    if type(var.id) is not int or not 1 <= var.id <= MAX_VARIABLE_ID:
        raise _bad("id", f"must be a positive integer up to {MAX_VARIABLE_ID}, not {var.id!r}")
    kind = var.type
    if not isinstance(kind, VariableType):
        try:
            kind = VariableType(kind)
        except ValueError:
            raise _bad("type", f"must be one of name, url, short_url, not {kind!r}") from None
        msgspec.structs.force_setattr(var, "type", kind)
    problem = value_problem(kind, var.value)
    if problem:
        raise _bad("value", problem)


def value_problem(kind: VariableType, value: object) -> str | None:
    """Why ``value`` cannot be a variable of type ``kind``, or None when it can."""
    # The usual valid value passes in one expression (a bulk job checks one per distinct value).
    if type(value) is str and "%" not in value:
        if kind is not _NAME:
            # isprintable() is False for control characters and for every Unicode space but " ".
            if value.isprintable() and " " not in value and _URL_START(value) is not None:
                return None
        elif value.strip() and _CONTROL.search(value) is None and _HTML.search(value) is None:
            return None
    return _problem(kind, value)


def _problem(kind: VariableType, value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value.strip():
        return "must not be empty"
    if "%" in value and PLACEHOLDER.search(value):
        return "must not contain a placeholder (%name=…%, %url=…%, %short_url=…%)"
    if kind is _NAME:
        if _CONTROL.search(value):
            return "must not contain control characters"
        if _HTML.search(value):
            return "must not contain HTML (tags or character references)"
        return None
    if not (value.isprintable() and " " not in value and _URL_START(value)):
        return f"must be an http(s) URL with a host and no spaces or control characters, not {value[:60]!r}"
    return None


def placeholder_id(raw: str) -> int | None:
    if not (raw.isascii() and raw.isdigit()) or raw[0] == "0":
        return None
    number = int(raw)
    return number if number <= MAX_VARIABLE_ID else None


def check_placeholders(text: str, *, field: str = "text", tracking_id: str | None = None) -> None:
    """Raise ``ValidationError`` naming ``field`` if a placeholder in ``text`` has no valid id."""
    if "%" not in text:
        return
    for m in PLACEHOLDER.finditer(text):
        if placeholder_id(m.group(2)) is None:
            raise ValidationError(
                f"placeholder {m.group()[:40]!r} needs a positive integer id (e.g. %{m.group(1)}=1%)",
                field=field,
                tracking_id=tracking_id,
            )


def find_placeholders(text: str, *, field: str = "text", tracking_id: str | None = None) -> list[Placeholder]:
    """Every placeholder in ``text``, in order; an invalid one raises as in ``check_placeholders``."""
    if "%" not in text:
        return []
    check_placeholders(text, field=field, tracking_id=tracking_id)
    return [
        Placeholder(VariableType(m.group(1)), int(m.group(2)), m.start(), m.end()) for m in PLACEHOLDER.finditer(text)
    ]


_encoder = msgspec.json.Encoder()


class _Body(msgspec.Struct):
    variables: list[Variable]


def variable_batches(variables: Iterable[Variable], size: int = UPLOAD_BATCH) -> Iterator[bytes]:
    """The ``POST /api/items`` bodies for ``variables``, at most ``size`` to a body, in order."""
    if not 1 <= size <= 10_000:
        raise ValueError(f"size must be 1 to 10000, got {size}")
    items = iter(variables)
    while chunk := list(islice(items, size)):
        yield _encoder.encode(_Body(chunk))


class VariableRun(msgspec.Struct, frozen=True):
    """New values of one type and their ids, in the order they were handed out: how a template
    job's pool hands its new variables to the engine, uploaded in bulk (``upload_body``), with no
    ``Variable`` per value. The pool checked each value when it gave it an id."""

    type: VariableType
    ids: list[int]
    values: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def variables(self) -> list[Variable]:
        """One ``Variable`` each (checked again: for a hook, not for the upload)."""
        return list(map(Variable, self.ids, repeat(self.type), self.values))

    def split(self, count: int) -> tuple[VariableRun, VariableRun]:
        """The first ``count`` values, and the rest."""
        ids, values, kind = self.ids, self.values, self.type
        return VariableRun(kind, ids[:count], values[:count]), VariableRun(kind, ids[count:], values[count:])


class _Item(msgspec.Struct, gc=False):
    # A Variable's wire form (same fields, same order), built unchecked from a run's values; the
    # type as a plain string, which encodes faster than the enum.
    id: int
    type: str
    value: str


class _Items(msgspec.Struct):
    variables: list[_Item]


def upload_body(runs: Iterable[VariableRun]) -> bytes:
    """The ``POST /api/items`` body for every value of ``runs`` (the caller keeps it to one upload's
    worth): the same bytes as ``variable_batches`` makes from their ``Variable`` objects."""
    items: list[_Item] = []
    for run in runs:
        items += map(_Item, run.ids, repeat(run.type.value), run.values)
    return _encoder.encode(_Items(items))
