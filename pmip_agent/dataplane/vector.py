"""Whole-burst packet work in numpy: one call per 64 KB, not a Python loop per packet.

The forwarder's per-packet cost in Python is a few microseconds, and a 64 KB TCP burst
is about 47 packets. These two functions handle such a burst as one array, so the
per-packet work (headers, sequence numbers, checksums) runs in numpy's C loops:

* :func:`segment_tcp` cuts a TSO super-packet read from the TUN device into wire
  segments laid back to back with one stride, ready for a single UDP_SEGMENT send; each
  has its own IP length, IPv4 identification and header checksum, TCP sequence number
  and full TCP checksum (RFC 1071 sums taken per row of the array);
* :func:`merge_segments` checks that a UDP_GRO buffer of equal-sized inner packets is
  one TCP flow's consecutive segments and returns them as one super-packet with a
  virtio-net GSO header, for a single TUN write.

Both return None for anything they do not cover (odd sizes, options that differ, other
protocols); the caller then takes the per-packet path of :mod:`.packet`. The RFC 1071
sum is taken over little-endian words and byte-swapped at the end: the one's
complement sum does not depend on byte order (RFC 1071 §2(B)).
"""

from __future__ import annotations

import numpy as np

from . import packet as pk

_U8 = np.uint8
_ONLY_ACK_PSH = ~(pk.TCP_ACK | pk.TCP_PSH) & 0xFF
_INDEX = np.arange(65536, dtype=np.int64)
_FIXED4 = np.ones(60, _U8)  # which header bytes all merged IPv4 segments share
_FIXED6 = np.ones(80, _U8)


def _fold(s: np.ndarray) -> np.ndarray:
    """One's complement sums (int64, each >= 1) reduced to 1..0xFFFF."""
    return (s - 1) % 0xFFFF + 1


