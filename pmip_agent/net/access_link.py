"""Attach and detach detection on the MAG's access links, through netlink (pyroute2).

Seed §1 and RFC 5213 §6.2 assume a point-to-point access link per MN: the link coming up
(carrier and administratively up) is an attach, its going down a detach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
