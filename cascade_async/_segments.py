"""How many SMS parts a text costs if the cascade falls back to SMS.

>>> sms_segments("Hi! Your order shipped").segments
1

The rules (GSM 03.38 and the usual concatenated-SMS sizes):

- A text made only of GSM-7 characters is sent as GSM-7: one part holds 160 septets, a part of a
  longer message 153 (7 go to the concatenation header). The extension characters
  ``^ { } \\ [ ~ ] | €`` and form feed are sent as an escape plus a character, so each counts two.
- Any other character makes the whole text UCS-2: 70 UTF-16 code units in one part, 67 per part of
  a longer message. A character outside the Basic Multilingual Plane (most emoji) is a surrogate
  pair and counts two units.
- Parts are filled greedily, and a two-unit character (an escape sequence or a surrogate pair) is
  never split across two parts: when only one unit is left in a part, the pair starts the next one.
  Handsets and most gateways do this, so a 306-septet text with an ``€`` at position 153 takes three
  parts, not two.

``characters`` counts code points, so an emoji built from several code points (a flag, a family)
counts as several. Placeholders are counted as they would be delivered: ``%short_url=N%`` as a link
of ``SHORT_URL_LENGTH`` characters, ``%url=N%`` and ``%name=N%`` as their value when one is given,
otherwise as written; ``assumed`` says which of these guesses were made.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from ._variables import PLACEHOLDER, VariableType

__all__ = ["SHORT_URL_LENGTH", "SegmentInfo", "SmsEncoding", "sms_segments"]

#: The length a ``%short_url=N%`` is counted as. The provider does not document its short links;
#: 23 is an assumption (``https://`` plus a short host and a 7-character code, the length X/Twitter
#: gives every t.co link). A preview that depends on it says so in ``SegmentInfo.assumed``.
SHORT_URL_LENGTH: Final = 23

GSM_SINGLE: Final = 160
GSM_MULTI: Final = 153
UCS2_SINGLE: Final = 70
UCS2_MULTI: Final = 67

# The GSM 03.38 default alphabet (0x1B, the escape, is not a character of its own).
_GSM_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION: Final = "\f^{}\\[~]|€"
_NOT_GSM = re.compile("[^" + re.escape(_GSM_BASIC + _GSM_EXTENSION) + "]")
_EXTENSION = re.compile("[" + re.escape(_GSM_EXTENSION) + "]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_SHORT_LINK: Final = "x" * SHORT_URL_LENGTH


class SmsEncoding(enum.StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


class SegmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a text costs as SMS. ``first_non_gsm`` says why a text is UCS-2."""

    encoding: SmsEncoding
    characters: int  # code points, after placeholders are counted as delivered
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    first_non_gsm: str | None = None
    first_non_gsm_index: int | None = None  # in the text as counted (placeholders expanded)
    assumed: tuple[str, ...] = ()

    @property
    def per_part(self) -> int:
        """Capacity of each part in units: 160/153 for GSM-7, 70/67 for UCS-2."""
        if self.encoding is SmsEncoding.GSM7:
            return GSM_SINGLE if self.segments <= 1 else GSM_MULTI
        return UCS2_SINGLE if self.segments <= 1 else UCS2_MULTI


def sms_segments(text: str, *, values: Mapping[int, str] | None = None) -> SegmentInfo:
    """Count the SMS parts of ``text``; ``values`` gives known ``%url=N%``/``%name=N%`` values by id."""
    assumed: tuple[str, ...] = ()
    if "%" in text:
        text, assumed = _expand(text, values or {})
    bad = _NOT_GSM.search(text)
    if bad is None:
        wide = len(_EXTENSION.findall(text))
        units = len(text) + wide
        parts = _pack(text, units, GSM_SINGLE, GSM_MULTI, _is_extension if wide else None)
        return SegmentInfo(
            encoding=SmsEncoding.GSM7, characters=len(text), units=units, segments=parts, assumed=assumed
        )
    wide = len(_ASTRAL.findall(text))
    units = len(text) + wide
    parts = _pack(text, units, UCS2_SINGLE, UCS2_MULTI, _is_astral if wide else None)
    return SegmentInfo(
        encoding=SmsEncoding.UCS2,
        characters=len(text),
        units=units,
        segments=parts,
        first_non_gsm=bad.group(),
        first_non_gsm_index=bad.start(),
        assumed=assumed,
    )


def _is_extension(ch: str) -> bool:
    return ch in _GSM_EXTENSION


def _is_astral(ch: str) -> bool:
    return ord(ch) > 0xFFFF


def _pack(text: str, units: int, single: int, multi: int, is_wide: Callable[[str], bool] | None) -> int:
    if units == 0:
        return 0
    if units <= single:
        return 1
    if is_wide is None:
        return -(-units // multi)
    parts, room = 1, multi
    for ch in text:
        width = 2 if is_wide(ch) else 1
        if width > room:
            parts += 1
            room = multi
        room -= width
    return parts


def _expand(text: str, values: Mapping[int, str]) -> tuple[str, tuple[str, ...]]:
    notes: dict[str, None] = {}

    def one(m: re.Match[str]) -> str:
        kind, raw = m.group(1), m.group(2)
        if kind == VariableType.SHORT_URL:
            notes[f"each %short_url=N% counted as a {SHORT_URL_LENGTH}-character link (not documented)"] = None
            return _SHORT_LINK
        value = values.get(int(raw)) if raw.isdigit() else None
        if value is None:
            notes[f"{m.group()} counted as written (value not known)"] = None
            return m.group()
        return value

    return PLACEHOLDER.sub(one, text), tuple(notes)
