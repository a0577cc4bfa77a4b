"""Traffic of the lab's scenario, run inside its namespaces (standard library only).

    traffic.py serve --v4 ADDR [--v6 ADDR]        the CN: UDP echo (port 7) and TCP sink
                                                  (port 5001) on each address
    traffic.py echo --to CN --bind HOA            three UDP round trips to the CN
    traffic.py probe --to CN --bind HOA --duration S [--rate HZ]
                                                  numbered UDP probes and their echoes
    traffic.py transfer --to CN --bind HOA --bytes N [--rate B/s]
                                                  one TCP connection of N bytes

    traffic.py wire --iface IF [--inner HOA]      the tunnel packets on IF carrying HOA,
                                                  counted by encapsulation, and ESP, IKE
                                                  and clear signalling, until SIGTERM

The CN's answers say what it saw: every UDP echo carries the source address the CN
received the probe from, and at the end of a TCP connection the CN sends back the byte
count, the SHA-256 of what it read and the peer address. So "the CN sees the home
address" is what the CN reported, not what the MN meant to send. Each client prints one
JSON line.
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
import threading
import time
from typing import Any

UDP_PORT, TCP_PORT = 7, 5001
_PROBE = struct.Struct("!Id")  # sequence number, send time
PAD = bytes(32)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


# --- the CN -------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    udp = []
    for addr in filter(None, (args.v4, args.v6)):
        s = socket.socket(_family(addr), socket.SOCK_DGRAM)
        s.bind((addr, UDP_PORT))
        udp.append(s)
        t = socket.socket(_family(addr), socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((addr, TCP_PORT))
        t.listen(8)
        threading.Thread(target=_accept, args=(t,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"listening": True}), flush=True)
    while True:
        ready, _, _ = select.select(udp, [], [])
        for s in ready:
            data, peer = s.recvfrom(2048)
            # The probe's header, then the source address as the CN saw it.
            s.sendto(data[: _PROBE.size] + peer[0].encode(), peer)


def _accept(listener: socket.socket) -> None:
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=_sink, args=(conn, peer[0]), daemon=True).start()


def _sink(conn: socket.socket, peer: str) -> None:
    digest, total = hashlib.sha256(), 0
    with conn:
        while data := conn.recv(1 << 16):
            digest.update(data)
            total += len(data)
        report = {"bytes": total, "sha256": digest.hexdigest(), "peer": peer}
        conn.sendall(json.dumps(report).encode())


# --- the MN -------------------------------------------------------------------------------


def _udp(args: argparse.Namespace) -> socket.socket:
    s = socket.socket(_family(args.to), socket.SOCK_DGRAM)
    s.bind((args.bind, 0))
    s.setblocking(False)
    return s


def echo(args: argparse.Namespace) -> dict[str, Any]:
    """Three round trips, one at a time (each waits up to a second for its echo)."""
    s, seen, rtts = _udp(args), set(), []
    for seq in range(3):
        sent = time.monotonic()
        with contextlib.suppress(OSError):
            s.sendto(_PROBE.pack(seq, sent) + PAD, (args.to, UDP_PORT))
        while (left := sent + 1.0 - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            with contextlib.suppress(OSError):
                data = s.recv(2048)
                if _PROBE.unpack_from(data)[0] == seq:
                    rtts.append(round((time.monotonic() - sent) * 1000, 2))
                    seen.add(data[_PROBE.size :].decode())
                    break
    return {"sent": 3, "echoed": len(rtts), "rtt_ms": rtts, "cn_saw": sorted(seen)}


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """A probe every 1/rate s for ``duration`` s. Sends refused by the MN's own stack (no
    route while its link changes) count as lost, they do not stop the stream."""
    s, seen = _udp(args), set()
    interval, start = 1.0 / args.rate, time.monotonic()
    deadline, next_send, seq = start + args.duration, start, 0
    echoes: list[tuple[int, float]] = []
    while (now := time.monotonic()) < deadline + 0.5:  # half a second for late echoes
        if next_send <= now < deadline:
            with contextlib.suppress(OSError):
                s.sendto(_PROBE.pack(seq, now) + PAD, (args.to, UDP_PORT))
            seq += 1
            next_send += interval
        timeout = max(0.0, min(next_send, deadline + 0.5) - time.monotonic())
        if select.select([s], [], [], timeout)[0]:
            while True:
                try:
                    data = s.recv(2048)
                except OSError:  # drained, or an ICMP error of the handover
                    break
                echoes.append((_PROBE.unpack_from(data)[0], time.monotonic() - start))
                seen.add(data[_PROBE.size :].decode())
    return {"sent": seq, "echoed": len(echoes), "cn_saw": sorted(seen), **gaps(echoes)}


def gaps(echoes: list[tuple[int, float]]) -> dict[str, Any]:
    """The interruption: the longest time between two consecutive echoes (in arrival
    order), when it began (s after the first probe), and the probes never echoed."""
    if len(echoes) < 2:
        return {"max_gap_ms": None, "gap_at_s": None, "lost": None}
    echoes = sorted(echoes, key=lambda e: e[1])
    i = max(range(1, len(echoes)), key=lambda k: echoes[k][1] - echoes[k - 1][1])
    seqs = {q for q, _ in echoes}
    return {
        "max_gap_ms": round(1000 * (echoes[i][1] - echoes[i - 1][1]), 1),
        "gap_at_s": round(echoes[i - 1][1], 3),
        "lost": max(seqs) - min(seqs) + 1 - len(seqs),
    }


def transfer(args: argparse.Namespace) -> dict[str, Any]:
    """``bytes`` pseudo-random bytes over one TCP connection from the home address, paced
    to ``rate`` bytes/s; then the CN's own account of what it got, and from whom."""
    rng, digest, sent = random.Random(1), hashlib.sha256(), 0
    sock = socket.create_connection((args.to, TCP_PORT), timeout=60, source_address=(args.bind, 0))
    start = time.monotonic()
    while sent < args.bytes:
        chunk = rng.randbytes(min(16384, args.bytes - sent))
        sock.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
        if args.rate and (ahead := sent / args.rate - (time.monotonic() - start)) > 0:
            time.sleep(ahead)
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while data := sock.recv(4096):
        reply += data
    cn = json.loads(reply) if reply else None
    return {
        "bytes": sent,
        "seconds": round(time.monotonic() - start, 2),
        "cn_bytes": cn["bytes"] if cn else None,
        "intact": bool(cn) and cn["sha256"] == digest.hexdigest(),
        "cn_saw": cn["peer"] if cn else None,
    }


