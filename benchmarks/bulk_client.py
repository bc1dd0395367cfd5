"""One measured bulk send, in its own process: ``bulk_client.py VARIANT URL N``.

Variants:
  a          cascade_async stream, from Message objects built before the clock starts
  a-dicts    cascade_async stream, from wire dicts built lazily inside the timed part (validation too)
  a-batches  as a-dicts, results taken with ``.batches()`` (one list per request)
  b          the provider's documented approach: sync requests, one POST per batch, sequential
  c          hand-rolled aiohttp + json.dumps + asyncio.gather under a semaphore
  d          the client-side ceiling: raw aiohttp posting pre-encoded bytes, not parsing answers
  d-dicts    the ceiling for dict input: builds the same wire dicts, msgspec-encodes each batch of
             500, posts 8 in flight, reads each answer's bytes unparsed; all inside the timed part
  d-floor    d-dicts plus the per-message work the client promises, hand-rolled with the client's
             own C-level passes: each batch's dicts validated (``convert_chunk``), its ids checked
             against every id sent (a set), each answer decoded into ``Result``s and matched by id.
             No engine: what a stream could cost at best (the rest of its price is the engine's)
  d-floor-messages  the same for Message input (a): Messages built before the clock starts; each
             batch encoded and its ids checked, each answer decoded into ``Result``s
  d-floor-nodedupe, d-floor-messages-nodedupe  the floors without the id set (``dedupe=False``)

Prints one JSON line: messages, seconds, msgs_per_s, cpu_us_per_msg, peak_rss_mb, accepted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import peak_rss_mb

BATCH = 500
IN_FLIGHT = 8
ROUTE = "/api/CascadeMessage/send_message/async"
HEADERS = {"X-Authorization-Key": "bench", "Content-Type": "application/json"}


def wire(i: int) -> dict[str, Any]:
    return {
        "id": f"msg-{i:08d}",
        "fromName": "BenchShop",
        "toPhone": f"+38050{i % 10_000_000:07d}",
        "messageType": "transaction",
        "text": f"Your order #{i} has been confirmed",
        "ttl": 86400,
    }


def batches(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), BATCH):
        yield items[i : i + BATCH]


async def variant_a(url: str, n: int, kind: str) -> int:
    from cascade_async import CascadeClient, Message, Status

    messages = [Message.from_dict(wire(i)) for i in range(n)] if kind == "messages" else []
    accepted = 0
    async with CascadeClient(
        api_key="bench", base_url=url, batch_size=BATCH, max_in_flight=IN_FLIGHT, rate_limit=None
    ) as client:
        start()
        source: Any = messages if kind == "messages" else (wire(i) for i in range(n))
        if kind == "batches":
            async for batch in client.stream(source).batches():
                accepted += sum(r.status is Status.ACCEPTED for r in batch)
        else:
            async for r in client.stream(source):
                if r.status is Status.ACCEPTED:
                    accepted += 1
    return accepted


def variant_b(url: str, n: int) -> int:
    import requests

    source = [wire(i) for i in range(n)]
    accepted = 0
    with requests.Session() as session:
        start()
        for batch in batches(source):
            for attempt in range(3):  # the provider's sample: 3 attempts, 2^i s apart, no retry on 400
                resp = session.post(url + ROUTE, json=batch, headers=HEADERS, timeout=30)
                if resp.status_code == 200:
                    accepted += len(resp.json())
                    break
                if resp.status_code == 400:
                    break
                time.sleep(2**attempt)
    return accepted


async def variant_c(url: str, n: int) -> int:
    import aiohttp

    source = [wire(i) for i in range(n)]
    accepted = 0
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def post(session: aiohttp.ClientSession, batch: list[dict[str, Any]]) -> None:
        nonlocal accepted
        async with sem, session.post(url + ROUTE, data=json.dumps(batch), headers=HEADERS) as resp:
            if resp.status == 200:
                accepted += len(json.loads(await resp.read()))

    async with aiohttp.ClientSession() as session:
        start()
        await asyncio.gather(*(post(session, b) for b in batches(source)))
    return accepted


async def variant_d(url: str, n: int) -> int:
    import aiohttp
    import msgspec

    bodies = [msgspec.json.encode(b) for b in batches([wire(i) for i in range(n)])]
    sizes = [min(BATCH, n - i * BATCH) for i in range(len(bodies))]
    accepted = 0
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def post(session: aiohttp.ClientSession, body: bytes, size: int) -> None:
        nonlocal accepted
        async with sem, session.post(url + ROUTE, data=body, headers=HEADERS) as resp:
            await resp.read()
            if resp.status == 200:
                accepted += size

    async with aiohttp.ClientSession() as session:
        start()
        await asyncio.gather(*(post(session, b, s) for b, s in zip(bodies, sizes, strict=True)))
    return accepted


async def _posts(
    url: str, n: int, prepare: Callable[[int, int], tuple[bytes, Any]], count: Callable[[bytes, Any], int]
) -> int:
    """The raw loop of the ceilings and floors: batch after batch, ``prepare(lo, hi)`` makes the body
    (and what ``count`` needs), posted 8 in flight; ``count(answer, that)`` of each 200 answer."""
    import aiohttp

    accepted = 0
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def post(session: aiohttp.ClientSession, body: bytes, made: Any) -> None:
        nonlocal accepted
        try:
            async with session.post(url + ROUTE, data=body, headers=HEADERS) as resp:
                data = await resp.read()
                if resp.status == 200:
                    accepted += count(data, made)
        finally:
            sem.release()

    async with aiohttp.ClientSession() as session:
        start()
        tasks = set()
        for lo in range(0, n, BATCH):
            body, made = prepare(lo, min(n, lo + BATCH))
            await sem.acquire()
            task = asyncio.ensure_future(post(session, body, made))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return accepted


async def variant_d_dicts(url: str, n: int) -> int:
    import msgspec

    encode = msgspec.json.Encoder().encode

    def prepare(lo: int, hi: int) -> tuple[bytes, int]:
        batch = [wire(i) for i in range(lo, hi)]
        return encode(batch), len(batch)

    return await _posts(url, n, prepare, lambda answer, size: size)  # the answer read, not parsed


async def variant_d_floor(url: str, n: int, messages_given: bool = False, dedupe: bool = True) -> int:
    from cascade_async import Message, Status
    from cascade_async._admission import Admission
    from cascade_async._wire import results_from_acks

    admission = Admission(dedupe=dedupe, max_bytes=1_000_000)
    given = [Message.from_dict(wire(i)) for i in range(n)] if messages_given else []

    def prepare(lo: int, hi: int) -> tuple[bytes, list[Message]]:
        admitted = admission.admit_chunk(given[lo:hi] if messages_given else [wire(i) for i in range(lo, hi)])
        assert admitted is not None
        messages, _, body = admitted
        return body, messages

    def count(answer: bytes, messages: list[Message]) -> int:
        return sum(r.status is Status.ACCEPTED for r in results_from_acks(messages, answer, attempts=1))

    return await _posts(url, n, prepare, count)


_clock: dict[str, float] = {}


def start() -> None:
    _clock["wall"] = time.perf_counter()
    _clock["cpu"] = time.process_time()


def main() -> None:
    variant, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if variant == "b":
        accepted = variant_b(url, n)
    else:
        coro = {
            "a": lambda: variant_a(url, n, "messages"),
            "a-dicts": lambda: variant_a(url, n, "dicts"),
            "a-batches": lambda: variant_a(url, n, "batches"),
            "c": lambda: variant_c(url, n),
            "d": lambda: variant_d(url, n),
            "d-dicts": lambda: variant_d_dicts(url, n),
            "d-floor": lambda: variant_d_floor(url, n),
            "d-floor-messages": lambda: variant_d_floor(url, n, messages_given=True),
            "d-floor-nodedupe": lambda: variant_d_floor(url, n, dedupe=False),
            "d-floor-messages-nodedupe": lambda: variant_d_floor(url, n, messages_given=True, dedupe=False),
        }[variant]()
        accepted = asyncio.run(coro)
    wall = time.perf_counter() - _clock["wall"]
    cpu = time.process_time() - _clock["cpu"]
    print(
        json.dumps(
            {
                "variant": variant,
                "messages": n,
                "accepted": accepted,
                "seconds": wall,
                "msgs_per_s": n / wall,
                "cpu_us_per_msg": cpu / n * 1e6,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
