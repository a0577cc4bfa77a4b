"""Gratuitous ARP for the IPv4 default router on an access link (RFC 5227 §3's
announcement, RFC 5844 §3.2.4's home-link emulation).

An MN whose link just came up (a handover moves it to a new MAG) asks for its default
router at once, before its registration through the new MAG is complete, and gets no
answer: the MAG holds the router's address only once the LMA has confirmed the binding.
The MN then retries a second later (Linux: ``retrans_time_ms``). An announcement as soon
as the address is in place completes the MN's pending neighbor entry, so its traffic
flows again without waiting for that retry.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
from ipaddress import IPv4Address

log = logging.getLogger("pmip.dataplane")

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def gratuitous_arp(mac: bytes, address: IPv4Address) -> bytes:
    """An Ethernet frame: a broadcast ARP request for ``address`` from ``address``."""
    ip = address.packed
    header = BROADCAST + mac + ETH_P_ARP.to_bytes(2, "big")
    return header + _ARP.pack(1, 0x0800, 6, 4, 1, mac, ip, bytes(6), ip)


# Closing a packet socket waits for an RCU grace period in the kernel (about 16 ms
# measured here), which would stall the MAG's event loop after every registration; so
# one unbound socket serves every link and lives as long as the process.
_sock: socket.socket | None = None
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1


def _socket() -> socket.socket:
    global _sock
    if _sock is None:
        _sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # sends only
    return _sock


def link_mac(sock: socket.socket, ifname: str) -> bytes | None:
    """The Ethernet address of ``ifname``, or None if it is not an Ethernet link."""
    req = struct.pack("16s16x", ifname.encode())
    reply = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, req)
    family = struct.unpack_from("=H", reply, 16)[0]
    return reply[18:24] if family == ARPHRD_ETHER else None


def announce(ifname: str, address: IPv4Address) -> bool:
    """Send the announcement of ``address`` on ``ifname``; False if it could not go."""
    try:
        sock = _socket()
        mac = link_mac(sock, ifname)
        if mac is None:
            return False
        sock.sendto(gratuitous_arp(mac, address), (ifname, ETH_P_ARP))
    except OSError as exc:
        log.debug("no gratuitous ARP for %s on %s: %s", address, ifname, exc)
        return False
    return True
