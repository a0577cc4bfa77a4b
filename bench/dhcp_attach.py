"""DHCP attach time at the MN: DISCOVER->ACK through the MAG (flows 2 and 3) beside a
direct Kea lease, in the same run.

    sudo .venv/bin/python bench/dhcp_attach.py --quick      # 20 attaches per flow, ~30 s
    sudo .venv/bin/python bench/dhcp_attach.py              # 100 attaches per flow
    sudo .venv/bin/python bench/dhcp_attach.py --reattach   # one MN per flow, RELEASE between

The namespace lab of ``tests/dhcp_lab.py`` (names carry this run's prefix; processes and
namespaces are removed in ``finally``): real ``pmip-agent`` daemons for the LMA and two
MAGs (only MAG1 is used), and one Kea (``kea-dhcp4``, memfile leases, not persisted) that
serves MAG1's relay and, on a link of its own, a directly connected client.

* **flow2-lma** (seed Figure 2): the MN on MAG1's access link, profile ``ipv4.mode: lma``.
  MAG1's DHCP server holds the DISCOVER, registers the MN with the LMA (PBU with IPv4 HoA
  0.0.0.0, PBA with the HoA), then OFFERs; REQUEST->ACK is answered locally. The
  PBU/PBA round trip and the LMA's commit before its PBA are inside the measured time;
  MAG1 commits, logs and sets up the tunnel after its reply (``MagService.flush``).
* **flow3-relay** (seed Figure 3): the MN on MAG1's access link, profile
  ``ipv4.mode: dhcp-server``. MAG1 relays to Kea (giaddr, option 82); Kea's OFFER goes on
  to the MN while MAG1 reports the address in a PBU (seed §3.1, "meanwhile"); REQUEST and
  ACK are relayed through Kea, and the ACK waits for the PBA if it has not come yet.
* **direct-kea** (baseline): an MN on a veth straight to Kea's namespace; Kea serves it
  from a subnet bound to that interface. No MAG, no relay, no LMA.

The client is this process: one UDP socket (port 68, SO_BINDTODEVICE eth0, broadcast)
per MN namespace, made there through setns. Messages are prebuilt with scapy before the
clock starts; the REQUEST is patched in place (requested address, server identifier)
from the OFFER, which is read with a few byte offsets, so the client adds microseconds.
Timed: DISCOVER sent -> OFFER received -> REQUEST sent -> ACK received
(``time.perf_counter``). No retransmission: a step without an answer within
``--timeout`` counts as a failure.

Default mode: every attach is a **new MN** (its own MAC and policy profile; the bench
adds them to the lab's profile table before the daemons start), so flow 2 is a first
registration with an LMA pool allocation and flow 3 a new Kea lease; direct-kea uses a
new client identifier each time too. ``--reattach``: one MN per flow attaches again and
again, sending a DHCP RELEASE after each ACK (the MAG de-registers; the LMA keeps the
de-registered binding for MinDelayBeforeBCEDelete = 10 s, so the next attach, well
within that, reuses it; Kea re-offers the released lease).

Attaches go round-robin over the three flows (the order rotates every round), with a
short pause between attaches, so all three see the same machine conditions. A few
warm-up rounds are not counted. p50/p99 are nearest-rank percentiles.

Writes build/bench/dhcp_attach.json (``--quick``: dhcp_attach.quick.json). Needs root.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for extra in (ROOT, ROOT / "tests", HERE):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import dhcp_lab  # noqa: E402
import yaml  # noqa: E402
from common import (  # noqa: E402
    arg_parser,
    finish_machine_info,
    machine_info,
    percentile,
    print_table,
    write_json,
)
from daemon_lab import Daemon  # noqa: E402
from frame_capture import MAGIC, Seen, Sniffer, options_of  # noqa: E402
from netns import Lab, in_netns, require_root_netns, wait_for  # noqa: E402
from scapy.layers.dhcp import BOOTP, DHCP  # noqa: E402

NAME = "dhcp_attach"
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)

FLOWS = ("flow2-lma", "flow3-relay", "direct-kea")
LMA_POOL = IPv4Network("10.10.0.0/24")  # the lab LMA's pool1
KEA_RELAY_NET = IPv4Network("10.50.0.0/24")
KEA_RELAY_POOL = "10.50.0.10 - 10.50.0.250"
DIRECT_NET = IPv4Network("192.0.2.0/24")
DIRECT_KEA_ADDR = "192.0.2.1"
DIRECT_POOL = "192.0.2.10 - 192.0.2.250"
EXPECTED_NET = {"flow2-lma": LMA_POOL, "flow3-relay": KEA_RELAY_NET, "direct-kea": DIRECT_NET}
GOAL_RATIO = 2.0  # issue 5: within 2x the direct lease


# --- the lab ----------------------------------------------------------------------------


def mn_name(flow: str, i: int) -> str:
    return f"{flow.split('-')[0]}-{i:03d}@bench.example.net"


def mac_of(flow: str, i: int) -> bytes:
    return bytes([0x02, 0x00, 0x00, 0x10 + FLOWS.index(flow), i >> 8, i & 0xFF])


class BenchLab(dhcp_lab.DhcpLab):
    """The test lab plus an MN link on MAG1, a direct MN link on Kea, and Kea serving it."""

    log_level = "info"
    kea_socket_type = "raw"

    def _daemon(self, ns: str, name: str, port: int, config: dict[str, Any]) -> Daemon:
        config.update(
            node_name=name,
            state_dir=str(self.tmp / f"{name}-state"),
            control_socket=str(self.tmp / f"{name}.sock"),
            log={"level": self.log_level, "format": "text"},
            metrics={"enabled": True, "address": "127.0.0.1", "port": port},
        )
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return Daemon(self.lab, ns, path, self.tmp / f"{name}.sock", self.tmp / f"{name}.log", port)

    def add_mn_links(self) -> tuple[str, str]:
        ns_mn = self.lab.ns("mnm")
        self.lab.link(ns_mn, "eth0", self.ns_mag["mag1"], "acc1")
        ns_direct = self.lab.ns("mnd")
        self.lab.link(ns_direct, "eth0", self.ns_kea, "d0")
        self.lab.addr(self.ns_kea, "d0", f"{DIRECT_KEA_ADDR}/24")
        return ns_mn, ns_direct

    def start_kea(self) -> None:
        subnets: list[dict[str, Any]] = []
        for i, (subnet, pool) in enumerate(self.kea_pools.items(), start=1):
            subnets.append(
                {
                    "id": i,
                    "subnet": subnet,
                    "pools": [{"pool": pool, "client-class": f"hint{i}"}],
                    "option-data": [{"name": "routers", "data": subnet.replace(".0/24", ".1")}],
                }
            )
        subnets.append(
            {
                "id": 100,
                "subnet": str(DIRECT_NET),
                "interface": "d0",
                "pools": [{"pool": DIRECT_POOL}],
                "option-data": [{"name": "routers", "data": DIRECT_KEA_ADDR}],
            }
        )
        classes = [
            {"name": f"hint{i}", "test": f"relay4[5].hex == {dhcp_lab.hint_of(s)}"}
            for i, s in enumerate(self.kea_pools, start=1)
        ]
        config = {
            "Dhcp4": {
                "interfaces-config": {
                    "interfaces": ["k0", "k1", "d0"],
                    "dhcp-socket-type": self.kea_socket_type,
                },
                "lease-database": {"type": "memfile", "persist": False},
                "valid-lifetime": 600,
                "client-classes": classes,
                "subnet4": subnets,
                "loggers": [
                    {
                        "name": "kea-dhcp4",
                        "severity": "INFO",
                        "output_options": [{"output": str(self.tmp / "kea.log")}],
                    }
                ],
            }
        }
        path = self.tmp / "kea.json"
        path.write_text(json.dumps(config, indent=1))
        run_dir = self.tmp / "kea-run"
        run_dir.mkdir(exist_ok=True)
        env = {**os.environ, "KEA_PIDFILE_DIR": str(run_dir), "KEA_LOCKFILE_DIR": str(run_dir)}
        self.kea_proc = self.lab.spawn(
            self.ns_kea,
            ["env", *_env_args(env), "kea-dhcp4", "-c", str(path)],
            self.tmp / "kea.out",
        )
        log = self.tmp / "kea.log"
        wait_for(
            lambda: log.exists() and "DHCP4_STARTED" in log.read_text(errors="replace"),
            15,
            what="Kea started",
        )


def _env_args(env: dict[str, str]) -> list[str]:
    return [f"{k}={env[k]}" for k in ("KEA_PIDFILE_DIR", "KEA_LOCKFILE_DIR")]


def add_profiles(n: int) -> None:
    """Policy profiles for the bench MNs, in the lab's table (before the configs are
    written): n MNs in lma mode (pool1) and n in dhcp-server mode (10.50.0.0/24)."""
    for i in range(n):
        dhcp_lab.MNS[mn_name("flow2-lma", i)] = (
            mac_of("flow2-lma", i).hex(":"),
            {"mode": "lma", "pool": "pool1"},
        )
        dhcp_lab.MNS[mn_name("flow3-relay", i)] = (
            mac_of("flow3-relay", i).hex(":"),
            {"mode": "dhcp-server", "prefix": str(KEA_RELAY_NET), "default_router": "10.50.0.1"},
        )


# --- the client -------------------------------------------------------------------------


def option_offset(data: bytes, code: int) -> int:
    """Where option ``code``'s value starts in ``data``."""
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if data[i] == code:
            return i + 2
        i += 2 + data[i + 1]
    raise KeyError(code)


