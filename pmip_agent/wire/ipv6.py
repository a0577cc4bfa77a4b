"""The inner IPv6 header used when the Mobility Header travels over IPv4/UDP.

Seed §4.4 Figure 6 and §4.5 Figure 8: IPv4 / UDP (port 5436) / IPv6 (v6MAG <-> LMAA) / MH.
Only a bare header with Next Header 135 is accepted: no extension headers.
"""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

from .constants import IPPROTO_MH
from .errors import WireError

IPV6_HEADER_LEN = 40
_FIXED = struct.Struct("!IHBB")  # version/class/flow, payload length, next header, hop limit
DEFAULT_HOP_LIMIT = 64


def wrap(
    mh: bytes, src: IPv6Address, dst: IPv6Address, hop_limit: int = DEFAULT_HOP_LIMIT
) -> bytes:
    """Prefix ``mh`` with an IPv6 header carrying it (Next Header 135)."""
    return _FIXED.pack(6 << 28, len(mh), IPPROTO_MH, hop_limit) + src.packed + dst.packed + mh


def unwrap(packet: bytes) -> tuple[IPv6Address, IPv6Address, bytes]:
    """Split an IPv6 packet into (source, destination, Mobility Header bytes)."""
    if len(packet) < IPV6_HEADER_LEN:
        raise WireError("short-ipv6", f"{len(packet)} octets")
    first, payload_len, next_header, _hops = _FIXED.unpack_from(packet)
    if first >> 28 != 6:
        raise WireError("not-ipv6", f"version {first >> 28}")
    if next_header != IPPROTO_MH:
        raise WireError("not-mobility-header", f"next header {next_header}")
    if payload_len != len(packet) - IPV6_HEADER_LEN:
        raise WireError("bad-ipv6-length", f"payload length {payload_len}, have {len(packet) - 40}")
    return IPv6Address(packet[8:24]), IPv6Address(packet[24:40]), packet[IPV6_HEADER_LEN:]
