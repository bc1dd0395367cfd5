"""Peak RSS of ``cascade-async send contacts.csv --template ...`` against a sandbox in another process.

``python benchmarks/template_memory.py [--rows 10000,100000,1000000] [--links 100]``: for each row
count, one fresh process per job, side by side:

  derived ids   a CSV without an ``id`` column (ids ``contacts-{row}``, unique by construction)
  id column     the same CSV with an ``id`` column (the template keeps a 64-bit hash per id)
  wire JSONL    the same texts pre-rendered as wire JSONL (the stream keeps its id set)

``--links`` distinct short links (0: a new link per row, and then the variable pool and the upload
tracking grow by one entry per row, by design: the same value must keep its id). The growth between
row counts, divided by the rows added, is the job's memory per row. One JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import sandbox_process

TEMPLATE = "Hi {name}! Order {order} shipped: {link:short_url}"


def write_inputs(folder: str, rows: int, links: int) -> tuple[str, str, str]:
    csv_path = os.path.join(folder, f"contacts{rows}.csv")
    ids_path = os.path.join(folder, f"ids{rows}.csv")
    jsonl_path = os.path.join(folder, f"wire{rows}.jsonl")
    with open(csv_path, "w") as plain, open(ids_path, "w") as with_ids, open(jsonl_path, "w") as wire:
        plain.write("toPhone,name,order,link\n")
        with_ids.write("id,toPhone,name,order,link\n")
        for i in range(rows):
            link = i if links == 0 else i % links
            cells = f"+38050{i % 10_000_000:07d},Customer {i},{i},https://shop.example/t/{link}\n"
            plain.write(cells)
            with_ids.write(f"order-{i:08d}," + cells)
            text = f"Hi Customer {i}! Order {i} shipped: {link}"
            message = {"id": f"w-{i}", "fromName": "Shop", "toPhone": f"+38050{i % 10_000_000:07d}"}
            wire.write(json.dumps(message | {"messageType": "promo", "text": text}) + "\n")
    return csv_path, ids_path, jsonl_path


_MEASURED = (
    "import resource, sys\n"
    "from cascade_async.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def peak_mb(args: list[str]) -> tuple[float, float]:
    """Run the command in a fresh process: (its peak RSS in MB, wall seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, *args], capture_output=True, check=False)
    err = done.stderr.decode()
    if done.returncode != 0 or "PEAK" not in err:
        raise RuntimeError(done.stdout.decode() + err)
    kib = int(err.rsplit("PEAK", 1)[1].split()[0])
    return kib / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--links", type=int, default=100)
    args = parser.parse_args()
    out: dict[str, Any] = {"links": args.links, "runs": []}
    with tempfile.TemporaryDirectory() as folder, sandbox_process("--no-record", "--no-inbox") as url:
        common = ["--base-url", url, "--api-key", "bench", "--rate", "1000", "--no-progress"]
        template = ["--template", TEMPLATE, "--message-type", "promo", "--from-name", "Shop"]
        for rows in sorted(int(n) for n in args.rows.split(",")):
            csv_path, ids_path, jsonl_path = write_inputs(folder, rows, args.links)
            derived_mb, seconds = peak_mb(["send", csv_path, *template, *common])
            column_mb, _ = peak_mb(["send", ids_path, *template, *common])
            wire_mb, _ = peak_mb(["send", jsonl_path, *common])
            run = {
                "rows": rows,
                "derived_ids_peak_mb": round(derived_mb, 1),
                "id_column_peak_mb": round(column_mb, 1),
                "wire_peak_mb": round(wire_mb, 1),
                "derived_seconds": round(seconds, 2),
            }
            out["runs"].append(run)
            print(
                f"{rows:>8} rows: derived ids {derived_mb:6.1f} MB ({seconds:.1f} s)   id column {column_mb:6.1f} MB"
                f"   wire JSONL {wire_mb:6.1f} MB"
            )
            os.remove(csv_path)
            os.remove(ids_path)
            os.remove(jsonl_path)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
