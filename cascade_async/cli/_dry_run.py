"""``cascade-async send --dry-run``: every item admitted as ``stream()`` would, nothing sent, the cost previewed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from rich.console import Console

from .._admission import Admission
from .._inputs import read_messages
from .._models import Message, Result
from .._outputs import ResultWriter
from .._variables import Variable
from ._common import EXIT_OK, EXIT_SOME_FAILED
from ._preview import CostPreview
from ._template_source import TemplateJob

__all__ = ["dry_run"]

MAX_BATCH_BYTES = 1024 * 1024  # the client's default


async def dry_run(
    stream: IO[bytes], fmt: str, writer: ResultWriter | None, out: Console, template: TemplateJob | None = None
) -> int:
    """Admit every item as ``stream()`` would (same verdicts), send nothing, preview the cost."""
    good = bad = 0
    preview = CostPreview()
    variables: tuple[Variable, ...] = ()

    def note(messages: Sequence[Message], of_messages: Sequence[tuple[Variable, ...]]) -> None:
        nonlocal variables
        variables = of_messages[0]  # admit() tells of one message at a time

    admission = Admission(dedupe=True, max_bytes=MAX_BATCH_BYTES, on_variables=note)
    items = template.items(stream, fmt) if template else read_messages(stream, fmt)
    async for item in items:
        got = admission.admit(item)
        if isinstance(got, Result):
            bad += 1
            out.print(str(got.error), markup=False)
            if writer:
                writer.write(got)
        else:
            good += 1
            preview.add(got[0], variables)
            variables = ()
    out.print(f"dry run: {good} valid, {bad} invalid; nothing was sent")
    for line in preview.lines():
        out.print(line, markup=False)
    return EXIT_OK if bad == 0 else EXIT_SOME_FAILED
