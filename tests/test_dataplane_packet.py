"""The data plane's pure packet functions, against independent oracles: an RFC 1071
checksum written word by word (tests/pcap.py) and scapy's own checksum computation.

No sockets: every function here maps bytes to bytes.
"""

from __future__ import annotations

import os
import random
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import ones_complement_checksum
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptMTU, ICMPv6NDOptPrefixInfo, IPv6
from scapy.layers.l2 import ARP, Ether

from pmip_agent.core.events import BindingView, Encapsulation, Peer
from pmip_agent.dataplane import packet as pk
from pmip_agent.dataplane.arp import gratuitous_arp
from pmip_agent.dataplane.forwarder import _prefix_key
from pmip_agent.dataplane.lma import prefixes_of, tunnel_for
from pmip_agent.dataplane.ra import build_ra
from pmip_agent.dataplane.tunnel import TunnelKey

# --- checksum ----------------------------------------------------------------------------


@given(st.binary(min_size=0, max_size=3000))
@settings(max_examples=300)
def test_checksum_matches_word_by_word_rfc1071(data: bytes) -> None:
    assert pk.checksum(data) == ones_complement_checksum(data)


@pytest.mark.parametrize("data", [b"", b"\0" * 40, b"\xff" * 40, b"\xff\xff", b"\x01", b"\xff"])
def test_checksum_edge_values(data: bytes) -> None:
    """All zeros sum to 0 (checksum 0xFFFF); words summing to 0xFFFF give checksum 0,
    which the modulo trick alone would confuse with the all-zero case."""
    assert pk.checksum(data) == ones_complement_checksum(data)


def test_ipv4_header_checksum_is_scapys() -> None:
    raw = bytearray(bytes(IP(src="10.10.0.2", dst="198.51.100.2", id=7, ttl=63) / (b"x" * 9)))
    expected = raw[10:12]
    raw[10:12] = b"\0\0"
    assert pk.ipv4_header_checksum(raw[:20]).to_bytes(2, "big") == expected


def _valid(packet: bytes) -> bool:
    """scapy recomputes IP and TCP/UDP checksums; equal means the packet was valid."""
    p = IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)
    original = bytes(p)
    if IP in p:
        del p[IP].chksum
    for layer in (TCP, UDP):
        if layer in p:
            del p[layer].chksum
    return bytes(p.__class__(bytes(p))) == original


# --- TCP segmentation (TSO) --------------------------------------------------------------

TS_OPTS = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]


def _tcp4(payload: bytes, flags: str = "PA", ident: int = 100, seq: int = 1000) -> bytes:
    return bytes(
        IP(src="10.10.0.2", dst="198.51.100.2", id=ident, flags="DF", ttl=63)
        / TCP(sport=40000, dport=5201, seq=seq, ack=77, flags=flags, window=500, options=TS_OPTS)
        / payload
    )


def _tcp6(payload: bytes, flags: str = "PA", seq: int = 1000) -> bytes:
    return bytes(
        IPv6(src="2001:db8:100::2", dst="2001:db8:c::2", hlim=63, fl=0x12345)
        / TCP(sport=40000, dport=5201, seq=seq, ack=77, flags=flags, window=500, options=TS_OPTS)
        / payload
    )


@pytest.mark.parametrize("size", [1, 1448, 1449, 2 * 1448, 10_000, 65_000 - 60])
@pytest.mark.parametrize("version", [4, 6])
def test_segments_are_valid_packets_carrying_the_payload(size: int, version: int) -> None:
    payload = os.urandom(size)
    mss = 1448
    sup = _tcp4(payload, "FPA") if version == 4 else _tcp6(payload, "FPA")
    whole, segments = pk.segment_tcp(sup, mss)
    assert len(segments) == (size + mss - 1) // mss
    assert bytes(whole) == b"".join(bytes(s) for s in segments)  # back to back
    rebuilt = b""
    for i, seg in enumerate(segments):
        wire = bytes(seg)
        assert _valid(wire), f"segment {i} has a bad checksum"
        assert pk.inner_version(wire) == version
        p = IP(wire) if version == 4 else IPv6(wire)
        tcp = p[TCP]
        assert tcp.seq == 1000 + i * mss
        last = i == len(segments) - 1
        assert ("F" in tcp.flags) == last and ("P" in tcp.flags) == last
        assert "A" in tcp.flags
        assert tcp.options == IP(_tcp4(b""))[TCP].options  # options copied as they were
        if version == 4:
            assert p.id == 100 + i and p.len == len(wire) and p.flags == "DF"
        else:
            assert p.plen == len(wire) - 40 and p.fl == 0x12345
        rebuilt += bytes(tcp.payload)
    assert rebuilt == payload