@dataclass
class Attach:
    flow: str
    index: int
    ok: bool
    error: str = ""
    offer_ms: float = math.nan  # DISCOVER sent -> OFFER received
    ack_ms: float = math.nan  # DISCOVER sent -> ACK received: the figure
    request_ack_ms: float = math.nan  # REQUEST sent -> ACK received
    address: str = ""
    lease_s: int = 0
    xid: int = 0
    sent_at: float = math.nan  # time.perf_counter() at the DISCOVER's send
    done_at: float = math.nan  # ... and at the ACK's receipt (bench/attach_tails.py)


class MnClient:
    def __init__(self, ns: str) -> None:
        with in_netns(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, b"eth0")
            sock.bind(("0.0.0.0", 68))
        self.sock = sock
        self.server_id = bytes(4)

    def close(self) -> None:
        self.sock.close()

    def _messages(self, mac: bytes, xid: int) -> tuple[bytes, bytearray, int, int]:
        common: list[Any] = [("client_id", b"\x01" + mac), ("param_req_list", [1, 3, 6, 51, 54])]
        header = {"op": 1, "xid": xid, "flags": 0x8000, "chaddr": mac + bytes(10)}
        discover = BOOTP(**header) / DHCP(options=[("message-type", "discover"), *common, "end"])
        request = BOOTP(**header) / DHCP(
            options=[
                ("message-type", "request"),
                ("requested_addr", "0.0.0.0"),
                ("server_id", "0.0.0.0"),
                *common,
                "end",
            ]
        )
        req = bytearray(bytes(request))
        return bytes(discover), req, option_offset(req, 50), option_offset(req, 54)

    def _wait(self, xid: int, kinds: tuple[int, ...], deadline: float) -> bytes | None:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return None
            if (
                len(data) >= 240
                and data[0] == 2
                and int.from_bytes(data[4:8], "big") == xid
                and data[236:240] == MAGIC
            ):
                kind = options_of(data).get(53, b"\0")[0]
                if kind in kinds:
                    return data

    def attach(self, flow: str, index: int, mac: bytes, timeout: float) -> Attach:
        xid = random.getrandbits(32)
        discover, request, off_req, off_sid = self._messages(mac, xid)
        result = Attach(flow, index, ok=False, xid=xid)
        t0 = time.perf_counter()
        self.sock.sendto(discover, ("255.255.255.255", 67))
        offer = self._wait(xid, (2,), t0 + timeout)
        t1 = time.perf_counter()
        if offer is None:
            result.error = "no OFFER"
            return result
        request[off_req : off_req + 4] = offer[16:20]
        request[off_sid : off_sid + 4] = options_of(offer).get(54, bytes(4))
        t2 = time.perf_counter()
        self.sock.sendto(request, ("255.255.255.255", 67))
        ack = self._wait(xid, (5, 6), t2 + timeout)
        t3 = time.perf_counter()
        result.offer_ms = (t1 - t0) * 1e3
        if ack is None:
            result.error = "no ACK"
            return result
        if options_of(ack)[53][0] != 5:
            result.error = "NAK"
            return result
        result.ok = True
        result.sent_at, result.done_at = t0, t3
        result.ack_ms = (t3 - t0) * 1e3
        result.request_ack_ms = (t3 - t2) * 1e3
        result.address = str(IPv4Address(ack[16:20]))
        result.lease_s = int.from_bytes(options_of(ack).get(51, bytes(4)), "big")
        self.server_id = options_of(ack).get(54, bytes(4))
        return result

    def release(self, mac: bytes, address: str) -> None:
        """RFC 2131 §4.4.6, broadcast (the MN has not configured the address)."""
        msg = BOOTP(
            op=1,
            xid=random.getrandbits(32),
            ciaddr=address,
            chaddr=mac + bytes(10),
        ) / DHCP(
            options=[
                ("message-type", "release"),
                ("server_id", str(IPv4Address(self.server_id))),
                ("client_id", b"\x01" + mac),
                "end",
            ]
        )
        self.sock.sendto(bytes(msg), ("255.255.255.255", 67))


