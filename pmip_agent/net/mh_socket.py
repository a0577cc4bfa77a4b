"""Raw IPv6 socket for the Mobility Header (IPv6 next header 135).

The kernel computes the MH checksum on send and drops packets with a bad one on receive
once IPV6_CHECKSUM points at offset 4 (RFC 3542 §3.1), so the engines never handle it.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv6Address

from ..wire.constants import IPPROTO_MH

IPV6_CHECKSUM = getattr(socket, "IPV6_CHECKSUM", 7)
MAX_BATCH = 256
_PKTINFO_SPACE = socket.CMSG_SPACE(20)  # struct in6_pktinfo: address, interface index


class MhSocket:
    def __init__(self, bind: IPv6Address | None = None, pktinfo: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
        self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 4)
        if pktinfo:  # the incoming interface, for recv_batch_ifindex
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setblocking(False)
        if bind is not None:
            self.sock.bind((str(bind), 0))
        self._addr_cache: dict[str, IPv6Address] = {}
        self._text_cache: dict[IPv6Address, str] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self) -> list[tuple[bytes, IPv6Address]]:
        """Everything queued now, up to MAX_BATCH datagrams."""
        out: list[tuple[bytes, IPv6Address]] = []
        cache = self._addr_cache
        for _ in range(MAX_BATCH):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            src = cache.get(addr[0])
            if src is None:
                if len(cache) > 4096:
                    cache.clear()
                src = cache[addr[0]] = IPv6Address(addr[0].split("%", 1)[0])
            out.append((data, src))
        return out

    def recv_batch_ifindex(self) -> list[tuple[bytes, IPv6Address, int | None]]:
        """Like recv_batch, with the index of the interface each datagram came in on
        (needs ``pktinfo=True``)."""
        out: list[tuple[bytes, IPv6Address, int | None]] = []
        for _ in range(MAX_BATCH):
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(65535, _PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            ifindex = None
            for level, kind, cdata in ancillary:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    (ifindex,) = struct.unpack_from("=I", cdata, 16)
            out.append((data, IPv6Address(addr[0].split("%", 1)[0]), ifindex))
        return out

    def send(self, data: bytes, dst: IPv6Address) -> None:
        # str(IPv6Address) costs about as much as the sendto itself: keep the text.
        text = self._text_cache.get(dst)
        if text is None:
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
            text = self._text_cache[dst] = str(dst)
        self.sock.sendto(data, (text, 0))

    def close(self) -> None:
        self.sock.close()
