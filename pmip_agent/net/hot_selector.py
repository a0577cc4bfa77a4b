"""The daemon's event loop selector: the signalling and DHCP sockets' handlers run as soon
as epoll reports them.

asyncio takes a ready socket through its ready queue: a handle queued per event, the
timers checked, then the handle run. That is a few dozen Python steps per wake-up, and
the daemon wakes up cold (its caches taken while it idled), so each costs far more than
warm: in the MAG, 30 us from epoll's return to the DHCP socket's handler for the first
message of an attach (bench/daemon_steps.py). A socket watched here skips all that: its
handler runs inside `select`, straight from epoll's report. Everything else the loop
watches (netlink, the control socket, the loop's own wake-up pipe) goes the usual way.

A handler runs inside the loop's iteration, as a reader callback would: it may schedule
callbacks and timers, which the loop picks up in the same iteration or the next. It must
not raise (the daemon's handlers catch and log).
"""

from __future__ import annotations

import selectors
from collections.abc import Callable
from typing import Any


class HotSelector(selectors.EpollSelector):
    def __init__(self) -> None:
        super().__init__()
        self._handlers: dict[int, Callable[[], None]] = {}

    def watch(self, fd: int, handler: Callable[[], None]) -> None:
        """Run ``handler`` whenever ``fd`` is readable. The event loop must not also
        watch ``fd`` (loop.add_reader)."""
        self.register(fd, selectors.EVENT_READ)
        self._handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self.unregister(fd)

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready = super().select(timeout)
        handlers = self._handlers
        rest = []
        for key, events in ready:
            handler = handlers.get(key.fd)
            if handler is not None:
                handler()
            elif key.data is not None:  # the loop's; None: ours, unwatched by a handler
                rest.append((key, events))
        return rest