# --- where the time goes: kernel timestamps on the MAG's (and Kea's) interfaces ----------

# Segments per flow: (label, (iface, out, kind) from, (iface, out, kind) to). DHCP kinds
# match the attach's xid; PBU/PBA are the ones seen during the attach.
Segments = dict[str, list[tuple[str, tuple[str, bool, str], tuple[str, bool, str]]]]
SEGMENTS: Segments = {
    "flow2-lma": [
        ("MAG: DISCOVER in -> PBU out", ("acc1", False, "DISCOVER"), ("tr0", True, "PBU")),
        ("LMA: PBU out -> PBA in", ("tr0", True, "PBU"), ("tr0", False, "PBA")),
        ("MAG: PBA in -> OFFER out", ("tr0", False, "PBA"), ("acc1", True, "OFFER")),
        ("MN: OFFER out -> REQUEST in", ("acc1", True, "OFFER"), ("acc1", False, "REQUEST")),
        ("MAG: REQUEST in -> ACK out", ("acc1", False, "REQUEST"), ("acc1", True, "ACK")),
        ("MAG view: DISCOVER in -> ACK out", ("acc1", False, "DISCOVER"), ("acc1", True, "ACK")),
    ],
    "flow3-relay": [
        ("MAG: DISCOVER in -> relayed", ("acc1", False, "DISCOVER"), ("k0", True, "DISCOVER")),
        ("Kea: DISCOVER -> OFFER", ("k0", True, "DISCOVER"), ("k0", False, "OFFER")),
        ("MAG: OFFER in -> PBU out", ("k0", False, "OFFER"), ("tr0", True, "PBU")),
        ("MAG: OFFER in -> OFFER out", ("k0", False, "OFFER"), ("acc1", True, "OFFER")),
        ("LMA: PBU out -> PBA in", ("tr0", True, "PBU"), ("tr0", False, "PBA")),
        ("MN: OFFER out -> REQUEST in", ("acc1", True, "OFFER"), ("acc1", False, "REQUEST")),
        ("MAG: REQUEST in -> relayed", ("acc1", False, "REQUEST"), ("k0", True, "REQUEST")),
        ("Kea: REQUEST -> ACK", ("k0", True, "REQUEST"), ("k0", False, "ACK")),
        ("MAG: ACK in -> ACK out (waits for the PBA)", ("k0", False, "ACK"), ("acc1", True, "ACK")),
        ("PBA in -> ACK in (<0: PBA late)", ("tr0", False, "PBA"), ("k0", False, "ACK")),
        ("MAG view: DISCOVER in -> ACK out", ("acc1", False, "DISCOVER"), ("acc1", True, "ACK")),
    ],
    "direct-kea": [
        ("Kea: DISCOVER in -> OFFER out", ("d0", False, "DISCOVER"), ("d0", True, "OFFER")),
        ("MN: OFFER out -> REQUEST in", ("d0", True, "OFFER"), ("d0", False, "REQUEST")),
        ("Kea: REQUEST in -> ACK out", ("d0", False, "REQUEST"), ("d0", True, "ACK")),
        ("Kea view: DISCOVER in -> ACK out", ("d0", False, "DISCOVER"), ("d0", True, "ACK")),
    ],
}


