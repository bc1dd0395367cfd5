"""Generate examples/messages.jsonl: realistic messages of all four types (deterministic).

python examples/make_messages.py [COUNT] > examples/messages.jsonl
"""

from __future__ import annotations

import json
import random
import sys

SENDERS = ["ShopUA", "NovaBank", "TaxiGo", "PharmaPlus", "CinemaCity"]
OPERATOR_CODES = ["50", "66", "95", "99", "67", "68", "96", "97", "98", "63", "73", "93"]


def phone(rng: random.Random) -> str:
    return f"+380{rng.choice(OPERATOR_CODES)}{rng.randrange(10**7):07d}"


def make(i: int, rng: random.Random) -> dict[str, object]:
    sender = rng.choice(SENDERS)
    kind = rng.choices(["transaction", "promo", "viber_survey", "flashcall"], weights=[55, 25, 10, 10])[0]
    m: dict[str, object] = {"id": f"{kind[:4]}-{i:06d}", "fromName": sender, "toPhone": phone(rng), "messageType": kind}
    if kind == "transaction":
        order = rng.randrange(10_000, 99_999)
        m["text"] = rng.choice(
            [
                f"Your order #{order} has been confirmed. Delivery in 2-3 days.",
                f"Ваше замовлення #{order} передано службі доставки.",
                f"Your verification code is {rng.randrange(10**6):06d}. It expires in 5 minutes.",
                f"Payment of {rng.randrange(50, 5000)} UAH received. Thank you!",
            ]
        )
        m["ttl"] = 300 if "code" in str(m["text"]) else 86400
    elif kind == "promo":
        m["text"] = rng.choice(
            [
                "Weekend sale: -20% on everything with code WEEKEND20.",
                "Знижка 15% на всі ліки до неділі!",
                "Two tickets for the price of one every Tuesday.",
            ]
        )
        m["ttl"] = 172800
    elif kind == "viber_survey":
        m["text"] = rng.choice(["How was your delivery?", "Rate your last ride", "Як вам наш сервіс?"])
        m["surveyOptions"] = rng.choice([["Great", "OK", "Bad"], ["1", "2", "3", "4", "5"], ["Так", "Ні"]])
        m["ttl"] = 604800
    return m


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    rng = random.Random(2026)
    for i in range(count):
        sys.stdout.write(json.dumps(make(i, rng), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
