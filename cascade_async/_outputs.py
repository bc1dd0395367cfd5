"""Result files: one row per input message, JSONL or CSV. Never a credential."""

from __future__ import annotations

import csv
from typing import IO, Final

import msgspec

from ._errors import APIError
from ._inputs import BadLine
from ._models import Result, Status, failure

COLUMNS: Final = (
    "trackingId",
    "status",
    "messageId",
    "errorCode",
    "errorMessage",
    "errorField",
    "attempts",
    "outcomeUnknown",
    "line",
)


class Row(msgspec.Struct, omit_defaults=True):
    trackingId: str
    status: str
    attempts: int
    messageId: str | None = None
    errorCode: str | None = None
    errorMessage: str | None = None
    errorField: str | None = None
    httpStatus: int | None = None
    outcomeUnknown: bool = False
    line: int | None = None


def row_for(result: Result, line: int | None = None) -> Row:
    err = result.error
    if err is None:
        return Row(result.tracking_id, result.status.value, result.attempts, result.message_id, line=line)
    return Row(
        result.tracking_id,
        result.status.value,
        result.attempts,
        result.message_id,
        errorCode=err.code,
        errorMessage=str(err),
        errorField=getattr(err, "field", None),
        httpStatus=err.status if isinstance(err, APIError) else None,
        outcomeUnknown=err.outcome_unknown,
        line=line,
    )


class ResultWriter:
    def __init__(self, stream: IO[str], fmt: str) -> None:
        self._stream = stream
        self._csv: csv.DictWriter[str] | None = None
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=[*COLUMNS[:7], "httpStatus", *COLUMNS[7:]])
            self._csv.writeheader()
        self._encoder = msgspec.json.Encoder()

    def write(self, result: Result, line: int | None = None) -> None:
        if line is None:
            line = getattr(result.error, "line", None)  # a rejected input line knows its number
        row = row_for(result, line)
        if self._csv is not None:
            self._csv.writerow({k: ("" if v is None else v) for k, v in msgspec.structs.asdict(row).items()})
        else:
            self._stream.write(self._encoder.encode(row).decode())
            self._stream.write("\n")

    def write_bad_line(self, bad: BadLine) -> None:
        err = bad.error
        self.write(failure(err.tracking_id or f"<line {bad.line}>", Status.REJECTED, err, 0), bad.line)


def output_format(path: str) -> str:
    return "csv" if path.lower().endswith(".csv") else "jsonl"