def test_cwr_stays_on_the_first_segment_only() -> None:
    _, segments = pk.segment_tcp(_tcp4(os.urandom(4000), "CA"), 1448)
    flags = [IP(bytes(s))[TCP].flags for s in segments]
    assert ["C" in f for f in flags] == [True, False, False]


def test_sequence_numbers_wrap() -> None:
    _, segments = pk.segment_tcp(_tcp4(os.urandom(3000), "A", seq=0xFFFFFF00), 1448)
    seqs = [IP(bytes(s))[TCP].seq for s in segments]
    assert seqs == [0xFFFFFF00, (0xFFFFFF00 + 1448) & 0xFFFFFFFF, (0xFFFFFF00 + 2896) % 2**32]
    assert all(_valid(bytes(s)) for s in segments)


def test_segmenting_into_a_reused_buffer() -> None:
    """The forwarder reuses one output buffer: a short packet after a long one must not
    carry anything of the long one."""
    out = bytearray(100_000)
    pk.segment_tcp(_tcp4(os.urandom(9000)), 1448, out)
    _, second = pk.segment_tcp(_tcp4(b"x" * 100), 1448, out)
    assert len(second) == 1 and len(second[0]) == 20 + 32 + 100 and _valid(bytes(second[0]))


# --- UDP tunnel GSO (one TAP write per burst) --------------------------------------------


def _partial(sup: bytes) -> tuple[bytes, bytes]:
    """``sup`` as a TUN device with TSO hands it over: the virtio-net header (GSO,
    NEEDS_CSUM) and the packet with the TCP checksum field holding the pseudo-header sum."""
    l3 = 20 if sup[0] >> 4 == 4 else 40
    packet = bytearray(sup)
    packet[l3 + 16 : l3 + 18] = pk.pseudo_sum(packet, 6, len(packet) - l3).to_bytes(2, "big")
    gso = pk.GSO_TCPV4 if l3 == 20 else pk.GSO_TCPV6
    return pk.VNET_HDR.pack(pk.VNET_F_NEEDS_CSUM, gso, l3 + 32, 1448, l3, 16), bytes(packet)


@pytest.mark.parametrize("version", [4, 6])
def test_udp_tunnel_gso_headers_describe_the_burst_to_the_kernel(version: int) -> None:
    """The outer headers are what RFC 5844 §4 puts on the wire (IPv4, then UDP, then the
    inner packet), and the tunnel GSO header points the kernel at each layer."""
    sup = _tcp4(os.urandom(30_000)) if version == 4 else _tcp6(os.urandom(30_000))
    vnet, inner = _partial(sup)
    mac = bytes.fromhex("02aabbccddee")
    head = pk.udp_tunnel_gso_headers(
        vnet, inner, mac, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 254]), (5437, 40000), 7, 65
    )
    assert head is not None and len(head) == pk.VNET_TNL_HDR_LEN + pk.UDP_TUNNEL_HEADROOM
    flags, gso, hdr_len, gso_size, cstart, coff, _nb, outer_th, inner_nh = pk.VNET_TNL_HDR.unpack(
        head[: pk.VNET_TNL_HDR_LEN]
    )
    l3 = 20 if version == 4 else 40
    assert flags == pk.VNET_F_NEEDS_CSUM | pk.VNET_F_UDP_TUNNEL_CSUM
    assert gso == (pk.GSO_TCPV4 if version == 4 else pk.GSO_TCPV6) | pk.GSO_UDP_TUNNEL_IPV4
    assert (outer_th, inner_nh) == (14 + 20, 14 + 28)
    assert (cstart, coff) == (42 + l3, 16) and hdr_len == 42 + l3 + 32 and gso_size == 1448
    frame = Ether(head[pk.VNET_TNL_HDR_LEN :] + inner)
    assert frame.dst == "02:aa:bb:cc:dd:ee" and frame.type == 0x0800
    outer = frame[IP]
    assert (outer.src, outer.dst, outer.ttl, outer.id, outer.flags) == (
        "192.0.2.1", "192.0.2.254", 65, 7, 0,
    )  # fmt: skip
    assert outer.len == 28 + len(inner) and outer.proto == 17
    assert ones_complement_checksum(bytes(outer)[:20]) == 0  # header checksum right
    udp = outer[UDP]
    assert (udp.sport, udp.dport, udp.len) == (5437, 40000, 8 + len(inner))
    pseudo = bytes([192, 0, 2, 1, 192, 0, 2, 254, 0, 17]) + (8 + len(inner)).to_bytes(2, "big")
    assert udp.chksum == ~ones_complement_checksum(pseudo) & 0xFFFF  # the partial sum
    assert bytes(udp.payload) == inner


