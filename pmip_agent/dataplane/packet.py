"""Pure packet functions of the user-space data plane: no sockets, no clock, no state.

The forwarder moves inner packets (the MN's IPv4 or IPv6 packets) between a TUN device
and the MAG-LMA transport. The kernel builds the outer header (raw sockets of protocol
4/41, or a UDP socket), so what is ours is the inner packet itself:

* the Internet checksum (RFC 1071), computed as ``int.from_bytes(...) % 0xFFFF``: a
  big-endian number is congruent modulo 2**16 - 1 to the sum of its 16-bit words, because
  2**16 = 1 (mod 2**16 - 1); CPython does both steps in C;
* the virtio-net header of a TUN opened with IFF_VNET_HDR (Linux ``virtio_net_hdr``,
  host byte order), which carries TSO "super-packets" of up to 64 KB;
* TCP segmentation of such super-packets into valid wire packets (what a NIC does for
  TSO) and the reverse, coalescing consecutive segments of a flow into one super-packet
  for a single TUN write (what GRO does), as wireguard-go does in user space;
* TCP MSS clamping of SYNs to the tunnel MTU;
* the keepalive a MAG sends on the IPv4-UDP data port so the LMA learns the NAT binding
  of its data flow (see :func:`keepalive`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview

# --- Internet checksum --------------------------------------------------------------


def ones_sum(data: Buffer) -> int:
    """The 16-bit one's complement sum of ``data`` (big-endian words, odd length padded
    with a zero byte). It is 0 only for all-zero data, else in 1..0xFFFF."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    s = n % 0xFFFF
    return 0xFFFF if s == 0 and n else s


def fold(total: int) -> int:
    """Reduce a sum of one's complement sums to 16 bits (0 only when ``total`` is 0)."""
    s = total % 0xFFFF
    return 0xFFFF if s == 0 and total else s


def checksum(data: Buffer) -> int:
    """The RFC 1071 checksum of ``data``: the field value that makes it sum to 0xFFFF."""
    return ~ones_sum(data) & 0xFFFF


def pseudo_sum(packet: Buffer, proto: int, length: int) -> int:
    """One's complement sum of the IPv4 or IPv6 pseudo-header of ``packet`` for an upper
    layer of ``proto`` and ``length`` octets (RFC 793, RFC 8200 §8.1)."""
    addrs = packet[12:20] if packet[0] >> 4 == 4 else packet[8:40]
    return fold(ones_sum(addrs) + proto + length)


def ipv4_header_checksum(header: Buffer) -> int:
    """The checksum field value of an IPv4 header whose own checksum field is zero."""
    return checksum(header)


def transport_checksum_ok(packet: Buffer) -> bool:
    """True when the TCP or UDP checksum of an unfragmented IPv4/IPv6 ``packet`` verifies
    (a UDP checksum of 0 over IPv4 means "none" and passes)."""
    l3, proto = l4_offset(packet)
    if proto not in (6, 17) or l3 < 0:
        return False
    seg = memoryview(packet)[l3:]
    if proto == 17 and packet[0] >> 4 == 4 and seg[6:8] == b"\0\0":
        return True
    return fold(pseudo_sum(packet, proto, len(seg)) + ones_sum(seg)) == 0xFFFF


def l4_offset(packet: Buffer) -> tuple[int, int]:
    """(offset of the transport header, protocol) of an IPv4 packet or an IPv6 packet
    without extension headers; (-1, proto) for a non-first IPv4 fragment."""
    if packet[0] >> 4 == 4:
        if packet[6] & 0x1F or packet[7]:  # a fragment offset: no transport header here
            return -1, packet[9]
        return (packet[0] & 0x0F) * 4, packet[9]
    return 40, packet[6]


# --- IP sanity for decapsulated packets ----------------------------------------------


def inner_version(packet: Buffer) -> int:
    """4 or 6 when ``packet`` is a plausible IPv4/IPv6 packet that exactly fills the
    buffer (as the inner packet of a tunnel must, RFC 2473 §3, RFC 2003 §3), else 0."""
    n = len(packet)
    if n < 20:
        return 0
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or (packet[2] << 8 | packet[3]) != n or n < ihl:
            return 0
        return 4
    if version == 6 and n >= 40 and (packet[4] << 8 | packet[5]) + 40 == n:
        return 6
    return 0


# --- virtio-net header (TUN with IFF_VNET_HDR) ---------------------------------------

VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start/offset
VNET_HDR_LEN = VNET_HDR.size
VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
VNET_PLAIN = bytes(VNET_HDR_LEN)  # a complete packet: no offload asked of the kernel


