"""What a simulated message's delivery status is at a given time, and the documented answer for it.

The status is computed from the time since acceptance (``steps``: seconds in ``scheduled``, then
in ``processing``), so there is no timer per message. Outcomes are deterministic by phone
number: ending in 13 -> ``undeliverable``, in 66 -> ``permanenterror``, anything else
``delivered``. The channel follows the message type and route: transaction and promo go
Telegram -> Viber -> RCS -> SMS (the tg-viber route: Telegram -> Viber -> SMS), a survey Viber then
SMS, a flashcall is a call; which channel delivers is picked by the phone's second-to-last digit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import msgspec

from .._models import Route

__all__ = ["FINAL", "PRICES", "Entry", "answer_body", "chain_for", "outcome_for", "parts_of", "status_at"]

_CASCADES: Final = {
    "transaction": ("telegram", "viber", "rcs", "sms"),
    "promo": ("telegram", "viber", "rcs", "sms"),
    "viber_survey": ("viber", "sms"),
    "flashcall": ("call",),
}
_TG_VIBER: Final = ("telegram", "viber", "sms")
PRICES: Final = {
    "telegram": Decimal("0.01"),
    "viber": Decimal("0.02"),
    "rcs": Decimal("0.03"),
    "sms": Decimal("0.05"),
    "call": Decimal("0.04"),
}
_CURRENCY: Final = "UAH"


def outcome_for(phone: str) -> str:
    """The final status the sandbox gives a phone number (documented in the README)."""
    if phone.endswith("13"):
        return "undeliverable"
    if phone.endswith("66"):
        return "permanenterror"
    return "delivered"


FINAL: Final = frozenset({"delivered", "undeliverable", "permanenterror"})


def chain_for(message_type: str, path: str) -> tuple[str, ...]:
    chain = _CASCADES.get(message_type, ("sms",))
    return _TG_VIBER if path == Route.TELEGRAM_VIBER.value and len(chain) == 4 else chain


def parts_of(text: Any) -> int:
    return max(1, -(-len(text) // 160)) if isinstance(text, str) else 1


class Entry(msgspec.Struct, array_like=True):
    at: float  # wall-clock acceptance time
    seq: int
    outcome: str
    chain: tuple[str, ...]
    winner: int  # index in chain of the delivering channel
    parts: int


def status_at(entry: Entry, steps: tuple[float, float], now: float) -> str:
    age = now - entry.at
    if age < steps[0]:
        return "scheduled"
    if age < steps[0] + steps[1]:
        return "processing"
    return entry.outcome


def answer_body(entry: Entry, message_id: str, status: str) -> dict[str, Any]:
    """The documented status answer for one message in ``status``."""
    answer: dict[str, Any] = {
        "messagelistId": entry.seq,
        "messageId": message_id,
        "deliverystatus": status,
        "partscount": entry.parts,
    }
    extended = _extended(entry, status)
    if len(entry.chain) > 1:
        answer["fallbacks"] = [{"type": ch, "status": extended[ch]} for ch in entry.chain[1:]]
    answer["extendedStatuses"] = extended
    if status in ("delivered", "undeliverable", "permanenterror"):
        price = PRICES[entry.chain[entry.winner]] if status == "delivered" else Decimal(0)
        cost = price * entry.parts
        answer.update(
            cost=cost,
            rate=price,
            rateAmount=price,
            rateCurrency=_CURRENCY,
            billAmount=cost,
            billCurrency=_CURRENCY,
        )
    return answer


def _extended(entry: Entry, status: str) -> dict[str, str]:
    if status == "scheduled":
        return {ch: "pending" for ch in entry.chain}
    if status == "processing":
        return {ch: ("processing" if i == 0 else "pending") for i, ch in enumerate(entry.chain)}
    if status == "delivered":
        return {
            ch: ("undeliverable" if i < entry.winner else "delivered" if i == entry.winner else "not_used")
            for i, ch in enumerate(entry.chain)
        }
    return dict.fromkeys(entry.chain, status)
