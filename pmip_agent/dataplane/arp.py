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


def announce(ifname: str, address: IPv4Address) -> bool:
    """Send the announcement of ``address`` on ``ifname``; False if it could not go."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((ifname, ETH_P_ARP))
            mac = sock.getsockname()[4]
            if len(mac) != 6:
                return False  # not an Ethernet link
            sock.send(gratuitous_arp(mac, address))
    except OSError as exc:
        log.debug("no gratuitous ARP for %s on %s: %s", address, ifname, exc)
        return False
    return True