# UDP tunnel GSO (Linux 6.17+, TAP with TUN_F_UDP_TUNNEL_GSO): struct
# virtio_net_hdr_v1_hash_tunnel, the v1 header (num_buffers), the hash fields, then the
# outer transport header's and the inner network header's offsets in the frame.
VNET_TNL_HDR = struct.Struct("<BBHHHHH8xHH")
VNET_TNL_HDR_LEN = VNET_TNL_HDR.size  # 24
VNET_F_UDP_TUNNEL_CSUM = 0x08  # the outer UDP checksum is computed per segment too
GSO_UDP_TUNNEL_IPV4 = 0x20
IPPROTO_UDP = 17
_ETH_IPV4 = b"\x08\x00"
_TUNNEL_MAC = b"\x02\x00\x00\x00\x00\x01"  # the frames' source: locally administered
_OUTER = struct.Struct("!BBHHHBBH4s4sHHHH")  # IPv4 header, then the UDP header
UDP_TUNNEL_HEADROOM = 14 + 20 + 8  # Ethernet, outer IPv4, UDP


def udp_tunnel_gso_headers(
    vnet: bytes | bytearray,
    inner: Buffer,
    dst_mac: bytes,
    src: bytes,
    dst: bytes,
    ports: tuple[int, int],
    ident: int,
    ttl: int,
) -> bytes | None:
    """What goes before ``inner``, a TCP super-packet read from a TUN device with the
    virtio-net header ``vnet`` (GSO, NEEDS_CSUM), so that one TAP write hands the kernel
    the whole IPv4-UDP encapsulated burst (RFC 5844 §4: the inner packet right after the
    UDP header). The kernel cuts it into one datagram per inner segment, each with its
    own outer IPv4 and UDP headers and checksums and inner IP and TCP headers and
    checksums. ``src``, ``dst``: the outer IPv4 addresses; ``ports``: the UDP (source,
    destination). The outer header has DF clear, as the socket path's (RFC 4213 §3.2);
    the UDP checksum field holds the pseudo-header sum, as a partial checksum does.
    None when the inner packet is not one this covers or the datagram would exceed
    64 KB."""
    _flags, gso_type, _hdr_len, gso_size, cstart, coff = VNET_HDR.unpack_from(vnet)
    if gso_type & ~GSO_ECN not in (GSO_TCPV4, GSO_TCPV6) or not gso_size or coff != 16:
        return None
    if cstart < 20 or len(inner) < cstart + 20:
        return None
    hdr_len = cstart + (inner[cstart + 12] >> 4) * 4  # inner IP and TCP headers
    udp_len = 8 + len(inner)
    if 20 + udp_len > 65535:
        return None
    headroom = UDP_TUNNEL_HEADROOM
    pseudo = fold(ones_sum(src + dst) + IPPROTO_UDP + udp_len)
    outer = bytearray(
        _OUTER.pack(
            0x45, 0, 20 + udp_len, ident, 0, ttl, IPPROTO_UDP, 0, src, dst, *ports, udp_len, pseudo
        )
    )
    outer[10:12] = checksum(outer[:20]).to_bytes(2, "big")
    head = VNET_TNL_HDR.pack(
        VNET_F_NEEDS_CSUM | VNET_F_UDP_TUNNEL_CSUM,
        gso_type | GSO_UDP_TUNNEL_IPV4,
        headroom + hdr_len,
        gso_size,
        headroom + cstart,
        coff,
        0,
        14 + 20,
        headroom,
    )
    return head + dst_mac + _TUNNEL_MAC + _ETH_IPV4 + outer


def complete_checksum(packet: bytearray | memoryview, start: int, offset: int) -> None:
    """Finish a checksum the kernel left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field
    at ``start + offset`` holds the pseudo-header sum; sum from ``start`` to the end."""
    value = ~ones_sum(memoryview(packet)[start:]) & 0xFFFF
    if value == 0 and offset == 6:  # UDP sends 0xFFFF for a computed 0 (RFC 768)
        value = 0xFFFF
    packet[start + offset] = value >> 8
    packet[start + offset + 1] = value & 0xFF


# --- TCP ----------------------------------------------------------------------------

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_LEN_ID = struct.Struct("!HH")


def mss_limit(mtu: int, version: int) -> int:
    """The largest TCP MSS whose segments fit ``mtu`` (20-byte IPv4 or 40-byte IPv6 header
    plus a 20-byte TCP header; options are subtracted by the sender, RFC 9293 §3.7.1)."""
    return mtu - (40 if version == 4 else 60)


