"""One UDP socket on port 67 per access interface (SO_BINDTODEVICE), so the MAG learns
which access link each DHCP message came in on, and can answer on that link.

With the kernel relay (`kernel_relay.py`) the sockets also read each datagram's mark
(SO_RCVMARK): the kernel's copies of messages it relayed already carry `MARK`, and the
daemon only learns from them."""

from __future__ import annotations

import socket
from collections.abc import Callable

from .kernel_relay import MARK

SERVER_PORT = 67
CLIENT_PORT = 68
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_MARK = getattr(socket, "SO_MARK", 36)
SO_RCVMARK = 75  # Linux 5.19; not in Python's socket module yet
_MARK_SPACE = socket.CMSG_SPACE(4)


def rcvmark_works() -> bool:
    """True when this kernel reports a datagram's mark (SO_RCVMARK)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
        except OSError:
            return False
    return True


def _open(marks: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setblocking(False)
    if marks:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
    return sock


def _read(sock: socket.socket, marks: bool) -> tuple[bytes, tuple[str, int], bool]:
    """One datagram, and whether it is the kernel relay's copy."""
    if not marks:
        data, addr = sock.recvfrom(4096)
        return data, addr, False
    data, ancillary, _flags, addr = sock.recvmsg(4096, _MARK_SPACE)
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_MARK:
            return data, addr, int.from_bytes(value[:4], "little") == MARK
    return data, addr, False


class DhcpInterfaceSocket:
    def __init__(
        self,
        ifname: str,
        on_datagram: Callable[[str, bytes, tuple[str, int], bool], None],
        marks: bool = False,
    ) -> None:
        self.ifname = ifname
        self.on_datagram = on_datagram
        self.marks = marks
        self.sock = _open(marks)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        self.sock.bind(("0.0.0.0", SERVER_PORT))

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, addr, copy = _read(self.sock, self.marks)
            except (BlockingIOError, InterruptedError):
                return
            self.on_datagram(self.ifname, data, addr, copy)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()


class DhcpRelaySocket:
    """The relay's socket toward the DHCP servers: port 67 on the giaddr, where the
    servers send their replies (RFC 2131 §4.1)."""

    def __init__(
        self,
        address: object,
        on_datagram: Callable[[bytes, tuple[str, int], bool], None],
        marks: bool = False,
    ) -> None:
        self.on_datagram = on_datagram
        self.marks = marks
        self.sock = _open(marks)
        self.sock.bind((str(address), SERVER_PORT))

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, addr, copy = _read(self.sock, self.marks)
            except (BlockingIOError, InterruptedError):
                return
            self.on_datagram(data, addr, copy)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()
