"""Attach and detach detection on the MAG's access links, through netlink (pyroute2).

Seed §1 and RFC 5213 §6.2 assume a point-to-point access link per MN: the link coming up
(carrier and administratively up) is an attach, its going down a detach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

log = logging.getLogger("pmip.access")
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def _is_up(msg: object) -> bool:
    flags = msg["flags"]  # type: ignore[index]
    return bool(flags & IFF_UP and flags & IFF_LOWER_UP)


class LinkMonitor:
    """Calls ``on_change(ifname, up)`` whenever a watched interface changes state."""

    def __init__(self, interfaces: Iterable[str], on_change: Callable[[str, bool], None]) -> None:
        self.watched = set(interfaces)
        self.on_change = on_change
        self.state: dict[str, bool] = {}
        self._ipr: AsyncIPRoute | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, bool]:
        """Subscribe to link events, then read the current state (in that order, so no
        change can slip between the two). Returns the state of the watched links."""
        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK)
        async with AsyncIPRoute() as query:
            async for link in await query.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if name in self.watched:
                    self.state[name] = _is_up(link)
        self._task = asyncio.create_task(self._watch())
        return dict(self.state)

    async def _watch(self) -> None:
        assert self._ipr is not None
        while True:
            try:
                async for msg in self._ipr.get():
                    self._on_message(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching: one bad message must not blind the MAG
                log.exception("link monitor error")
                await asyncio.sleep(0.1)

    def _on_message(self, msg: object) -> None:
        name = msg.get_attr("IFLA_IFNAME")  # type: ignore[attr-defined]
        if name not in self.watched:
            return
        up = msg["event"] == "RTM_NEWLINK" and _is_up(msg)  # type: ignore[index]
        if self.state.get(name) != up:
            self.state[name] = up
            log.info("access link %s is %s", name, "up" if up else "down")
            self.on_change(name, up)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ipr is not None:
            self._ipr.close()


ICMP6_FILTER = 1
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
ND_ROUTER_SOLICIT = 133
ND_OPT_SOURCE_LINKADDR = 1


def _only_router_solicitations() -> bytes:
    """An ICMP6_FILTER that blocks every type but 133 (RFC 3542 §3.2: a set bit blocks)."""
    words = [0xFFFFFFFF] * 8
    words[ND_ROUTER_SOLICIT >> 5] &= ~(1 << (ND_ROUTER_SOLICIT & 31))
    return b"".join(w.to_bytes(4, "little") for w in words)


class RouterSolicitationListener:
    """Router Solicitations on the access interfaces (RFC 4861 §6.3.7), each reported as
    ``on_solicit(ifname, source_link_layer_address or None)``."""

    def __init__(
        self, interfaces: Iterable[str], on_solicit: Callable[[str, bytes | None], None]
    ) -> None:
        self.watched = set(interfaces)
        self.on_solicit = on_solicit
        # Further listeners, called after on_solicit (the data plane answers with an RA).
        self.subscribers: list[Callable[[str, bytes | None], None]] = []
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _only_router_solicitations())
        self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        self.sock.setblocking(False)
        self._joined: dict[str, int] = {}
        for name in self.watched:
            with contextlib.suppress(OSError):  # links that do not exist yet join when up
                self.join(name)

    def join(self, name: str) -> None:
        """Listen on ``name``: RSs go to all-routers (ff02::2), which a host joins only when
        it forwards. Idempotent; a re-created interface (new index) is joined again."""
        index = socket.if_nametoindex(name)
        if self._joined.get(name) == index:
            return
        group = socket.inet_pton(socket.AF_INET6, "ff02::2") + index.to_bytes(4, "little")
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        self._joined[name] = index

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(1500, 256)
            except (BlockingIOError, InterruptedError):
                return
            ifname = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 20:
                    with contextlib.suppress(OSError):
                        ifname = socket.if_indextoname(int.from_bytes(value[16:20], "little"))
            if ifname in self.watched and len(data) >= 8 and data[0] == ND_ROUTER_SOLICIT:
                mac = _source_link_layer(data[8:])
                self.on_solicit(ifname, mac)
                for subscriber in self.subscribers:
                    subscriber(ifname, mac)

    def close(self) -> None:
        self.sock.close()


def _source_link_layer(options: bytes) -> bytes | None:
    """The Source Link-Layer Address option of an RS, if well formed (RFC 4861 §4.6.1)."""
    offset = 0
    while offset + 2 <= len(options):
        kind, units = options[offset], options[offset + 1]
        if units == 0 or offset + units * 8 > len(options):
            return None
        if kind == ND_OPT_SOURCE_LINKADDR:
            return options[offset + 2 : offset + units * 8].rstrip(b"\0")[:6] or None
        offset += units * 8
    return None
