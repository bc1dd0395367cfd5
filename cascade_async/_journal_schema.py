"""The journal's SQLite schema, its version (``PRAGMA user_version``) and the migrations.

A journal file is upgraded in place when it is opened: each migration runs once, in its own
transaction, and bumps ``user_version``. A journal written by a newer version is refused,
never misread. To change the schema, append one function to ``MIGRATIONS``; never edit one
that has shipped (journals in the field have already run it).

Version 0 is the first release's table ``outcomes`` (also what an empty file gets first).
Version 1 adds job identity (a fingerprint per message, the run that last read it, a
``runs`` table) and what a recorded Result needs to be given back whole. Version 2 adds
``deliveries``: the latest delivery status, cost and channel per ``messageId``
(``_journal_delivery``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from ._errors import JournalError
from ._journal_delivery import migrate_delivery

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "open_journal"]

#: States of a row. Only a provider's answer (or our own validation) settles a message.
NEW: Final = "new"  # read from the input, not sent yet
PENDING: Final = "pending"  # a request holding it may have left: outcome unknown until answered
NOT_SENT: Final = "not_sent"  # its last attempt certainly failed (refused, 429, a certain 5xx, wrong URL)
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
FAILED: Final = "failed"  # gave up; ``unknown`` says whether the provider may have it
SETTLED: Final = frozenset({ACCEPTED, REJECTED})
STATES: Final = (NEW, PENDING, NOT_SENT, ACCEPTED, REJECTED, FAILED)


def _v0_outcomes(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS outcomes (
            tracking_id   TEXT PRIMARY KEY,
            status        TEXT NOT NULL,
            message_id    TEXT,
            error_code    TEXT,
            error_message TEXT,
            unknown       INTEGER NOT NULL DEFAULT 0,
            attempts      INTEGER NOT NULL DEFAULT 0,
            updated_at    REAL NOT NULL
        )"""
    )


def _v1_job_identity(db: sqlite3.Connection) -> None:
    for column in (
        "fingerprint BLOB",  # 8 bytes of blake2b over the message's wire encoding; NULL: not known
        "run INTEGER NOT NULL DEFAULT 0",  # the run that last read this id from its input
        "error_kind TEXT",  # the exception class, to give the recorded Result back whole
        "error_field TEXT",
        "http_status INTEGER",
        "error_line INTEGER",
        "gave_up TEXT",
    ):
        db.execute(f"ALTER TABLE outcomes ADD COLUMN {column}")
    db.execute(
        """CREATE TABLE runs (
            run           INTEGER PRIMARY KEY,
            started_at    REAL NOT NULL,
            finished_at   REAL,             -- set when the whole input was read
            input         TEXT,
            fingerprint   TEXT,             -- of every message of the input, in order
            messages      INTEGER NOT NULL DEFAULT 0,
            changed       INTEGER NOT NULL DEFAULT 0,
            options       TEXT
        )"""
    )


#: One function per version step: ``MIGRATIONS[n]`` takes a journal from version n to n + 1.
MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _v0_outcomes,
    _v1_job_identity,
    migrate_delivery,  # v2: the deliveries table (#13)
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def open_journal(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection in WAL mode at the current schema (autocommit: callers BEGIN explicitly)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        # 32 MiB of page cache and a 40 MB WAL between checkpoints: index pages of random ids
        # are written once per checkpoint rather than once per commit.
        db.execute("PRAGMA cache_size = -32768")
        db.execute("PRAGMA wal_autocheckpoint = 10000")
        migrate(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        if type(exc) is sqlite3.DatabaseError:  # not an OperationalError: the file itself is wrong
            raise JournalError(f"{path} is not a journal (not an SQLite database: {exc})") from None
        raise
    except BaseException:
        db.close()
        raise
    return db


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the journal at ``db`` to ``SCHEMA_VERSION``, or refuse it clearly."""
    try:
        current = version(db)
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} is not a journal (not an SQLite database: {exc})") from None
    if current > SCHEMA_VERSION:
        raise JournalError(
            f"{path} was written by a newer cascade-async (journal schema {current}; this version reads "
            f"up to {SCHEMA_VERSION}): upgrade cascade-async to use it"
        )
    if current == 0 and _has_foreign_tables(db):
        raise JournalError(f"{path} is an SQLite database but not a cascade-async journal")
    while current < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")  # waits (busy_timeout) for another process's migration
        try:
            if version(db) == current:  # nobody migrated it meanwhile
                MIGRATIONS[current](db)
                db.execute(f"PRAGMA user_version = {current + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        current = version(db)


def _has_foreign_tables(db: sqlite3.Connection) -> bool:
    names = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return bool(names - {"outcomes", "deliveries"})
