"""The SQLite stores: exact row round trips, group commit, survival of a SIGKILL, and an LMA
restart that gives every MN its addresses back.

Run as a script (``python tests/test_store.py --crash-child PATH``) this file is also the
child process of the crash test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmip_agent.core.events import (
    BindingDown,
    BindingPurged,
    BindingUp,
    BindingView,
    Encapsulation,
    MessageDropped,
    PbuRejected,
    Peer,
)
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.mag import BulView, MagEngine
from pmip_agent.core.policy import (
    Ipv4Mode,
    LmaPeerSettings,
    LmaSettings,
    MagSettings,
    MnProfile,
)
from pmip_agent.core.pools import Ipv4Pool, PoolSet, PrefixPool
from pmip_agent.store import (
    LmaStore,
    MagStore,
    StoreError,
    binding_from_row,
    binding_to_json,
    binding_to_row,
    bul_from_row,
    bul_to_json,
    bul_to_row,
)
from pmip_agent.store.journal import BindingJournal, journal_paths
from pmip_agent.store.pending import MAGIC as PENDING_MAGIC
from pmip_agent.store.pending import pending_path
from pmip_agent.store.serialize import hnps_from_text, hnps_to_text
from pmip_agent.wire import (
    AccessTechTypeOption,
    BindingAck,
    BindingUpdate,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4CareOfAddress,
    Ipv4HoaRequest,
    MnIdentifier,
    Status,
    Timestamp,
    decode,
    encode,
)
from pmip_agent.wire import ipv6 as ipv6_frame

T0 = 1_700_000_000.0

# --- strategies -------------------------------------------------------------------------

ipv4s = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6s = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
scoped_ipv6s = st.builds(
    lambda iid, scope: IPv6Address(f"{IPv6Address((0xFE80 << 112) | iid)}%{scope}"),
    st.integers(0, 2**64 - 1),
    st.sampled_from(["eth0", "7", "wlan-1"]),
)
peers = st.builds(
    Peer,
    ipv6s | scoped_ipv6s,
    st.none() | ipv4s,
    st.integers(0, 0xFFFF),
)
prefixes = st.tuples(ipv6s, st.integers(0, 128))
hnp_tuples = st.lists(prefixes, max_size=4).map(tuple)
labels = st.text(max_size=24)  # any text, NULs and non-ASCII included
finite = st.floats(allow_nan=False)

binding_views = st.builds(
    BindingView,
    mn_id=st.binary(max_size=64),
    mag=peers,
    state=st.sampled_from(["active", "deregistered"]) | labels,
    encapsulation=st.sampled_from(list(Encapsulation)),
    nat=st.booleans(),
    ipv4_hoa=st.none() | ipv4s,
    ipv4_prefix_len=st.integers(0, 32),
    ipv4_default_router=st.none() | ipv4s,
    ipv4_source=st.none() | st.sampled_from(["static", "lma", "dhcp-server"]) | labels,
    ipv4_pool=st.none() | labels,
    hnps=hnp_tuples,
    lifetime_s=st.integers(0, 2**31),
    expires_at=finite,
    registered_at=finite,
    last_sequence=st.integers(0, 0xFFFF),
    last_timestamp=st.integers(0, 2**64 - 1),
    wire_profile=st.sampled_from(["draft", "rfc5844"]),
    access_tech=st.integers(0, 0xFF),
    link_layer_id=st.none() | st.binary(max_size=16),
)

bul_views = st.builds(
    BulView,
    mn_id=st.binary(max_size=64),
    lma=labels,
    state=st.sampled_from(["registering", "registered", "backoff"]) | labels,
    registered=st.booleans(),
    ipv4_hoa=st.none() | ipv4s,
    ipv4_prefix_len=st.integers(0, 32),
    ipv4_default_router=st.none() | ipv4s,
    hnps=hnp_tuples,
    encapsulation=st.none() | st.sampled_from([e.value for e in Encapsulation]),
    nat=st.booleans(),
    lifetime_s=st.integers(0, 2**31),
    expires_at=finite,
    link_layer_id=st.none() | st.binary(max_size=16),
)


def assert_same_binding(got: BindingView, want: BindingView) -> None:
    """Equality, plus the types equality would let slip (True == 1, "ipv6" == IPV6)."""
    assert got == want
    assert type(got.nat) is bool
    assert type(got.encapsulation) is Encapsulation
    assert type(got.last_timestamp) is int
    assert got.mag.v6.scope_id == want.mag.v6.scope_id
    assert [(type(p), type(n)) for p, n in got.hnps] == [(IPv6Address, int)] * len(want.hnps)


@pytest.fixture
def tmp_store_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def view(
    mn: int | bytes,
    *,
    state: str = "active",
    hoa: str | None = "10.1.0.2",
    mag: Peer | None = None,
    expires_at: float = T0 + 400,
    hnps: tuple[tuple[IPv6Address, int], ...] = ((IPv6Address("2001:db8:100::"), 64),),
) -> BindingView:
    mn_id = mn if isinstance(mn, bytes) else f"mn{mn}@example.net".encode()
    return BindingView(
        mn_id=mn_id,
        mag=mag or Peer(IPv6Address("2001:db8:a::1")),
        state=state,
        encapsulation=Encapsulation.IPV6 if mag is None or mag.v4 is None else Encapsulation.IPV4,
        nat=False,
        ipv4_hoa=None if hoa is None else IPv4Address(hoa),
        ipv4_prefix_len=24,
        ipv4_default_router=IPv4Address("10.1.0.1"),
        ipv4_source="lma",
        ipv4_pool="pool0",
        hnps=hnps,
        lifetime_s=400,
        expires_at=expires_at,
        registered_at=T0,
        last_sequence=7,
        last_timestamp=Timestamp.from_seconds(T0).value,
        wire_profile="rfc5844",
        access_tech=3,
        link_layer_id=b"\x00\x11\x22\x33\x44\x55",
    )


# --- serialize: rows ----------------------------------------------------------------------


@given(binding_views)
def test_binding_row_round_trip_is_exact(v: BindingView) -> None:
    row = binding_to_row(v)
    assert all(type(x) in (bytes, str, int, float, type(None)) for x in row)
    assert_same_binding(binding_from_row(row), v)
    assert_same_binding(binding_from_row(row, {}), v)


@given(binding_views, st.lists(st.none() | st.integers() | st.text(), min_size=1, max_size=3))
def test_binding_row_ignores_unknown_trailing_columns(v: BindingView, extra: list[object]) -> None:
    assert_same_binding(binding_from_row((*binding_to_row(v), *extra)), v)


@given(bul_views)
def test_bul_row_round_trip_is_exact(v: BulView) -> None:
    row = bul_to_row(v)
    got = bul_from_row(row)
    assert got == v
    assert type(got.registered) is bool and type(got.nat) is bool
    assert bul_from_row((*row, "from a later version", 42)) == v


def test_row_is_compact() -> None:
    v = view(1, mag=Peer(IPv6Address("2001:db8:a::1"), IPv4Address("203.0.113.9"), 40000))
    row = dict(zip(("mn_id", "mag6", "mag4", "mag_port"), binding_to_row(v), strict=False))
    assert row["mag6"] == IPv6Address("2001:db8:a::1").packed
    assert row["mag4"] == IPv4Address("203.0.113.9").packed
    assert binding_to_row(v)[12] == "2001:db8:100::/64"


@given(hnp_tuples)
def test_hnps_text_round_trip(hnps: tuple[tuple[IPv6Address, int], ...]) -> None:
    assert hnps_from_text(hnps_to_text(hnps)) == hnps


def test_hnps_text_format() -> None:
    hnps = ((IPv6Address("2001:db8:100::"), 64), (IPv6Address("2001:db8:200:1::"), 64))
    assert hnps_to_text(hnps) == "2001:db8:100::/64,2001:db8:200:1::/64"
    assert hnps_to_text(()) == ""
    assert hnps_from_text("") == ()


def test_shared_cache_shares_peers_and_routers() -> None:
    cache: dict[object, object] = {}
    a = binding_from_row(binding_to_row(view(1)), cache)
    b = binding_from_row(binding_to_row(view(2, hoa="10.1.0.3")), cache)
    assert a.mag is b.mag
    assert a.ipv4_default_router is b.ipv4_default_router
    assert a.ipv4_hoa != b.ipv4_hoa


# --- serialize: JSON ----------------------------------------------------------------------

BINDING_JSON_KEYS = {
    "mn_id",
    "ipv4_hoa",
    "ipv4_prefix_len",
    "ipv4_default_router",
    "ipv4_source",
    "ipv6_hnps",
    "mag",
    "mag_ipv4",
    "mag_port",
    "transport",
    "nat",
    "lifetime_s",
    "lifetime_remaining_s",
    "state",
    "registered_at",
    "wire_profile",
    "access_tech",
}


def test_binding_to_json() -> None:
    mag = Peer(IPv6Address("2001:db8:a::1"), IPv4Address("203.0.113.9"), 40000)
    v = view(b"mn\xff@example.net", mag=mag, expires_at=T0 + 100.25)
    doc = binding_to_json(v, T0)
    assert set(doc) == BINDING_JSON_KEYS
    assert json.loads(json.dumps(doc)) == doc
    assert doc["mn_id"] == "mn\\xff@example.net"
    assert doc["ipv4_hoa"] == "10.1.0.2"
    assert doc["ipv4_prefix_len"] == 24
    assert doc["ipv4_default_router"] == "10.1.0.1"
    assert doc["ipv4_source"] == "lma"
    assert doc["ipv6_hnps"] == ["2001:db8:100::/64"]
    assert (doc["mag"], doc["mag_ipv4"], doc["mag_port"]) == ("2001:db8:a::1", "203.0.113.9", 40000)
    assert doc["transport"] == "ipv4"
    assert doc["nat"] is False
    assert doc["lifetime_s"] == 400
    assert doc["lifetime_remaining_s"] == 101  # rounded up: 0 only once lapsed
    assert doc["state"] == "active"
    assert doc["registered_at"] == T0
    assert (doc["wire_profile"], doc["access_tech"]) == ("rfc5844", 3)


def test_binding_to_json_ipv6_only_and_lapsed() -> None:
    v = view(1, hoa=None)
    doc = binding_to_json(v, v.expires_at + 5)
    assert doc["ipv4_hoa"] is None and doc["mag_ipv4"] is None and doc["mag_port"] == 0
    assert doc["transport"] == "ipv6"
    assert doc["lifetime_remaining_s"] == 0


@given(binding_views, finite)
def test_binding_to_json_always_serializable(v: BindingView, now: float) -> None:
    doc = binding_to_json(v, now)
    assert set(doc) == BINDING_JSON_KEYS
    json.dumps(doc)
    remaining = doc["lifetime_remaining_s"]
    assert type(remaining) is int and remaining >= 0
    assert doc["transport"] in ("ipv6", "ipv4", "ipv4-udp")


def test_bul_to_json() -> None:
    v = BulView(
        b"mn1",
        "lma1",
        "registered",
        True,
        IPv4Address("10.1.0.2"),
        24,
        IPv4Address("10.1.0.1"),
        ((IPv6Address("2001:db8:100::"), 64),),
        "ipv4-udp",
        True,
        400,
        T0 + 399.5,
        None,
    )
    doc = bul_to_json(v, T0)
    assert doc == {
        "mn_id": "mn1",
        "lma": "lma1",
        "state": "registered",
        "registered": True,
        "ipv4_hoa": "10.1.0.2",
        "ipv6_hnps": ["2001:db8:100::/64"],
        "transport": "ipv4-udp",
        "nat": True,
        "lifetime_remaining_s": 400,
    }
    json.dumps(doc)


# --- LmaStore -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(binding_views, max_size=20, unique_by=lambda v: v.mn_id))
def test_lma_store_round_trip(views: list[BindingView]) -> None:
    with tempfile.TemporaryDirectory() as d:
        with LmaStore(Path(d) / "lma.db") as store:
            assert store.apply(BindingUp(v, "created") for v in views) == len(views)
        with LmaStore(Path(d) / "lma.db") as store:
            loaded = {v.mn_id: v for v in store.load()}
    assert set(loaded) == {v.mn_id for v in views}
    for v in views:
        assert_same_binding(loaded[v.mn_id], v)


def test_apply_up_down_purged_across_reopen(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    store = LmaStore(path)
    assert store.apply([BindingUp(view(i, hoa=f"10.1.0.{i}"), "created") for i in range(2, 6)]) == 4
    down = view(3, hoa="10.1.0.3", state="deregistered")
    noise = [
        MessageDropped(Peer(IPv6Address("2001:db8::9")), "malformed"),
        PbuRejected(b"x", Peer(IPv6Address("2001:db8::9")), 130, None, "no"),
    ]
    n = store.apply([*noise, BindingDown(down, "deregistered"), BindingPurged(view(4).mn_id, None)])
    assert n == 2  # the two foreign events are ignored
    assert store.apply(noise) == 0
    assert store.apply([]) == 0
    store.close()
    store.close()  # idempotent

    with LmaStore(path) as store:
        got = {v.mn_id: v for v in store.load()}
    assert sorted(got) == sorted(view(i).mn_id for i in (2, 3, 5))
    assert got[down.mn_id] == down
    assert got[view(5).mn_id] == view(5, hoa="10.1.0.5")


def test_apply_keeps_only_the_last_event_of_each_mn(tmp_store_dir: Path) -> None:
    a, b, c = view(1), view(2, hoa="10.1.0.3"), view(3, hoa="10.1.0.4")
    with LmaStore(tmp_store_dir / "lma.db") as store:
        store.apply([BindingUp(a, "created"), BindingUp(b, "created")])
        moved = view(1, mag=Peer(IPv6Address("2001:db8:b::1")))
        n = store.apply(
            [
                BindingPurged(a.mn_id, a.ipv4_hoa),  # gone, then back in the same batch
                BindingUp(moved, "created"),
                BindingUp(c, "created"),  # created, then purged in the same batch
                BindingPurged(c.mn_id, c.ipv4_hoa),
                BindingDown(b, "expired"),
                BindingPurged(b.mn_id, b.ipv4_hoa),
            ]
        )
        assert n == 6
        assert store.load() == [moved]


def test_a_failed_batch_stores_nothing(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    with LmaStore(path) as store:
        store.apply([BindingUp(view(1), "created")])
        bad = BindingView(**{**_fields(view(3)), "lifetime_s": 2**70})  # no SQLite integer
        with pytest.raises(StoreError, match=str(path)):
            store.apply(
                [BindingPurged(view(1).mn_id, None), BindingUp(view(2), "x"), BindingUp(bad, "x")]
            )
        assert [v.mn_id for v in store.load()] == [view(1).mn_id]
        store.apply([BindingUp(view(4), "created")])  # usable afterwards
        assert len(store.load()) == 2


def _fields(v: BindingView) -> dict[str, object]:
    return {name: getattr(v, name) for name in BindingView._fields}


def test_pragmas_and_synchronous_choice(tmp_store_dir: Path) -> None:
    with LmaStore(tmp_store_dir / "a.db") as store:
        db = store._db
        assert db is not None
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with LmaStore(tmp_store_dir / "b.db", synchronous="full") as store:
        assert store._db is not None
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.synchronous == "FULL"
    with pytest.raises(ValueError, match="synchronous"):
        LmaStore(tmp_store_dir / "c.db", synchronous="OFF; DROP TABLE bindings")


def test_schema_and_meta(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    LmaStore(path).close()
    db = sqlite3.connect(path)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta == {"kind": "lma", "schema_version": 1}
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'bindings'").fetchone()[0]
    assert "mn_id BLOB PRIMARY KEY" in sql
    db.close()


def test_file_and_directory_modes(tmp_store_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_store_dir / "state" / "pmip" / "lma.db"
        with LmaStore(path) as store:
            store.apply([BindingUp(view(1), "created")])
            store.stage([BindingUp(view(2), "created")])
            files = [path, *journal_paths(path)]
            assert Path(f"{files[1]}-wal").exists()  # the commit went to the journal
            assert pending_path(path).stat().st_size > len(PENDING_MAGIC)  # staged
            for f in files:
                for file in (f, Path(f"{f}-wal"), Path(f"{f}-shm")):
                    if file.exists():
                        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
            assert stat.S_IMODE(pending_path(path).stat().st_mode) == 0o600
            assert sorted(p.name for p in path.parent.iterdir()) == sorted(
                [pending_path(path).name]
                + [f"{f.name}{s}" for f in files for s in ("", "-shm", "-wal")]
            )
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_existing_file_mode_is_left_alone(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    LmaStore(path).close()
    os.chmod(path, 0o640)  # an operator's choice, e.g. for a monitoring group
    LmaStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_corrupt_database_is_a_store_error(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.raises(StoreError, match="not a usable") as info:
        LmaStore(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_damaged_pages_are_a_store_error_on_load(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    with LmaStore(path) as store:
        store.apply([BindingUp(view(i, hoa=None), "created") for i in range(2000)])
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(3 * page, len(data), page):  # scribble over every b-tree page header
        data[offset : offset + 8] = b"\xee" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path)), LmaStore(path) as store:
        store.load()


def test_unwritable_locations_are_store_errors(tmp_store_dir: Path) -> None:
    blocker = tmp_store_dir / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create") as info:
        LmaStore(blocker / "lma.db")  # its directory would have to be a regular file
    assert str(blocker / "lma.db") in str(info.value)
    (tmp_store_dir / "dir.db").mkdir()
    with pytest.raises(StoreError, match=str(tmp_store_dir / "dir.db")):
        LmaStore(tmp_store_dir / "dir.db")


def test_foreign_databases_are_refused(tmp_store_dir: Path) -> None:
    other = tmp_store_dir / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE accounts (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a pmip-agent store"):
        LmaStore(other)
    lma = tmp_store_dir / "lma.db"
    LmaStore(lma).close()
    with pytest.raises(StoreError, match="'lma' store, not a 'mag' store"):
        MagStore(lma)


def test_unusable_journal_files_are_store_errors_naming_them(tmp_store_dir: Path) -> None:
    """A journal that is some other database, or not a database at all, stops the store
    from opening (its rows may be the newest state of some bindings), with the file named."""
    path = tmp_store_dir / "lma.db"
    log0, log1 = journal_paths(path)
    db = sqlite3.connect(log1)
    db.execute("CREATE TABLE accounts (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"{log1}: not a pmip-agent journal"):
        LmaStore(path)
    log1.unlink()
    lma = tmp_store_dir / "lma.db"
    LmaStore(lma).close()
    log0.write_bytes(b"not a database, " * 512)
    with pytest.raises(StoreError, match=f"{log0}: cannot open"):
        LmaStore(path)
    log0.unlink()
    LmaStore(path).close()


def test_use_after_close_is_a_store_error(tmp_store_dir: Path) -> None:
    store = LmaStore(tmp_store_dir / "lma.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.apply([BindingUp(view(1), "created")])
    with pytest.raises(StoreError, match="closed"):
        store.load()


def test_rows_from_a_later_schema_still_load(tmp_store_dir: Path) -> None:
    """A later version added a column (and bumped schema_version): this one still loads,
    and rewriting a row keeps the value of the column it does not know."""
    path = tmp_store_dir / "lma.db"
    with LmaStore(path) as store:
        store.apply([BindingUp(view(1), "created")])
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE bindings ADD COLUMN gre_key INTEGER DEFAULT 0")
    db.execute("UPDATE bindings SET gre_key = 77")
    db.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with LmaStore(path) as store:
        assert store.load() == [view(1)]
        store.apply([BindingUp(view(1, hoa="10.1.0.9"), "updated"), BindingUp(view(2), "x")])
    db = sqlite3.connect(path)
    rows = dict(db.execute("SELECT mn_id, gre_key FROM bindings"))
    assert rows == {view(1).mn_id: 77, view(2).mn_id: 0}
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == 2
    db.close()


def test_a_schema_missing_columns_is_refused(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    LmaStore(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE bindings DROP COLUMN link_layer_id")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="lacks columns link_layer_id"):
        LmaStore(path)


# --- crash: SIGKILL between commits ------------------------------------------------------

CRASH_BATCH = 50
CRASH_FOLD_EVERY = 301  # journals switch and fold every six batches or so, while killed


def crash_expected(last_batch: int) -> dict[bytes, BindingView]:
    """The bindings once batches 0..last_batch are committed: batch b creates MNs
    b*50..b*50+49, deregisters MN (b-1)*50 and purges MN (b-2)*50+1."""
    state: dict[bytes, BindingView] = {}
    for batch, events in enumerate(crash_batches()):
        if batch > last_batch:
            break
        for e in events:
            if isinstance(e, BindingPurged):
                state.pop(e.mn_id, None)
            else:
                assert isinstance(e, BindingUp | BindingDown)
                state[e.binding.mn_id] = e.binding
    return state


def crash_batches() -> Iterator[list[object]]:
    batch = 0
    while True:
        first = batch * CRASH_BATCH
        events: list[object] = [
            BindingUp(view(i, hoa=str(IPv4Address(0x0A000000 + i))), "created")
            for i in range(first, first + CRASH_BATCH)
        ]
        if batch >= 1:
            i = first - CRASH_BATCH
            down = view(i, hoa=str(IPv4Address(0x0A000000 + i)), state="deregistered")
            events.append(BindingDown(down, "deregistered"))
        if batch >= 2:
            events.append(BindingPurged(view(first - 2 * CRASH_BATCH + 1).mn_id, None))
        yield events
        batch += 1


def crash_child(path: Path, how: str) -> None:
    """Commit batch after batch, printing each batch number once its commit has returned,
    until killed. ``apply``: each batch in its own transaction; ``stage``: as the LMA
    daemon does, staged (the commit) and settled into the journal every third batch."""
    store = LmaStore(path, fold_every=CRASH_FOLD_EVERY)
    for batch, events in enumerate(crash_batches()):
        if how == "apply":
            store.apply(events)
        else:
            store.stage(events)
            if batch % 3 == 2:
                store.settle()
        print(batch, flush=True)


@pytest.mark.parametrize("how", ["apply", "stage"])
def test_committed_bindings_survive_sigkill(tmp_store_dir: Path, how: str) -> None:
    path = tmp_store_dir / "lma.db"
    child = subprocess.Popen(
        [sys.executable, __file__, "--crash-child", str(path), how],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert child.stdout is not None
    confirmed = -1
    try:
        while confirmed < 40:
            line = child.stdout.readline()
            assert line, f"child exited early with {child.wait()}"
            confirmed = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # Recovery has a journal to replay (and the WAL of whichever file was last written).
    assert any(Path(f"{j}-wal").stat().st_size > 0 for j in journal_paths(path))

    with LmaStore(path) as store:
        loaded = {v.mn_id: v for v in store.load()}
    # Whole batches only, every confirmed one, maybe a few more committed after the last
    # line the parent read.
    newest = max(int(mn.split(b"@")[0][2:]) for mn in loaded) // CRASH_BATCH
    assert confirmed <= newest <= confirmed + 200
    assert loaded == crash_expected(newest)


def _exit_without_closing(path: Path, staged: int, settled: int) -> None:
    """A child: settle ``settled`` bindings, stage ``staged`` more, then end the process
    without closing the store (as kill -9 would)."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_store import view\n"
        "from pmip_agent.core.events import BindingUp\n"
        "from pmip_agent.store.sqlite import LmaStore\n"
        "store = LmaStore(Path(sys.argv[1]))\n"
        "n, m = int(sys.argv[3]), int(sys.argv[4])\n"
        "store.stage([BindingUp(view(i), 'created') for i in range(m)])\n"
        "store.settle()\n"
        "for i in range(m, m + n):\n"
        "    store.stage([BindingUp(view(i), 'created')])\n"
        "os._exit(0)\n"
    )
    here = Path(__file__).resolve().parent
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(here), str(staged), str(settled)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(here.parent)},
    )


