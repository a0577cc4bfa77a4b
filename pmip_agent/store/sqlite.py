"""SQLite persistence of the LMA binding cache and of the MAG binding update list.

One file per role, in write-ahead-log mode. Durability: with ``journal_mode=WAL`` a
transaction is committed once its frames are appended to the ``-wal`` file, and
``synchronous=NORMAL`` skips the fsync of that append (the WAL is fsynced at each
checkpoint instead). The appended frames are in the operating system's page cache as soon as
the ``write()`` returns, so a committed transaction survives the *process* dying in any way,
``kill -9`` included: the next open replays the WAL. Only losing the *machine* (power cut,
kernel crash) before the next checkpoint can take the last commits back; the file is never
corrupted either way, it rolls back to an earlier committed state. Where a PBA must never be
sent for a binding that a power cut could forget, pass ``synchronous="FULL"``: every commit
then waits for an fsync of the WAL (a few milliseconds on most disks, so batch more packets
per commit).

Checkpoints (copying the WAL into the database file, with its fsync) run in a thread of the
store's own, on a connection of their own, woken every thousand rows or so: a commit does
not wait for one, so a batch of PBAs is never held up by it. They are passive (never wait
for the writer); a WAL that still grows past 256 MiB is checkpointed by the writer itself.

The LMA's commits go to a journal beside its database (``journal``: two more SQLite files,
``<db>.log0`` and ``<db>.log1``), which that thread folds into the bindings table. The
durability above holds for the journal's commits in the same way. Before a PBA, the LMA
only *stages* its rows: one ``write()`` to ``<db>.pending`` (``pending``), with the same
durability, and moves them into the journal a few milliseconds later (``settle``).

Both stores are used from one thread at a time (they may be handed to a worker thread).
"""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from ..core.events import BindingDown, BindingPurged, BindingUp, BindingView
from ..core.mag import BulView
from .errors import StoreError
from .journal import FOLD_EVERY, BindingJournal
from .pending import Batch, PendingRows
from .schema import set_up
from .serialize import (
    BINDING_COLUMNS,
    BUL_COLUMNS,
    REFRESH_COLUMNS,
    binding_from_row,
    binding_refresh_row,
    binding_to_row,
    bul_from_row,
    bul_to_row,
)

__all__ = ["SCHEMA_VERSION", "LmaStore", "MagStore", "StoreError"]

SCHEMA_VERSION = 1
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_CHECKPOINT_EVERY = 1000  # rows written between two background checkpoints (about pages)
_WAL_HARD_LIMIT = 256 << 20  # a -wal file this big is checkpointed by the writer itself
log = logging.getLogger("pmip.store")


def _upsert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    # ON CONFLICT ... DO UPDATE rather than INSERT OR REPLACE: a column added by a later
    # version keeps its value when this version rewrites the row.
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table} ({names}) VALUES ({marks}) "
        f"ON CONFLICT({columns[0]}) DO UPDATE SET {updates}"
    )


