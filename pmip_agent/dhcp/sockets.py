"""One UDP socket on port 67 per access interface (SO_BINDTODEVICE), so the MAG learns
which access link each DHCP message came in on, and can answer on that link."""

from __future__ import annotations

import socket
from collections.abc import Callable

SERVER_PORT = 67
CLIENT_PORT = 68
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class DhcpInterfaceSocket:
    def __init__(
        self, ifname: str, on_datagram: Callable[[str, bytes, tuple[str, int]], None]
    ) -> None:
        self.ifname = ifname
        self.on_datagram = on_datagram
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        self.sock.setblocking(False)
        self.sock.bind(("0.0.0.0", SERVER_PORT))

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            self.on_datagram(self.ifname, data, addr)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()


class DhcpRelaySocket:
    """The relay's socket toward the DHCP servers: port 67 on the giaddr, where the
    servers send their replies (RFC 2131 §4.1)."""

    def __init__(
        self, address: object, on_datagram: Callable[[bytes, tuple[str, int]], None]
    ) -> None:
        self.on_datagram = on_datagram
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setblocking(False)
        self.sock.bind((str(address), SERVER_PORT))

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            self.on_datagram(data, addr)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()
