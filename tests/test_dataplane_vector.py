"""The numpy burst functions of the data plane against the per-packet ones of
:mod:`pmip_agent.dataplane.packet` (themselves checked against scapy and RFC 1071
word by word in test_dataplane_packet.py): byte for byte the same segments, and a
merge that the kernel would split back into the packets that went in."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from test_dataplane_packet import _tcp4, _tcp6, _valid

from pmip_agent.dataplane import packet as pk
from pmip_agent.dataplane import vector as vec

OUT = np.empty(2 * 65536, np.uint8)


def _segments(whole: memoryview, stride: int) -> list[bytes]:
    return [bytes(whole[i : i + stride]) for i in range(0, len(whole), stride)]


@given(
    size=st.integers(1, 64000),
    mss=st.sampled_from([536, 1000, 1208, 1368, 1388, 1448]),
    flags=st.sampled_from(["A", "PA", "FA", "FPA", "CA", "CPA"]),
    ident=st.integers(0, 0xFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    v6=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_segment_tcp_equals_the_per_packet_one(
    size: int, mss: int, flags: str, ident: int, seq: int, v6: bool
) -> None:
    payload = os.urandom(size)
    sup = _tcp6(payload, flags, seq=seq) if v6 else _tcp4(payload, flags, ident=ident, seq=seq)
    got = vec.segment_tcp(memoryview(sup), mss, OUT)
    hlen = (40 if v6 else 20) + 32
    if size <= mss or (hlen + mss) & 1:
        assert got is None
        return
    assert got is not None
    whole, stride = got
    assert stride == hlen + mss
    _, expected = pk.segment_tcp(sup, mss)
    assert _segments(whole, stride) == [bytes(s) for s in expected]


def test_segments_are_valid_for_scapy() -> None:
    for sup in (_tcp4(os.urandom(30001), "FPA"), _tcp6(os.urandom(9999), "PA")):
        got = vec.segment_tcp(memoryview(sup), 1388, OUT)
        assert got is not None
        segs = _segments(*got)
        assert len(segs) == -(-(len(sup) - (52 if sup[0] >> 4 == 4 else 72)) // 1388)
        assert all(_valid(s) for s in segs)


def test_segment_tcp_leaves_other_packets_alone() -> None:
    udp = bytearray(_tcp4(os.urandom(5000)))
    udp[9] = 17
    assert vec.segment_tcp(memoryview(udp), 1388, OUT) is None
    assert vec.segment_tcp(memoryview(_tcp4(b"x" * 100)), 1388, OUT) is None


def _merge(data: bytes, size: int) -> list | None:
    """merge_segments on a receive buffer with room to spare, as the forwarder's."""
    buf = np.zeros(len(data) + size, np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    return vec.merge_segments(buf, len(data), size)


def _gro_buffer(sup: bytes, mss: int) -> tuple[bytes, int]:
    _, segs = pk.segment_tcp(sup, mss)
    return b"".join(segs), len(segs[0])


def _resegment(parts: list) -> list[bytes]:
    """What the kernel does with the merged write: split it at gso_size, with the
    checksums completed (here by the per-packet segmenter from the same header)."""
    vnet = bytes(parts[0])
    flags, gso, hlen, gso_size, cstart, coff = pk.VNET_HDR.unpack(vnet)
    assert flags == pk.VNET_F_NEEDS_CSUM and coff == 16
    packet = b"".join(bytes(p) for p in parts[1:])
    assert gso == (pk.GSO_TCPV4 if packet[0] >> 4 == 4 else pk.GSO_TCPV6)
    assert cstart == (20 if packet[0] >> 4 == 4 else 40)
    assert len(bytes(parts[1])) == hlen
    # The merged packet, made whole, is a valid TCP packet.
    whole = bytearray(packet)
    pk.complete_checksum(whole, cstart, coff)
    assert pk.transport_checksum_ok(whole)
    return [bytes(s) for s in pk.segment_tcp(whole, gso_size)[1]]


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("flags", ["A", "PA"])
@pytest.mark.parametrize("size", [2777, 20000, 60000])
def test_merge_gives_back_the_packets_that_went_in(v6: bool, flags: str, size: int) -> None:
    sup = _tcp6(os.urandom(size), flags) if v6 else _tcp4(os.urandom(size), flags)
    buf, stride = _gro_buffer(sup, 1368)
    parts = _merge(buf, stride)
    assert parts is not None
    assert _resegment(parts) == _segments(memoryview(buf), stride)


def test_merge_refuses_what_is_not_one_flows_run() -> None:
    buf, stride = _gro_buffer(_tcp4(os.urandom(6000), "A"), 1000)
    assert _merge(buf, stride) is not None
    cases = {}
    gap = bytearray(buf)  # third segment's sequence number off by one
    gap[2 * stride + 27] ^= 1
    cases["sequence gap"] = gap
    other = bytearray(buf)  # another source port in the second
    other[stride + 20] ^= 1
    cases["other flow"] = other
    push = bytearray(buf)  # PSH in the middle
    push[stride + 33] |= pk.TCP_PSH
    cases["psh in the middle"] = push
    window = bytearray(buf)
    window[stride + 34] ^= 1
    cases["window differs"] = window
    length = bytearray(buf)
    length[stride + 3] ^= 1
    cases["length wrong"] = length
    for name, data in cases.items():
        assert _merge(bytes(data), stride) is None, name
    assert _merge(buf[:stride], stride) is None  # one only


@given(data=st.binary(min_size=1, max_size=5000), size=st.integers(20, 1500))
@settings(max_examples=200, deadline=None)
def test_merge_never_fails_on_garbage(data: bytes, size: int) -> None:
    parts = _merge(data, size)
    if parts is not None:
        inner = b"".join(bytes(p) for p in parts[1:])
        assert IP in IP(inner) or IPv6 in IPv6(inner)
        assert TCP in (IP(inner) if inner[0] >> 4 == 4 else IPv6(inner))


def _partial(packet: bytes) -> bytearray:
    """``packet`` as the kernel's GRO leaves it: the TCP checksum field holding the
    pseudo-header sum over its whole length."""
    p = bytearray(packet)
    l3 = 20 if p[0] >> 4 == 4 else 40
    p[l3 + 16 : l3 + 18] = pk.pseudo_sum(p, 6, len(p) - l3).to_bytes(2, "big")
    return p


@pytest.mark.parametrize("v6", [False, True])
def test_gso_header_for_a_raw_sockets_gro_product(v6: bool) -> None:
    sup = _tcp6(os.urandom(20000), "PA") if v6 else _tcp4(os.urandom(20000), "PA")
    l3 = 40 if v6 else 20
    for packet in (_partial(sup), bytearray(sup)):  # GRO's partial sum, or a valid one
        vnet = pk.gso_header(packet, 1400)
        assert vnet is not None
        flags, gso, hlen, size, cstart, coff = pk.VNET_HDR.unpack(vnet)
        assert (flags, cstart, coff, hlen) == (pk.VNET_F_NEEDS_CSUM, l3, 16, l3 + 32)
        assert gso == (pk.GSO_TCPV6 if v6 else pk.GSO_TCPV4)
        assert size == 1400 - hlen  # the kernel's segments fit the MTU
        assert packet == _partial(sup)  # the field now holds the partial sum
        # the kernel's segmentation, made here: every segment valid
        assert all(_valid(bytes(s)) for s in pk.segment_tcp(packet, size)[1])


def test_gso_header_refuses_a_bad_checksum_and_other_protocols() -> None:
    bad = bytearray(_tcp4(os.urandom(5000)))
    bad[100] ^= 0xFF
    assert pk.gso_header(bad, 1400) is None
    udp = bytearray(_tcp4(os.urandom(5000)))
    udp[9] = 17
    assert pk.gso_header(udp, 1400) is None


def _rows(segments: list[bytes], offset: int, width: int = 2048) -> np.ndarray:
    """Segments one per row of a wider array, after ``offset`` octets (an outer
    header), as the forwarder's raw-socket receives leave them."""
    grid = np.zeros((len(segments), width), np.uint8)
    for i, seg in enumerate(segments):
        grid[i, offset : offset + len(seg)] = np.frombuffer(seg, np.uint8)
    return grid[:, offset:]


@pytest.mark.parametrize("v6", [False, True])
def test_merge_rows_of_raw_receives_checks_every_checksum(v6: bool) -> None:
    sup = _tcp6(os.urandom(9000), "PA") if v6 else _tcp4(os.urandom(9000), "PA")
    segs = [bytes(s) for s in pk.segment_tcp(sup, 1368)[1]]
    size, tail = len(segs[0]), len(segs[-1])
    parts = vec.merge_rows(_rows(segs, 20), size, tail, verify=True)
    assert parts is not None
    assert _resegment(parts) == segs
    for bad_row in (0, 3, len(segs) - 1):  # a flipped payload bit, first/middle/last
        corrupt = [bytearray(s) for s in segs]
        corrupt[bad_row][-1] ^= 0x10
        grid = _rows([bytes(c) for c in corrupt], 20)
        assert vec.merge_rows(grid, size, tail, verify=True) is None, bad_row
        assert vec.merge_rows(grid, size, tail, verify=False) is not None  # UDP: trusted
