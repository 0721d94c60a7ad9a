"""Which log store an installation uses: the database's own kind. SQLite
keeps logs in a file of their own beside the main database (``observe.db``
→ ``observe.logs.db``), so a log batch never holds the main database's one
write lock; PostgreSQL keeps them in the main database, in daily partitions."""

from __future__ import annotations

from pathlib import Path

from core.logs.store import LogStore
from core.storage.db import Database


def sqlite_logs_path(main_path: str) -> str:
    path = Path(main_path)
    return str(path.with_name(f"{path.stem}.logs{path.suffix or '.db'}"))


def log_store_for(db: Database) -> LogStore:
    if db.is_sqlite:
        from core.logs.sqlite_store import SqliteLogStore

        assert db.sqlite_path is not None
        return SqliteLogStore(sqlite_logs_path(db.sqlite_path), read_timeout_ms=db.read_timeout_ms)
    from core.logs.postgres_store import PostgresLogStore

    return PostgresLogStore(db)
