"""SQLite is one process: a second `supportbot run` on the same file is refused, in one line.

SQLite has no advisory locks that outlive a transaction and no way to share Telegram's budget, so
the embedded database stays single-process. An exclusive `flock` on `<database>.lock`, beside
the file, is held for the whole run; the kernel lets it go when the process ends, however it
ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from tickets.errors import SupportbotError


class AlreadyRunning(SupportbotError):
    """Another `supportbot run` uses this SQLite file."""


def sqlite_file(database_url: str) -> Path | None:
    """The SQLite database file of a URL; None for PostgreSQL or an in-memory database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


@contextmanager
def only_process(database_url: str) -> Iterator[None]:
    """Hold the SQLite file's run lock for the block; refuse if another process holds it."""
    database = sqlite_file(database_url)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    path = database.with_name(database.name + ".lock")
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(
                f"another supportbot run (pid {holder}) is using {database}; SQLite is "
                "single-process: stop it first, or use PostgreSQL for several replicas"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)
