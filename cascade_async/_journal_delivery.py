"""The journal's delivery side: columns on the ``outcomes`` rows, reports applied forward-only in SQL.

Functions over a ``sqlite3.Connection`` in autocommit mode (``isolation_level=None``), so they work
on the sender's journal and on a second connection beside it (``cascade-async webhook`` runs
while a send job writes: WAL and a busy timeout, never the sender's lock).

- ``migrate_delivery`` is the journal's schema step 2 (``_journal_schema.MIGRATIONS``): the
  delivery columns (``delivery_status``, ``delivery_final``, ``cost`` as exact text,
  ``currency``, ``channel``, ``delivery_at``, ``raw``), an index on ``message_id``, the
  ``delivery_pending`` table and its triggers. ``connect`` opens a journal through the same
  migrations, without the sender's lock.
- ``apply_report`` writes one report with the "only forward" rule in the ``UPDATE``'s
  ``WHERE``: a final status is never replaced; a non-final one never replaces a later one.
  Duplicates and reordered reports are harmless.
- A report whose ``messageId`` no row holds yet (a webhook faster than the send job's commit)
  is kept in ``delivery_pending`` under the same rule; triggers apply it the moment a row gets
  that ``message_id``, whoever writes it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Final

import msgspec

from ._delivery import DeliveryReport
from ._errors import JournalError

__all__ = [
    "DELIVERY_COLUMNS",
    "DeliverySummary",
    "apply_report",
    "connect",
    "count_tracked",
    "delivery_rows",
    "ensure_schema",
    "migrate_delivery",
    "summary",
    "tracked",
]

#: (name, SQL type) of each column added to ``outcomes``.
DELIVERY_COLUMNS: Final = (
    ("delivery_status", "TEXT"),
    ("delivery_final", "INTEGER NOT NULL DEFAULT 0"),
    ("cost", "TEXT"),
    ("currency", "TEXT"),
    ("channel", "TEXT"),
    ("delivery_at", "TEXT"),
    ("raw", "TEXT"),
)
# The lifecycle rank of a stored status, in SQL: unknown 0, scheduled 1, processing 2 (final ones
# are guarded by delivery_final).
_RANK_SQL: Final = "CASE {col} WHEN 'scheduled' THEN 1 WHEN 'processing' THEN 2 ELSE 0 END"
_FORWARD: Final = f"""
    COALESCE({{t}}.delivery_final, 0) = 0
    AND (:final = 1 OR {{t}}.delivery_status IS NULL OR {_RANK_SQL.format(col="{t}.delivery_status")} <= :rank)
"""
_APPLY: Final = f"""
UPDATE outcomes SET delivery_status = :status, delivery_final = :final, cost = COALESCE(:cost, cost),
    currency = COALESCE(:currency, currency), channel = COALESCE(:channel, channel),
    delivery_at = :at, raw = :raw
WHERE message_id = :mid AND {_FORWARD.format(t="outcomes")}
"""
_PENDING_UPSERT: Final = f"""
INSERT INTO delivery_pending (message_id, delivery_status, delivery_final, cost, currency, channel, delivery_at, raw)
VALUES (:mid, :status, :final, :cost, :currency, :channel, :at, :raw)
ON CONFLICT (message_id) DO UPDATE SET delivery_status = excluded.delivery_status,
    delivery_final = excluded.delivery_final, cost = COALESCE(excluded.cost, delivery_pending.cost),
    currency = COALESCE(excluded.currency, delivery_pending.currency),
    channel = COALESCE(excluded.channel, delivery_pending.channel),
    delivery_at = excluded.delivery_at, raw = excluded.raw
WHERE {_FORWARD.format(t="delivery_pending")}
"""
_PENDING_TABLE: Final = """
CREATE TABLE IF NOT EXISTS delivery_pending (
    message_id      TEXT PRIMARY KEY,
    delivery_status TEXT,
    delivery_final  INTEGER NOT NULL DEFAULT 0,
    cost            TEXT,
    currency        TEXT,
    channel         TEXT,
    delivery_at     TEXT,
    raw             TEXT
)
"""
# Reconciliation: when a row gets a message_id held in delivery_pending, move the report onto it
# (a final one always wins over a row without a final status; the row has none yet, it was unknown).
_RECONCILE: Final = """
UPDATE outcomes SET (delivery_status, delivery_final, cost, currency, channel, delivery_at, raw) =
    (SELECT delivery_status, delivery_final, cost, currency, channel, delivery_at, raw
     FROM delivery_pending WHERE message_id = NEW.message_id)
WHERE tracking_id = NEW.tracking_id AND COALESCE(delivery_final, 0) = 0;
DELETE FROM delivery_pending WHERE message_id = NEW.message_id;
"""
_TRIGGERS: Final = tuple(
    f"""
CREATE TRIGGER IF NOT EXISTS delivery_reconcile_{event.split()[0].lower()}
AFTER {event} ON outcomes
WHEN NEW.message_id IS NOT NULL AND EXISTS (SELECT 1 FROM delivery_pending WHERE message_id = NEW.message_id)
BEGIN {_RECONCILE} END
"""
    for event in ("INSERT", "UPDATE OF message_id")
)
BUSY_TIMEOUT_MS: Final = 10_000


def connect(path: str) -> sqlite3.Connection:
    """A second connection to a journal (WAL, busy timeout, migrated to the current schema, which
    holds the delivery columns); it never takes the sender's lock."""
    import os

    from ._journal_schema import open_journal

    if not os.path.exists(path):
        raise JournalError(f"no journal at {path}")
    db = open_journal(path, "NORMAL", BUSY_TIMEOUT_MS)
    ensure_schema(db)  # a no-op at the current schema
    return db


