"""IPv4/UDP transport for signalling (seed §4.4, Figure 6; RFC 5844 §4, port 5436).

The payload is an IPv6 header plus Mobility Header (seed framing) or a bare Mobility
Header (RFC 5844 framing); the engines tell them apart. Replies go to the address and port
actually observed, which behind a NAT are the NAT's.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address

from ..wire.constants import PMIP6_CNTL_PORT

MAX_BATCH = 256
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux; Python does not export it
_PKTINFO_SPACE = socket.CMSG_SPACE(12)  # struct in_pktinfo: ifindex, two addresses


class Udp4Socket:
    def __init__(
        self, bind: IPv4Address | None = None, port: int = PMIP6_CNTL_PORT, pktinfo: bool = False
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if pktinfo:  # the incoming interface, for recv_batch_ifindex
            self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setblocking(False)
        self.sock.bind((str(bind) if bind is not None else "0.0.0.0", port))
        self._addr_cache: dict[str, IPv4Address] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self) -> list[tuple[bytes, IPv4Address, int]]:
        out: list[tuple[bytes, IPv4Address, int]] = []
        cache = self._addr_cache
        for _ in range(MAX_BATCH):
            try:
                data, (host, port) = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            src = cache.get(host)
            if src is None:
                if len(cache) > 4096:
                    cache.clear()
                src = cache[host] = IPv4Address(host)
            out.append((data, src, port))
        return out

    def recv_batch_ifindex(self) -> list[tuple[bytes, IPv4Address, int, int | None]]:
        """Like recv_batch, with the index of the interface each datagram came in on
        (needs ``pktinfo=True``)."""
        out: list[tuple[bytes, IPv4Address, int, int | None]] = []
        for _ in range(MAX_BATCH):
            try:
                data, ancillary, _flags, (host, port) = self.sock.recvmsg(65535, _PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            ifindex = None
            for level, kind, cdata in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    (ifindex,) = struct.unpack_from("=i", cdata, 0)
            out.append((data, IPv4Address(host), port, ifindex))
        return out

    def send(self, data: bytes, dst: IPv4Address, port: int) -> None:
        self.sock.sendto(data, (str(dst), port))

    def close(self) -> None:
        self.sock.close()
