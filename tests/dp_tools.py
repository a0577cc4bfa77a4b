"""Traffic tools the data-plane tests and benchmarks run inside the namespaces (stdlib only).

    dp_tools.py sink   --bind ADDR --port P            TCP: read one connection to EOF
    dp_tools.py source --to ADDR --port P --bytes N    TCP: send N pseudo-random bytes
    dp_tools.py echo   --bind ADDR --port P            UDP: echo every datagram back
    dp_tools.py probe  --to ADDR --port P --rate HZ --duration S
                                                       UDP: numbered probes, and their echoes
    dp_tools.py capture --iface IF --out FILE --count N --seconds S
                                                       frames of IF to a pcap (AF_PACKET)

Each prints one JSON line when done. ``sink``/``source`` report the SHA-256 of the bytes,
so a test proves integrity, not just a count. ``probe`` reports the largest gap between
consecutive echoes and between consecutive sequence numbers seen: the interruption.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

CHUNK = 64 * 1024
_PROBE = struct.Struct("!Id")  # sequence number, send time


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def sink(args: argparse.Namespace) -> dict[str, object]:
    srv = socket.socket(_family(args.bind), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(1)
    print(json.dumps({"listening": True}), flush=True)
    conn, peer = srv.accept()
    digest = hashlib.sha256()
    total = 0
    start = time.monotonic()
    while data := conn.recv(1 << 20):
        digest.update(data)
        total += len(data)
    return {
        "bytes": total,
        "sha256": digest.hexdigest(),
        "peer": peer[0],
        "seconds": round(time.monotonic() - start, 3),
    }


def source(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    sock = socket.create_connection((args.to, args.port), timeout=30)
    digest = hashlib.sha256()
    sent = 0
    start = time.monotonic()
    while sent < args.bytes:
        chunk = rng.randbytes(min(CHUNK, args.bytes - sent))
        sock.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
        if args.rate:  # pace to `rate` bytes/s
            ahead = sent / args.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait for the sink to close
    return {"bytes": sent, "sha256": digest.hexdigest(), "seconds": time.monotonic() - start}


def echo(args: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(_family(args.bind), socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    print(json.dumps({"listening": True}), flush=True)
    arrivals: list[tuple[int, float]] = []
    while not stop:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        data, peer = sock.recvfrom(2048)
        if len(data) >= _PROBE.size:
            arrivals.append((_PROBE.unpack_from(data)[0], time.monotonic()))
        sock.sendto(data, peer)
    return {"received": len(arrivals), **_gaps(arrivals)}


def probe(args: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(_family(args.to), socket.SOCK_DGRAM)
    sock.setblocking(False)
    interval = 1.0 / args.rate
    start = time.monotonic()
    deadline = start + args.duration
    seq = 0
    echoes: list[tuple[int, float]] = []
    next_send = start
    while True:
        now = time.monotonic()
        if now >= deadline + 0.5:  # a last half second for late echoes
            break
        if now >= next_send and now < deadline:
            # A refused send (e.g. an ICMP error during the handover) counts as lost.
            with contextlib.suppress(OSError):
                sock.sendto(_PROBE.pack(seq, now) + bytes(32), (args.to, args.port))
            seq += 1
            next_send += interval
        timeout = max(0.0, min(next_send, deadline + 0.5) - time.monotonic())
        ready, _, _ = select.select([sock], [], [], timeout)
        while ready:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            echoes.append((_PROBE.unpack_from(data)[0], time.monotonic()))
    if args.record:  # every echo: (sequence number, monotonic arrival time)
        Path(args.record).write_text(json.dumps(echoes))
    return {"sent": seq, "echoed": len(echoes), **_gaps(list(echoes))}


def capture(args: argparse.Namespace) -> dict[str, object]:
    """Up to ``count`` frames received or sent on ``iface`` within ``seconds``, written as
    a pcap of Ethernet frames (no tcpdump needed)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((args.iface, 0))
    sock.settimeout(0.2)
    print(json.dumps({"listening": True}), flush=True)
    frames: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + args.seconds
    while len(frames) < args.count and time.monotonic() < deadline:
        try:
            frames.append((time.time(), sock.recv(65535)))
        except TimeoutError:
            continue
    with open(args.out, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            out.write(struct.pack("<IIII", int(ts), int(ts % 1 * 1e6), len(frame), len(frame)))
            out.write(frame)
    return {"frames": len(frames)}


def _gaps(arrivals: list[tuple[int, float]]) -> dict[str, object]:
    """The interruption: the longest time between two consecutive arrivals, and the
    sequence numbers missing in between."""
    if len(arrivals) < 2:
        return {"max_gap_ms": None, "lost": None}
    arrivals.sort()
    worst = max(range(1, len(arrivals)), key=lambda i: arrivals[i][1] - arrivals[i - 1][1])
    seqs = {s for s, _ in arrivals}
    return {
        "max_gap_ms": round(1000 * (arrivals[worst][1] - arrivals[worst - 1][1]), 2),
        "gap_after_seq": arrivals[worst - 1][0],
        "lost": arrivals[-1][0] - arrivals[0][0] + 1 - len(seqs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sink")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("source")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0, help="bytes/s; 0: as fast as possible")
    p = sub.add_parser("echo")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("probe")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--record", help="write every echo's (seq, arrival time) here")
    p = sub.add_parser("capture")
    p.add_argument("--iface", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    tools = {"sink": sink, "source": source, "echo": echo, "probe": probe, "capture": capture}
    result = tools[args.cmd](args)
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
