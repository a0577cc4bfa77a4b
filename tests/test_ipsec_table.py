"""The SA table the agents read from vici, and the ingress interface the sockets report.

The vici answers below have the shape charon 5.9.8 gives (seen in tests/test_ipsec.py's
lab): values are bytes, one ``{ike_name: ike_sa}`` message per IKE SA.
"""

from __future__ import annotations

import select
import socket
from ipaddress import IPv4Address, IPv6Address

from netns import Lab
from robust_lab import in_netns

from pmip_agent.net.ipsec import SaTable, table_from_sas
from pmip_agent.net.mh_socket import MhSocket
from pmip_agent.net.udp4 import Udp4Socket


def ike(state: bytes, *children: tuple[bytes, list[bytes]]) -> dict:
    return {
        "mag1": {
            "state": state,
            "remote-host": b"2001:db8:f::2",
            "child-sas": {
                f"c{i}": {"name": b"mag1-hosts", "state": s, "remote-ts": ts}
                for i, (s, ts) in enumerate(children)
            },
        }
    }


def test_installed_child_sa_covers_its_remote_selectors():
    table = table_from_sas(
        [ike(b"ESTABLISHED", (b"INSTALLED", [b"192.0.2.2/32", b"2001:db8:f::2/128"]))],
        7,
        True,
    )
    assert table.covers(IPv6Address("2001:db8:f::2")) and table.covers(IPv4Address("192.0.2.2"))
    assert not table.covers(IPv6Address("2001:db8:f::3"))
    assert table.protected(IPv6Address("2001:db8:f::2"), 7)
    assert not table.protected(IPv6Address("2001:db8:f::2"), 2), "plaintext on the wire"
    assert not table.protected(IPv6Address("2001:db8:f::2"), None)


def test_subnet_and_narrowed_selectors():
    table = table_from_sas(
        [ike(b"ESTABLISHED", (b"INSTALLED", [b"2001:db8:e::/64[ipv6-mh]", b"10.0.0.0/8"]))],
        None,
        False,
    )
    assert table.covers(IPv6Address("2001:db8:e::99")) and table.covers(IPv4Address("10.9.9.9"))
    assert table.protected(IPv4Address("10.1.2.3"), 42), "kernel ESP: any device"


def test_sas_not_installed_or_not_established_protect_nothing():
    for sas in (
        [ike(b"CONNECTING", (b"INSTALLED", [b"2001:db8:f::2/128"]))],
        [ike(b"ESTABLISHED", (b"REKEYED", [b"2001:db8:f::2/128"]))],
        [ike(b"ESTABLISHED", (b"DELETING", [b"2001:db8:f::2/128"]))],
        [],
    ):
        assert not table_from_sas(sas, 3, True).covers(IPv6Address("2001:db8:f::2"))


def test_ingress_device_absent_means_nothing_passes():
    table = SaTable(frozenset({IPv6Address("2001:db8:f::2")}), (), None, True)
    assert not table.protected(IPv6Address("2001:db8:f::2"), None)
    assert not table.protected(IPv6Address("2001:db8:f::2"), 1)


def test_sockets_report_the_ingress_interface():
    """Datagrams between two namespaces come in on the veth: the index PKTINFO gives."""
    lab = Lab("ipt")
    try:
        a, b = lab.ns("a"), lab.ns("b")
        lab.link(a, "v0", b, "v0")
        lab.addr(a, "v0", "2001:db8:9::1/64")
        lab.addr(b, "v0", "2001:db8:9::2/64")
        lab.addr(a, "v0", "192.0.2.1/24")
        lab.addr(b, "v0", "192.0.2.2/24")
        with in_netns(a):
            mh = MhSocket(IPv6Address("2001:db8:9::1"), pktinfo=True)
            udp = Udp4Socket(IPv4Address("192.0.2.1"), 5436, pktinfo=True)
            v0 = socket.if_nametoindex("v0")
        with in_netns(b):
            mh_b = MhSocket(IPv6Address("2001:db8:9::2"))
            udp_b = Udp4Socket(IPv4Address("192.0.2.2"), 5436)
        try:
            mh_b.send(bytes([59, 0, 5, 0, 0, 0, 0, 0]), IPv6Address("2001:db8:9::1"))
            udp_b.send(b"x", IPv4Address("192.0.2.1"), 5436)
            select.select([mh.sock], [], [], 3)
            select.select([udp.sock], [], [], 3)
            ((_, src, index6),) = mh.recv_batch_ifindex()
            ((payload, src4, _port, index4),) = udp.recv_batch_ifindex()
        finally:
            for sock in (mh, udp, mh_b, udp_b):
                sock.close()
    finally:
        lab.close()
    assert (src, index6) == (IPv6Address("2001:db8:9::2"), v0)
    assert (payload, src4, index4) == (b"x", IPv4Address("192.0.2.2"), v0)
