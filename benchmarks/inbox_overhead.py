"""Sandbox CPU per accepted message with the inbox on versus off (target: at most +5 %).

The sandbox runs as ``cascade-async sandbox`` in its own process, recording on (the default), no
browser attached; its CPU time comes from /proc (Linux). A plain aiohttp poster sends pre-encoded
batches, so the client's cost stays out of the number. Runs alternate on/off; medians are reported.

    python benchmarks/inbox_overhead.py [--messages 200000] [--batch 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
import msgspec

ROUTE = "/api/CascadeMessage/send_message/async"
HEADERS = {"Content-Type": "application/json", "X-Authorization-Key": "bench"}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def bodies(run: int, messages: int, batch: int) -> list[bytes]:
    out = []
    for start in range(0, messages, batch):
        out.append(
            msgspec.json.encode(
                [
                    {
                        "id": f"r{run}-{i}",
                        "fromName": "Bench",
                        "toPhone": f"+38050{i % 1000:07d}",
                        "messageType": "promo",
                        "text": f"Spring sale, message {i}",
                    }
                    for i in range(start, min(start + batch, messages))
                ]
            )
        )
    return out


async def post_all(url: str, payloads: list[bytes], concurrency: int) -> None:
    queue = list(reversed(payloads))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url + ROUTE, data=body, headers=HEADERS) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def one_run(inbox: bool, run: int, messages: int, batch: int, concurrency: int) -> float:
    """Sandbox CPU microseconds per message."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "cascade_async.cli", "sandbox", "--port", str(port)]
    if not inbox:
        cmd.append("--no-inbox")
    payloads = bodies(run, messages, batch)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # "listening on": up
            url = f"http://127.0.0.1:{port}"
            asyncio.run(post_all(url, payloads[:4], concurrency))  # warm up
            before = cpu_seconds(proc.pid)
            asyncio.run(post_all(url, payloads, concurrency))
            spent = cpu_seconds(proc.pid) - before
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return spent / messages * 1e6


def add_cost_ns(batch: int) -> float:
    """The recording step alone, in process: nanoseconds per message for ``Inbox.add`` of one batch."""
    from cascade_async.sandbox._inbox import Inbox

    messages = msgspec.json.decode(bodies(0, batch, batch)[0])
    ids = [f"id-{i}" for i in range(batch)]
    inbox = Inbox()
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        inbox.add(messages, ids, ROUTE)
    return (time.perf_counter() - started) / (rounds * batch) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"off": [], "on": []}
    started = time.monotonic()
    for run in range(args.runs):
        for mode in ("off", "on"):
            results[mode].append(one_run(mode == "on", run, args.messages, args.batch, args.concurrency))
            print(f"run {run + 1} inbox {mode}: {results[mode][-1]:.2f} µs/message", file=sys.stderr)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    took = time.monotonic() - started
    print(f"\n{args.messages:,} messages, batch {args.batch}, {args.runs} runs each ({took:.0f} s)")
    print("| inbox | sandbox CPU per message (median) |")
    print("|---|---|")
    print(f"| off | {off:.2f} µs |")
    print(f"| on | {on:.2f} µs ({(on - off) / off:+.1%}) |")
    add_ns = add_cost_ns(args.batch)
    print(f"Inbox.add alone: {add_ns:.1f} ns per message")
    print(json.dumps({"off_us": off, "on_us": on, "overhead": (on - off) / off, "add_ns": add_ns, "runs": results}))


if __name__ == "__main__":
    main()