def segments(
    flow: str, xid: int, seen: list[Seen], table: Segments | None = None
) -> dict[str, float] | None:
    """Milliseconds per segment for one attach, or None if a packet is missing.
    ``table``: the segments by flow (SEGMENTS unless given)."""
    first: dict[tuple[str, bool, str], float] = {}
    for p in seen:
        if p.kind in ("PBU", "PBA") or p.key == xid:
            first.setdefault((p.ifname, p.out, p.kind), p.ts)
    out = {}
    for label, a, b in (table or SEGMENTS)[flow]:
        if a not in first or b not in first:
            return None
        out[label] = (first[b] - first[a]) * 1e3
    return out


# --- CPU accounting: who was busy during the measured phase ------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _system_ticks() -> tuple[int, int, int]:
    """Busy (all but idle, iowait and steal), steal, and total, from /proc/stat's
    first line: its guest times are in user and nice already."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4] - v[7], v[7], sum(v)


def _tasks_of(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


class CpuMeter:
    """CPU use of the lab's processes and of the whole machine between start and stop, in %
    of one core (200 % is both cores of a two-core machine). ``others`` is the machine
    minus the lab: other jobs competing for the cores during the measurement. ``steal``
    is the time the hypervisor ran something else on this machine's virtual CPUs, which
    no task here sees: a lab task then stands still, though the scheduler shows it running."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.t = time.perf_counter()
        self.ticks = {k: _proc_ticks(p) for k, p in pids.items()}
        self.sys = _system_ticks()

    def stop(self) -> dict[str, float]:
        dt = time.perf_counter() - self.t
        out = {
            k: round(100 * (_proc_ticks(p) - self.ticks[k]) / _TICK / dt, 1)
            for k, p in self.pids.items()
        }
        busy, steal, total = _system_ticks()
        d_total = total - self.sys[2]
        scale = 100 * (os.cpu_count() or 1) / d_total if d_total else 0.0
        machine = round((busy - self.sys[0]) * scale, 1)
        out["machine"] = machine
        out["others"] = round(machine - sum(out[k] for k in self.pids), 1)
        out["steal"] = round((steal - self.sys[1]) * scale, 1)
        return out


