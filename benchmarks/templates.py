"""What a template costs per message: ``python benchmarks/templates.py [--rows N] [--repeats R]``.

For N CSV-like rows (string cells), CPU µs per message of:

  prebuilt    validating wire dicts built before the clock starts (``Message.from_dict``): the
              issue's baseline, "sending the same texts as pre-rendered wire dicts"
  built       building the same dicts with an f-string in a loop, then validating them
  template    ``Template.messages()`` over the rows, then validating each yielded wire dict

for a template rendered on the client only, for one with a ``:short_url`` field whose value differs
per row (a new variable id and URL check each row), and for the same template with 100 distinct
links (the usual campaign: a few landing pages, many recipients). Overhead = template - prebuilt; the
target is at most 1 µs. Best of R runs (the machine is shared). Prints one JSON line last.

``engine`` does the same through ``client.stream()`` with a transport that answers at once (no
network): the prebuilt dicts as a list (the chunk path), against ``template.messages(rows)`` (chunks
of templated items, variable uploads included). This is the number the target is about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def cpu(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def run(n: int, repeats: int) -> dict[str, Any]:
    from_dict = Message.from_dict
    out: dict[str, Any] = {"rows": n}
    for label, source, link, data in variants(n):
        template = Template(source)
        prebuilt = prebuilt_dicts(data, link)

        def validate_prebuilt(prebuilt: list[dict[str, Any]] = prebuilt) -> None:
            for d in prebuilt:
                from_dict(d)

        def build_and_validate(link: bool = link, data: list[dict[str, str]] = data) -> None:
            for d in prebuilt_dicts(data, link):
                from_dict(d)

        def render_and_validate(template: Template = template, data: list[dict[str, str]] = data) -> None:
            async def consume() -> None:
                # A fresh pool per run, so every link needs a new id as in a real job.
                pool = VariablePool(LocalIdAllocator())
                async for item in template.messages(
                    data, from_name="Shop", message_type="promo", id_prefix="job", pool=pool
                ):
                    from_dict(item.message if isinstance(item, Personalised) else item)  # type: ignore[arg-type]

            asyncio.run(consume())

        base = cpu(validate_prebuilt, repeats) / n * 1e6
        built = cpu(build_and_validate, repeats) / n * 1e6
        rendered = cpu(render_and_validate, repeats) / n * 1e6
        out[label] = {
            "prebuilt_us": round(base, 3),
            "built_us": round(built, 3),
            "template_us": round(rendered, 3),
            "overhead_us": round(rendered - base, 3),
        }
    return out


class _Instant:
    """A transport that acknowledges every message at once (and every variable upload)."""

    async def __call__(self, url: str, headers: Any, body: bytes) -> RawResponse:
        if url.endswith("/api/items"):
            return RawResponse(200, {}, b"{}")
        acks = [{"messageId": "m", "trackinId": m["id"]} for m in msgspec.json.decode(body)]
        return RawResponse(200, {}, msgspec.json.encode(acks))

    async def aclose(self) -> None:
        pass


def engine(n: int, repeats: int) -> dict[str, Any]:
    def through_stream(make: Callable[[], Any]) -> None:
        async def go() -> None:
            async with (
                CascadeClient(
                    api_key="k", transport=_Instant(), rate_limit=None, batch_size=1000, linger=0.0
                ) as client,
                client.stream(make()) as results,
            ):
                async for _ in results.batches():
                    pass

        asyncio.run(go())

    out: dict[str, Any] = {}
    for label, source, link, data in variants(n):
        template = Template(source)
        prebuilt = prebuilt_dicts(data, link)
        base = cpu(lambda p=prebuilt: through_stream(lambda: p), repeats) / n * 1e6  # type: ignore[misc]
        rendered = (
            cpu(
                lambda t=template, d=data: through_stream(  # type: ignore[misc]
                    lambda: t.messages(d, from_name="Shop", message_type="promo", id_prefix="job")
                ),
                repeats,
            )
            / n
            * 1e6
        )
        out[label] = {
            "prebuilt_us": round(base, 3),
            "template_us": round(rendered, 3),
            "overhead_us": round(rendered - base, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = run(args.rows, args.repeats)
    result["engine"] = engine(args.rows, args.repeats)
    for label in ("client_only", "short_url", "short_url_100"):
        r = result[label]
        print(
            f"{label:14} prebuilt {r['prebuilt_us']:.3f} µs  built {r['built_us']:.3f} µs  "
            f"template {r['template_us']:.3f} µs  overhead {r['overhead_us']:+.3f} µs/message"
        )
    for label, r in result["engine"].items():
        print(
            f"engine {label:14} prebuilt {r['prebuilt_us']:.3f} µs  template {r['template_us']:.3f} µs  "
            f"overhead {r['overhead_us']:+.3f} µs/message"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
