"""What a template costs per message: ``python benchmarks/templates.py [--rows N] [--repeats R]``.

For N CSV-like rows (string cells), CPU µs per message (``time.process_time``) of:

  prebuilt    the same texts as wire dicts built before the clock starts: the issue's baseline,
              "sending the same texts as pre-rendered wire dicts"
  template    ``Template.messages(rows)`` rendering and checking those texts from the rows

for a template rendered on the client only (``client_only``), one with a ``:short_url`` field whose
value differs per row (``short_url``: a new URL to check, a new id and a new variable to upload every
row: the worst case), and the same with 100 distinct links (``short_url_100``: a campaign's few
landing pages). Each goes through ``client.stream()`` with a transport that answers at once (no
network; variable uploads included): this is the number the target (at most +1 µs) is about.
``direct`` is the same without the engine: ``Message.from_dict`` on each dict or template item.

Runs are paired and interleaved in one process (prebuilt, template, template, prebuilt, ...), so
drift and load hit both alike; the overhead is the median of the R paired differences, and
``spread`` is the range of those differences (how noisy the machine was). One JSON line last.

Note: ``client.stream()`` keeps no id set for template items (the template refuses repeated ids
itself, see ``_template_ids``), while the prebuilt dicts pay for the stream's id set;
``prebuilt_nodedupe_us`` is the baseline with ``dedupe=False``, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cascade_async import CascadeClient, Message, Personalised, RawResponse, Template, VariablePool
from cascade_async._variable_ids import LocalIdAllocator

CLIENT_ONLY = "Hi {name}! Your order {order} has shipped. 20% off your next one."
WITH_LINK = "Hi {name}! Your order {order} has shipped: {link:short_url}"


def rows(n: int, distinct_links: int | None = None) -> list[dict[str, str]]:
    return [
        {
            "toPhone": f"+38050{i % 10_000_000:07d}",
            "name": f"Customer {i}",
            "order": str(100_000 + i),
            "link": f"https://shop.example/track/{i if distinct_links is None else i % distinct_links}",
        }
        for i in range(n)
    ]


def prebuilt_dicts(data: list[dict[str, str]], link: bool) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(data, 1):
        text = (
            f"Hi {r['name']}! Your order {r['order']} has shipped: %short_url={i}%"
            if link
            else f"Hi {r['name']}! Your order {r['order']} has shipped. 20% off your next one."
        )
        out.append(
            {"id": f"job-{i}", "fromName": "Shop", "toPhone": r["toPhone"], "messageType": "promo", "text": text}
        )
    return out


def variants(n: int) -> list[tuple[str, str, bool, list[dict[str, str]]]]:
    return [
        ("client_only", CLIENT_ONLY, False, rows(n)),
        ("short_url", WITH_LINK, True, rows(n)),
        ("short_url_100", WITH_LINK, True, rows(n, 100)),
    ]


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def paired(base: Callable[[], object], other: Callable[[], object], repeats: int, n: int) -> dict[str, float]:
    """Median µs per message of each, the median paired difference and its range."""
    bases: list[float] = []
    others: list[float] = []
    for r in range(repeats):
        if r % 2:  # alternate which goes first
            others.append(cpu(other))
            bases.append(cpu(base))
        else:
            bases.append(cpu(base))
            others.append(cpu(other))
    diffs = sorted((o - b) / n * 1e6 for b, o in zip(bases, others, strict=True))
    return {
        "prebuilt_us": round(statistics.median(bases) / n * 1e6, 3),
        "template_us": round(statistics.median(others) / n * 1e6, 3),
        "overhead_us": round(statistics.median(diffs), 3),
        "spread_us": round(diffs[-1] - diffs[0], 3),
    }


class _Instant:
    """A transport that acknowledges every message at once (and every variable upload)."""

    async def __call__(self, url: str, headers: Any, body: bytes) -> RawResponse:
        if url.endswith("/api/items"):
            return RawResponse(200, {}, b"{}")
        acks = [{"messageId": "m", "trackinId": m["id"]} for m in msgspec.json.decode(body)]
        return RawResponse(200, {}, msgspec.json.encode(acks))

    async def aclose(self) -> None:
        pass


def through_stream(make: Callable[[], Any], dedupe: bool | None = None) -> None:
    async def go() -> None:
        async with (
            CascadeClient(api_key="k", transport=_Instant(), rate_limit=None, batch_size=1000, linger=0.0) as client,
            client.stream(make(), dedupe=dedupe) as results,
        ):
            async for _ in results.batches():
                pass

    asyncio.run(go())


def direct(template: Template, data: list[dict[str, str]], prebuilt: list[dict[str, Any]]) -> tuple[Any, Any]:
    from_dict = Message.from_dict

    def validate_prebuilt() -> None:
        for d in prebuilt:
            from_dict(d)

    def render_and_validate() -> None:
        async def consume() -> None:
            pool = VariablePool(LocalIdAllocator())  # a fresh pool per run: every link needs a new id
            async for item in template.messages(
                data, from_name="Shop", message_type="promo", id_prefix="job", pool=pool
            ):
                from_dict(item.message if isinstance(item, Personalised) else item)  # type: ignore[arg-type]

        asyncio.run(consume())

    return validate_prebuilt, render_and_validate


def run(n: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": n, "repeats": repeats, "engine": {}, "direct": {}}
    for label, source, link, data in variants(n):
        template = Template(source)
        prebuilt = prebuilt_dicts(data, link)
        engine = paired(
            lambda p=prebuilt: through_stream(lambda: p),  # type: ignore[misc]
            lambda t=template, d=data: through_stream(  # type: ignore[misc]
                lambda: t.messages(d, from_name="Shop", message_type="promo", id_prefix="job")
            ),
            repeats,
            n,
        )
        nodedupe = statistics.median(
            cpu(lambda p=prebuilt: through_stream(lambda: p, dedupe=False))  # type: ignore[misc]
            for _ in range(max(1, repeats // 2))
        )
        engine["prebuilt_nodedupe_us"] = round(nodedupe / n * 1e6, 3)
        out["engine"][label] = engine
        out["direct"][label] = paired(*direct(template, data, prebuilt), repeats, n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    result = run(args.rows, args.repeats)
    for mode in ("engine", "direct"):
        for label, r in result[mode].items():
            print(
                f"{mode:6} {label:14} prebuilt {r['prebuilt_us']:.3f} µs  template {r['template_us']:.3f} µs  "
                f"overhead {r['overhead_us']:+.3f} µs/message (spread {r['spread_us']:.3f})"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