def test_udp_tunnel_gso_headers_refuse_what_they_do_not_cover() -> None:
    vnet, inner = _partial(_tcp4(os.urandom(3000)))
    args = (b"\2" * 6, bytes(4), bytes(4), (5437, 5437), 0, 64)
    assert pk.udp_tunnel_gso_headers(vnet, inner, *args) is not None
    udp_gso = pk.VNET_HDR.pack(pk.VNET_F_NEEDS_CSUM, pk.GSO_UDP_L4, 28, 1000, 20, 6)
    assert pk.udp_tunnel_gso_headers(udp_gso, inner, *args) is None
    vnet_big, big = _partial(_tcp4(os.urandom(65_535 - 52)))
    assert pk.udp_tunnel_gso_headers(vnet_big, big, *args) is None  # over 64 KB with UDP


# --- coalescing (GRO) --------------------------------------------------------------------


def _merged(parts: list) -> tuple[tuple[int, ...], bytes]:
    vnet = pk.VNET_HDR.unpack(parts[0])
    return vnet, b"".join(bytes(x) for x in parts[1:])


@pytest.mark.parametrize("version", [4, 6])
def test_coalescer_merges_a_flow_back_into_one_gso_packet(version: int) -> None:
    payload = os.urandom(20_000)
    sup = _tcp4(payload) if version == 4 else _tcp6(payload)
    merger = pk.Coalescer()
    for seg in pk.segment_tcp(sup, 1448)[1]:
        merger.add(memoryview(bytes(seg)))
    (out,) = merger.flush()
    (flags, gso, hdr_len, gso_size, cstart, coff), merged = _merged(out)
    l3 = 20 if version == 4 else 40
    assert flags == pk.VNET_F_NEEDS_CSUM
    assert gso == (pk.GSO_TCPV4 if version == 4 else pk.GSO_TCPV6)
    assert (hdr_len, gso_size, cstart, coff) == (l3 + 32, 1448, l3, 16)
    # What the kernel does with NEEDS_CSUM: finish the partial sum over the whole thing.
    finished = bytearray(merged)
    pk.complete_checksum(finished, cstart, coff)
    assert _valid(bytes(finished))
    assert finished == bytearray(sup)  # same headers (PSH kept), same bytes


def test_coalescer_keeps_flows_apart_and_order_within_each() -> None:
    a = [bytes(x) for x in pk.segment_tcp(_tcp4(os.urandom(5000)), 1000)[1]]
    other = bytes(
        IP(src="10.10.0.3", dst="198.51.100.2", flags="DF")
        / TCP(sport=1, dport=2, seq=5, ack=1, flags="A")
        / os.urandom(1000)
    )
    b = [bytes(x) for x in pk.segment_tcp(other, 500)[1]]
    merger = pk.Coalescer()
    interleaved = [a[0], b[0], a[1], b[1], a[2], a[3], a[4]]
    for packet in interleaved:
        merger.add(memoryview(packet))
    outs = merger.flush()
    assert len(outs) == 2
    lengths = sorted(len(_merged(o)[1]) for o in outs)
    assert lengths == sorted([len(other), len(_tcp4(b"x" * 5000))])


def test_coalescer_stops_at_a_gap_a_short_segment_and_odd_flags() -> None:
    segs = [bytes(x) for x in pk.segment_tcp(_tcp4(os.urandom(6000), "A"), 1000)[1]]
    syn = _tcp4(b"", "S")
    merger = pk.Coalescer()
    for s in (segs[0], segs[1], segs[3], segs[4], syn):  # segs[2] lost: a gap
        merger.add(memoryview(s))
    outs = merger.flush()
    sizes = [len(_merged(o)[1]) for o in outs]
    assert sorted(sizes) == sorted([len(syn), 20 + 32 + 2000, 20 + 32 + 2000])
    assert all(o[0] == pk.VNET_PLAIN for o in outs if len(o) == 2)


