"""A run stopped while its reader waits on a pipe that stays open ends at once: nothing waits for
that read (``tail -f log | cascade-async send -``, then Ctrl-C; a client closed early)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cascade_async import CascadeClient, read_csv, read_json_array, read_jsonl
from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import Sandbox

from .test_cli import SECRET, wire

CSV_HEAD = b"id,fromName,toPhone,messageType,text\n"


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with SandboxThread(api_keys={SECRET}) as sb:
        yield sb


def wait_for(check: Any, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(check())


READERS = [
    ("jsonl", read_jsonl, b"".join(json.dumps(wire(i)).encode() + b"\n" for i in range(3))),
    ("csv", read_csv, CSV_HEAD + b"".join(b"c%d,Shop,+380501234567,transaction,hi\n" % i for i in range(3))),
    ("json array", read_json_array, b"[" + b",".join(json.dumps(wire(i)).encode() for i in range(3))),
]


@pytest.mark.parametrize(("kind", "reader", "data"), READERS, ids=[r[0] for r in READERS])
def test_a_client_closed_while_its_reader_waits_on_an_open_pipe_lets_asyncio_run_return(
    server: Sandbox, kind: str, reader: Any, data: bytes
) -> None:
    r, w = os.pipe()
    stream = open(r, "rb")  # noqa: SIM115 - closed below
    writer = open(w, "wb", buffering=0)  # noqa: SIM115

    async def main() -> list[str]:
        async with CascadeClient(api_key=SECRET, base_url=server.url, rate_limit=None, linger=0.01) as client:
            got = []
            async for result in client.stream(reader(stream)):
                got.append(result.tracking_id)
                if len(got) == 3:
                    break  # the pipe is still open; the reader waits on it
        return got

    answer: list[Any] = []
    runner = threading.Thread(target=lambda: answer.append(asyncio.run(main())), daemon=True)
    runner.start()
    try:
        writer.write(data)
        runner.join(timeout=30)
        ended = not runner.is_alive()
    finally:
        writer.close()  # a stuck read returns now; the run can end
        runner.join(timeout=30)
        stream.close()
    assert ended, "asyncio.run waited for the read of a pipe that stayed open"
    assert sorted(answer[0]) == ["c0", "c1", "c2"]


@pytest.mark.parametrize("template", [False, True], ids=["messages", "template"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_ctrl_c_ends_the_cli_while_stdin_stays_open(server: Sandbox, fmt: str, template: bool) -> None:
    args = [sys.executable, "-m", "cascade_async.cli", "send", "-", "--base-url", server.url, "--format", fmt]
    if template:
        args += ["--template", "Hi {name}", "--message-type", "transaction", "--from-name", "Shop"]
        if fmt == "csv":
            data = b"id,toPhone,name\n" + b"".join(b"t%d,+380501234567,Ann\n" % i for i in range(3))
        else:
            rows = [{"id": f"t{i}", "toPhone": "+380501234567", "name": "Ann"} for i in range(3)]
            data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    else:
        data = READERS[0][2] if fmt == "jsonl" else READERS[1][2]
    env = {**os.environ, "CASCADE_API_KEY": SECRET}
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdin is not None
        assert proc.stderr is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
            assert wait_for(lambda: len(server.accepted) == 3 or proc.poll() is not None)
            assert proc.poll() is None, proc.stderr.read().decode()
            proc.send_signal(signal.SIGINT)  # stdin stays open
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                code = None
            assert code is not None, "the CLI waited for stdin after Ctrl-C"
            stderr = proc.stderr.read().decode()
            assert "Fatal Python error" not in stderr
            assert code == 1, stderr
        finally:
            if proc.poll() is None:
                proc.kill()