def segment_tcp(packet: memoryview, mss: int, out: np.ndarray) -> tuple[memoryview, int] | None:
    """Cut a TCP super-packet (one IPv4 or IPv6 header without options or extension
    headers, one TCP header, up to 64 KB of payload) into segments of ``mss`` payload
    octets, written to ``out`` (a uint8 array of at least 64 KB + 64 headers). Returns
    (the segments back to back, the stride: every segment but the last is that long), or
    None when the packet is not one this covers. FIN and PSH stay on the last segment,
    CWR on the first, as the kernel's tcp_gso_segment does."""
    first = packet[0]
    if first == 0x45 and packet[9] == 6:
        l3 = 20
    elif first >> 4 == 6 and packet[6] == 6:
        l3 = 40
    else:
        return None
    hlen = l3 + (packet[l3 + 12] >> 4) * 4
    payload = len(packet) - hlen
    stride = hlen + mss
    if stride & 1 or payload <= mss or mss <= 0:
        return None  # odd rows cannot be summed as words; one segment needs no work
    full, rest = divmod(payload, mss)
    count = full + (rest > 0)
    if count * stride > len(out):
        return None
    last = hlen + rest if rest else stride
    p = np.frombuffer(packet, _U8)
    rows = out[: count * stride]
    grid = rows.reshape(count, stride)
    grid[:, :hlen] = p[:hlen]
    grid[:full, hlen:] = p[hlen : hlen + full * mss].reshape(full, mss)
    if rest:
        grid[full, hlen:last] = p[hlen + full * mss :]
        grid[full, last:] = 0  # the pad word of the last row's sum
    words = rows.view(">u2").reshape(count, stride // 2)  # header fields, big-endian
    index = _INDEX[:count]
    # TCP: sequence numbers (stored truncated: the high word wraps mod 2**16 as it
    # should), flags, checksum zeroed before the sum
    seqs = index * mss + int.from_bytes(packet[l3 + 4 : l3 + 8], "big")
    words[:, l3 // 2 + 2] = seqs >> 16
    words[:, l3 // 2 + 3] = seqs
    flags = packet[l3 + 13]
    grid[:, l3 + 13] = flags & ~(pk.TCP_FIN | pk.TCP_PSH | pk.TCP_CWR)
    grid[0, l3 + 13] = flags & ~(pk.TCP_FIN | pk.TCP_PSH)
    grid[-1, l3 + 13] = flags & ~pk.TCP_CWR
    words[:, l3 // 2 + 8] = 0
    if l3 == 20:
        ident0 = packet[4] << 8 | packet[5]
        words[:, 2] = index + ident0
        words[:, 1] = stride
        words[-1, 1] = last
        header = bytearray(packet[:20])
        header[2:6] = b"\0\0\0\0"  # varying fields out of the fixed sum
        header[10:12] = b"\0\0"
        # the identification wraps: its word is (ident0 + i) mod 2**16
        ip = (index + ident0) % 0x10000 + (pk.ones_sum(header) + stride)
        ip[-1] += last - stride
        words[:, 5] = ~_fold(ip)
        pseudo = pk.ones_sum(packet[12:20]) + 6 + stride - l3
    else:
        words[:, 2] = stride - 40
        words[-1, 2] = last - 40
        pseudo = pk.ones_sum(packet[8:40]) + 6 + stride - l3
    # TCP checksum over each row from the TCP header on (the last row's tail is zero).
    # Summed as little-endian words: times 256 is the byte swap modulo 0xFFFF.
    sums = rows.view("<u2").reshape(count, stride // 2)[:, l3 // 2 :].sum(axis=1, dtype=np.int64)
    sums *= 256
    sums += pseudo
    sums[-1] += last - stride
    words[:, l3 // 2 + 8] = ~_fold(sums)
    return memoryview(out)[: stride * (count - 1) + last], stride


def merge_segments(buf: np.ndarray, n: int, size: int) -> list[bytes | memoryview] | None:
    """``buf[:n]`` holds inner packets of ``size`` octets back to back (the last maybe
    shorter), as one UDP_GRO receive returns them; ``buf`` has room for a whole last
    one. See :func:`merge_rows`; the UDP checksum already covered every byte."""
    count = -(-n // size)
    if count < 2 or size & 1 or count * size > len(buf):
        return None
    grid = buf[: count * size].reshape(count, size)
    return merge_rows(grid, size, n - (count - 1) * size, verify=False)


def merge_rows(
    grid: np.ndarray, size: int, tail: int, verify: bool
) -> list[bytes | memoryview] | None:
    """Row i of ``grid`` (uint8, rows at least ``size`` wide) starts with an inner packet
    of ``size`` octets, the last row's of ``tail`` octets. When they are consecutive
    segments of one TCP flow (IPv4 with DF and no options, or IPv6 without extension
    headers; headers equal but for length, identification, sequence number and
    checksums; ACK only, PSH on the last; every length consistent; with ``verify``,
    every TCP checksum right, for packets no transport checksum covered), returns the
    buffers of one TUN write: virtio-net header (GSO, NEEDS_CSUM), merged header,
    payload. Else None."""
    count = len(grid)
    if count < 2 or size & 1:
        return None
    first = grid[0]
    v0 = int(first[0])
    if v0 == 0x45:
        if first[9] != 6 or first[6] & 0xBF or first[7] or not first[6] & 0x40:
            return None  # not TCP, a fragment, or DF clear
        l3, fixed, length_word, gso = 20, _FIXED4, 1, pk.GSO_TCPV4
    elif v0 >> 4 == 6 and first[6] == 6:
        l3, fixed, length_word, gso = 40, _FIXED6, 2, pk.GSO_TCPV6
    else:
        return None
    hlen = l3 + (int(first[l3 + 12]) >> 4) * 4
    mss = size - hlen
    total = (count - 1) * mss + tail
    if mss <= 0 or tail <= hlen or tail > size or total - (l3 if l3 == 40 else 0) > 65535:
        return None
    heads = grid[:, :hlen] & fixed[:hlen]
    if not (heads == heads[0]).all():
        return None
    if (grid[:-1, l3 + 13] != pk.TCP_ACK).any() or int(grid[-1, l3 + 13]) & _ONLY_ACK_PSH:
        return None
    words = grid[:, : hlen + (hlen & 1)].view(">u2")
    lens = words[:, length_word].astype(np.int64)
    lens[-1] += size - tail
    if (lens != size - (l3 - 20) * 2).any():
        return None
    seqs = (words[:, l3 // 2 + 2].astype(np.int64) << 16) | words[:, l3 // 2 + 3]
    seqs -= seqs[0]
    seqs %= 1 << 32
    if (seqs != _INDEX[:count] * mss).any():
        return None
    if verify:
        # every full row: data words (little-endian; times 256 swaps them modulo
        # 0xFFFF) plus the pseudo-header must sum to 0xFFFF; the last one on its own
        addrs = first[12:20] if l3 == 20 else first[8:40]
        pseudo = pk.ones_sum(addrs.tobytes()) + 6 + size - l3
        sums = grid[:-1, l3:size].view("<u2").sum(axis=1, dtype=np.int64) * 256 + pseudo
        if (_fold(sums) != 0xFFFF).any():
            return None
        if not pk.transport_checksum_ok(grid[-1, :tail].tobytes()):
            return None
    payload = np.empty(total - hlen, _U8)
    payload[: (count - 1) * mss].reshape(count - 1, mss)[:] = grid[:-1, hlen:size]
    payload[(count - 1) * mss :] = grid[-1, hlen:tail]
    header = bytearray(first[:hlen].tobytes())
    header[l3 + 13] = grid[-1, l3 + 13]  # PSH, if the last had it
    if l3 == 20:
        header[2:4] = total.to_bytes(2, "big")
        header[10:12] = b"\0\0"
        header[10:12] = pk.checksum(header[:20]).to_bytes(2, "big")
    else:
        header[4:6] = (total - 40).to_bytes(2, "big")
    # NEEDS_CSUM: the field holds the pseudo-header sum over the whole length
    header[l3 + 16 : l3 + 18] = pk.pseudo_sum(header, 6, total - l3).to_bytes(2, "big")
    vnet = pk.VNET_HDR.pack(pk.VNET_F_NEEDS_CSUM, gso, hlen, mss, l3, 16)
    return [vnet, header, memoryview(payload)]


def _fixed(l3: int, mask: np.ndarray, varying: tuple[int, ...]) -> None:
    for i in varying:
        mask[i] = 0
    for i in (4, 5, 6, 7, 13, 16, 17):  # sequence number, flags, checksum
        mask[l3 + i] = 0


_fixed(20, _FIXED4, (2, 3, 4, 5, 10, 11))  # length, identification, header checksum
_fixed(40, _FIXED6, (4, 5))  # payload length