def _prepare_path(path: Path) -> None:
    """Create the directory (0700) and the database file (0600) when missing. SQLite gives
    its -wal and -shm files the mode of the database file."""
    parent = path.parent
    if not parent.is_dir():
        try:
            parent.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        else:
            os.chmod(parent, 0o700)  # mkdir's mode goes through the umask
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class _Checkpointer:
    """A thread that runs passive WAL checkpoints on a connection of its own when woken.
    Passive: it copies what it can without waiting for, or blocking, the writer."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pmip-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    log.warning("%s: checkpoint failed: %s", self.path, exc)
        finally:
            self._db.close()


class _SqliteStore:
    KIND: ClassVar[str]
    TABLE: ClassVar[str]
    COLUMNS: ClassVar[tuple[str, ...]]
    SCHEMA: ClassVar[str]

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        background_checkpoints: bool = True,
    ) -> None:
        """Open (creating when missing) the store at ``path``. ``synchronous`` is "NORMAL"
        (durable across process crashes, see the module notes) or "FULL"/"EXTRA" (also
        across power loss). ``background_checkpoints``: WAL checkpoints run in a thread
        of their own, on a connection of their own, instead of inside the commit that
        crosses SQLite's autocheckpoint mark. Raises StoreError when the file is
        unusable."""
        self.path = Path(path)
        level = synchronous.upper()
        if level not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.synchronous = level
        try:
            _prepare_path(self.path)
        except OSError as exc:
            raise StoreError(self.path, "cannot create the database", exc) from exc
        try:
            db = sqlite3.connect(
                self.path,
                timeout=busy_timeout_s,
                isolation_level=None,  # transactions are explicit: BEGIN ... COMMIT
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(self.path, "cannot open the database", exc) from exc
        self._db: sqlite3.Connection | None = db
        try:
            self._setup(db, level)
        except StoreError:
            db.close()
            self._db = None
            raise
        except sqlite3.Error as exc:
            db.close()
            self._db = None
            raise StoreError(self.path, "not a usable pmip-agent database", exc) from exc
        self._written = 0  # rows written since the checkpointer was last woken
        self._checkpointer: _Checkpointer | None = None
        if background_checkpoints:
            # A checkpoint copies the WAL into the database and fsyncs it: milliseconds
            # that a commit would otherwise spend when it crosses the autocheckpoint mark,
            # with the PBAs of its batch (and the event loop) waiting.
            db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self.path, busy_timeout_s)

    # --- opening ----------------------------------------------------------------------

    def _setup(self, db: sqlite3.Connection, level: str) -> None:
        set_up(
            db,
            self.path,
            synchronous=level,
            kind=self.KIND,
            version=SCHEMA_VERSION,
            schema=self.SCHEMA,
            table=self.TABLE,
            columns=self.COLUMNS,
        )

    # --- plumbing ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(self.path, "the store is closed")
        return self._db

    def _transaction(self, work: Callable[[sqlite3.Connection], None], rows: int = 1) -> None:
        """Run ``work`` (``rows`` rows written) in one write transaction, committed before
        returning."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OverflowError) as exc:
            raise StoreError(self.path, "write failed, nothing was stored", exc) from exc
        if self._checkpointer is not None:
            self._written += rows
            if self._written >= _CHECKPOINT_EVERY:
                self._written = 0
                self._checkpointer.wake()
                self._bound_wal(db)

    def _bound_wal(self, db: sqlite3.Connection) -> None:
        """The safety net of background checkpoints: a passive checkpoint cannot end the
        WAL while commits keep coming, so past a hard limit the writer checkpoints (and
        truncates) it itself."""
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size > _WAL_HARD_LIMIT:
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("%s: checkpoint failed: %s", self.path, exc)

    def _select(self) -> sqlite3.Cursor:
        try:
            return self._conn().execute(f"SELECT {', '.join(self.COLUMNS)} FROM {self.TABLE}")
        except sqlite3.Error as exc:
            raise StoreError(self.path, "read failed", exc) from exc

    def close(self) -> None:
        """Close the database (the last close checkpoints and removes the -wal file)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()  # before the last close, which checkpoints
            self._checkpointer = None
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                raise StoreError(self.path, "close failed", exc) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LmaStore(_SqliteStore):
    """The LMA binding cache, one row per MN (keyed by the MN identifier's bytes).

    Commits append to a journal beside the database, and a thread of the store's own
    folds the journal into the table (see ``journal``): a commit then costs the same with
    a thousand bindings or a million. Opening the store and reading it fold the journal
    first, so readers see every committed binding.

    ``stage`` is the commit to call before sending PBAs: it writes the rows to the
    pending-rows file (``pending``) and keeps them; ``settle`` appends what was staged to
    the journal, in one transaction, and empties that file. Opening the store settles
    what a stop before ``settle`` left in the file."""

    KIND = "lma"
    TABLE = "bindings"
    COLUMNS = BINDING_COLUMNS
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS bindings (
            mn_id BLOB PRIMARY KEY NOT NULL,
            mag6 BLOB NOT NULL,            -- 16 packed bytes (text if it has a scope id)
            mag4 BLOB,                     -- observed outer IPv4 source, 4 bytes, or NULL
            mag_port INTEGER NOT NULL,
            state TEXT NOT NULL,
            encapsulation TEXT NOT NULL,
            nat INTEGER NOT NULL,
            ipv4_hoa BLOB,
            ipv4_prefix_len INTEGER NOT NULL,
            ipv4_default_router BLOB,
            ipv4_source TEXT,
            ipv4_pool TEXT,
            hnps TEXT NOT NULL,            -- "prefix/len,prefix/len"
            lifetime_s INTEGER NOT NULL,
            expires_at REAL NOT NULL,      -- UNIX seconds
            registered_at REAL NOT NULL,
            last_sequence INTEGER NOT NULL,
            last_timestamp INTEGER NOT NULL,  -- unsigned 64 bits, stored two's complement
            wire_profile TEXT NOT NULL,
            access_tech INTEGER NOT NULL,
            link_layer_id BLOB
        ) WITHOUT ROWID"""

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        background_checkpoints: bool = True,
        fold_every: int = FOLD_EVERY,
    ) -> None:
        """As ``_SqliteStore``; ``background_checkpoints`` here means that the journal is
        folded, and checkpointed, by a thread of the store's own (else inline, by the
        commit that fills it); ``fold_every`` is how many rows fill a journal."""
        # Only folds write the table, and each one checkpoints it: no checkpointer for it.
        super().__init__(
            path,
            synchronous=synchronous,
            busy_timeout_s=busy_timeout_s,
            background_checkpoints=False,
        )
        try:
            self._journal: BindingJournal | None = BindingJournal(
                self.path,
                self.TABLE,
                self.COLUMNS,
                REFRESH_COLUMNS,
                synchronous=self.synchronous,
                busy_timeout_s=busy_timeout_s,
                prepare=_prepare_path,
                background=background_checkpoints,
                fold_every=fold_every,
            )
        except BaseException:
            super().close()
            raise
        self._staged: list[Batch] = []
        self.staged_rows = 0
        self._pending: PendingRows | None = None
        try:
            self._pending = PendingRows(
                self.path, sync=self.synchronous != "NORMAL", prepare=_prepare_path
            )
            left = self._pending.read()  # staged, and never settled: a stop in between
            if left:
                self._staged = left
                self.staged_rows = sum(len(part) for batch in left for part in batch)
                moved = self.settle()
                log.info("store: %d rows staged before a stop moved into the journal", moved)
        except BaseException:
            self.close()
            raise

    def _journal_open(self) -> BindingJournal:
        self._conn()  # a closed store says so
        assert self._journal is not None
        return self._journal

    def load(self) -> list[BindingView]:
        """Every stored binding, for ``LmaEngine.restore``."""
        return [view for batch in self.load_batches() for view in batch]

    def load_batches(self, size: int = 5_000) -> Iterator[list[BindingView]]:
        """Every stored binding, ``size`` at a time: a restart with a million bindings
        restores them batch by batch instead of holding a million views at once. Small
        batches: a batch's rows, views and events are freed among the long-lived entries,
        and the holes they leave stay in the RSS (5k rather than 50k: 80 MiB less at 1M)."""
        self.settle()  # staged rows are committed rows: readers see them too
        try:
            self._journal_open().fold_all()
        except sqlite3.Error as exc:
            raise StoreError(self.path, "cannot fold the journal into the table", exc) from exc
        cursor = self._select()
        cache: dict[Any, Any] = {}
        # A million new objects would run the cyclic GC dozens of times over an ever larger
        # heap, for nothing: none of them is in a cycle.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while True:
                try:
                    rows = cursor.fetchmany(size)
                    batch = [binding_from_row(row, cache) for row in rows]
                except sqlite3.Error as exc:
                    raise StoreError(self.path, "read failed", exc) from exc
                except (ValueError, TypeError) as exc:
                    raise StoreError(self.path, "a bindings row cannot be decoded", exc) from exc
                if not batch:
                    return
                yield batch
        finally:
            cursor.close()
            if gc_was_enabled:
                gc.enable()

    def apply(self, events: Iterable[object]) -> int:
        """Persist a batch of engine events in one transaction, committed on return:
        BindingUp and BindingDown write the binding they carry, BindingPurged deletes it,
        other events are ignored. Only the last event of each MN matters, so a batch
        costs one write per MN. Returns how many events were persisted (0: no write).
        What was staged goes first."""
        self.settle()
        count, batch = _batch_of(events)
        if count:
            self._append([batch])
        return count

    def stage(self, events: Iterable[object]) -> int:
        """``apply``, durable on return in the pending-rows file rather than the journal:
        call it before sending the PBAs the batch produced, and ``settle`` soon after."""
        count, batch = _batch_of(events)
        if count:
            if self._pending is None:
                raise StoreError(self.path, "the store is closed")
            self._pending.write(batch)
            self._staged.append(batch)
            self.staged_rows += len(batch[0]) + len(batch[1]) + len(batch[2])
        return count

    def settle(self) -> int:
        """Append what was staged to the journal, in one transaction, and forget it.
        Returns how many rows. On failure (StoreError) it stays staged, in the file too."""
        staged = self._staged
        if not staged:
            return 0
        self._append(staged)
        self._staged, rows, self.staged_rows = [], self.staged_rows, 0
        if self._pending is not None:
            self._pending.clear()
        return rows

    def _append(self, batches: list[Batch]) -> None:
        journal = self._journal_open()
        try:
            journal.append_batches(batches)
        except (sqlite3.Error, OverflowError) as exc:
            raise StoreError(self.path, "write failed, nothing was stored", exc) from exc

    def close(self) -> None:
        """Settle, fold the journal into the table, then close (see
        ``_SqliteStore.close``)."""
        pending = self._pending
        try:
            if pending is not None and self._journal is not None:
                self.settle()
        finally:
            if pending is not None:
                pending.close()
                self._pending = None
            self._close_journal()

    def _close_journal(self) -> None:
        journal, self._journal = self._journal, None
        try:
            if journal is not None:
                journal.close()
        except sqlite3.Error as exc:
            raise StoreError(self.path, "cannot fold the journal into the table", exc) from exc
        finally:
            super().close()


