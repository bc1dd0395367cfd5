"""Keeping credentials out of errors: a server may echo the key it was sent in its error body."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["CREDENTIAL_HEADERS", "redact", "secrets_in"]

#: The request headers that carry a credential (``credential_headers`` sets them).
CREDENTIAL_HEADERS: Final = ("X-Authorization-Key", "X-Viber-Auth-Token", "X-Tg-Bot-Key")
_HIDDEN: Final = "***"


def secrets_in(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credential values among ``headers``."""
    return tuple(value for name in CREDENTIAL_HEADERS if (value := headers.get(name)))


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every credential in it replaced by ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _HIDDEN)
    return text
