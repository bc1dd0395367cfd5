"""One sender per journal: an exclusive ``flock`` on a sidecar file, ``JOURNAL.lock``.

The lock is on a file of its own, never on the SQLite file: SQLite's own locks use POSIX
advisory locks on the database, and closing any other descriptor of that file drops them
(a known way to corrupt a database). ``flock`` locks belong to the open file description,
so the kernel releases them when the holder exits for any reason, kill -9 included. The
file stays behind, holding the last holder's process id (for the error message).
"""

from __future__ import annotations

import fcntl
import os

from ._errors import JournalLockedError

__all__ = ["SenderLock"]


class SenderLock:
    """Held from construction until ``release()``; raises ``JournalLockedError`` when taken."""

    def __init__(self, journal_path: str) -> None:
        self.path = journal_path + ".lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise JournalLockedError(
                f"another process{holder} is sending with the journal {journal_path} (it holds {self.path}); "
                "two senders would send the same messages twice: wait for it to finish, or stop it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
