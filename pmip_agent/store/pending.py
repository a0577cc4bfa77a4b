"""The LMA store's first write: rows made durable with one ``write()`` before the PBA goes
out, until the journal (``journal``) holds them.

Why: a commit to the SQLite journal costs about 40 us warm and 330 us after 50 ms idle,
measured alone on the two-core machines, and a PBA waits for it. One ``write()`` of the
same rows costs 1 us warm and 45 us after 50 ms idle. So the LMA writes a batch's rows
here, sends its PBAs, and moves the rows into the journal a few milliseconds later, many
batches in one transaction (``LmaStore.stage`` and ``LmaStore.settle``).

The file, ``<db>.pending``: an 8-octet header (``MAGIC``), then one record per staged
batch: its payload's length and CRC-32 (4 octets each, big-endian), then the payload, a
``marshal`` dump of ``(rows, refreshes, gone)``. Only payloads whose CRC matches are read
back, so ``marshal`` only ever reads what this module wrote. A record that ends short or
fails its CRC is where a write was cut off: that batch's ``stage`` never returned, so its
PBAs were never sent, and it is dropped with everything after it. Once the journal holds
the rows, the file is cut back to its header.

Durability is the journal's: with ``synchronous=NORMAL`` the rows are in the page cache
when ``write()`` returns and survive the process dying in any way; with ``FULL`` or
``EXTRA`` each record is also fdatasync'ed before ``stage`` returns.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from .errors import StoreError

log = logging.getLogger("pmip.store")

MAGIC = b"PMIPPND1"
_FRAME = struct.Struct(">II")  # payload length, CRC-32 of the payload
_MARSHAL_VERSION = 4

Batch = tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[bytes]]


def pending_path(db_path: Path) -> Path:
    return Path(f"{db_path}.pending")


class PendingRows:
    """The append-only file of staged batches beside an LMA store."""

    def __init__(self, db_path: Path, *, sync: bool, prepare: Callable[[Path], None]) -> None:
        self.path = pending_path(db_path)
        self.sync = sync
        prepare(self.path)
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise StoreError(self.path, "cannot open", exc) from exc
        try:
            head = os.pread(self._fd, len(MAGIC), 0)
            if not head:
                os.write(self._fd, MAGIC)
            elif head != MAGIC:
                raise StoreError(self.path, "not a pmip-agent pending-rows file")
        except OSError as exc:
            os.close(self._fd)
            raise StoreError(self.path, "cannot read", exc) from exc
        except BaseException:
            os.close(self._fd)
            raise
        self.size = os.fstat(self._fd).st_size  # what we wrote: more means staged batches

    def write(self, batch: Batch) -> None:
        """Append one batch; durable (as above) when this returns. Raises StoreError, and
        then the file holds nothing of it that would be read back."""
        payload = marshal.dumps(batch, _MARSHAL_VERSION)
        record = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, record)
            if written != len(record):  # a partial record fails its CRC when read back
                raise OSError(f"short write: {written} of {len(record)} octets")
            if self.sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            # The batches before it stay; a partial record left is dropped when read (CRC).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            raise StoreError(self.path, "write failed, nothing was stored", exc) from exc
        self.size += len(record)

    def read(self) -> list[Batch]:
        """The batches staged and not yet cleared, oldest first (at start-up)."""
        try:
            data = os.pread(self._fd, self.size, 0)
        except OSError as exc:
            raise StoreError(self.path, "cannot read", exc) from exc
        batches: list[Batch] = []
        offset, end = len(MAGIC), len(data)
        while offset < end:
            if end - offset < _FRAME.size:
                break
            length, crc = _FRAME.unpack_from(data, offset)
            payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            try:
                batch = marshal.loads(payload)
            except (ValueError, EOFError, TypeError) as exc:  # CRC fine: not our format
                raise StoreError(self.path, "unreadable record", exc) from exc
            if not _is_batch(batch):
                raise StoreError(self.path, "unreadable record")
            batches.append(batch)
            offset += _FRAME.size + length
        if offset < end:
            log.warning(
                "store: %s: dropped %d octets of a batch cut off while it was written "
                "(its PBAs were never sent)",
                self.path,
                end - offset,
            )
        return batches

    def clear(self) -> None:
        """Forget every staged batch: the journal holds them now."""
        if self.size <= len(MAGIC):
            return
        try:
            os.ftruncate(self._fd, len(MAGIC))
        except OSError as exc:
            raise StoreError(self.path, "cannot empty", exc) from exc
        self.size = len(MAGIC)

    def close(self) -> None:
        os.close(self._fd)


def _is_batch(value: object) -> bool:
    return (
        type(value) is tuple
        and len(value) == 3
        and all(type(part) is list for part in value)
        and all(type(key) is bytes for key in value[2])
        and all(type(row) is tuple for part in value[:2] for row in part)
    )
