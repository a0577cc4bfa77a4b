"""Log bad input at a bounded rate, so a flood cannot flood the log too."""

from __future__ import annotations

import logging


class RateLimitedLog:
    """At most ``burst`` lines per ``window_s`` per key; the suppressed count is reported
    with the next line that gets through."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window_s: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (start, logged, dropped)

    def warning(self, key: str, now: float, msg: str, *args: object) -> None:
        start, logged, dropped = self._windows.get(key, (now, 0, 0))
        if now - start >= self.window_s:
            start, logged = now, 0
        if logged < self.burst:
            if dropped:
                msg += " (%d similar messages suppressed)"
                args = (*args, dropped)
                dropped = 0
            self.logger.warning(msg, *args)
            logged += 1
        else:
            dropped += 1
        if len(self._windows) > 1024:
            self._windows.clear()
        self._windows[key] = (start, logged, dropped)
