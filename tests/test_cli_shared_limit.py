"""``cascade-async send --redis URL --priority ...``: what reaches the client and the stream (in process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cascade_async import Priority
from cascade_async.cli import _send
from cascade_async.cli._app import cli

URL = "redis://:pw-in-url@127.0.0.1:6399/0"


@pytest.mark.parametrize(
    ("args", "env", "redis_url", "priority"),
    [
        pytest.param([], {}, None, Priority.BULK, id="local-and-bulk-by-default"),
        pytest.param(["--redis", URL], {}, URL, Priority.BULK, id="redis-flag"),
        pytest.param([], {"CASCADE_REDIS_URL": URL}, URL, Priority.BULK, id="redis-from-the-environment"),
        pytest.param(["--priority", "interactive"], {}, None, Priority.INTERACTIVE, id="interactive-job"),
    ],
)
def test_send_shares_the_limit_and_sets_the_priority_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    redis_url: str | None,
    priority: Priority,
) -> None:
    seen: list[Any] = []

    async def fake_run(job: Any, out: Any, err: Any) -> int:
        seen.append(job)
        return 0

    monkeypatch.setattr(_send, "run", fake_run)
    monkeypatch.delenv("CASCADE_REDIS_URL", raising=False)
    job_file = tmp_path / "job.jsonl"
    job_file.write_text("")
    result = CliRunner().invoke(cli, ["send", str(job_file), "--api-key", "k", *args], env=env)
    assert result.exit_code == 0, result.output
    (job,) = seen
    assert job.client_options["rate_limit"].redis_url == redis_url
    assert job.priority is priority
    assert "pw-in-url" not in repr(job.client_options["rate_limit"])