def test_coalescer_with_verify_passes_a_corrupt_segment_through_unmerged() -> None:
    segs = [bytearray(x) for x in pk.segment_tcp(_tcp4(os.urandom(3000)), 1000)[1]]
    segs[1][-1] ^= 0xFF
    merger = pk.Coalescer(verify=True)
    for s in segs:
        merger.add(memoryview(s))
    outs = merger.flush()
    assert [len(o) for o in outs] == [2, 2, 2]  # nothing merged around the bad one
    assert any(bytes(o[1]) == bytes(segs[1]) for o in outs)


# --- MSS clamping ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_mss_of_a_syn_is_clamped_and_the_checksum_still_verifies(version: int) -> None:
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    tcp = TCP(sport=1, dport=2, flags="S", options=opts)
    raw = bytearray(bytes((IP(dst="1.2.3.4") if version == 4 else IPv6(dst="::1")) / tcp))
    limit = pk.mss_limit(1460, version)
    assert pk.clamp_mss(raw, limit)
    p = IP(bytes(raw)) if version == 4 else IPv6(bytes(raw))
    assert dict(p[TCP].options)["MSS"] == limit == (1420 if version == 4 else 1400)
    assert _valid(bytes(raw))
    assert not pk.clamp_mss(raw, limit)  # already small enough: untouched


def test_mss_clamp_leaves_non_syns_and_small_mss_alone() -> None:
    ack = bytearray(bytes(IP() / TCP(flags="A", options=[("MSS", 1460)])))
    assert not pk.clamp_mss(ack, 1000)
    small = bytearray(bytes(IP() / TCP(flags="S", options=[("MSS", 536)])))
    assert not pk.clamp_mss(small, 1420)
    assert not pk.clamp_mss(bytearray(bytes(IP() / UDP() / b"x")), 1420)


def test_mss_clamp_of_a_partial_checksum_leaves_the_field() -> None:
    raw = bytearray(bytes(IP() / TCP(flags="S", options=[("MSS", 1460)])))
    before = bytes(raw[36:38])
    assert pk.clamp_mss(raw, 1420, partial=True)
    assert bytes(raw[36:38]) == before


# --- partial checksums (NEEDS_CSUM from the kernel) --------------------------------------


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_complete_checksum_finishes_a_pseudo_header_sum(proto: str) -> None:
    l4 = TCP(sport=1, dport=2, flags="A") if proto == "tcp" else UDP(sport=1, dport=2)
    good = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / l4 / os.urandom(333))
    raw = bytearray(good)
    offset = 16 if proto == "tcp" else 6
    # As the kernel leaves it: the field holds the folded pseudo-header sum.
    pseudo = pk.pseudo_sum(raw, 6 if proto == "tcp" else 17, len(raw) - 20)
    raw[20 + offset : 22 + offset] = pseudo.to_bytes(2, "big")
    pk.complete_checksum(raw, 20, offset)
    assert bytes(raw) == good


def test_udp_checksum_that_computes_to_zero_is_sent_as_ffff() -> None:
    # A UDP datagram whose data cancels the rest of the sum, so the checksum is 0.
    base = bytearray(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2) / b"\0\0"))
    base[26:28] = b"\0\0"
    total = pk.pseudo_sum(base, 17, 10) + pk.ones_sum(base[20:])
    base[28:30] = (~pk.fold(total) & 0xFFFF).to_bytes(2, "big")  # make the data cancel
    assert pk.fold(pk.pseudo_sum(base, 17, 10) + pk.ones_sum(base[20:])) == 0xFFFF
    raw = bytearray(base)
    raw[26:28] = pk.pseudo_sum(raw, 17, 10).to_bytes(2, "big")
    pk.complete_checksum(raw, 20, 6)
    assert bytes(raw[26:28]) == b"\xff\xff"


# --- decapsulation sanity, keepalive -----------------------------------------------------


def test_inner_version_accepts_exact_packets_only() -> None:
    v4 = bytes(IP() / UDP() / b"abc")
    v6 = bytes(IPv6() / UDP() / b"abc")
    assert pk.inner_version(v4) == 4 and pk.inner_version(v6) == 6
    assert pk.inner_version(v4 + b"\0") == 0  # trailing bytes: not what the header says
    assert pk.inner_version(v6[:-1]) == 0
    assert pk.inner_version(b"\x45" + bytes(10)) == 0
    assert pk.inner_version(b"\x55" + v4[1:]) == 0


