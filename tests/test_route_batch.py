"""RouteBatch against the real kernel, in a namespace of this run: routes queued in one
buffer, sent a chunk per sendmsg with only the chunk's last message acknowledged, and
every failure still seen (the kernel answers an error whatever the flags)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest

from pmip_agent.dataplane.netlink import BATCH, RouteBatch
from tests.netns import Lab, sh
from tests.robust_lab import in_netns


@pytest.fixture
def ns() -> Iterator[str]:
    lab = Lab("rb")
    try:
        name = lab.ns("rt")
        lab.run(name, "ip link add va type veth peer name vb")
        lab.run(name, "ip link set va up")
        lab.run(name, "ip link set vb up")
        yield name
    finally:
        lab.close()


def _routes(lab_ns: str, family: str, table: str = "main") -> set[str]:
    out = sh(f"ip netns exec {lab_ns} ip {family} route show table {table} proto 77")
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _v4(i: int) -> tuple[IPv4Address, int]:
    return IPv4Address(0x0A000000 + i), 32


def _v6(i: int) -> tuple[IPv6Address, int]:
    return IPv6Address((0x2001_0DB8_0001 << 80) | (i << 64)), 64


def test_routes_go_in_and_out_in_chunks(ns: str) -> None:
    n4, n6 = 3 * BATCH + 5, BATCH + 1  # chunks end mid-queue and at its very end
    with in_netns(ns):
        oif = socket.if_nametoindex("va")
        batch = RouteBatch()
    try:
        for i in range(n4):
            batch.replace(_v4(i), oif)
        for i in range(n6):
            batch.replace(_v6(i), oif)
        assert batch.pending == n4 + n6
        assert batch.flush(limit=BATCH + 7) == 0  # a round that stops inside a chunk
        assert batch.pending == n4 + n6 - BATCH - 7
        while batch.pending:
            assert batch.flush(limit=2000) == 0
        v4 = _routes(ns, "-4")
        assert v4 == {f"{_v4(i)[0]}" for i in range(n4)}
        assert len(_routes(ns, "-6")) == n6
        for i in range(5):  # a replace of what is there is no failure
            batch.replace(_v4(i), oif)
        assert batch.flush() == 0
        for i in range(n4):
            batch.delete(_v4(i), oif)
        for i in range(n6):
            batch.delete(_v6(i), oif)
        for i in range(3):  # already gone: not failures either
            batch.delete(_v4(i), oif)
        assert batch.flush() == 0
        assert _routes(ns, "-4") == set() and _routes(ns, "-6") == set()
    finally:
        batch.close()


def test_every_failure_is_counted_and_the_rest_installed(ns: str) -> None:
    with in_netns(ns):
        oif = socket.if_nametoindex("va")
        batch = RouteBatch()
    try:
        for i in range(100):
            # Two bad ones mid-chunk, one as the chunk's last (the acknowledged) message.
            batch.replace(_v4(i), 99999 if i in (10, 50, 99) else oif)
        assert batch.flush() == 3
        assert _routes(ns, "-4") == {str(_v4(i)[0]) for i in range(99) if i not in (10, 50)}
        batch.replace(_v4(1000), None, table=300, kind=7)  # unreachable, in a table > 255
        batch.replace((IPv6Address("2001:db8:ff::"), 48), None, kind=7)  # and in main
        assert batch.flush() == 0
        assert _routes(ns, "-4", "300") == {"unreachable"}
        assert _routes(ns, "-6") == {"unreachable"}
        batch.delete(_v4(1000), None, table=300)
        batch.delete((IPv6Address("2001:db8:ff::"), 48), None)
        assert batch.flush() == 0
        assert _routes(ns, "-4", "300") == set() and _routes(ns, "-6") == set()
    finally:
        batch.close()


def test_background_rounds_keep_the_order_and_report_failures(ns: str) -> None:
    """flush_in_background hands the queue to a thread and returns; what is queued after
    it (here: deletes of the same routes, and a bad one) is sent only once that round is
    done, and the round's failures come with the next flush."""
    with in_netns(ns):
        oif = socket.if_nametoindex("va")
        batch = RouteBatch()
    try:
        for i in range(2 * BATCH + 3):
            batch.replace(_v4(i), 99999 if i == 7 else oif)
        batch.flush_in_background()
        assert batch.pending == 0  # handed over
        for i in range(BATCH):  # deletes queued while the adds may still be going out
            batch.delete(_v4(i), oif)
        batch.flush_in_background()
        batch.replace(_v6(1), oif)
        assert batch.flush() == 1  # the bad interface of the first round
        assert _routes(ns, "-4") == {str(_v4(i)[0]) for i in range(BATCH, 2 * BATCH + 3)}
        assert len(_routes(ns, "-6")) == 1
        batch.replace(_v4(0), 99999)
        batch.flush_in_background()
    finally:
        batch.close()  # waits for the last round: its failure is logged, not lost in a thread
    assert not any(t.name.startswith("pmip-routes") for t in threading.enumerate())
