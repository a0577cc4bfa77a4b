"""IPv4/UDP transport for signalling (seed §4.4, Figure 6; RFC 5844 §4, port 5436).

The payload is an IPv6 header plus Mobility Header (seed framing) or a bare Mobility
Header (RFC 5844 framing); the engines tell them apart. Replies go to the address and port
actually observed, which behind a NAT are the NAT's.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address

from ..wire.constants import PMIP6_CNTL_PORT

MAX_BATCH = 256


class Udp4Socket:
    def __init__(self, bind: IPv4Address | None = None, port: int = PMIP6_CNTL_PORT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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

    def send(self, data: bytes, dst: IPv4Address, port: int) -> None:
        self.sock.sendto(data, (str(dst), port))

    def close(self) -> None:
        self.sock.close()
