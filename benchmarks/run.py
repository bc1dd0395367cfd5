"""All benchmarks, side by side in one run: ``python benchmarks/run.py [--messages N] [--quick]``.

Prints markdown tables and writes every number to benchmarks/results/latest.json. Each client
runs in a fresh process (clean CPU and peak-RSS figures) against the sandbox in another
process on loopback. Nothing contacts any other host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, machine, run_child, sandbox_process

VARIANTS = {
    "a": "cascade_async stream (Messages)",
    "a-dicts": "cascade_async stream (wire dicts)",
    "a-batches": "cascade_async stream(...).batches() (wire dicts)",
    "b": "provider's approach: requests, sequential",
    "c": "hand-rolled aiohttp + json + gather",
    "d": "ceiling: raw aiohttp, pre-encoded bytes",
    "d-dicts": "ceiling for dicts: raw aiohttp, builds and encodes the same wire dicts",
    "d-floor": "floor for dicts: (d-dicts) plus the client's own checks, id set and answer reading, no engine",
    "d-floor-messages": "floor for Messages: (d) plus encoding, the id set and answer reading, no engine",
}
#: Each client's floor: the same promised per-message work, hand-rolled without the engine.
FLOOR = {"a": "d-floor-messages", "a-dicts": "d-floor", "a-batches": "d-floor"}


def bulk(n: int, latency: float, repeats: int) -> list[dict[str, Any]]:
    """Each variant ``repeats`` times, interleaved (the machine is shared and noisy)."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with sandbox_process("--latency", str(latency), "--no-record", "--no-inbox", "--no-delivery") as url:
        run_child("bulk_client.py", "d", url, str(min(n, 20_000)))  # warm the server up
        names = list(VARIANTS)
        for i in range(repeats):
            for variant in names[i % len(names) :] + names[: i % len(names)]:  # a new order each round
                if variant == "b" and i > 0 and latency > 0:
                    continue  # sequential and slow: one run is plenty to show the gap
                runs[variant].append(run_child("bulk_client.py", variant, url, str(n)))
    rows = []
    for variant_runs in runs.values():
        # Ratios are taken per round (each run against the ceilings' runs of the same round,
        # which ran next to it), then the median over the rounds: the machine's drift cancels.
        def paired(key: str, against: str, v: list[dict[str, Any]] = variant_runs) -> float:
            return float(statistics.median(r[key] / o[key] for r, o in zip(v, runs[against], strict=False)))

        ratios = {
            "throughput_vs_d": paired("msgs_per_s", "d"),
            "cpu_vs_d": paired("cpu_us_per_msg", "d"),
            "cpu_vs_d_dicts": paired("cpu_us_per_msg", "d-dicts"),
            "throughput_vs_d_dicts": paired("msgs_per_s", "d-dicts"),
        }
        floor = FLOOR.get(variant_runs[0]["variant"]) if variant_runs else None
        if floor is not None:
            ratios["cpu_vs_floor"] = paired("cpu_us_per_msg", floor)
        ordered = sorted(variant_runs, key=lambda r: r["cpu_us_per_msg"])
        row = dict(ordered[len(ordered) // 2])  # the median run by CPU, for the absolute figures
        row["msgs_per_s"] = statistics.median(r["msgs_per_s"] for r in variant_runs)
        row.update(ratios)
        row["latency_ms"] = latency * 1000
        row["runs"] = len(variant_runs)
        row["msgs_per_s_all"] = [r["msgs_per_s"] for r in variant_runs]
        row["cpu_us_per_msg_all"] = [r["cpu_us_per_msg"] for r in variant_runs]
        rows.append(row)
    return rows


def streaming_memory(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    with sandbox_process("--no-record", "--no-inbox", "--no-delivery") as url:
        for dedupe in ("dedupe", "no-dedupe"):
            for n in sizes:
                rows.append(run_child("stream_memory.py", url, str(n), dedupe))
    return rows


def print_tables(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {results['date']}\n")
    for latency, rows in results["bulk"].items():
        print(
            f"Bulk send of {rows[0]['messages']:,} messages, batch 500, 8 in flight, sandbox latency {latency} "
            f"({rows[0]['runs']} interleaved rounds; ratios are the median of per-round ratios):\n"
        )
        print(
            "| client | msgs/s | CPU µs/msg | peak RSS MB | msgs/s ÷ (d) | CPU ÷ (d) | CPU ÷ (d-dicts) "
            "| CPU ÷ its floor |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            floor = f"{r['cpu_vs_floor']:.2f}" if "cpu_vs_floor" in r else ""
            print(
                f"| ({r['variant']}) {VARIANTS[r['variant']]} | {r['msgs_per_s']:,.0f} | {r['cpu_us_per_msg']:.2f} "
                f"| {r['peak_rss_mb']:.0f} | {r['throughput_vs_d']:.2f} | {r['cpu_vs_d']:.2f} "
                f"| {r['cpu_vs_d_dicts']:.2f} | {floor} |"
            )
        print()
    if results.get("memory"):
        print("Streaming memory (generator input, sandbox latency 0):\n")
        print("| messages | dedupe | peak RSS MB | seconds |")
        print("|---:|---|---:|---:|")
        for r in results["memory"]:
            dedupe = "on" if r["dedupe"] else "off"
            print(f"| {r['messages']:,} | {dedupe} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
        print()
    if results.get("rate"):
        r = results["rate"]
        print(
            f"Rate-limit fidelity ({r['configured_rps']:.0f} req/s, burst {r['burst']}, {r['seconds']:.1f} s, "
            f"{r['requests']} requests): achieved {r['achieved_rps_after_burst']:.2f} req/s beyond the burst "
            f"({r['error_pct']:.2f} % off); most in any 1-s window {r['max_in_any_1s_window']}; "
            f"after the burst {r['max_in_any_1s_window_after_burst']}\n"
        )
    if results.get("coalesce"):
        print("Coalesced single sends (sandbox latency 20 ms, client rate limit off):\n")
        print(
            "| concurrent callers | requests (coalesced) | requests (one per message) | p50 / p99 ms coalesced "
            "| p50 / p99 ms one per message |"
        )
        print("|---:|---:|---:|---:|---:|")
        rows = results["coalesce"]
        for on, off in zip(rows[::2], rows[1::2], strict=True):
            print(
                f"| {on['callers']:,} | {on['requests']:,} | {off['requests']:,} | {on['p50_ms']:.1f} / "
                f"{on['p99_ms']:.1f} | {off['p50_ms']:.1f} / {off['p99_ms']:.1f} |"
            )
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of every variant, interleaved")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "latest.json"))
    args = parser.parse_args()
    n = 20_000 if args.quick else args.messages
    results: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    repeats = 1 if args.quick else args.repeats
    results["bulk"] = {"50 ms": bulk(n, 0.05, repeats), "0 ms": bulk(n, 0.0, repeats)}
    results["memory"] = streaming_memory([10_000, 50_000] if args.quick else [100_000, 1_000_000])
    results["rate"] = run_child("rate_fidelity.py", "2" if args.quick else "10")
    with sandbox_process("--latency", "0.02", "--no-record") as url:
        results["coalesce"] = run_child("coalesce.py", url)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print_tables(results)
    print(f"numbers written to {args.output}")


if __name__ == "__main__":
    main()
