"""The one error that decoding may raise."""

from __future__ import annotations


class WireError(ValueError):
    """Malformed or unsupported bytes. ``reason`` is a short stable label for counters and
    logs (for example ``"option-overrun"``); ``detail`` says what exactly was wrong."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