def clamp_mss(packet: bytearray | memoryview, limit: int, partial: bool = False) -> bool:
    """Lower the MSS option of a TCP SYN in ``packet`` to ``limit``, in place. The
    checksum is patched incrementally (RFC 1624 eqn. 3) unless ``partial`` (the kernel
    has not computed it yet). Returns True when the packet was changed."""
    l3, proto = l4_offset(packet)
    if proto != 6 or l3 < 0 or len(packet) < l3 + 20 or not packet[l3 + 13] & TCP_SYN:
        return False
    end = l3 + (packet[l3 + 12] >> 4) * 4
    i = l3 + 20
    while i < end:
        kind = packet[i]
        if kind == 0:  # end of option list
            return False
        if kind == 1:  # no-op
            i += 1
            continue
        if i + 1 >= end or packet[i + 1] < 2:
            return False  # malformed: leave it to the receiver
        if kind == 2 and packet[i + 1] == 4 and i + 4 <= end:
            old = packet[i + 2] << 8 | packet[i + 3]
            if old <= limit:
                return False
            _U16.pack_into(packet, i + 2, limit)
            if not partial:
                field = l3 + 16
                hc = packet[field] << 8 | packet[field + 1]
                # RFC 1624: HC' = ~(~HC + ~m + m'), one's complement arithmetic
                new = ~fold((~hc & 0xFFFF) + (~old & 0xFFFF) + limit) & 0xFFFF
                _U16.pack_into(packet, field, new)
            return True
        i += packet[i + 1]
    return False