def test_staged_rows_are_settled_by_the_next_open(tmp_store_dir: Path) -> None:
    """What the LMA staged before its PBAs and had not yet settled when its process ended
    is in the pending file; the next open moves it into the journal and empties the file."""
    path = tmp_store_dir / "lma.db"
    _exit_without_closing(path, staged=7, settled=3)
    assert pending_path(path).stat().st_size > len(PENDING_MAGIC)
    with LmaStore(path) as store:
        assert pending_path(path).stat().st_size == len(PENDING_MAGIC)
        assert sorted(v.mn_id for v in store.load()) == sorted(view(i).mn_id for i in range(10))


def test_a_failed_settle_keeps_the_rows_staged(
    tmp_store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal refusing a settle loses nothing: the rows stay staged (and in the
    pending file), and the next settle moves them all."""
    path = tmp_store_dir / "lma.db"
    with LmaStore(path) as store:
        store.stage([BindingUp(view(i), "created") for i in range(3)])

        def refuse(self: BindingJournal, batches: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        with monkeypatch.context() as m:
            m.setattr(BindingJournal, "append_batches", refuse)
            with pytest.raises(StoreError, match="write failed"):
                store.settle()
            store.stage([BindingUp(view(3), "created")])
        assert store.staged_rows == 4
        assert pending_path(path).stat().st_size > len(PENDING_MAGIC)
        assert store.settle() == 4
        assert pending_path(path).stat().st_size == len(PENDING_MAGIC)
        assert len(store.load()) == 4


def test_a_record_cut_off_while_written_is_dropped_alone(
    tmp_store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch whose write was cut off (its stage never returned, so its PBAs were never
    sent) is dropped with a warning; the batches before it are kept. A file that is not
    ours stops the store, naming it."""
    path = tmp_store_dir / "lma.db"
    _exit_without_closing(path, staged=3, settled=0)
    pending = pending_path(path)
    whole = pending.read_bytes()
    pending.write_bytes(whole[:-5])  # the third batch's record, cut short
    with caplog.at_level(logging.WARNING, logger="pmip.store"), LmaStore(path) as store:
        assert sorted(v.mn_id for v in store.load()) == sorted(view(i).mn_id for i in range(2))
    assert "cut off while it was written" in caplog.text
    pending.write_bytes(b"SQLite format 3\0" + bytes(100))
    with pytest.raises(StoreError, match=f"{pending}: not a pmip-agent pending-rows file"):
        LmaStore(path)


def _rows_in_main_file(path: Path, scratch: Path) -> int | None:
    """How many bindings the database file holds by itself, without its -wal: what the
    checkpoints have copied there. None if the copy caught a checkpoint mid-write."""
    shutil.copyfile(path, scratch)
    try:
        with contextlib.closing(sqlite3.connect(scratch)) as db:
            return int(db.execute("SELECT count(*) FROM bindings").fetchone()[0])
    except sqlite3.DatabaseError:
        return None
    finally:
        for leftover in (scratch, Path(f"{scratch}-wal"), Path(f"{scratch}-shm")):
            leftover.unlink(missing_ok=True)


def _table_rows(path: Path) -> int:
    """Bindings the table holds now (its file and -wal), journals not counted."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM bindings").fetchone()[0])


def _folder_settled(store: LmaStore) -> None:
    """Waits until the store's folder thread has done all it was asked: the writer hands
    over a full journal only when the folder is idle, so a test that wants a switch at a
    given row waits here first."""
    thread = store._journal_open()._thread
    assert thread is not None
    thread.wait_idle()


def test_commits_append_to_a_journal_folded_in_a_thread_of_its_own(tmp_store_dir: Path) -> None:
    """A commit appends to the journal and never writes the bindings table (its cost must
    not grow with the table); the folder thread folds a full journal into the table and
    checkpoints it into the database file, and close() folds the rest, stops the thread
    and ends the WALs."""
    path = tmp_store_dir / "lma.db"
    scratch = tmp_store_dir / "copy.db"
    store = LmaStore(path, fold_every=500)
    try:
        assert any(t.name == "pmip-checkpoint" for t in threading.enumerate())
        store.apply(BindingUp(view(i), "created") for i in range(100))
        assert _table_rows(path) == 0
        for batch in range(1, 13):  # 1300 rows: two full journals and 300 rows
            fills = batch % 5 == 4  # the journal's 500th row: the writer hands it over
            if fills:
                _folder_settled(store)
            store.apply(BindingUp(view(batch * 100 + i), "created") for i in range(100))
            if fills:  # folded into the table and checkpointed into the database file
                _folder_settled(store)
                assert _rows_in_main_file(path, scratch) == (batch + 1) * 100
        _folder_settled(store)
        assert _table_rows(path) == 1000  # the active journal is not folded yet
    finally:
        store.close()
    assert not any(t.name == "pmip-checkpoint" for t in threading.enumerate())
    for file in (path, *journal_paths(path)):
        assert file.exists() and not Path(f"{file}-wal").exists()
    assert _table_rows(path) == 1300
    for journal in journal_paths(path):
        with contextlib.closing(sqlite3.connect(journal)) as db:
            assert db.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    with LmaStore(path, background_checkpoints=False, fold_every=300) as again:
        assert len(again.load()) == 1300
        again.apply(BindingUp(view(5000 + i), "created") for i in range(299))
        assert _table_rows(path) == 1300
        again.apply([BindingUp(view(6000), "created")])  # the 300th row: folded inline
        assert _table_rows(path) == 1600
        assert not any(t.name == "pmip-checkpoint" for t in threading.enumerate())


@pytest.mark.parametrize("how", ["apply", "stage"])
@pytest.mark.parametrize("background", [True, False], ids=["thread", "inline"])
def test_journal_switches_keep_the_latest_state_of_each_mn(
    tmp_store_dir: Path, background: bool, how: str
) -> None:
    """Registrations, updates, refreshes (the refresh columns alone are journalled),
    deregistrations and purges of the same MNs, several per batch, spread over many small
    journals folded in between: what is read back is always the latest state of each MN,
    never an older row that a fold replayed over a newer one. ``stage``: batches staged
    and settled a few at a time, so one MN's rows come in several batches of one
    transaction."""
    path = tmp_store_dir / "lma.db"
    rng = random.Random(7)
    state: dict[bytes, BindingView] = {}
    with LmaStore(path, background_checkpoints=background, fold_every=7) as store:
        for step in range(400):
            events: list[object] = []
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(12)
                mn_id = view(i).mn_id
                roll = rng.random()
                now = state.get(mn_id)
                if roll < 0.15:
                    events.append(BindingPurged(mn_id, None))
                    state.pop(mn_id, None)
                    continue
                if now is not None and roll < 0.7:  # a refresh: lifetime and replay state
                    new = now._replace(
                        expires_at=T0 + step + rng.random(),
                        lifetime_s=rng.choice((400, 600)),
                        last_sequence=step % 65536,
                        last_timestamp=now.last_timestamp + 1 + step,
                    )
                    events.append(BindingUp(new, "refreshed"))
                elif now is not None and roll < 0.8:
                    new = now._replace(state="deregistered", expires_at=T0 + step)
                    events.append(BindingDown(new, "deregistered"))
                else:
                    new = view(i, hoa=f"10.1.{step % 250}.{i}", expires_at=T0 + step)
                    events.append(BindingUp(new, "created" if now is None else "updated"))
                state[mn_id] = new
            if how == "apply":
                store.apply(events)
            else:
                store.stage(events)
                if rng.random() < 0.3:
                    store.settle()
            if step % 97 == 0:
                assert {v.mn_id: v for v in store.load()} == state
    with LmaStore(path) as again:
        assert {v.mn_id: v for v in again.load()} == state


def test_a_refresh_in_a_batch_after_a_whole_row_keeps_the_whole_row(tmp_store_dir: Path) -> None:
    """One batch, one MN: created, then refreshed. Its latest state goes to the journal as
    a whole row (the refresh columns alone would lose the creation)."""
    path = tmp_store_dir / "lma.db"
    first = view(1, hoa="10.1.0.7")
    later = first._replace(expires_at=first.expires_at + 50, last_sequence=8)
    with LmaStore(path) as store:
        store.apply([BindingUp(first, "created"), BindingUp(later, "refreshed")])
        assert store.load() == [later]


def test_a_journal_replayed_after_its_fold_changes_nothing(
    tmp_store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash between a fold's checkpoint and the emptying of its journal: the next
    start folds that journal again, over a table that already holds it, and then the
    newer journal. Every row is a whole binding, replayed in sequence order: the result
    is the latest state, as if the fold had finished."""
    path = tmp_store_dir / "lma.db"
    monkeypatch.setattr(BindingJournal, "_empty", lambda self, index: None)  # dies here
    store = LmaStore(path, fold_every=5)
    journal = store._journal
    assert journal is not None
    old = [BindingUp(view(i, hoa=f"10.1.0.{i}"), "created") for i in range(1, 6)]
    store.apply(old)  # fills log0: handed over, folded, never emptied
    assert journal._thread is not None
    journal._thread.wait_idle()
    newer = [BindingUp(view(1, hoa="10.1.0.99"), "moved"), BindingPurged(view(2).mn_id, None)]
    store.apply(newer)  # into log1
    journal._thread.stop()  # the crash: nothing more is folded or emptied
    journal._close_connections()
    assert store._db is not None
    store._db.close()
    monkeypatch.undo()
    assert _table_rows(path) == 5
    for file in journal_paths(path):
        with contextlib.closing(sqlite3.connect(file)) as db:
            assert db.execute("SELECT count(*) FROM journal").fetchone()[0] > 0
    with LmaStore(path) as again:
        got = {v.mn_id: v for v in again.load()}
    want = {e.binding.mn_id: e.binding for e in old}
    want[view(1).mn_id] = newer[0].binding  # type: ignore[attr-defined]
    del want[view(2).mn_id]
    assert got == want


# --- end to end: an LMA restart -----------------------------------------------------------

LMAA = IPv6Address("2001:db8::1")
MAG1 = IPv6Address("2001:db8:a::1")
MAG2 = IPv6Address("2001:db8:b::1")
NAT = IPv4Address("203.0.113.9")
ZERO4 = IPv4Address(0)


def mn(i: int) -> bytes:
    return f"mn{i}@example.net".encode()


STATIC_MN = b"static@example.net"
V4ONLY_MN = b"v4only@example.net"
NEW_MN = b"newcomer@example.net"


def lma_profiles(n: int) -> dict[bytes, MnProfile]:
    profiles = {mn(i): MnProfile(mn(i), Ipv4Mode.LMA) for i in range(n)}
    profiles[STATIC_MN] = MnProfile(
        STATIC_MN, Ipv4Mode.STATIC, ipv4_hoa=IPv4Address("10.9.0.5"), ipv4_prefix_len=24
    )
    profiles[V4ONLY_MN] = MnProfile(V4ONLY_MN, Ipv4Mode.LMA, ipv6=False)
    profiles[NEW_MN] = MnProfile(NEW_MN, Ipv4Mode.LMA)
    return profiles


def make_lma(n: int) -> LmaEngine:
    """A fresh LMA with fresh (stateful) pools, the same configuration every time."""
    return LmaEngine(
        LmaSettings(lmaa=LMAA, min_delay_before_bce_delete_s=10.0),
        lma_profiles(n),
        PoolSet([Ipv4Pool("pool0", IPv4Network("10.1.0.0/22"))]),
        PrefixPool(IPv6Network("2001:db8:100::/48")),
    )


def pbu(
    mn_id: bytes,
    now: float,
    *,
    seq: int = 1,
    lifetime_s: int = 400,
    ipv6: bool = True,
    hoa: IPv4Address = ZERO4,
    coa: IPv4Address | None = None,
) -> BindingUpdate:
    opts: list[object] = [
        MnIdentifier(mn_id),
        HandoffIndicatorOption(1),
        AccessTechTypeOption(3),
        Timestamp.from_seconds(now),
        Ipv4HoaRequest(hoa),
    ]
    if ipv6:
        opts.append(HomeNetworkPrefix(IPv6Address(0), 0))
    if coa is not None:
        opts.append(Ipv4CareOfAddress(coa))
    return BindingUpdate(seq, lifetime_s // 4, options=tuple(opts))  # type: ignore[arg-type]


def send(engine: LmaEngine, msg: BindingUpdate, now: float, mag: IPv6Address = MAG1) -> BindingAck:
    engine.receive_ipv6(encode(msg), mag, now)
    (out,) = engine.datagrams_to_send()
    pba = decode(out.data)
    assert isinstance(pba, BindingAck)
    return pba


def drain(engine: LmaEngine) -> list[object]:
    events = []
    while (e := engine.next_event()) is not None:
        events.append(e)
    return events


def test_lma_restart_gives_every_mn_its_addresses_back(tmp_store_dir: Path) -> None:
    n = 60
    path = tmp_store_dir / "lma.db"
    store = LmaStore(path)
    old = make_lma(n)
    now = T0
    # Register in batches, persisting each batch before "sending" its PBAs, as the daemon does.
    for start in range(0, n, 16):
        for i in range(start, min(n, start + 16)):
            now += 0.01
            assert send(old, pbu(mn(i), now), now, MAG1 if i % 2 else MAG2).status == 0
        store.apply(drain(old))
    now += 0.01
    assert send(old, pbu(STATIC_MN, now, hoa=IPv4Address("10.9.0.5")), now).status == 0
    now += 0.01
    # One MN over IPv4/UDP from behind a NAT: the observed outer address must come back.
    udp = pbu(V4ONLY_MN, now, ipv6=False, coa=IPv4Address("192.168.1.2"))
    old.receive_udp(ipv6_frame.wrap(encode(udp, MAG2, LMAA), MAG2, LMAA), NAT, 40000, now)
    assert old.datagrams_to_send()
    now += 0.01
    # mn0 and mn1 deregister: kept (addresses held) for MinDelayBeforeBCEDelete.
    assert send(old, pbu(mn(0), now, seq=2, lifetime_s=0), now, MAG2).status == 0
    assert send(old, pbu(mn(1), now, seq=2, lifetime_s=0), now, MAG1).status == 0
    store.apply(drain(old))
    old.handle_timer(now + 5)  # nothing lapses yet
    assert store.apply(drain(old)) == 0
    store.close()

    before = {v.mn_id: v for v in old.bindings()}
    assert before[V4ONLY_MN].mag == Peer(MAG2, NAT, 40000)
    assert before[V4ONLY_MN].encapsulation is Encapsulation.IPV4_UDP
    assert before[mn(0)].state == "deregistered"

    # --- restart: a new engine, same configuration, state from the store
    store = LmaStore(path)
    restart = now + 1
    new = make_lma(n)
    new.restore(store.load(), restart)
    events = drain(new)
    restored = {e.binding.mn_id: e.binding for e in events if isinstance(e, BindingUp)}
    assert all(e.change == "restored" for e in events if isinstance(e, BindingUp))
    assert [e for e in events if not isinstance(e, BindingUp)] == []
    active = {m for m, v in before.items() if v.state == "active"}
    assert set(restored) == active  # the deregistered ones hold addresses, no data plane
    for m in active:
        assert restored[m].ipv4_hoa == before[m].ipv4_hoa
        assert restored[m].hnps == before[m].hnps
        assert restored[m] == before[m]
    # Deregistered entries come back too, with their MinDelayBeforeBCEDelete deadline.
    assert {v.mn_id: v for v in new.bindings()} == before
    assert restored[STATIC_MN].ipv4_hoa == IPv4Address("10.9.0.5")
    assert restored[V4ONLY_MN].mag == Peer(MAG2, NAT, 40000)

    # A new MN never gets an address a restored (or lingering deregistered) binding holds.
    taken4 = {v.ipv4_hoa for v in before.values()}
    taken6 = {p for v in before.values() for p in v.hnps}
    assert send(new, pbu(NEW_MN, restart), restart).status == 0
    fresh = new.binding(NEW_MN)
    assert fresh is not None and fresh.ipv4_hoa is not None
    assert fresh.ipv4_hoa not in taken4
    assert not set(fresh.hnps) & taken6
    store.apply(drain(new))

    # Replay protection survived too: an older timestamp is refused, a newer one refreshes.
    old_ts = send(new, pbu(mn(5), T0), restart, MAG1).status
    assert old_ts == Status.TIMESTAMP_LOWER_THAN_PREV_ACCEPTED
    assert send(new, pbu(mn(5), restart, seq=3), restart, MAG1).status == 0
    (up,) = [e for e in drain(new) if isinstance(e, BindingUp)]
    assert up.change == "refreshed" and up.binding.ipv4_hoa == before[mn(5)].ipv4_hoa

    # The lingering deregistered entries are purged on time, and the store forgets them.
    new.handle_timer(now + 10.5)
    purged = [e for e in drain(new) if isinstance(e, BindingPurged)]
    assert {e.mn_id for e in purged} == {mn(0), mn(1)}
    assert store.apply(purged) == 2
    assert {v.mn_id for v in store.load()} == set(before) - {mn(0), mn(1)} | {NEW_MN}
    store.close()


def test_deregistered_binding_keeps_its_purge_deadline_across_restart(
    tmp_store_dir: Path,
) -> None:
    old = make_lma(1)
    assert send(old, pbu(mn(0), T0), T0).status == 0
    assert send(old, pbu(mn(0), T0 + 1, seq=2, lifetime_s=0), T0 + 1).status == 0
    with LmaStore(tmp_store_dir / "lma.db") as store:
        store.apply(drain(old))
        new = make_lma(1)
        new.restore(store.load(), T0 + 2)
    assert drain(new) == []
    new.handle_timer(T0 + 1 + 10.5)  # MinDelayBeforeBCEDelete after the de-registration
    assert drain(new) == [BindingPurged(mn(0), IPv4Address("10.1.0.2"))]


def test_restore_after_lapse_purges_instead(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "lma.db"
    old = make_lma(2)
    assert send(old, pbu(mn(0), T0), T0).status == 0
    with LmaStore(path) as store:
        store.apply(drain(old))
        new = make_lma(2)
        new.restore(store.load(), T0 + 1000)  # down longer than the 400 s lifetime
        events = drain(new)
        assert [type(e) for e in events] == [BindingPurged]
        assert store.apply(events) == 1
        assert store.load() == []


# --- MagStore -----------------------------------------------------------------------------


def bul(mn_id: bytes, hoa: str | None = "10.1.0.2", state: str = "registered") -> BulView:
    return BulView(
        mn_id,
        "lma1",
        state,
        True,
        None if hoa is None else IPv4Address(hoa),
        24,
        IPv4Address("10.1.0.1"),
        ((IPv6Address("2001:db8:100::"), 64),),
        "ipv6",
        False,
        400,
        T0 + 400,
        None,
    )


def test_mag_store_round_trip_with_sequence(tmp_store_dir: Path) -> None:
    path = tmp_store_dir / "mag" / "mag.db"
    with MagStore(path) as store:
        assert store.load() == (0, [])
        store.save([bul(b"a"), bul(b"b", "10.1.0.3"), bul(b"c", None)], [], 41)
        store.save([bul(b"b", "10.1.0.4")], [b"a", b"never-stored"], 42)
    with MagStore(path) as store:
        seq, entries = store.load()
        assert seq == 42
        assert sorted(entries, key=lambda e: e.mn_id) == [bul(b"b", "10.1.0.4"), bul(b"c", None)]
        store.save([bul(b"a")], [b"a"], 0x1_0005)  # removed and back in one batch: kept
        seq, entries = store.load()
        assert seq == 5  # a 16-bit sequence number
        assert {e.mn_id for e in entries} == {b"a", b"b", b"c"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(StoreError, match="'mag' store, not a 'lma' store"):
        LmaStore(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bul_views, max_size=12, unique_by=lambda v: v.mn_id), st.integers(0, 0xFFFF))
def test_mag_store_round_trip_property(entries: list[BulView], seq: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        with MagStore(Path(d) / "mag.db") as store:
            store.save(entries, [], seq)
        with MagStore(Path(d) / "mag.db") as store:
            got_seq, got = store.load()
    assert got_seq == seq
    assert {e.mn_id: e for e in got} == {e.mn_id: e for e in entries}


def test_mag_restart_resumes_sequence_and_asks_for_the_same_addresses(
    tmp_store_dir: Path,
) -> None:
    profiles = {b"mn-a": MnProfile(b"mn-a", Ipv4Mode.LMA)}
    mag_settings = MagSettings(
        proxy_coa=MAG1, lmas={"lma1": LmaPeerSettings("lma1", LMAA)}, profiles=profiles
    )
    lma = LmaEngine(
        LmaSettings(lmaa=LMAA),
        profiles,
        PoolSet([Ipv4Pool("pool0", IPv4Network("10.1.0.0/24"))]),
        PrefixPool(IPv6Network("2001:db8:100::/48")),
    )
    mag = MagEngine(mag_settings, sequence_start=1000)
    assert mag.attach(b"mn-a", T0)
    for _ in range(3):  # PBU -> PBA
        for t in mag.datagrams_to_send():
            lma.receive_ipv6(t.data, MAG1, T0)
        for t in lma.datagrams_to_send():
            mag.receive_ipv6(t.data, LMAA, T0)
    (entry,) = mag.entries()
    assert entry.registered and entry.ipv4_hoa is not None and entry.hnps

    path = tmp_store_dir / "mag.db"
    with MagStore(path) as store:
        store.save(mag.entries(), [], mag.sequence)
    with MagStore(path) as store:
        seq, (saved,) = store.load()
    assert (seq, saved) == (mag.sequence, entry)

    again = MagEngine(mag_settings, sequence_start=seq)
    assert again.attach(b"mn-a", T0 + 5, ipv4_hint=saved.ipv4_hoa, hnp_hints=saved.hnps)
    (t,) = again.datagrams_to_send()
    msg = decode(t.data)
    assert isinstance(msg, BindingUpdate)
    assert msg.sequence == (seq + 1) & 0xFFFF
    assert msg.find(Ipv4HoaRequest).address == saved.ipv4_hoa  # type: ignore[union-attr]
    assert [(o.prefix, o.prefix_len) for o in msg.find_all(HomeNetworkPrefix)] == list(saved.hnps)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--crash-child"]:
        crash_child(Path(sys.argv[2]), sys.argv[3])