# --- a MAG's transport link ---------------------------------------------------------------

UDP_DATA_PORT = 5437  # RFC 5844 §4: the IPv4-UDP tunnel's port (not the signalling's 5436)


def wire(args: argparse.Namespace) -> dict[str, Any]:
    """Every frame on ``iface`` until SIGTERM: the tunnel packets whose inner IPv4 source
    or destination is ``inner``, counted by their encapsulation, and the frames that show
    whether the link is IPsec-protected (see protection())."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((args.iface, 0))
    sock.settimeout(0.1)
    inner = socket.inet_aton(args.inner)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    print(json.dumps({"listening": True}), flush=True)
    counts: dict[str, int] = {}
    while not stop:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        kind = encapsulation(frame, inner) or protection(frame)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    return {"iface": args.iface, "packets": counts}


def encapsulation(frame: bytes, inner: bytes) -> str | None:
    """How an Ethernet frame carries an IPv4 packet from or to ``inner``: "ipv4-in-ipv6",
    "ipv4-in-ipv4", "ipv4-in-udp" (port 5437), or None for anything else."""
    ethertype = int.from_bytes(frame[12:14])
    if ethertype == 0x86DD and len(frame) >= 74 and frame[20] == 4:  # next header: IPv4
        kind, at = "ipv4-in-ipv6", 54
    elif ethertype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto, at = frame[23], 14 + ihl
        if proto == 4:
            kind = "ipv4-in-ipv4"
        elif proto == 17 and UDP_DATA_PORT in (
            int.from_bytes(frame[at : at + 2]),
            int.from_bytes(frame[at + 2 : at + 4]),
        ):
            kind, at = "ipv4-in-udp", at + 8
        else:
            return None
    else:
        return None
    packet = frame[at : at + 20]
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return kind if inner in (packet[12:16], packet[16:20]) else None


SIGNALLING_PORT, IKE_PORT, NAT_T_PORT = 5436, 500, 4500
MH = 135  # the Mobility Header's protocol number


def protection(frame: bytes) -> str | None:
    """What a frame is, as far as IPsec goes: "esp" (ESP, or ESP in UDP 4500), "ike"
    (UDP 500, or 4500 with the non-ESP marker), "signalling" (a Mobility Header, or UDP
    5436: PMIPv6 signalling in the clear), "icmpv6" (neighbour discovery and the like),
    "other" for any other IP packet, or None for what is not IP (ARP)."""
    ethertype = int.from_bytes(frame[12:14])
    if ethertype == 0x86DD and len(frame) >= 54:
        proto, at = frame[20], 54
        if proto == 0 and len(frame) >= 56:  # hop-by-hop options first (MLD reports)
            proto, at = frame[54], 54 + (frame[55] + 1) * 8
    elif ethertype == 0x0800 and len(frame) >= 34:
        proto, at = frame[23], 14 + (frame[14] & 0x0F) * 4
    else:
        return None
    if proto == 50:
        return "esp"
    if proto == MH:
        return "signalling"
    if proto == 58:
        return "icmpv6"
    if proto != 17 or len(frame) < at + 8:
        return "other"
    ports = {int.from_bytes(frame[at : at + 2]), int.from_bytes(frame[at + 2 : at + 4])}
    if SIGNALLING_PORT in ports:
        return "signalling"
    if NAT_T_PORT in ports:
        payload = frame[at + 8 :]  # a zero marker: IKE; 1 byte: a NAT-T keepalive
        return "ike" if len(payload) < 8 or payload[:4] == b"\0\0\0\0" else "esp"
    return "ike" if IKE_PORT in ports else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--v4", required=True)
    p.add_argument("--v6")
    for name in ("echo", "probe", "transfer"):
        p = sub.add_parser(name)
        p.add_argument("--to", required=True)
        p.add_argument("--bind", required=True)
    sub.choices["probe"].add_argument("--duration", type=float, required=True)
    sub.choices["probe"].add_argument("--rate", type=float, default=1000.0)
    sub.choices["transfer"].add_argument("--bytes", type=int, required=True)
    sub.choices["transfer"].add_argument("--rate", type=float, default=0.0)
    p = sub.add_parser("wire")
    p.add_argument("--iface", required=True)
    p.add_argument("--inner", default="0.0.0.0", help="count tunnel packets of this HoA")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args)
        return
    if args.cmd == "wire":
        print(json.dumps(wire(args)), flush=True)
        return
    try:
        result = {"echo": echo, "probe": probe, "transfer": transfer}[args.cmd](args)
    except OSError as exc:  # e.g. no connection: the report says so
        result = {"error": str(exc)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
