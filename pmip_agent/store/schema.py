"""Opening a pmip-agent SQLite file: write-ahead logging, and a meta table that says what
the file holds, checked against what the opener expects. The stores and the LMA's journal
files all open this way."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from .errors import StoreError

WAL_SIZE_LIMIT = 64 << 20  # truncate the -wal file back to this after a checkpoint


def set_up(
    db: sqlite3.Connection,
    path: Path,
    *,
    synchronous: str,
    kind: str,
    version: int,
    schema: str,
    table: str,
    columns: Sequence[str],
    noun: str = "store",
) -> None:
    """Put ``db`` (the file at ``path``) in WAL mode at ``synchronous``, and create
    ``schema`` (which creates ``table``) and a meta table saying ``kind`` and ``version``
    in a new file; in an existing one, check them. Raises StoreError for a file that holds
    something else (``noun`` names what was expected), sqlite3.Error for an unusable one."""
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(path, f"cannot use write-ahead logging (journal_mode={mode})")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    db.execute("BEGIN IMMEDIATE")  # also proves the file is writable
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(path, f"not a pmip-agent {noun} (no meta table)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID"
        )
        db.execute(schema)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                (("kind", kind), ("schema_version", version)),
            )
        else:
            _check_meta(db, path, meta, kind, version, table, columns)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _check_meta(
    db: sqlite3.Connection,
    path: Path,
    meta: dict[str, object],
    kind: str,
    version: int,
    table: str,
    columns: Sequence[str],
) -> None:
    held = meta.get("kind")
    if held != kind:
        raise StoreError(path, f"holds a {held!r} store, not a {kind!r} store")
    stored = meta.get("schema_version")
    if not isinstance(stored, int) or stored < 1:
        raise StoreError(path, f"bad schema_version {stored!r}")
    # A later version may have added columns: fine as long as ours are all there.
    present = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    missing = [c for c in columns if c not in present]
    if missing:
        raise StoreError(
            path,
            f"schema_version {stored} lacks columns {', '.join(missing)} of "
            f"{table} (this version writes schema_version {version})",
        )
