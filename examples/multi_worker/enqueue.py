"""Split a large JSONL job into parts, send each part as a taskiq task, wait, and sum up.

    python -m examples.multi_worker.enqueue big.jsonl --parts 20 [--workdir job-parts]

Parts and outputs live in ``--workdir`` (default: ``<input>.parts``). Running it again on the same
input and workdir re-enqueues every part; each part's journal makes the tasks send only what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
from pathlib import Path

from examples.multi_worker.tasks import broker, send_part


def split(path: Path, parts: int, workdir: Path) -> list[Path]:
    lines = path.read_bytes().splitlines(keepends=True)
    size = max(1, -(-len(lines) // parts))
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(0, len(lines), size):
        part = workdir / f"part-{i // size:04d}.jsonl"
        part.write_bytes(b"".join(lines[i : i + size]))
        files.append(part)
    return files


async def run(path: Path, parts: int, workdir: Path, wait: float = 3600) -> dict[str, int]:
    await broker.startup()
    try:
        tasks = [await send_part.kiq(str(p), str(p.with_suffix(".out.jsonl"))) for p in split(path, parts, workdir)]
        total: collections.Counter[str] = collections.Counter()
        for task in tasks:
            result = await task.wait_result(timeout=wait)
            if result.is_err:
                raise RuntimeError(f"a part failed: {result.error}")
            total.update(result.return_value)
        return dict(total)
    finally:
        await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--parts", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or args.input.with_suffix(".parts")
    print(asyncio.run(run(args.input, args.parts, workdir)))


if __name__ == "__main__":
    main()
