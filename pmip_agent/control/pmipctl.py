"""pmipctl: the operator's view of a running pmip-agent, through its control socket."""

from __future__ import annotations

import argparse
import glob
import json
import socket
import sys
from typing import Any

from .protocol import DEFAULT_SOCKET_DIR

DESCRIPTION = """\
Query and steer a running pmip-agent (LMA or MAG) through its unix control socket.

commands:
  status          role, node name, uptime and binding count
  bindings        every binding: the LMA's binding cache, or the MAG's binding update list
  show MN-ID      one mobile node's binding
  pools           the LMA's IPv4 home address pools and IPv6 prefix pool: size, used, free
  reload          re-read the agent's configuration file; bindings that the new
                  configuration still authorizes are kept (same as SIGHUP)
"""

EPILOG = f"""\
output:
  A table for people by default; --json prints the daemon's JSON reply for programs.
  Binding objects carry at least: mn_id, ipv4_hoa, ipv6_hnps, mag, transport
  (ipv6|ipv4|ipv4-udp), nat, lifetime_remaining_s and state.

files:
  {DEFAULT_SOCKET_DIR}/NODE.sock   control socket (mode 0600: root only). With one socket
                          in {DEFAULT_SOCKET_DIR}, --socket may be left out.

exit status:
  0  success
  1  the daemon answered with an error (for example: no binding for that MN)
  2  usage error, or no control socket could be reached

examples:
  pmipctl status
  pmipctl --socket /run/pmip/lma1.sock bindings
  pmipctl show mn1@example.net --json
  pmipctl reload

see also: pmip-agent --help
"""


def _socket_path(given: str | None) -> str:
    if given:
        return given
    found = sorted(glob.glob(f"{DEFAULT_SOCKET_DIR}/*.sock"))
    if len(found) != 1:
        raise SystemExit(
            f"pmipctl: {len(found)} control sockets in {DEFAULT_SOCKET_DIR}; name one with --socket"
        )
    return found[0]


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


BINDING_COLUMNS = [
    "mn_id",
    "state",
    "ipv4_hoa",
    "ipv6_hnps",
    "mag",
    "transport",
    "nat",
    "lifetime_remaining_s",
]
BUL_COLUMNS = [
    "mn_id",
    "state",
    "ipv4_hoa",
    "ipv6_hnps",
    "lma",
    "transport",
    "nat",
    "lifetime_remaining_s",
]
POOL_COLUMNS = ["name", "prefix", "default_router", "size", "used", "free"]


def render(cmd: str, result: Any) -> str:
    if cmd in ("bindings", "show"):
        rows = result if isinstance(result, list) else [result]
        columns = BUL_COLUMNS if rows and "lma" in rows[0] else BINDING_COLUMNS
        if cmd == "show":
            return "\n".join(f"{k:22} {_cell(v)}" for k, v in rows[0].items())
        return table(rows, columns) if rows else "no bindings"
    if cmd == "pools":
        return table(result, POOL_COLUMNS)
    if isinstance(result, dict):
        return "\n".join(f"{k:12} {_cell(v)}" for k, v in result.items())
    return str(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pmipctl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--socket", help="control socket path (default: the one in /run/pmip)")
    parser.add_argument("--json", action="store_true", help="print the JSON reply")
    parser.add_argument("command", choices=["status", "bindings", "show", "pools", "reload"])
    parser.add_argument("mn_id", nargs="?", help="the MN identifier, for show")
    args = parser.parse_args(argv)
    if args.command == "show" and not args.mn_id:
        parser.error("show needs an MN-ID")
    payload: dict[str, Any] = {"cmd": args.command}
    if args.mn_id:
        payload["mn_id"] = args.mn_id
    try:
        reply = request(_socket_path(args.socket), payload)
    except (OSError, ValueError) as exc:
        print(f"pmipctl: cannot reach the agent: {exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"pmipctl: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply["result"], indent=2, sort_keys=True))
    else:
        print(render(args.command, reply["result"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
