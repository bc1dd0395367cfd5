"""What the journal costs: ``python benchmarks/journal.py [--messages N] [--memory M] [--quick]``.

1. Time: N messages through ``stream()`` against the sandbox in another process, without a
   journal and with one (``synchronous`` normal and full), at 50 ms and 0 ms latency. Each
   run is a fresh process; the runs are interleaved and repeated (the machine is shared).
2. Writes alone: the journal's own work per message (the resume filter's chunk lookups and
   inserts, ``dispatched``, ``completed``) with no network, in messages per second.
3. Memory: M journaled messages from a generator through an in-process transport that
   acknowledges every message (no sockets: the client's and the journal's memory only),
   reporting peak RSS. The journal file is deleted afterwards.

Children: ``journal.py child-send URL N MODE``, ``child-writes N MODE``, ``child-memory N DIR``.
Prints markdown tables and the JSON of every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, sandbox_process

MODES = ("none", "normal", "full")


def messages(n: int, ids: str = "seq") -> Iterator[Any]:
    import uuid

    from cascade_async import Message, MessageType

    for i in range(n):
        yield Message(
            id=f"msg-{i:08d}" if ids == "seq" else str(uuid.uuid4()),
            from_name="BenchShop",
            to_phone=f"+38050{i % 10_000_000:07d}",
            message_type=MessageType.TRANSACTION,
            text=f"Your order #{i} has been confirmed",
        )


async def _consume(client: Any, n: int, mode: str, path: str) -> int:
    from cascade_async import Journal, Status

    accepted = 0
    if mode == "none":
        async for batch in client.stream(messages(n), dedupe=False).batches():
            accepted += sum(r.status is Status.ACCEPTED for r in batch)
        return accepted
    with Journal(path, synchronous=mode) as journal:  # type: ignore[arg-type]
        async for batch in journal.stream(client, messages(n)).batches():
            accepted += sum(r.status is Status.ACCEPTED for r in batch)
    return accepted


def child_send(url: str, n: int, mode: str) -> dict[str, Any]:
    from cascade_async import CascadeClient

    tmp = tempfile.mkdtemp(prefix="journal-bench-")

    async def main() -> int:
        async with CascadeClient(api_key="bench", base_url=url, rate_limit=None) as client:
            return await _consume(client, n, mode, os.path.join(tmp, "job.db"))

    try:
        started = time.perf_counter()
        accepted = asyncio.run(main())
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp)
    return {"messages": n, "mode": mode, "accepted": accepted, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def child_writes(n: int, mode: str, ids: str) -> dict[str, Any]:
    """The journal's work per message with nothing else: filter chunk, dispatched, completed.

    ``ids``: "seq" (msg-00000001 ...) or "uuid" (random: each new id lands on another index page)."""
    from cascade_async import Journal, Result, Status
    from cascade_async._journal_source import ResumeFilter

    tmp = tempfile.mkdtemp(prefix="journal-bench-")
    try:
        with Journal(os.path.join(tmp, "job.db"), synchronous=mode) as journal:  # type: ignore[arg-type]
            cur = journal._db.execute("INSERT INTO runs (started_at) VALUES (0)")
            f = ResumeFilter(journal._db, int(cur.lastrowid or 1), resend_unknown=False, allow_changes=False)
            source = list(messages(n, ids))  # built first: the job's own cost is not the journal's
            started = time.perf_counter()
            batch: list[Any] = []
            for item in f.sync(source):
                batch.append(item)
                if len(batch) == 500:
                    journal.dispatched(batch)
                    journal.completed([Result(m.id, Status.ACCEPTED, "mid", None, 1) for m in batch])
                    batch = []
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp)
    return {"messages": n, "mode": mode, "ids": ids, "seconds": seconds, "messages_per_s": n / seconds}


class AckTransport:
    """Acknowledges every message of a request at once, in process: no sockets, no sandbox."""

    def __init__(self) -> None:
        import msgspec

        class _Id(msgspec.Struct):
            id: str

        self._decode = msgspec.json.Decoder(list[_Id]).decode
        self._encode = msgspec.json.Encoder().encode

    async def __call__(self, url: str, headers: Any, body: bytes) -> Any:
        from cascade_async import RawResponse

        acks = [{"messageId": "m", "trackinId": m.id} for m in self._decode(body)]
        return RawResponse(200, {}, self._encode(acks))

    async def aclose(self) -> None:
        return None


def child_memory(n: int, directory: str) -> dict[str, Any]:
    from cascade_async import CascadeClient

    path = os.path.join(directory, "job.db")

    async def main() -> int:
        async with CascadeClient(api_key="bench", transport=AckTransport(), rate_limit=None) as client:
            return await _consume(client, n, "normal", path)

    base = peak_rss_mb()
    started = time.perf_counter()
    try:
        accepted = asyncio.run(main())
        size = os.path.getsize(path)
    finally:
        for suffix in ("", "-wal", "-shm", ".lock"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    return {
        "messages": n,
        "accepted": accepted,
        "seconds": time.perf_counter() - started,
        "rss_before_mb": base,
        "peak_rss_mb": peak_rss_mb(),
        "journal_mb": size / 2**20,
    }


def timing(n: int, latency: float, repeats: int) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with sandbox_process("--latency", str(latency), "--no-record", "--no-inbox") as url:
        run_child(__file__, "child-send", url, str(min(n, 20_000)), "none")  # warm the server up
        for _ in range(repeats):
            for mode in MODES:
                runs[mode].append(run_child(__file__, "child-send", url, str(n), mode))
    base = statistics.median(r["seconds"] for r in runs["none"])
    rows = []
    for mode, mode_runs in runs.items():
        seconds = statistics.median(r["seconds"] for r in mode_runs)
        rows.append(
            {
                "latency_ms": latency * 1000,
                "mode": mode,
                "seconds": seconds,
                "ratio": seconds / base,
                "msg_per_s": n / seconds,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in mode_runs),
                "runs": [round(r["seconds"], 2) for r in mode_runs],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--memory", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 messages, 200,000 for memory, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.memory, args.repeats = 20_000, 200_000, 1
    out: dict[str, Any] = {"machine": machine(), "messages": args.messages}
    out["timing"] = [*timing(args.messages, 0.05, args.repeats), *timing(args.messages, 0.0, args.repeats)]
    print(f"\n## {args.messages:,} messages through stream(), median of {args.repeats}\n")
    print("| latency | journal | seconds | vs none | msg/s | peak RSS MB |\n|---|---|---|---|---|---|")
    for r in out["timing"]:
        print(
            f"| {r['latency_ms']:.0f} ms | {r['mode']} | {r['seconds']:.2f} | {r['ratio']:.2f}x "
            f"| {r['msg_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |"
        )
    n_writes = str(min(args.messages, 1_000_000))
    out["writes"] = [
        run_child(__file__, "child-writes", n_writes, m, ids) for ids in ("seq", "uuid") for m in MODES[1:]
    ]
    print(f"\n## the journal's own work for {int(n_writes):,} messages, no network\n")
    print("| ids | synchronous | msg/s |\n|---|---|---|")
    for r in out["writes"]:
        print(f"| {r['ids']} | {r['mode']} | {r['messages_per_s']:,.0f} |")
    if args.memory:  # --memory 0 skips it
        with tempfile.TemporaryDirectory(prefix="journal-mem-", dir=os.environ.get("JOURNAL_BENCH_DIR")) as d:
            out["memory"] = run_child(__file__, "child-memory", str(args.memory), d, timeout=7200)
        m = out["memory"]
        print(
            f"\n## memory: {m['messages']:,} journaled messages\n\npeak RSS {m['peak_rss_mb']:.0f} MB "
            f"(before the job {m['rss_before_mb']:.0f} MB), {m['seconds']:.0f} s, "
            f"journal file {m['journal_mb']:,.0f} MB"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("child-"):
        kind, rest = sys.argv[1], sys.argv[2:]
        if kind == "child-send":
            result = child_send(rest[0], int(rest[1]), rest[2])
        elif kind == "child-writes":
            result = child_writes(int(rest[0]), rest[1], rest[2])
        else:
            result = child_memory(int(rest[0]), rest[1])
        print(json.dumps(result))
    else:
        main()