def _batch_of(events: Iterable[object]) -> tuple[int, Batch]:
    """(how many events count, the rows they write): see ``LmaStore.apply``."""
    # Per MN: its latest binding (None: purged), and whether every event of it in
    # this batch was a refresh (then the refresh columns are enough).
    latest: dict[bytes, tuple[BindingView | None, bool]] = {}
    count = 0
    for event in events:
        kind = type(event)
        if kind is BindingUp or kind is BindingDown:
            view: BindingView = event.binding  # type: ignore[attr-defined]
            refresh = kind is BindingUp and event.change == "refreshed"  # type: ignore[attr-defined]
            before = latest.get(view.mn_id)
            latest[view.mn_id] = (view, refresh and (before is None or before[1]))
        elif kind is BindingPurged:
            latest[event.mn_id] = (None, False)  # type: ignore[attr-defined]
        else:
            continue
        count += 1
    rows: list[tuple[object, ...]] = []
    refreshes: list[tuple[object, ...]] = []
    gone: list[bytes] = []
    for mn_id, (view_or_none, refresh) in latest.items():
        if view_or_none is None:
            gone.append(mn_id)
        elif refresh:
            refreshes.append(binding_refresh_row(view_or_none))
        else:
            rows.append(binding_to_row(view_or_none))
    return count, (rows, refreshes, gone)