def segment_tcp(
    packet: Buffer, mss: int, out: bytearray | None = None
) -> tuple[memoryview, list[memoryview]]:
    """Split a TCP super-packet (a TSO packet read from TUN: one IP and TCP header, up to
    64 KB of payload) into wire segments of at most ``mss`` payload octets, each a
    complete packet: its own IP length, IPv4 identification and header checksum, TCP
    sequence number and checksum. FIN and PSH stay on the last segment only, CWR on the
    first only, as the kernel's tcp_gso_segment does.

    The segments are written back to back into ``out`` (grown if too small), so a UDP GSO
    send takes them all at once. Returns (all of them, each of them): views of ``out``."""
    view = memoryview(packet)
    version = view[0] >> 4
    l3 = (view[0] & 0x0F) * 4 if version == 4 else 40
    thl = (view[l3 + 12] >> 4) * 4
    hlen = l3 + thl
    payload_len = len(view) - hlen
    count = max(1, -(-payload_len // mss))
    total = count * hlen + payload_len
    if out is None or len(out) < total:
        out = bytearray(total)
    dst = memoryview(out)
    header = bytearray(view[:hlen])
    header[l3 + 16] = header[l3 + 17] = 0  # TCP checksum: summed as zero, then set
    seq0 = _U32.unpack_from(header, l3 + 4)[0]
    flags0 = header[l3 + 13]
    if version == 4:
        ident0 = header[4] << 8 | header[5]
        header[2:6] = bytes(4)  # length and identification vary per segment
        header[10] = header[11] = 0
        ip_sum = ones_sum(header[:l3])  # the rest of the IPv4 header, fixed
        pseudo = ones_sum(header[12:20]) + 6
    else:
        ident0 = ip_sum = 0
        pseudo = ones_sum(header[8:40]) + 6
    last = count - 1
    segments: list[memoryview] = []
    pos = 0
    for i in range(count):
        off = i * mss
        plen = min(mss, payload_len - off)
        end = pos + hlen + plen
        dst[pos : pos + hlen] = header
        dst[pos + hlen : end] = view[hlen + off : hlen + off + plen]
        flags = flags0
        if i:
            flags &= ~TCP_CWR
        if i != last:
            flags &= ~(TCP_FIN | TCP_PSH)
        out[pos + l3 + 13] = flags
        _U32.pack_into(out, pos + l3 + 4, (seq0 + off) & 0xFFFFFFFF)
        if version == 4:
            ident = (ident0 + i) & 0xFFFF
            _LEN_ID.pack_into(out, pos + 2, end - pos, ident)
            _U16.pack_into(out, pos + 10, ~fold(ip_sum + end - pos + ident) & 0xFFFF)
        else:
            _U16.pack_into(out, pos + 4, end - pos - 40)
        tcp = pseudo + end - pos - l3 + ones_sum(dst[pos + l3 : end])
        _U16.pack_into(out, pos + l3 + 16, ~fold(tcp) & 0xFFFF)
        segments.append(dst[pos:end])
        pos = end
    return dst[:pos], segments


def gso_header(packet: bytearray | memoryview, mtu: int) -> bytes | None:
    """The virtio-net header that has the kernel cut ``packet``, a TCP packet longer than
    ``mtu``, into segments that fit: such packets come out of a raw socket when the
    link's GRO merged a flow's tunnelled segments (the kernel's IPIP and IPv6 tunnel GRO
    work without the tunnel drivers). GRO leaves the TCP checksum field holding the
    pseudo-header sum, which is what NEEDS_CSUM wants; any other packet must carry a
    valid checksum, and gets the pseudo-header sum in its place. None (drop it) when
    ``packet`` is not an unfragmented TCP packet or its checksum is wrong."""
    version = packet[0] >> 4
    if version == 4:
        if packet[0] != 0x45 or packet[9] != 6 or packet[6] & 0x3F or packet[7]:
            return None
        l3, gso = 20, GSO_TCPV4
    elif version == 6 and packet[6] == 6:
        l3, gso = 40, GSO_TCPV6
    else:
        return None
    if len(packet) < l3 + 20:
        return None
    hlen = l3 + (packet[l3 + 12] >> 4) * 4
    if mtu <= hlen or len(packet) <= hlen:
        return None
    partial = pseudo_sum(packet, 6, len(packet) - l3)
    if _U16.unpack_from(packet, l3 + 16)[0] != partial:
        if not transport_checksum_ok(packet):
            return None
        _U16.pack_into(packet, l3 + 16, partial)
    return VNET_HDR.pack(VNET_F_NEEDS_CSUM, gso, hlen, mtu - hlen, l3, 16)


# --- coalescing (user-space GRO) ------------------------------------------------------

_MAX_COALESCED = 65535  # IPv4 total length / IPv6 payload length limit
_ONLY_ACK_PSH = ~(TCP_ACK | TCP_PSH) & 0xFF


class _Run:
    """Consecutive in-order segments of one TCP flow, to be written as one packet."""

    __slots__ = ("closed", "first", "hlen", "l3", "mss", "next_seq", "parts", "psh", "size")

    def __init__(self, first: memoryview, l3: int, hlen: int, seq: int, plen: int) -> None:
        self.first = first
        self.l3 = l3
        self.hlen = hlen
        self.mss = plen
        self.next_seq = (seq + plen) & 0xFFFFFFFF
        self.parts: list[memoryview] = [first[hlen:]]
        self.size = hlen + plen
        self.psh = bool(first[l3 + 13] & TCP_PSH)
        self.closed = self.psh


class Coalescer:
    """Gathers the inner packets received in one batch and returns them as TUN writes,
    merging consecutive TCP segments of a flow into one super-packet with a virtio-net
    GSO header, so the kernel takes 64 KB per write (and re-segments only if it has to).

    Segments merge when they continue the flow's sequence, carry only ACK (PSH ends a
    run), share the acknowledgement, window, options, TOS/traffic class and TTL/hop
    limit, and all but the last have the first one's payload size. IPv4 packets need DF
    and no IP options; IPv6 packets no extension headers. Everything else is written
    as it came, in order within its flow.

    The merged packet's TCP checksum is left partial (NEEDS_CSUM): the checksums of the
    segments are not re-verified, so feed only packets whose integrity the transport
    already checked (the IPv4-UDP tunnel's UDP checksum), or pass ``verify=True``."""

    def __init__(self, verify: bool = False) -> None:
        self.verify = verify
        self._runs: dict[bytes, _Run] = {}
        self._out: list[list[Buffer]] = []

    def add(self, packet: memoryview) -> None:
        key, l3, hlen, seq, plen = self._classify(packet)
        if key is None:
            self._out.append([VNET_PLAIN, packet])
            return
        run = self._runs.get(key)
        if run is not None:
            if (
                not run.closed
                and seq == run.next_seq
                and plen <= run.mss
                and run.size + plen <= _MAX_COALESCED
                and self._same_headers(run.first, packet, l3, hlen)
            ):
                run.parts.append(packet[hlen:])
                run.size += plen
                run.next_seq = (seq + plen) & 0xFFFFFFFF
                if packet[l3 + 13] & TCP_PSH:
                    run.psh = run.closed = True
                elif plen < run.mss:
                    run.closed = True
                return
            self._emit(run)
        self._runs[key] = _Run(packet, l3, hlen, seq, plen)

    def flush(self) -> list[list[Buffer]]:
        """The TUN writes for everything added: each a list of buffers for os.writev."""
        for run in self._runs.values():
            self._emit(run)
        self._runs.clear()
        out, self._out = self._out, []
        return out

    def _classify(self, p: memoryview) -> tuple[bytes | None, int, int, int, int]:
        n = len(p)
        version = p[0] >> 4
        if version == 4:
            if p[0] != 0x45 or p[9] != 6 or (p[6] & 0xBF) or p[7] or not p[6] & 0x40:
                return None, 0, 0, 0, 0  # options, not TCP, a fragment, or no DF
            l3 = 20
            key = bytes(p[12:24])
        elif version == 6:
            if p[6] != 6:
                return None, 0, 0, 0, 0
            l3 = 40
            key = bytes(p[8:44])
        else:
            return None, 0, 0, 0, 0
        if n < l3 + 20:
            return None, 0, 0, 0, 0
        hlen = l3 + (p[l3 + 12] >> 4) * 4
        plen = n - hlen
        if plen <= 0 or p[l3 + 13] & _ONLY_ACK_PSH:
            return None, 0, 0, 0, 0
        if self.verify and not transport_checksum_ok(p):
            return None, 0, 0, 0, 0
        return key, l3, hlen, _U32.unpack_from(p, l3 + 4)[0], plen

    @staticmethod
    def _same_headers(a: memoryview, b: memoryview, l3: int, hlen: int) -> bool:
        if (a[l3 + 12] >> 4) * 4 + l3 != hlen:
            return False
        if l3 == 20:
            if a[1] != b[1] or a[8] != b[8]:  # TOS, TTL
                return False
        elif a[0:4] != b[0:4] or a[7] != b[7]:  # traffic class + flow label, hop limit
            return False
        # acknowledgement number, data offset (checked above), window, then options
        return a[l3 + 8 : l3 + 12] == b[l3 + 8 : l3 + 12] and (
            a[l3 + 14 : l3 + 16] == b[l3 + 14 : l3 + 16] and a[l3 + 20 : hlen] == b[l3 + 20 : hlen]
        )

    def _emit(self, run: _Run) -> None:
        if len(run.parts) == 1:
            self._out.append([VNET_PLAIN, run.first])
            return
        l3, hlen = run.l3, run.hlen
        header = bytearray(run.first[:hlen])
        tcp_len = run.size - l3
        if l3 == 20:
            header[10] = header[11] = 0
            _U16.pack_into(header, 2, run.size)
            _U16.pack_into(header, 10, ~ones_sum(header[:20]) & 0xFFFF)
            gso = GSO_TCPV4
        else:
            _U16.pack_into(header, 4, tcp_len)
            gso = GSO_TCPV6
        if run.psh:
            header[l3 + 13] |= TCP_PSH
        # NEEDS_CSUM: the field holds the pseudo-header sum over the whole length, which
        # the kernel adjusts per segment when it splits the packet (tcp_gso_segment).
        _U16.pack_into(header, l3 + 16, pseudo_sum(header, 6, tcp_len))
        vnet = VNET_HDR.pack(VNET_F_NEEDS_CSUM, gso, hlen, run.mss, l3, 16)
        self._out.append([vnet, header, *run.parts])


# --- keepalive on the IPv4-UDP data port ---------------------------------------------

IPPROTO_NONE = 59


def keepalive(proxy_coa: bytes, lmaa: bytes) -> bytes:
    """The MAG's keepalive on UDP port 5437: an IPv6 header from its Proxy-CoA to the
    LMAA with No Next Header (RFC 8200 §4.7) and no payload.

    RFC 5844 §4 gives IPv4-UDP a data port (5437) apart from signalling (5436), so a NAT
    maps the MAG's data flow separately: the LMA cannot reuse the signalling port it
    observed. The MAG sends this on tunnel set-up and periodically; it is a valid inner
    IPv6 packet (the version nibble tells it apart, RFC 5555 §4.1), and its source names
    the MAG as the binding cache does (by Proxy-CoA), so the LMA learns the NAT's
    address and port for that MAG's data even when several MAGs share one NAT."""
    return b"\x60\0\0\0\0\0" + bytes((IPPROTO_NONE, 64)) + proxy_coa + lmaa


def keepalive_source(packet: Buffer, lmaa: bytes) -> bytes | None:
    """The Proxy-CoA (16 bytes) of a keepalive addressed to ``lmaa``, else None."""
    if (
        len(packet) == 40
        and packet[0] >> 4 == 6
        and packet[6] == IPPROTO_NONE
        and packet[4] == packet[5] == 0
        and packet[24:40] == lmaa
    ):
        return bytes(packet[8:24])
    return None


def join(parts: Sequence[Buffer]) -> bytes:
    """Concatenate buffers (a test and slow-path helper)."""
    return b"".join(parts)
