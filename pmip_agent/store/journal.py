"""The LMA store's write path: an append-only journal of binding rows, folded into the
bindings table away from the event loop.

Why: a refresh rewrites its binding's row, and once the table spans more than a few pages
every refreshed MN costs a page of its own in the WAL and in the checkpoint (about 11 us a
row at 1k bindings, 31-34 us at 100k, 38-39 us at 1M, measured on the two-core machines).
The PBA of each refresh waited for that commit. Appending to a journal writes the rows one
after another on its last pages, at the same cost whatever the size of the cache. (The
daemon's PBAs now wait only for the rows' first write, to ``pending``; the journal gets
them a few milliseconds later, many batches per transaction.)

Two journal files sit beside the database, ``<db>.log0`` and ``<db>.log1``. Each one is a
SQLite database in WAL mode with one table: ``journal(seq, kind, <binding columns>)``, where
a row is a whole binding (kind 0), a deletion (1, the key alone) or a refresh (2, the key
and the few columns a refresh changes: a third of the cost of a whole row). The writer
appends to the active one. Once that journal holds ``fold_every`` rows, the writer
switches to the other journal and hands the full one to the folder thread. The folder thread:

1. upserts the latest whole row of each MN into the bindings table, deletes the MNs whose
   latest whole row or deletion is a deletion, and applies each MN's latest refresh when
   it is newer than both. One SQL statement each, so the GIL is free meanwhile, and the
   many refreshes of one MN cost one write;
2. checkpoints the database (FULL, so the fold is on disk as durably as the journal was);
3. empties the journal.

A row sets columns to values (it never adds to them), so a fold is idempotent. Replaying a
journal that was already folded, as after a crash between steps 2 and 3, gives the same
table. Rows are replayed in ``seq`` order, and every row of a handed-over journal is older
than every row of the active one. Opening the store folds what a crash left in either
journal, before anything is read.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import StoreError
from .schema import set_up

log = logging.getLogger("pmip.store")

KIND = "lma-journal"
SCHEMA_VERSION = 1
FOLD_EVERY = 65_536  # rows in the active journal before it is handed to the folder
_CHECKPOINT_EVERY = 1000  # rows appended between two passive checkpoints of the journal


def journal_paths(db_path: Path) -> tuple[Path, Path]:
    return Path(f"{db_path}.log0"), Path(f"{db_path}.log1")


WHOLE, GONE, REFRESH = 0, 1, 2  # journal row kinds


class BindingJournal:
    """Appends binding rows for the writer; folds them into ``table`` of ``db_path``.

    ``columns``: the table's columns, the key first; ``refresh_columns``: the key and the
    columns a refresh changes. ``prepare``: makes a file (and its
    directory) with the store's modes before SQLite opens it. ``background``: folds and
    journal checkpoints run in a thread of their own; without it, ``append`` folds
    inline when a journal is full."""

    def __init__(
        self,
        db_path: Path,
        table: str,
        columns: Sequence[str],
        refresh_columns: Sequence[str],
        *,
        synchronous: str,
        busy_timeout_s: float,
        prepare: Callable[[Path], None],
        background: bool = True,
        fold_every: int = FOLD_EVERY,
    ) -> None:
        self.paths = journal_paths(db_path)
        self.fold_every = fold_every
        self._columns = tuple(columns)
        key = columns[0]
        self._append_whole = _append_sql(WHOLE, columns)
        self._append_refresh = _append_sql(REFRESH, refresh_columns)
        self._append_gone = _append_sql(GONE, (key,))
        self._fold_sql = [_fold_sql(table, columns, refresh_columns, f"j{i}") for i in (0, 1)]
        self._writers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # one fold at a time, on the folder connection
        at = db_path
        try:
            for at in self.paths:
                prepare(at)
                self._writers.append(self._open_journal(at, synchronous, busy_timeout_s))
            at = db_path
            self._folder = sqlite3.connect(
                db_path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            for name, path in zip(("j0", "j1"), self.paths, strict=True):
                self._folder.execute(f"ATTACH DATABASE ? AS {name}", (str(path),))
            for schema in ("main", "j0", "j1"):
                self._folder.execute(f"PRAGMA {schema}.synchronous={synchronous}")
            self._seq, older_first = self._scan()
            for index in older_first:  # what a crash left behind, before anything is read
                self._fold(index)
        except (sqlite3.Error, OSError) as exc:
            self._close_connections()
            raise StoreError(at, "cannot open the journal and fold it", exc) from exc
        except BaseException:
            self._close_connections()
            raise
        self.active = 0
        self.rows_in_active = 0
        self._appended = 0  # since the last journal checkpoint was asked for
        self._thread: _FolderThread | None = _FolderThread(self) if background else None

    # --- opening ---------------------------------------------------------------------

    def _open_journal(self, path: Path, synchronous: str, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        columns = ("seq", "kind", *self._columns)
        try:
            set_up(
                db,
                path,
                synchronous=synchronous,
                kind=KIND,
                version=SCHEMA_VERSION,
                schema="CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY,"
                f" kind INTEGER NOT NULL, {', '.join(self._columns)})",
                table="journal",
                columns=columns,
                noun="journal",
            )
            db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: the folder thread's
        except BaseException:
            db.close()
            raise
        return db

    def _scan(self) -> tuple[int, list[int]]:
        """(the next sequence number, the non-empty journals oldest first)."""
        spans = []
        for index, db in enumerate(self._writers):
            low, high = db.execute("SELECT min(seq), max(seq) FROM journal").fetchone()
            if low is not None:
                spans.append((low, high, index))
        spans.sort()
        next_seq = max((high for _, high, _ in spans), default=0) + 1
        return next_seq, [index for _, _, index in spans]

    # --- the writer's side -------------------------------------------------------------

    def append(
        self,
        rows: Sequence[tuple[object, ...]],
        refreshes: Sequence[tuple[object, ...]],
        gone: Sequence[bytes],
    ) -> None:
        """Append ``rows`` (whole bindings), ``refreshes`` (refresh columns) and ``gone``
        (keys deleted), at most one of them per key, in one transaction committed on
        return. Raises sqlite3.Error (nothing appended) on failure."""
        self.append_batches([(rows, refreshes, gone)])

    def append_batches(
        self,
        batches: Sequence[
            tuple[Sequence[tuple[object, ...]], Sequence[tuple[object, ...]], Sequence[bytes]]
        ],
    ) -> None:
        """``append`` for several batches, in their order, in one transaction: a key may
        come back in a later batch (its rows are numbered after the earlier batch's)."""
        db = self._writers[self.active]
        seq = start = self._seq
        whole: list[tuple[object, ...]] = []
        refresh: list[tuple[object, ...]] = []
        downs: list[tuple[object, ...]] = []
        for rows, refreshes, gone in batches:
            whole += [(seq + k, *row) for k, row in enumerate(rows)]
            seq += len(rows)
            refresh += [(seq + k, *row) for k, row in enumerate(refreshes)]
            seq += len(refreshes)
            downs += [(seq + k, key) for k, key in enumerate(gone)]
            seq += len(gone)
        db.execute("BEGIN IMMEDIATE")
        try:
            if whole:
                db.executemany(self._append_whole, whole)
            if refresh:
                db.executemany(self._append_refresh, refresh)
            if downs:
                db.executemany(self._append_gone, downs)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._seq = seq
        count = seq - start
        self.rows_in_active += count
        self._appended += count
        thread = self._thread
        if self.rows_in_active >= self.fold_every:
            if thread is None:
                self._fold(self.active)
                self.rows_in_active = 0
            elif thread.idle():
                full, self.active = self.active, 1 - self.active
                self.rows_in_active = 0
                thread.fold(full)
        if thread is not None and self._appended >= _CHECKPOINT_EVERY:
            self._appended = 0
            thread.checkpoint(self.active)

    def fold_all(self) -> None:
        """Fold everything appended so far (the handed-over journal first), in this thread."""
        if self._thread is not None:
            self._thread.wait_idle()
        self._fold(1 - self.active)
        self._fold(self.active)
        self.rows_in_active = 0

    def close(self) -> None:
        """Fold what is left, then close (a clean stop leaves empty journals)."""
        try:
            if self._thread is not None:
                self._thread.stop()
                self._thread = None
            self.fold_all()
        finally:
            self._close_connections()

    def _close_connections(self) -> None:
        for db in (*self._writers, getattr(self, "_folder", None)):
            if db is not None:
                db.close()
        self._writers = []

    # --- folding (either thread, one at a time) ---------------------------------------

    def _fold(self, index: int) -> None:
        with self._lock:
            if self._folder.execute(f"SELECT 1 FROM j{index}.journal LIMIT 1").fetchone():
                self._fold_into_table(index)
                self._empty(index)

    def _fold_into_table(self, index: int) -> None:
        db = self._folder
        db.execute("BEGIN")  # deferred: it writes the bindings table (and a temp table)
        try:
            for statement in self._fold_sql[index]:
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        # On disk before the journal forgets: FULL waits for the writer, of which there
        # is none (once the store is open, only folds write the bindings table).
        db.execute("PRAGMA main.wal_checkpoint(FULL)").fetchone()

    def _empty(self, index: int) -> None:
        db = self._folder
        db.execute("BEGIN")
        try:
            db.execute(f"DELETE FROM j{index}.journal")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute(f"PRAGMA j{index}.wal_checkpoint(TRUNCATE)").fetchone()

    def _checkpoint(self, index: int) -> None:
        with self._lock:
            self._folder.execute(f"PRAGMA j{index}.wal_checkpoint(PASSIVE)").fetchone()


def _append_sql(kind: int, columns: Sequence[str]) -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO journal (seq, kind, {', '.join(columns)}) VALUES (?, {kind}, {marks})"


def _fold_sql(
    table: str, columns: Sequence[str], refresh_columns: Sequence[str], journal: str
) -> list[str]:
    """The statements that fold ``journal`` into ``table``, in order."""
    key = columns[0]
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    refreshed = ", ".join(f"{c} = r.{c}" for c in refresh_columns[1:])
    picked = ", ".join(f"j.{c}" for c in refresh_columns)
    src = f"{journal}.journal"
    return [
        # Per key: the sequence number of its latest whole row or deletion ("base"), and
        # of its latest refresh.
        "DROP TABLE IF EXISTS temp.latest",
        f"CREATE TEMP TABLE latest AS SELECT {key} AS k,"
        f" max(CASE WHEN kind != {REFRESH} THEN seq END) AS base,"
        f" max(CASE WHEN kind = {REFRESH} THEN seq END) AS refresh"
        f" FROM {src} GROUP BY {key}",
        # ORDER BY key writes the table's pages in order.
        f"INSERT INTO main.{table} ({names}) SELECT {names} FROM {src}"
        f" WHERE kind = {WHOLE} AND seq IN (SELECT base FROM temp.latest)"
        f" ORDER BY {key} ON CONFLICT({key}) DO UPDATE SET {updates}",
        f"DELETE FROM main.{table} WHERE {key} IN (SELECT {key} FROM {src}"
        f" WHERE kind = {GONE} AND seq IN (SELECT base FROM temp.latest))",
        # A refresh newer than the key's base; after a deletion it finds no row.
        f"UPDATE main.{table} SET {refreshed} FROM (SELECT {picked} FROM {src} AS j"
        f" WHERE j.seq IN (SELECT refresh FROM temp.latest"
        f" WHERE refresh > coalesce(base, 0))) AS r WHERE main.{table}.{key} = r.{key}",
        "DROP TABLE temp.latest",
    ]


class _FolderThread:
    """Folds a handed-over journal and checkpoints the active one, when asked."""

    def __init__(self, journal: BindingJournal) -> None:
        self.journal = journal
        self._cond = threading.Condition()
        self._fold: int | None = None
        self._checkpoint: int | None = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pmip-checkpoint", daemon=True)
        self._thread.start()

    def idle(self) -> bool:
        return self._fold is None and not self._busy

    def fold(self, index: int) -> None:
        with self._cond:
            self._fold = index
            self._cond.notify()

    def checkpoint(self, index: int) -> None:
        with self._cond:
            self._checkpoint = index
            self._cond.notify()

    def wait_idle(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._fold is None and not self._busy)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or self._fold is not None or self._checkpoint is not None
                )
                if self._stopping and self._fold is None:
                    return
                fold, self._fold = self._fold, None
                checkpoint, self._checkpoint = self._checkpoint, None
                self._busy = True
            failed = False
            try:
                if fold is not None:
                    self.journal._fold(fold)
                if checkpoint is not None:
                    self.journal._checkpoint(checkpoint)
            except sqlite3.Error as exc:
                # The rows stay in their journal, and the writer must not switch back to it
                # before it is folded: try again in a second (the next start would, too).
                log.error("store: folding %s failed, retrying: %s", self.journal.paths, exc)
                failed = fold is not None
            with self._cond:
                if failed and self._fold is None:
                    self._fold = fold
                self._busy = False
                self._cond.notify_all()
                if failed:
                    self._cond.wait(1.0)