class MagStore(_SqliteStore):
    """The MAG binding update list and the last PBU sequence number sent."""

    KIND = "mag"
    TABLE = "bul"
    COLUMNS = BUL_COLUMNS
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS bul (
            mn_id BLOB PRIMARY KEY NOT NULL,
            lma TEXT NOT NULL,
            state TEXT NOT NULL,
            registered INTEGER NOT NULL,
            ipv4_hoa BLOB,
            ipv4_prefix_len INTEGER NOT NULL,
            ipv4_default_router BLOB,
            hnps TEXT NOT NULL,
            encapsulation TEXT,
            nat INTEGER NOT NULL,
            lifetime_s INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            link_layer_id BLOB
        ) WITHOUT ROWID"""
    _UPSERT = _upsert_sql("bul", BUL_COLUMNS)

    def load(self) -> tuple[int, list[BulView]]:
        """(the last sequence number saved, 0 if none; every stored entry)."""
        cursor = self._select()
        try:
            entries = [bul_from_row(row) for row in cursor]
            row = self._conn().execute("SELECT value FROM meta WHERE key = 'sequence'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(self.path, "read failed", exc) from exc
        except (ValueError, TypeError) as exc:
            raise StoreError(self.path, "a bul row cannot be decoded", exc) from exc
        sequence = row[0] if row is not None else 0
        if not isinstance(sequence, int):
            raise StoreError(self.path, f"bad sequence {sequence!r}")
        return sequence & 0xFFFF, entries

    def save(self, entries: Iterable[BulView], removed: Iterable[bytes], sequence: int) -> None:
        """In one transaction: delete the ``removed`` MNs, write ``entries`` (so an MN in
        both, gone and back within a batch, stays) and the sequence number."""
        rows = [bul_to_row(v) for v in entries]
        gone = [(mn_id,) for mn_id in removed]

        def work(db: sqlite3.Connection) -> None:
            if gone:
                db.executemany("DELETE FROM bul WHERE mn_id = ?", gone)
            if rows:
                db.executemany(self._UPSERT, rows)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('sequence', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (sequence & 0xFFFF,),
            )

        self._transaction(work, len(rows) + len(gone) + 1)