# --- statistics -------------------------------------------------------------------------


def summary(samples: list[Attach]) -> dict[str, Any]:
    ok = [a for a in samples if a.ok]
    ack = [a.ack_ms for a in ok]
    offer = [a.offer_ms for a in ok]
    req = [a.request_ack_ms for a in ok]
    return {
        "attaches": len(samples),
        "ok": len(ok),
        "failures": {
            e: sum(1 for a in samples if a.error == e)
            for e in {a.error for a in samples if a.error}
        },
        "ack_ms": {
            "p50": percentile(ack, 50),
            "p90": percentile(ack, 90),
            "p99": percentile(ack, 99),
            "min": min(ack, default=math.nan),
            "max": max(ack, default=math.nan),
            "mean": sum(ack) / len(ack) if ack else math.nan,
        },
        "offer_ms": {"p50": percentile(offer, 50), "p99": percentile(offer, 99)},
        "request_ack_ms": {"p50": percentile(req, 50), "p99": percentile(req, 99)},
    }


# --- the run ----------------------------------------------------------------------------


class Runner:
    def __init__(self, args: Any, env: BenchLab, clients: dict[str, MnClient]) -> None:
        self.args = args
        self.env = env
        self.client_of = clients
        self.next_mn = 0  # new-mn mode: the next unused MN index (the same for every flow)

    def rounds(
        self, count: int, sniffers: list[Sniffer] | None = None
    ) -> tuple[dict[str, list[Attach]], dict[str, list[dict[str, float]]]]:
        """``count`` round-robin rounds over the flows; with sniffers, also the segments
        of each attach from the frames seen during it."""
        args = self.args
        samples: dict[str, list[Attach]] = {f: [] for f in FLOWS}
        split: dict[str, list[dict[str, float]]] = {f: [] for f in FLOWS}
        order = list(FLOWS)
        for rnd in range(count):
            i = 0 if args.reattach else self.next_mn
            self.next_mn += 1
            for flow in order:
                mac = mac_of(flow, i)
                for sniffer in sniffers or ():
                    sniffer.drain()  # whatever came before (a RELEASE, say)
                got = self.client_of[flow].attach(flow, rnd, mac, args.timeout)
                if got.ok and IPv4Address(got.address) not in EXPECTED_NET[flow]:
                    got.ok = False
                    got.error = f"address {got.address} outside {EXPECTED_NET[flow]}"
                samples[flow].append(got)
                if sniffers and got.ok:
                    seen = sorted(p for s in sniffers for p in s.drain())
                    seg = segments(flow, got.xid, seen)
                    if seg is not None:
                        split[flow].append(seg)
                if args.reattach and got.ok:
                    self.client_of[flow].release(mac, got.address)
                time.sleep(args.pause)
            order = order[1:] + order[:1]
            if (rnd + 1) % 20 == 0:
                gc.collect()
                print(f"  round {rnd + 1}/{count}")
        return samples, split


