"""The control socket protocol: one JSON object per line each way.

Request: {"cmd": "status" | "bindings" | "show" | "pools" | "reload", "mn_id": "..."}.
Reply: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

DEFAULT_SOCKET_DIR = "/run/pmip"
COMMANDS = ("status", "bindings", "show", "pools", "reload")
