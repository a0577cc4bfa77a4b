"""Router Advertisements on the MAG's access links (RFC 5213 §6.7, RFC 4861 §4.2, §6.2).

The MAG emulates the MN's home link: once the MN is registered it advertises the MN's
home network prefixes (on-link and autonomous, so the MN configures its address by
SLAAC, RFC 4862) and the link MTU, which is the tunnel's, so the MN never sends what
the tunnel cannot carry. It advertises when the registration completes, every
``interval_s`` after that, and at once when the MN solicits (RFC 4861 §6.2.6).
RFC 5213 §6.9.3 asks every MAG to use the same link-local and link-layer address on
its access links, so the MN keeps its default router across a handover.

The prefixes are per MN: this assumes the seed's point-to-point access link per MN
(RFC 5213 §6.2). On a shared link every MN would see every prefix.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

log = logging.getLogger("pmip.dataplane")

ND_ROUTER_ADVERT = 134
ICMP6_FILTER = 1
IPV6_MULTICAST_HOPS = 18
IPV6_UNICAST_HOPS = 16
ALL_NODES = "ff02::1"
MAX_ROUTER_LIFETIME = 9000  # RFC 4861 §6.2.1 AdvDefaultLifetime upper bound
_PREFIX_OPT = struct.Struct("!BBBBIII16s")


def build_ra(
    prefixes: Iterable[tuple[IPv6Address, int, int]],
    router_lifetime: int,
    mtu: int | None = None,
    source_mac: bytes | None = None,
) -> bytes:
    """An RA message (ICMPv6 checksum left 0: the kernel fills it in for raw ICMPv6
    sockets). ``prefixes``: (prefix, length, lifetime in s) each, advertised on-link
    and autonomous with that valid and preferred lifetime."""
    msg = struct.pack(
        "!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, 64, 0, min(router_lifetime, 0xFFFF), 0, 0
    )
    if source_mac:
        msg += bytes((1, 1)) + source_mac[:6]  # Source Link-Layer Address, 8 octets
    if mtu is not None:
        msg += struct.pack("!BBHI", 5, 1, 0, mtu)
    for prefix, plen, lifetime in prefixes:
        msg += _PREFIX_OPT.pack(3, 4, plen, 0xC0, lifetime, lifetime, 0, prefix.packed)
    return msg


class RouterAdvertiser:
    """Sends the RAs of each access link. ``schedule(delay, callback)`` arms a timer (the
    daemon's event loop) and returns something with ``cancel()``."""

    def __init__(
        self,
        mtu: int,
        interval_s: float,
        schedule: Callable[[float, Callable[[], None]], Any],
    ) -> None:
        self.mtu = mtu
        self.interval_s = interval_s
        self.schedule = schedule
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)  # send only
        self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)
        self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, 255)  # RFC 4861 §6.1.2
        self.sock.setblocking(False)
        # link -> MN -> (prefixes, lifetime)
        self.links: dict[str, dict[bytes, tuple[tuple[tuple[IPv6Address, int], ...], int]]] = {}
        self._timer: Any = None
        self.sent = 0

    def advertise(
        self, ifname: str, mn_id: bytes, hnps: tuple[tuple[IPv6Address, int], ...], lifetime: int
    ) -> None:
        if not hnps:
            self.withdraw(ifname, mn_id)
            return
        self.links.setdefault(ifname, {})[mn_id] = (hnps, lifetime)
        self.send(ifname)
        if self._timer is None:
            self._timer = self.schedule(self.interval_s, self._periodic)

    def withdraw(self, ifname: str, mn_id: bytes) -> None:
        link = self.links.get(ifname)
        if link is not None:
            link.pop(mn_id, None)
            if not link:
                del self.links[ifname]

    def solicited(self, ifname: str) -> None:
        if ifname in self.links:
            self.send(ifname)

    def send(self, ifname: str) -> None:
        link = self.links.get(ifname)
        if not link:
            return
        prefixes = [(p, n, life) for hnps, life in link.values() for p, n in hnps]
        lifetime = max(life for _, life in link.values())
        router_lifetime = min(MAX_ROUTER_LIFETIME, max(lifetime, int(3 * self.interval_s)))
        ra = build_ra(prefixes, router_lifetime, self.mtu, _mac(ifname))
        try:
            self.sock.sendto(ra, (ALL_NODES, 0, 0, socket.if_nametoindex(ifname)))
            self.sent += 1
        except OSError as exc:
            log.warning("cannot send a router advertisement on %s: %s", ifname, exc)

    def _periodic(self) -> None:
        self._timer = None
        for ifname in list(self.links):
            self.send(ifname)
        if self.links:
            self._timer = self.schedule(self.interval_s, self._periodic)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sock.close()


def _mac(ifname: str) -> bytes | None:
    try:
        text = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
        return bytes.fromhex(text.replace(":", "")) or None
    except (OSError, ValueError):
        return None