def test_keepalive_is_a_valid_ipv6_packet_naming_the_mag() -> None:
    coa, lmaa = IPv6Address("2001:db8:f::2"), IPv6Address("2001:db8:f::1")
    ka = pk.keepalive(coa.packed, lmaa.packed)
    p = IPv6(ka)
    assert (p.src, p.dst, p.nh, p.plen) == (str(coa), str(lmaa), 59, 0)
    assert pk.inner_version(ka) == 6
    assert pk.keepalive_source(ka, lmaa.packed) == coa.packed
    assert pk.keepalive_source(ka, IPv6Address("2001:db8::9").packed) is None
    assert pk.keepalive_source(bytes(IPv6() / UDP()), lmaa.packed) is None


# --- Router Advertisement ----------------------------------------------------------------


def test_router_advertisement_carries_the_home_prefix_and_mtu() -> None:
    mac = bytes.fromhex("020000000aaa")
    ra = build_ra([(IPv6Address("2001:db8:100:1::"), 64, 3600)], 1800, 1460, mac)
    p = ICMPv6ND_RA(ra)
    assert p.routerlifetime == 1800 and p.M == 0 and p.O == 0
    info = p[ICMPv6NDOptPrefixInfo]
    assert (info.prefix, info.prefixlen, info.L, info.A) == ("2001:db8:100:1::", 64, 1, 1)
    assert info.validlifetime == info.preferredlifetime == 3600
    assert p[ICMPv6NDOptMTU].mtu == 1460
    assert ra[16:24] == b"\x01\x01" + mac


# --- tunnel naming and prefix keys -------------------------------------------------------


def _view(mag: Peer, enc: Encapsulation, nat: bool) -> BindingView:
    return BindingView(
        b"mn1",
        mag,
        "active",
        enc,
        nat,
        IPv4Address("10.10.0.2"),
        24,
        IPv4Address("10.10.0.1"),
        "lma",
        "pool1",
        ((IPv6Address("2001:db8:100:1::"), 64),),
        3600,
        0.0,
        0.0,
        0,
        0,
        "rfc5844",
        3,
        None,
    )


def test_lma_names_tunnels_by_mag_and_encapsulation() -> None:
    coa = IPv6Address("2001:db8:f::2")
    v6 = tunnel_for(_view(Peer(coa), Encapsulation.IPV6, False))
    assert v6 == TunnelKey(Encapsulation.IPV6, coa, coa)
    natted = Peer(coa, IPv4Address("192.0.2.254"), 40000)
    udp = tunnel_for(_view(natted, Encapsulation.IPV4_UDP, True))
    # The NAT's address, the MAG's identity, and a port still to be learned.
    assert udp == TunnelKey(Encapsulation.IPV4_UDP, IPv4Address("192.0.2.254"), coa, True)
    plain = tunnel_for(_view(Peer(coa, IPv4Address("192.0.2.2"), 5436), Encapsulation.IPV4, 0))
    assert plain.remote == IPv4Address("192.0.2.2") and not plain.learn_port
    assert prefixes_of(_view(Peer(coa), Encapsulation.IPV6, False)) == {
        (IPv6Address("2001:db8:100:1::"), 64),
        (IPv4Address("10.10.0.2"), 32),
    }


@pytest.mark.parametrize("plen", [48, 56, 60, 64, 127])
def test_prefix_keys_match_every_address_inside_only(plen: int) -> None:
    net = IPv6Network(("2001:db8:1234:5678:9abc::", plen), strict=False)
    key = _prefix_key(net.network_address.packed, plen)
    rng = random.Random(plen)
    for _ in range(50):
        inside = net.network_address + rng.randrange(net.num_addresses)
        assert _prefix_key(inside.packed, plen) == key
    outside = net.broadcast_address + 1
    assert _prefix_key(outside.packed, plen) != key


def test_gratuitous_arp_announces_the_router_from_the_links_mac() -> None:
    mac = bytes.fromhex("02000000aa01")
    frame = Ether(gratuitous_arp(mac, IPv4Address("10.10.0.1")))
    assert frame.dst == "ff:ff:ff:ff:ff:ff" and frame.src == "02:00:00:00:aa:01"
    arp = frame[ARP]
    assert (arp.op, arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 1, 0x0800, 6, 4)
    assert arp.psrc == arp.pdst == "10.10.0.1"
    assert arp.hwsrc == "02:00:00:00:aa:01" and arp.hwdst == "00:00:00:00:00:00"