def ensure_schema(db: sqlite3.Connection) -> None:
    """Add what delivery needs to a journal; a no-op when it is there. Safe beside a writer."""
    have = {row[1] for row in db.execute("PRAGMA table_info(outcomes)")}
    missing = [(name, kind) for name, kind in DELIVERY_COLUMNS if name not in have]
    needs_rest = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'delivery_reconcile_update'").fetchone() is None
    if not missing and not needs_rest:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        migrate_delivery(db)  # again, under the lock: another process may have done it meanwhile
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def migrate_delivery(db: sqlite3.Connection) -> None:
    """The delivery schema, inside the caller's transaction; idempotent.

    Shaped as a journal schema migration: a versioned journal appends it to its migration list.
    """
    have = {row[1] for row in db.execute("PRAGMA table_info(outcomes)")}
    for name, kind in DELIVERY_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE outcomes ADD COLUMN {name} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS outcomes_message_id ON outcomes (message_id)")
    db.execute(_PENDING_TABLE)
    for trigger in _TRIGGERS:
        db.execute(trigger)


_raw_encoder: Final = msgspec.json.Encoder(decimal_format="number")


def _params(report: DeliveryReport) -> dict[str, Any]:
    return {
        "mid": report.message_id,
        "status": report.status.value if report.status.rank or not report.raw_status else report.raw_status,
        "final": int(report.status.final),
        "rank": report.status.rank,
        "cost": None if report.cost is None else str(report.cost),
        "currency": report.currency,
        "channel": report.channel,
        "at": None if report.timestamp is None else report.timestamp.isoformat(),
        "raw": _raw_encoder.encode(report.raw).decode() if report.raw else None,
    }


def apply_report(db: sqlite3.Connection, report: DeliveryReport) -> str:
    """Record one report, forward only, in one transaction (committed on return).

    Returns ``"applied"``, ``"ignored"`` (a duplicate or an older status) or ``"pending"`` (no row
    holds this ``messageId`` yet; kept and applied when one does). A report that only says
    nothing was seen (``UNKNOWN`` with an ``error``) is not written.
    """
    if report.error is not None and not report.raw:
        return "ignored"
    params = _params(report)
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute(_APPLY, params).rowcount:
            outcome = "applied"
        elif db.execute("SELECT 1 FROM outcomes WHERE message_id = ?", (report.message_id,)).fetchone():
            outcome = "ignored"
        else:
            db.execute(_PENDING_UPSERT, params)
            outcome = "pending"
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return outcome


_NOT_FINAL: Final = "status = 'accepted' AND message_id IS NOT NULL AND COALESCE(delivery_final, 0) = 0"


def tracked(db: sqlite3.Connection, page: int = 1000) -> Iterator[tuple[str, str]]:
    """(tracking id, message id) of every accepted message whose delivery status is not final.

    Read a page at a time by rowid, so a million rows cost no more memory than a thousand and
    writes between pages (reports being applied) do not disturb the scan.
    """
    last = -1
    query = (
        f"SELECT rowid, tracking_id, message_id FROM outcomes WHERE rowid > ? AND {_NOT_FINAL} ORDER BY rowid LIMIT ?"
    )
    while rows := db.execute(query, (last, page)).fetchall():
        for _, tid, mid in rows:
            yield str(tid), str(mid)
        last = rows[-1][0]


def count_tracked(db: sqlite3.Connection) -> int:
    return int(db.execute(f"SELECT count(*) FROM outcomes WHERE {_NOT_FINAL}").fetchone()[0])


class DeliverySummary(msgspec.Struct, kw_only=True):
    """Counts over the accepted messages of a journal, by delivery status."""

    accepted: int = 0
    delivered: int = 0
    undeliverable: int = 0
    permanenterror: int = 0
    pending: int = 0  # accepted, no final status yet
    cost: Decimal = Decimal(0)
    currencies: list[str] = msgspec.field(default_factory=list)
    channels: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def all_final(self) -> bool:
        return self.pending == 0


def summary(db: sqlite3.Connection) -> DeliverySummary:
    out = DeliverySummary()
    channels: Counter[str] = Counter()
    currencies: set[str] = set()
    query = "SELECT delivery_status, delivery_final, cost, currency, channel FROM outcomes WHERE status = 'accepted'"
    for status, final, cost, currency, channel in db.execute(query):
        out.accepted += 1
        if not final:
            out.pending += 1
        elif status in ("delivered", "undeliverable", "permanenterror"):
            setattr(out, status, getattr(out, status) + 1)
        if cost is not None:
            out.cost += Decimal(cost)
        if currency:
            currencies.add(currency)
        if channel:
            channels[channel] += 1
    out.currencies = sorted(currencies)
    out.channels = dict(channels.most_common())
    return out


_ROW_KEYS: Final = (
    *("trackingId", "status", "messageId", "errorCode", "errorMessage", "attempts", "outcomeUnknown"),
    *("deliveryStatus", "deliveryFinal", "cost", "currency", "channel", "deliveryAt"),
)


def delivery_rows(db: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """One dict per journal row: its outcome and its delivery columns, in the order of the job."""
    names = [name for name, _ in DELIVERY_COLUMNS if name != "raw"]
    query = (
        "SELECT tracking_id, status, message_id, error_code, error_message, attempts, unknown, "
        + ", ".join(names)
        + " FROM outcomes ORDER BY rowid"
    )
    for row in db.execute(query):
        yield dict(
            zip(
                _ROW_KEYS,
                row,
                strict=True,
            )
        )
