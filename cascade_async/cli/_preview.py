"""The dry run's cost preview: what a campaign costs if every message falls back to SMS.

Per message type: how many messages, their characters, their SMS segments (GSM-7 160/153 per
part, UCS-2 70/67; GSM-7 extension characters count two), and which are not GSM-7 and why (the
first offending character). Then the total, the campaign's worst-case SMS cost. Known variable
values (``%url=N%``, ``%name=N%``) are counted as delivered; a ``%short_url=N%`` at the assumed
short-link length, which the preview states. Memory stays flat: sums per type, a few examples.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from .._models import Message
from .._segments import SmsEncoding, sms_segments
from .._variables import Variable, VariableType

__all__ = ["CostPreview"]

EXAMPLES: Final = 5


@dataclasses.dataclass
class _Kind:
    count: int = 0
    characters: int = 0
    max_characters: int = 0
    segments: int = 0
    max_segments: int = 0
    ucs2: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)


class CostPreview:
    def __init__(self) -> None:
        self._kinds: dict[str, _Kind] = {}
        self._notes: dict[str, None] = {}

    def add(self, msg: Message, variables: tuple[Variable, ...] = ()) -> None:
        text = msg.text
        if text is None and msg.fallback is not None:
            text = msg.fallback.text
        values = {v.id: v.value for v in variables if v.type is not VariableType.SHORT_URL}
        info = sms_segments(text or "", values=values)
        kind = self._kinds.setdefault(msg.message_type.value, _Kind())
        kind.count += 1
        kind.characters += info.characters
        kind.max_characters = max(kind.max_characters, info.characters)
        kind.segments += info.segments
        kind.max_segments = max(kind.max_segments, info.segments)
        if info.encoding is SmsEncoding.UCS2:
            kind.ucs2 += 1
            if len(kind.examples) < EXAMPLES:
                kind.examples.append(
                    f"{msg.id}: {info.first_non_gsm!r} (U+{ord(info.first_non_gsm or ' '):04X}) "
                    f"at character {info.first_non_gsm_index}"
                )
        for note in info.assumed:
            if "short_url" in note:
                self._notes[note] = None

    def lines(self) -> list[str]:
        if not self._kinds:
            return []
        out = ["cost preview, if every message fell back to SMS (GSM-7 160/153 per part, UCS-2 70/67):"]
        total = 0
        for name, k in sorted(self._kinds.items()):
            total += k.segments
            line = (
                f"  {name}: {k.count} message(s), {k.characters} characters (longest {k.max_characters}), "
                f"{k.segments} SMS segment(s) (at most {k.max_segments} per message)"
            )
            if name == "flashcall":
                line += "; counted: the fallback text"
            out.append(line)
            if k.ucs2:
                out.append(f"    {k.ucs2} not GSM-7 (sent as UCS-2); the first offending character of each:")
                out.extend(f"      {example}" for example in k.examples)
                if k.ucs2 > len(k.examples):
                    out.append(f"      ... and {k.ucs2 - len(k.examples)} more")
        out.append(f"  total: {total} SMS segment(s)")
        out.extend(f"  note: {note}" for note in self._notes)
        return out