def run(args: Any) -> dict[str, Any]:
    require_root_netns()
    n = args.n if args.n is not None else (20 if args.quick else 100)
    warmup, breakdown = args.warmup, args.breakdown
    if warmup + n + breakdown > 240:
        raise SystemExit("at most 240 attaches per flow in all: the pools are /24s")
    saved_mns = dict(dhcp_lab.MNS)
    add_profiles(1 if args.reattach else warmup + n + breakdown)
    tmp = Path(tempfile.mkdtemp(prefix="pmip-dhcp-attach-"))
    lab = Lab("da")
    closing: list[MnClient | Sniffer] = []
    try:
        env = BenchLab(lab, tmp)
        env.log_level = args.log_level
        env.kea_socket_type = args.kea_socket
        env.kernel_relay = args.kernel_relay
        env.build(kea_pools={str(KEA_RELAY_NET): KEA_RELAY_POOL})
        ns_mn, ns_direct = env.add_mn_links()
        env.start()
        mag_client, direct_client = MnClient(ns_mn), MnClient(ns_direct)
        closing += [mag_client, direct_client]
        clients = {"flow2-lma": mag_client, "flow3-relay": mag_client, "direct-kea": direct_client}
        runner = Runner(args, env, clients)
        print(
            f"lab up (namespaces {lab.prefix}-*, work dir {tmp}); "
            f"{warmup} warm-up + {n} measured attaches per flow"
            f"{f' + {breakdown} with packet capture' if breakdown else ''}, "
            f"{'one MN per flow, RELEASE between' if args.reattach else 'a new MN each'}"
        )
        gc.collect()
        gc.disable()
        warm, _ = runner.rounds(warmup)
        for flow, got in warm.items():
            for a in got:
                if not a.ok:
                    print(f"  warm-up {flow} #{a.index}: {a.error}")
        started = time.time()
        meter = CpuMeter(
            bench=os.getpid(),
            lma=env.lma.proc.pid,  # type: ignore[union-attr]
            mag1=env.mags["mag1"].proc.pid,  # type: ignore[union-attr]
            mag2=env.mags["mag2"].proc.pid,  # type: ignore[union-attr]
            kea=env.kea_proc.pid,
        )
        samples, _ = runner.rounds(n)
        cpu = meter.stop()
        lab_tasks = {name: _tasks_of(pid) for name, pid in meter.pids.items()}
        elapsed = time.time() - started
        split: dict[str, list[dict[str, float]]] = {f: [] for f in FLOWS}
        if breakdown:
            sniffers = [
                Sniffer(env.ns_mag["mag1"], ("acc1", "tr0", "k0")),
                Sniffer(env.ns_kea, ("d0",)),
            ]
            closing += sniffers
            _, split = runner.rounds(breakdown, sniffers)
        gc.enable()
        bindings = env.lma.ctl_json("bindings")
        bench_bindings = [b for b in bindings if b["mn_id"].endswith("@bench.example.net")]
        sources = {b["ipv4_source"] for b in bench_bindings}
        lma_check = {
            "active": sum(1 for b in bench_bindings if b["state"] == "active"),
            "by_source": {
                s: sum(1 for b in bench_bindings if b["ipv4_source"] == s) for s in sources
            },
        }
        kea_log = (tmp / "kea.log").read_text(errors="replace")
        kernel = env.mags["mag1"].ctl_json("status").get("dhcp_kernel_relay")
        if args.kernel_relay and not (kernel and kernel["active"]):
            raise SystemExit(f"--kernel-relay: MAG1's kernel relay is off; see {tmp}/mag1.log")
        return {
            "kernel_relay": kernel,
            "n": n,
            "warmup": warmup,
            "breakdown_attaches": breakdown,
            "mode": "reattach" if args.reattach else "new-mn",
            "pause_s": args.pause,
            "timeout_s": args.timeout,
            "log_level": args.log_level,
            "kea_socket_type": args.kea_socket,
            "measured_phase_s": elapsed,
            "cpu_pct_during_measured_phase": cpu,
            "lab_tasks": lab_tasks,  # thread ids of each lab process (bench: this one)
            "lma_bindings_at_end": lma_check,
            "kea_lease_allocs": kea_log.count("DHCP4_LEASE_ALLOC"),
            "results": {f: summary(samples[f]) for f in FLOWS},
            "breakdown_ms": {
                f: {
                    label: {
                        "p50": percentile([x[label] for x in split[f]], 50),
                        "p90": percentile([x[label] for x in split[f]], 90),
                    }
                    for label, _a, _b in SEGMENTS[f]
                }
                | {"attaches": len(split[f])}
                for f in FLOWS
            },
            "samples": {f: [asdict(a) for a in samples[f]] for f in FLOWS},
            "breakdown_per_attach_ms": split,  # the tails: which segment took the time
        }
    finally:
        gc.enable()
        for c in closing:
            c.close()
        lab.close()
        dhcp_lab.MNS.clear()
        dhcp_lab.MNS.update(saved_mns)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(data: dict[str, Any]) -> None:
    res = data["results"]
    base = res["direct-kea"]["ack_ms"]
    rows = []
    for flow in FLOWS:
        r = res[flow]
        a = r["ack_ms"]
        rows.append(
            (
                flow,
                f"{r['ok']}/{r['attaches']}",
                f"{a['p50']:.2f}",
                f"{a['p99']:.2f}",
                f"{a['min']:.2f}",
                f"{a['max']:.2f}",
                f"{r['offer_ms']['p50']:.2f}",
                f"{r['request_ack_ms']['p50']:.2f}",
                f"{a['p50'] / base['p50']:.2f}x",
                f"{a['p99'] / base['p99']:.2f}x",
            )
        )
    print()
    print_table(
        rows,
        (
            "flow",
            "ok",
            "p50 ms",
            "p99 ms",
            "min",
            "max",
            "->OFFER p50",
            "REQ->ACK p50",
            "p50/direct",
            "p99/direct",
        ),
    )
    verdict = {}
    for flow in ("flow2-lma", "flow3-relay"):
        a = res[flow]["ack_ms"]
        verdict[flow] = {
            "p50_ratio": a["p50"] / base["p50"],
            "p99_ratio": a["p99"] / base["p99"],
            "within_goal": a["p50"] / base["p50"] <= GOAL_RATIO
            and a["p99"] / base["p99"] <= GOAL_RATIO,
        }
    data["goal"] = {"max_ratio_to_direct": GOAL_RATIO, **verdict}
    print()
    for flow, v in verdict.items():
        print(
            f"{flow}: p50 {v['p50_ratio']:.2f}x, p99 {v['p99_ratio']:.2f}x the direct Kea lease"
            f" -> {'within' if v['within_goal'] else 'NOT within'} the {GOAL_RATIO:g}x goal"
        )
    print(f"LMA bindings of bench MNs at the end: {data['lma_bindings_at_end']}")
    if data.get("kernel_relay"):
        print(f"MAG1's kernel relay at the end: {data['kernel_relay']}")
    machine = data.get("machine", {})
    if "loadavg_at_start" in machine:
        print(
            "load average (1, 5, 15 min) at start "
            + ", ".join(f"{x:.2f}" for x in machine["loadavg_at_start"])
            + ", at end "
            + ", ".join(f"{x:.2f}" for x in machine["loadavg_at_end"])
        )
    cpu = data["cpu_pct_during_measured_phase"]
    # others: a job on a core; steal: a few ms at a time, enough to reach the p99s
    limits = (("other jobs", cpu["others"], 50), ("the hypervisor", cpu["steal"], 2))
    held_by = [who for who, pct, limit in limits if pct > limit]
    print(
        "CPU during the measured phase, % of one core: "
        + ", ".join(f"{k} {v}" for k, v in cpu.items())
        + (f"  <- {' and '.join(held_by)} held the cores: expect inflated tails" if held_by else "")
    )
    if data["breakdown_attaches"]:
        print(
            f"\nWhere the time goes ({data['breakdown_attaches']} more attaches per flow, "
            "kernel timestamps of the frames on MAG1's acc1/tr0/k0 and Kea's d0):"
        )
        rows = []
        for flow in FLOWS:
            b = data["breakdown_ms"][flow]
            for label, _a, _b in SEGMENTS[flow]:
                rows.append((flow, label, f"{b[label]['p50']:.2f}", f"{b[label]['p90']:.2f}"))
        print_table(rows, ("flow", "segment", "p50 ms", "p90 ms"), left=2)


def make_parser(doc: str | None = __doc__, breakdown: int = 20) -> argparse.ArgumentParser:
    parser = arg_parser(doc)
    parser.add_argument("--n", type=int, default=None, help="measured attaches per flow")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted rounds first (3)")
    parser.add_argument(
        "--reattach",
        action="store_true",
        help="one MN per flow, DHCP RELEASE between attaches (default: a new MN each)",
    )
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between attaches")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per DHCP step")
    parser.add_argument("--log-level", default="info", help="the daemons' log level (info)")
    parser.add_argument(
        "--kea-socket", default="raw", choices=("raw", "udp"), help="Kea dhcp-socket-type"
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=breakdown,
        help=f"extra attaches per flow with packet capture, for the per-segment table "
        f"({breakdown})",
    )
    parser.add_argument(
        "--kernel-relay",
        action="store_true",
        help="the MAGs relay flow 3's common messages in the kernel (mag.dhcp.kernel_relay)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    return parser


def main() -> int:
    args = make_parser().parse_args()
    info = machine_info()
    data = run(args)
    data["machine"] = finish_machine_info(info)
    report(data)
    write_json(NAME, data, quick=args.quick, tag=args.tag)
    failed = sum(r["attaches"] - r["ok"] for r in data["results"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
