"""Journal rows and Results: what is written for a Result, and the Result a row gives back."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any, Final, NamedTuple

import msgspec

from . import _errors
from ._errors import APIError, CascadeError, ErrorCode, ValidationError
from ._journal_schema import ACCEPTED, NEW, NOT_SENT, PENDING, REJECTED
from ._models import Message, Result, Status

__all__ = ["ROW_COLUMNS", "Row", "as_recorded", "fingerprint", "not_sent_error", "recorded_result", "row_values"]

_encode = msgspec.json.Encoder().encode
_blake2b = hashlib.blake2b

# --- what the engine's Recorder calls write ------------------------------------------------------

# ``unknown`` on a row that is not settled: an earlier request (of this run or an earlier one) may have
# delivered it. A resend (``resend_unknown``) keeps it, so that its certain failure never erases it.
DISPATCHED: Final = f"""
UPDATE outcomes SET status = '{PENDING}', attempts = attempts + 1, updated_at = ? WHERE tracking_id = ?
"""
#: Rows no resume filter wrote first (the journal used as a plain ``recorder=``).
DISPATCHED_NEW: Final = (
    f"INSERT OR IGNORE INTO outcomes (tracking_id, status, attempts, updated_at) VALUES (?, '{PENDING}', 1, ?)"
)
ACCEPTED_UPDATE: Final = """
UPDATE outcomes SET status = 'accepted', message_id = ?, attempts = max(attempts, ?), updated_at = ?, unknown = 0,
    error_code = NULL, error_message = NULL, error_kind = NULL, error_field = NULL, http_status = NULL,
    error_line = NULL, gave_up = NULL
WHERE tracking_id = ?
"""
NOT_SENT_UPDATE: Final = f"""
UPDATE outcomes SET status = '{NOT_SENT}', updated_at = ?, error_code = ?, error_message = ?,
    error_kind = ?, error_field = NULL, http_status = ?, error_line = NULL, gave_up = NULL
WHERE tracking_id = ? AND status = '{PENDING}' AND unknown = 0
"""
COMPLETED_UPSERT: Final = """
INSERT INTO outcomes (tracking_id, status, message_id, error_code, error_message, unknown, attempts, updated_at,
    error_kind, error_field, http_status, error_line, gave_up)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tracking_id) DO UPDATE SET status = excluded.status, message_id = excluded.message_id,
    error_code = excluded.error_code, error_message = excluded.error_message,
    unknown = CASE WHEN excluded.status = 'failed' THEN max(outcomes.unknown, excluded.unknown)
        ELSE excluded.unknown END,
    updated_at = excluded.updated_at, error_kind = excluded.error_kind, error_field = excluded.error_field,
    http_status = excluded.http_status, error_line = excluded.error_line, gave_up = excluded.gave_up,
    attempts = max(outcomes.attempts, excluded.attempts)
-- a result of no attempt (the input refused it this run) never overwrites what may be at the provider
WHERE excluded.attempts > 0 OR outcomes.status IN ('new', 'not_sent', 'rejected')
    OR (outcomes.status = 'failed' AND outcomes.unknown = 0)
"""
UNKNOWN_WHERE: Final = f"status = '{PENDING}' OR (status = 'failed' AND unknown = 1)"

ROW_COLUMNS: Final = (
    "tracking_id, status, message_id, error_code, error_message, unknown, attempts, fingerprint, run, "
    "error_kind, error_field, http_status, error_line, gave_up"
)


class Row(NamedTuple):
    tracking_id: str
    status: str
    message_id: str | None
    error_code: str | None
    error_message: str | None
    unknown: int
    attempts: int
    fingerprint: bytes | None
    run: int
    error_kind: str | None
    error_field: str | None
    http_status: int | None
    error_line: int | None
    gave_up: str | None


def fingerprint(message: Message) -> bytes:
    """64 bits of blake2b over the message's wire encoding."""
    return _blake2b(_encode(message), digest_size=8).digest()


def row_values(r: Result, now: float) -> tuple[Any, ...]:
    """The columns ``completed`` writes for one Result (see ``_Journal._COMPLETED``)."""
    err = r.error
    if err is None:
        return (r.tracking_id, r.status.value, r.message_id, None, None, 0, r.attempts, now) + (None,) * 5
    message = err.problem if isinstance(err, ValidationError) else err.message
    return (
        r.tracking_id,
        r.status.value,
        r.message_id,
        err.code,
        message,
        int(err.outcome_unknown),
        r.attempts,
        now,
        type(err).__name__,
        getattr(err, "field", None),
        err.status if isinstance(err, APIError) else None,
        getattr(err, "line", None),
        err.gave_up,
    )


def not_sent_error(err: CascadeError) -> tuple[str | None, str, str, int | None]:
    """The error columns ``not_sent`` writes: code, text, kind and HTTP status of the failure."""
    return err.code, err.message, type(err).__name__, err.status if isinstance(err, APIError) else None


def recorded_result(row: Row) -> Result:
    """The Result an earlier run recorded for ``row``, marked ``from_journal``.

    A row that was never settled gives FAILED: with ``outcome_unknown`` when a request
    holding it may have left (``pending``, or a failure whose outcome was unknown).
    """
    status = row.status
    if status == ACCEPTED:
        return Result(row.tracking_id, Status.ACCEPTED, row.message_id, None, row.attempts, True)
    if status == PENDING:
        err: CascadeError = CascadeError(
            "sent by an earlier run that stopped before the answer came", outcome_unknown=True
        )
    elif status in (NEW, NOT_SENT) and row.error_message is None:
        err = CascadeError("not sent yet: the job stopped before it (a later run sends it)")
    else:
        err = _error(row)
    err.tracking_id = row.tracking_id
    result_status = Status.REJECTED if status == REJECTED else Status.FAILED
    return Result(row.tracking_id, result_status, None, err, row.attempts, True)


def _error(row: Row) -> CascadeError:
    kind = getattr(_errors, row.error_kind or "", None)
    message = row.error_message or "failed in an earlier run"
    unknown = bool(row.unknown)
    err: CascadeError
    if isinstance(kind, type) and issubclass(kind, APIError) and row.http_status is not None:
        err = kind(message, status=row.http_status, code=row.error_code, field=row.error_field, outcome_unknown=unknown)
    elif isinstance(kind, type) and issubclass(kind, ValidationError):
        code = row.error_code or ErrorCode.INVALID_FIELD
        err = kind(message, field=row.error_field, tracking_id=row.tracking_id, code=code, line=row.error_line)
    elif isinstance(kind, type) and issubclass(kind, CascadeError) and kind not in (APIError,):
        err = kind(message, outcome_unknown=unknown)
    else:  # a first-release journal row (its message is the whole text), or a kind we do not know
        err = CascadeError(message, outcome_unknown=unknown)
    err.gave_up = row.gave_up
    return err


def as_recorded(db: sqlite3.Connection, run: int, results: list[Any]) -> list[Any]:
    """Results for rows taken but never rendered: one an earlier run recorded keeps that result."""
    ids = [r.tracking_id for r in results if isinstance(r, Result)]
    found: dict[str, Row] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        query = f"SELECT {ROW_COLUMNS} FROM outcomes WHERE tracking_id IN ({','.join('?' * len(part))})"
        found.update((row[0], Row(*row)) for row in db.execute(query, part))
    out = []
    for r in results:
        row = found.get(r.tracking_id) if isinstance(r, Result) else None
        out.append(recorded_result(row) if row is not None and row.run != run else r)
    return out
