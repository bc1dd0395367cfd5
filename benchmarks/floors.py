"""How close the engine is to the work it promises: ``python benchmarks/floors.py [--rounds R] [--messages N]``.

For #10's two CPU targets, each client next to its ceiling and its floor (``bulk_client.py``): the
floors do, per message, exactly the work the client promises (validation, the duplicate-id set,
each answer read into ``Result``s and matched by id) with the client's own functions, in the raw
loop of the ceilings, without the engine; ``-nodedupe`` floors leave the id set out. Rounds are
interleaved against a sandbox in another process; each ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_child, sandbox_process

GROUPS = {
    "d-dicts": ["a-batches", "a-dicts", "d-floor", "d-floor-nodedupe"],
    "d": ["a", "d-floor-messages", "d-floor-messages-nodedupe"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300_000)
    args = parser.parse_args()
    for latency in (0.05, 0.0):
        with sandbox_process("--latency", str(latency), "--no-record", "--no-inbox", "--no-delivery") as url:
            run_child("bulk_client.py", "d", url, "20000")  # warm the server up
            for ceiling, variants in GROUPS.items():
                names = [ceiling, *variants]
                cpu: dict[str, list[float]] = {v: [] for v in names}
                for r in range(args.rounds):
                    for v in names[r % len(names) :] + names[: r % len(names)]:
                        cpu[v].append(run_child("bulk_client.py", v, url, str(args.messages))["cpu_us_per_msg"])
                print(f"\nlatency {latency * 1000:.0f} ms, {args.messages:,} messages, {args.rounds} rounds")
                print(f"| variant | CPU µs/msg | ÷ ({ceiling}) |")
                print("|---|---:|---:|")
                for v in names:
                    ratio = statistics.median(a / b for a, b in zip(cpu[v], cpu[ceiling], strict=True))
                    print(f"| ({v}) | {statistics.median(cpu[v]):.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
