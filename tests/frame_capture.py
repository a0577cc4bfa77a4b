"""Kernel-timestamped frames on interfaces of a namespace: which DHCP message, PBU or PBA
left or arrived where, and when. AF_PACKET sockets with SO_TIMESTAMPNS, read only after the
exchange they watch, so reading them takes nothing from it."""

from __future__ import annotations

import math
import socket
import struct
from dataclasses import dataclass, field

from netns import in_netns

MAGIC = b"c\x82Sc"


def options_of(data: bytes) -> dict[int, bytes]:
    """DHCP options of a BOOTP message (no overload handling: none of ours use it)."""
    out: dict[int, bytes] = {}
    i = 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        length = data[i + 1]
        out.setdefault(code, data[i + 2 : i + 2 + length])
        i += 2 + length
    return out


ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
DHCP_KINDS = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 5: "ACK", 6: "NAK", 7: "RELEASE"}


@dataclass(frozen=True, order=True)
class Seen:
    ts: float  # CLOCK_REALTIME of the capture, seconds
    ifname: str
    out: bool  # sent by this namespace (PACKET_OUTGOING), else received
    kind: str  # DISCOVER ... RELEASE, PBU, PBA
    key: int  # DHCP xid, or the mobility header's sequence number
    frame: bytes = field(default=b"", compare=False, repr=False)  # as captured


def classify(frame: bytes) -> tuple[str, int] | None:
    """A DHCP message or a PBU/PBA in an Ethernet frame, else None."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800 and len(frame) > 34 and frame[23] == 17:
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        ports = {int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big")}
        bootp = udp[8:]
        if ports <= {67, 68} and len(bootp) >= 240 and bootp[236:240] == MAGIC:
            kind = DHCP_KINDS.get(options_of(bootp).get(53, b"\0")[0])
            if kind is not None:
                return kind, int.from_bytes(bootp[4:8], "big")
    elif ethertype == 0x86DD and len(frame) >= 62 and frame[20] == 135:
        mh = frame[54:]
        if mh[2] in (5, 6):
            return ("PBU" if mh[2] == 5 else "PBA"), int.from_bytes(mh[6:8], "big")
    return None


class Sniffer:
    """AF_PACKET sockets on some interfaces of one namespace. They are read only between
    attaches (the kernel queues and timestamps the frames), so nothing competes with the
    client while an attach is timed."""

    def __init__(self, ns: str, ifnames: tuple[str, ...]) -> None:
        self.socks: dict[str, socket.socket] = {}
        with in_netns(ns):
            for ifname in ifnames:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.bind((ifname, ETH_P_ALL))
                s.setblocking(False)
                self.socks[ifname] = s

    def drain(self) -> list[Seen]:
        seen = []
        for ifname, s in self.socks.items():
            while True:
                try:
                    frame, anc, _flags, addr = s.recvmsg(4096, 64)
                except BlockingIOError:
                    break
                found = classify(frame)
                if found is None:
                    continue
                ts = math.nan
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        ts = sec + nsec * 1e-9
                seen.append(Seen(ts, ifname, addr[2] == PACKET_OUTGOING, *found, frame))
        return sorted(seen)

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
