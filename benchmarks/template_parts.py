"""Where a template's CPU time goes: ``python benchmarks/template_parts.py [--rows N] [--repeats R]``.

The parts of ``benchmarks/templates.py``'s overhead, each alone (CPU µs per message, median of R):

  render (client only | 100 links | new link)
                        ``Template.messages(rows).chunks(1000)`` consumed: rows to items, no engine
                        (each templated item a ``Personalised`` with its ``Variable``)
  render blocks (100 links | new link)
                        ``Template.messages(rows).blocks(1000)`` consumed, as ``client.stream()``
                        reads a template: wire dicts, and each chunk's new ids and values
  new Variable          ``Variable(id, SHORT_URL, url)`` for a new URL: its checks and the struct
  engine: templated items, 100 links | new link
                        ``client.stream()`` of ready-made ``Personalised`` items minus the same wire
                        dicts (both ``dedupe=False``): registering, uploading and waiting for variables
  engine: stream's id set
                        the same wire dicts with ``dedupe=True`` minus ``dedupe=False``: what a
                        template job no longer pays (its own id check costs about nothing per derived id)

Public API only, so it runs against older versions too (``PYTHONPATH=old/ python ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from templates import CLIENT_ONLY, WITH_LINK, prebuilt_dicts, rows, through_stream

from cascade_async import Template, Variable, VariableType


def median_us(fn: Callable[[], object], n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) / n * 1e6


def rendered(template: Template, data: list[dict[str, str]]) -> list[Any]:
    async def go() -> list[Any]:
        items = template.messages(data, from_name="Shop", message_type="promo", id_prefix="job")
        return [item async for chunk in items.chunks(1000) for item in chunk]

    return asyncio.run(go())


def in_blocks(template: Template, data: list[dict[str, str]]) -> None:
    async def go() -> None:
        items = template.messages(data, from_name="Shop", message_type="promo", id_prefix="job")
        async for _ in items.blocks(1000):
            pass

    asyncio.run(go())


def run(n: int, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    client, link = Template(CLIENT_ONLY), Template(WITH_LINK)
    for label, template, data in [
        ("render client only", client, rows(n)),
        ("render 100 links", link, rows(n, 100)),
        ("render new link", link, rows(n)),
    ]:
        out[label] = median_us(lambda t=template, d=data: rendered(t, d), n, repeats)  # type: ignore[misc]
    if hasattr(Template.messages(link, [], from_name="S", message_type="promo"), "blocks"):  # newer versions
        for label, data in [("render blocks 100 links", rows(n, 100)), ("render blocks new link", rows(n))]:
            out[label] = median_us(lambda d=data: in_blocks(link, d), n, repeats)  # type: ignore[misc]
    urls = [f"https://shop.example/track/{i}" for i in range(n)]
    kind = VariableType.SHORT_URL
    out["new Variable"] = median_us(lambda: [Variable(i, kind, u) for i, u in enumerate(urls, 1)], n, repeats)
    for label, links in [("engine: templated items, 100 links", 100), ("engine: templated items, new link", None)]:
        data = rows(n, links)
        items = rendered(link, data)
        dicts = prebuilt_dicts(data, True)
        with_vars = median_us(lambda i=items: through_stream(lambda: i, dedupe=False), n, repeats)  # type: ignore[misc]
        plain = median_us(lambda d=dicts: through_stream(lambda: d, dedupe=False), n, repeats)  # type: ignore[misc]
        out[label] = with_vars - plain
    dicts = prebuilt_dicts(rows(n), False)
    on = median_us(lambda: through_stream(lambda: dicts, dedupe=True), n, repeats)
    off = median_us(lambda: through_stream(lambda: dicts, dedupe=False), n, repeats)
    out["engine: stream's id set"] = on - off
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    result = run(args.rows, args.repeats)
    for label, us in result.items():
        print(f"{label:38} {us:6.3f} µs/message")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
