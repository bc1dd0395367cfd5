"""Message variables in the sandbox: ``POST /api/items`` stores them per account, and accepted
texts are rendered as the recipient would read them.

The provider substitutes ``%name=N%``, ``%url=N%`` and ``%short_url=N%`` at delivery. The sandbox
does it when it accepts a message, and keeps the result as the message's ``renderedText`` (the
inbox shows it; ``text`` stays what was sent). A short URL becomes ``https://sho.rt/`` and an
8-character code derived from the account and id: 23 characters, the length the client's cost
preview assumes.

A placeholder whose id was never uploaded on the account is refused with 400 ``UNKNOWN_VARIABLE``
naming the field and the placeholder, where the provider would deliver a broken text: in the
sandbox, a message sent before its variables is a bug to see at once, not a text to find later.
A placeholder of the wrong type (``%url=N%`` for a ``name`` value) is refused the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._contract import AUTH_HEADERS, Reject

__all__ = ["SHORT_HOST", "VariableStore"]

SHORT_HOST: Final = "https://sho.rt/"
MAX_VARIABLES: Final = 10_000
_PLACEHOLDER = re.compile(r"%(name|url|short_url)=([^%]*)%")
_URL = re.compile(r"[hH][tT][tT][pP][sS]?://[^\s/?#]+\S*")
_TYPES: Final = frozenset({"name", "url", "short_url"})
_ALPHABET: Final = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_decode = msgspec.json.Decoder()


def account_of(headers: Mapping[str, str]) -> str:
    """Which account a request is for: its first credential (never shown anywhere)."""
    for name in AUTH_HEADERS:
        value = headers.get(name)
        if value:
            return f"{name}:{value}"
    return ""


def short_link(account: str, vid: int) -> str:
    digest = hashlib.blake2b(f"{account}\x00{vid}".encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    code = ""
    for _ in range(8):
        number, rest = divmod(number, len(_ALPHABET))
        code += _ALPHABET[rest]
    return SHORT_HOST + code


class VariableStore:
    """Uploaded variables by account and id; the last upload of an id wins, as on the provider."""

    def __init__(self) -> None:
        self._values: dict[str, dict[int, tuple[str, str]]] = {}
        self.uploads = 0  # accepted /api/items requests

    def __len__(self) -> int:
        return sum(map(len, self._values.values()))

    def clear(self) -> None:
        self._values.clear()
        self.uploads = 0

    def get(self, account: str, vid: int) -> tuple[str, str] | None:
        """``(type, value)`` of an uploaded id, or None."""
        return self._values.get(account, {}).get(vid)

    def store(self, account: str, body: bytes) -> int:
        """Check and keep one ``{"variables": [...]}`` body; how many it held. Raises ``Reject``."""
        try:
            data: Any = _decode.decode(body)
        except msgspec.DecodeError:
            raise Reject(400, "INVALID_REQUEST", "body is not valid JSON") from None
        items = data.get("variables") if isinstance(data, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_VARIABLES:
            raise Reject(
                400, "INVALID_REQUEST", f"body must be {{'variables': [...]}} with 1 to {MAX_VARIABLES}", "variables"
            )
        checked: list[tuple[int, str, str]] = []
        for i, item in enumerate(items):
            field = f"variables[{i}]"
            if not isinstance(item, dict):
                raise Reject(400, "INVALID_VARIABLE", "each variable must be an object", field)
            vid, kind, value = item.get("id"), item.get("type"), item.get("value")
            if type(vid) is not int or vid < 1:
                raise Reject(400, "INVALID_VARIABLE", "id must be a positive integer", f"{field}.id")
            if kind not in _TYPES:
                raise Reject(400, "INVALID_VARIABLE", "type must be name, url or short_url", f"{field}.type")
            if not isinstance(value, str) or not value.strip():
                raise Reject(400, "INVALID_VARIABLE", "value must be a non-empty string", f"{field}.value")
            if kind != "name" and not _URL.fullmatch(value):
                raise Reject(400, "INVALID_VARIABLE", "a url value must be an http(s) URL", f"{field}.value")
            checked.append((vid, kind, value))
        mine = self._values.setdefault(account, {})
        for vid, kind, value in checked:
            mine[vid] = (kind, value)
        self.uploads += 1
        return len(checked)

    def render(self, account: str, m: dict[str, Any]) -> None:
        """Put the recipient's text in ``m["renderedText"]`` when ``text`` holds placeholders.

        Raises ``Reject`` (400 ``UNKNOWN_VARIABLE``) for an id not uploaded, or uploaded as
        another type. Texts without ``%`` cost one substring test.
        """
        text = m.get("text")
        if isinstance(text, str) and "%" in text:
            m["renderedText"] = self._rendered(account, text, "text")
        fallback = m.get("fallback")
        if isinstance(fallback, dict) and isinstance(fallback.get("text"), str) and "%" in fallback["text"]:
            self._rendered(account, fallback["text"], "fallback.text")  # checked; shown as sent

    def _rendered(self, account: str, text: str, field: str) -> str:
        mine = self._values.get(account, {})

        def one(match: re.Match[str]) -> str:
            kind, raw = match.group(1), match.group(2)
            found = mine.get(int(raw)) if raw.isdigit() else None
            if found is None:
                raise Reject(
                    400,
                    "UNKNOWN_VARIABLE",
                    f"{match.group()} refers to a variable never uploaded (POST /api/items)",
                    field,
                )
            if found[0] != kind:
                raise Reject(400, "UNKNOWN_VARIABLE", f"{match.group()} refers to a {found[0]} variable", field)
            return short_link(account, int(raw)) if kind == "short_url" else found[1]

        return _PLACEHOLDER.sub(one, text)
