"""The real LMA daemon under load: PBU/s, PBA latency, and how both hold up with 1M bindings.

    sudo .venv/bin/python bench/lma_daemon_load.py --quick     # under a minute
    sudo .venv/bin/python bench/lma_daemon_load.py             # the full run, ~15-20 min
    sudo .venv/bin/python bench/lma_daemon_load.py --profile   # also a cProfile of the daemon

Two network namespaces with a veth between them (names carry this run's prefix, deleted in
``finally``): the LMA side runs ``pmip-agent run --config ...`` (persistence on: SQLite
under a temporary state_dir on local disk), the generator side owns N Proxy-CoA addresses
(one per simulated MAG, added with ``nodad``) and sends PBUs from one raw IPv6 socket of
protocol 135 (IPV6_CHECKSUM=4), choosing the MAG address per packet with IPV6_PKTINFO.

* Baseline, same run: the same generator against a raw MH echo (``--echo-server``, which
  uses the daemon's own ``MhSocket``: batch receive, sendto back), same windows.
* Load: N MAGs x M MNs, IPv4-only MNs in ipv4 mode lma (16 pools of /12 in 10.0.0.0/8;
  a dual-stack variant with an HNP too). Each MN's PBU is encoded once with
  ``pmip_agent.wire``; at send time only the sequence number and the Timestamp option
  are patched in (``time.time()`` when the packet leaves, so always inside the LMA's
  300 ms window: both namespaces share one kernel clock). The daemon keeps its default
  ``timestamps: true`` (the production setting) rather than sequence-number replay
  protection. PBAs are matched by MN identifier and sequence number; one PBU per MN is
  outstanding at a time, at most ``window`` in all. Measured: a registration pass (every
  MN once, "created"), then refreshes at maximum rate for each window, then a paced
  10k PBU/s run (open loop, at most 512 outstanding).
* Scale: K bindings (1k, 100k, 1M) are written into ``<state_dir>/<node>.lma.sqlite`` with
  ``LmaStore.apply`` before the daemon starts, with a config whose mobile_nodes_file lists
  those K MNs (``--profiles yaml``: its mobile_nodes list). The start is timed in phases
  seen from outside: spawn -> the store file is open (config loaded and validated) -> the
  raw MH socket exists (store loaded, cache restored, data plane fed) -> ``pmipctl
  status`` answers with bindings=K. Then RSS (VmRSS of the daemon's python process), a
  wait until the daemon is idle (the data plane's kernel routes go out in the
  background), then the PBU rate of 1000 of those MNs (spread over the cache) refreshing
  at maximum rate.

Writes build/bench/lma_daemon_load.json and prints a table. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import pstats
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SNAPSHOT_ENV = "PMIP_BENCH_SNAPSHOT"  # "<commit>:<dir>" once re-executed on a snapshot


def _snapshot_reexec() -> None:
    """``--snapshot [REV]``: run everything (this process, the daemon, the echo server) on
    pmip_agent/ as committed at REV (default HEAD), exported with ``git archive`` to a
    temporary directory put first on PYTHONPATH. Edits to the working tree during a long
    run then cannot change the code under test half-way."""
    argv = sys.argv[1:]
    rev = None
    for k, a in enumerate(argv):
        if a == "--snapshot":
            nxt = argv[k + 1] if k + 1 < len(argv) else "--"
            rev = "HEAD" if nxt.startswith("-") else nxt
        elif a.startswith("--snapshot="):
            rev = a.split("=", 1)[1]
    if rev is None or os.environ.get(SNAPSHOT_ENV) or "-h" in argv or "--help" in argv:
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = Path(tempfile.mkdtemp(prefix="pmip-snapshot-"))
    tar = subprocess.run(
        ["git", "archive", commit, "pmip_agent"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(dest), env.get("PYTHONPATH")]))
    env[SNAPSHOT_ENV] = f"{commit}:{dest}"
    print(f"pmip_agent from {commit[:12]} (snapshot in {dest})", flush=True)
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)


if __name__ == "__main__":
    _snapshot_reexec()
for extra in (ROOT, ROOT / "tests", HERE):
    if extra == ROOT and os.environ.get(SNAPSHOT_ENV):
        continue  # the snapshot on PYTHONPATH provides pmip_agent
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from common import OUT_DIR, machine_info, print_table  # noqa: E402
from netns import Lab, in_netns  # noqa: E402

import pmip_agent  # noqa: E402
from pmip_agent.control.pmipctl import request as ctl_request  # noqa: E402
from pmip_agent.core.events import BindingUp, BindingView, Encapsulation, Peer  # noqa: E402
from pmip_agent.net.mh_socket import IPV6_CHECKSUM, MhSocket  # noqa: E402
from pmip_agent.store import LmaStore  # noqa: E402
from pmip_agent.wire import (  # noqa: E402
    AccessTechTypeOption,
    BindingUpdate,
    BuFlags,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4HoaRequest,
    MnIdentifier,
    Option,
    Timestamp,
    encode,
)

VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
AGENT = str(VENV_BIN / "pmip-agent")
NODE = "lmab"
LMAA = "2001:db8:f::1"
GEN_ADDR = "2001:db8:f::2"
N_POOLS = 16  # 10.0.0.0/8 as 16 pools of /12: 16 M addresses, one byte each in the daemon
POOLS = [IPv4Network(f"10.{16 * p}.0.0/12") for p in range(N_POOLS)]
HNP_POOL = "2001:db8:100::/40"  # /64s: 2**24 prefixes
LIFETIME_UNITS = 900  # 3600 s
TS_MARK = 0x0102_0304_0506_0708  # found in the encoded template to locate the option
IPPROTO_MH = 135
GOALS = {
    "pbu_per_s_min": 30_000,
    "p99_ms_at_10k_max": 10.0,
    "rss_bytes_at_1m_max": 1 << 30,
    "restart_s_at_1m_max": 30.0,
}


def mn_id(i: int) -> bytes:
    return b"mn%07d@bench.example.net" % i


def mag_addr(m: int) -> str:
    return f"2001:db8:f::a:{m:x}"


def pool_of(i: int) -> int:
    return i % N_POOLS


# --- namespaces -----------------------------------------------------------------------


def build_lab(n_mags: int) -> tuple[Lab, str, str]:
    lab = Lab("ld")
    ns_lma, ns_gen = lab.ns("lma"), lab.ns("gen")
    lab.link(ns_gen, "veth0", ns_lma, "veth0")
    lab.addr(ns_lma, "veth0", f"{LMAA}/64")
    lab.addr(ns_gen, "veth0", f"{GEN_ADDR}/64")
    for m in range(n_mags):
        lab.addr(ns_gen, "veth0", f"{mag_addr(m)}/64")
    return lab, ns_lma, ns_gen


# --- the echo server (runs in the LMA namespace, in a process of its own) ---------------


def echo_server(addr: str) -> None:
    sock = MhSocket(IPv6Address(addr))
    print("ready", flush=True)
    fd = sock.fileno()
    while True:
        select.select([fd], [], [])
        for data, src in sock.recv_batch():
            sock.send(data, src)


# --- CPU accounting: who was busy during a measured run ----------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _system_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class CpuMeter:
    """CPU use of named processes and of the whole machine between start and stop, in %
    of one core (the machine has os.cpu_count() cores: 200 % is everything on two)."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.t = time.perf_counter()
        self.ticks = {k: _proc_ticks(p) for k, p in pids.items()}
        self.sys = _system_ticks()

    def stop(self) -> dict[str, float]:
        dt = time.perf_counter() - self.t
        out = {
            f"{k}_cpu_pct": round(100 * (_proc_ticks(p) - self.ticks[k]) / _TICK / dt, 1)
            for k, p in self.pids.items()
        }
        busy, total = _system_ticks()
        ncpu = os.cpu_count() or 1
        d_busy, d_total = busy - self.sys[0], total - self.sys[1]
        out["machine_cpu_pct"] = round(100 * ncpu * d_busy / d_total, 1) if d_total else 0.0
        out["others_cpu_pct"] = round(
            out["machine_cpu_pct"] - sum(v for k, v in out.items() if k != "machine_cpu_pct"), 1
        )
        return out


# --- the load generator -----------------------------------------------------------------


class Result:
    """What one generator run saw."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = 0
        self.rejected = 0
        self.lost = 0
        self.unmatched = 0
        self.elapsed = 0.0
        self.lat = array("d")  # seconds, send -> PBA received
        self.lat_sched = array("d")  # paced runs: scheduled send time -> PBA received
        self.per_second: list[int] = []
        self.statuses: dict[int, int] = {}

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.lat)
        out: dict[str, Any] = {
            "sent": self.sent,
            "completed": self.done,
            "rejected": self.rejected,
            "lost": self.lost,
            "unmatched": self.unmatched,
            "elapsed_s": round(self.elapsed, 3),
            "per_s": round(self.done / self.elapsed) if self.elapsed else 0,
            "p50_ms": _pct(lat, 0.50),
            "p99_ms": _pct(lat, 0.99),
            "p999_ms": _pct(lat, 0.999),
            "max_ms": round(lat[-1] * 1e3, 3) if lat else None,
            "per_second": self.per_second,
        }
        if self.lat_sched:
            s = sorted(self.lat_sched)
            out["from_schedule_p50_ms"] = _pct(s, 0.50)
            out["from_schedule_p99_ms"] = _pct(s, 0.99)
        if self.statuses:
            out["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        return out


def _pct(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[k] * 1e3, 3)


class LoadGen:
    """Pre-encoded PBUs for a set of MNs, sent from one raw socket in the generator's
    namespace; each MN's Proxy-CoA is chosen per packet (IPV6_PKTINFO)."""

    def __init__(
        self,
        ns: str,
        mn_indices: Sequence[int],
        n_mags: int,
        *,
        dual_stack: bool,
        timestamps: bool,
    ) -> None:
        with in_netns(ns):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 4)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock = sock
        self.dest = (LMAA, 0)
        cmsgs = [
            [
                (
                    socket.IPPROTO_IPV6,
                    socket.IPV6_PKTINFO,
                    IPv6Address(mag_addr(m)).packed + b"\0" * 4,
                )
            ]
            for m in range(n_mags)
        ]
        self.bufs: list[bytearray] = []
        self.cmsgs: list[list[tuple[int, int, bytes]]] = []
        self.index: dict[bytes, int] = {}
        self.ts_off = 0
        for j, i in enumerate(mn_indices):
            ident = mn_id(i)
            opts: list[Option] = [MnIdentifier(ident)]
            if timestamps:
                opts.append(Timestamp(TS_MARK))
            opts += [HandoffIndicatorOption(1), AccessTechTypeOption(3)]
            if dual_stack:
                opts.append(HomeNetworkPrefix(IPv6Address(0), 0))
            opts.append(Ipv4HoaRequest(IPv4Address(0)))
            data = encode(
                BindingUpdate(0, LIFETIME_UNITS, BuFlags.A | BuFlags.P, options=tuple(opts))
            )
            if timestamps:
                self.ts_off = data.index(TS_MARK.to_bytes(8, "big"))
            assert data[12] == 8 and data[15 : 14 + data[13]] == ident  # MN-ID first
            self.bufs.append(bytearray(data))
            self.cmsgs.append(cmsgs[i % n_mags])
            self.index[ident] = j
        self.n = len(self.bufs)
        self.seq = [0] * self.n
        self.sent_at = [0.0] * self.n  # 0: nothing outstanding

    def close(self) -> None:
        self.sock.close()

    def _send(self, j: int) -> float:
        buf = self.bufs[j]
        seq = (self.seq[j] + 1) & 0xFFFF
        self.seq[j] = seq
        buf[6] = seq >> 8
        buf[7] = seq & 0xFF
        if self.ts_off:
            struct.pack_into("!Q", buf, self.ts_off, int(time.time() * 65536))
        self.sock.sendmsg([buf], self.cmsgs[j], 0, self.dest)
        t = time.perf_counter()
        self.sent_at[j] = t
        return t

    def _drain(self, res: Result, ready: deque[int], record: bool) -> int:
        """Read every queued reply; frees their MNs. Returns how many completed."""
        recv = self.sock.recv
        index, sent_at, seqs = self.index, self.sent_at, self.seq
        lat_append = res.lat.append
        done = 0
        while True:
            try:
                data = recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            now = time.perf_counter()
            if len(data) < 16 or data[12] != 8:
                res.unmatched += 1
                continue
            j = index.get(data[15 : 14 + data[13]])
            if data[2] == 6:  # Binding Acknowledgement
                status, seq = data[6], data[8] << 8 | data[9]
            else:  # the echo server sends our Binding Update back
                status, seq = 0, data[6] << 8 | data[7]
            if j is None or not sent_at[j] or seq != seqs[j]:
                res.unmatched += 1
                continue
            sent_at_j = sent_at[j]
            sent_at[j] = 0.0
            ready.append(j)
            done += 1
            if not record:
                continue
            lat_append(now - sent_at_j)
            if status >= 128:
                res.rejected += 1
                res.statuses[status] = res.statuses.get(status, 0) + 1
        return done

    def _expire(self, res: Result, ready: deque[int], older_than: float) -> None:
        limit = time.perf_counter() - older_than
        for j, t in enumerate(self.sent_at):
            if t and t < limit:
                self.sent_at[j] = 0.0
                res.lost += 1
                ready.append(j)

    def _settle(self, res: Result, ready: deque[int], wait: float = 1.0) -> None:
        """Collect what is still outstanding (not counted), so the next run starts clean."""
        deadline = time.perf_counter() + wait
        fd = self.sock.fileno()
        while any(self.sent_at) and time.perf_counter() < deadline:
            if select.select([fd], [], [], 0.05)[0]:
                self._drain(Result(), ready, False)
        self._expire(res, ready, 0.0)

    def run_window(
        self, window: int, duration: float, count: int | None = None, timeout: float = 2.0
    ) -> Result:
        """Closed loop: keep ``window`` PBUs outstanding (one per MN) for ``duration``
        seconds, or until ``count`` PBAs came back (a registration pass)."""
        res = Result()
        ready: deque[int] = deque(range(self.n))
        send = self._send
        fd = self.sock.fileno()
        outstanding = 0
        counting = True
        gc_was = gc.isenabled()
        gc.disable()
        t0 = time.perf_counter()
        end = t0 + duration
        next_bin, bin_count = t0 + 1.0, 0
        last_progress = t0
        try:
            while True:
                now = time.perf_counter()
                if counting and count is None and now >= end:
                    res.elapsed = now - t0
                    counting = False
                if counting:
                    while outstanding < window and ready:
                        if count is not None and res.sent >= count:
                            break
                        send(ready.popleft())
                        outstanding += 1
                        res.sent += 1
                if outstanding <= 0:
                    break
                if select.select([fd], [], [], 0.2)[0]:
                    got = self._drain(res, ready, counting)
                    outstanding -= got
                    if counting:
                        res.done += got
                        bin_count += got
                    last_progress = time.perf_counter()
                elif time.perf_counter() - last_progress > timeout:
                    before = res.lost
                    self._expire(res, ready, timeout)
                    outstanding -= res.lost - before
                    last_progress = time.perf_counter()
                    if not counting:
                        break
                if counting and now >= next_bin:
                    res.per_second.append(bin_count)
                    bin_count, next_bin = 0, next_bin + 1.0
            if count is not None:
                res.elapsed = time.perf_counter() - t0
        finally:
            if gc_was:
                gc.enable()
        self._settle(res, ready)
        return res

    def run_paced(self, rate: float, duration: float, cap: int = 512) -> Result:
        """Open loop: one PBU every 1/rate s (whichever MN is free), at most ``cap``
        outstanding; latency is counted from the actual send and from the schedule."""
        res = Result()
        ready: deque[int] = deque(range(self.n))
        fd = self.sock.fileno()
        sched = [0.0] * self.n
        step = 1.0 / rate
        tick = 0.001
        gc_was = gc.isenabled()
        gc.disable()
        t0 = time.perf_counter()
        end = t0 + duration
        next_t = t0
        next_bin, bin_count = t0 + 1.0, 0
        next_sweep = t0 + 1.0
        outstanding = 0
        lat_sched = res.lat_sched
        try:
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                while next_t <= now and ready and outstanding < cap:
                    j = ready.popleft()
                    self._send(j)
                    sched[j] = next_t
                    next_t += step
                    outstanding += 1
                    res.sent += 1
                # Wake once per tick (1 ms: about 10 PBUs at 10k/s) rather than per packet,
                # so the generator leaves the CPU to the daemon.
                if not ready or outstanding >= cap:
                    wait = 0.05  # behind: nothing may be sent until a PBA comes back
                else:
                    wait = max(0.0, min(next_t - time.perf_counter() + tick, 0.05))
                if select.select([fd], [], [], wait)[0]:
                    before = len(ready)
                    got = self._drain(res, ready, True)
                    t_now = time.perf_counter()
                    # _drain appended the MNs it freed to the end of ``ready``.
                    for k in range(before, len(ready)):
                        lat_sched.append(t_now - sched[ready[k]])
                    outstanding -= got
                    res.done += got
                    bin_count += got
                now = time.perf_counter()
                if now >= next_bin:
                    res.per_second.append(bin_count)
                    bin_count, next_bin = 0, next_bin + 1.0
                if now >= next_sweep:
                    before_lost = res.lost
                    self._expire(res, ready, 2.0)
                    outstanding -= res.lost - before_lost
                    next_sweep = now + 1.0
            res.elapsed = time.perf_counter() - t0
        finally:
            if gc_was:
                gc.enable()
        self._settle(res, ready)
        return res


# --- the daemon ---------------------------------------------------------------------------


def write_config(
    path: Path,
    state_dir: Path,
    sock: Path,
    mns: int,
    n_mags: int,
    *,
    dual_stack: bool,
    timestamps: bool,
    profiles: str = "csv",
) -> float:
    """An LMA config for ``mns`` MNs (mn0000000..), listed in a mobile_nodes_file beside
    it (``profiles="csv"``) or in its mobile_nodes (``"yaml"``); returns seconds spent
    writing."""
    t = time.perf_counter()
    lines = [
        "role: lma",
        f"node_name: {NODE}",
        f"state_dir: {state_dir}",
        f"control_socket: {sock}",
        "log: {level: info, format: text}",
        f"timestamps: {'true' if timestamps else 'false'}",
        "lma:",
        f"  lmaa: {LMAA}",
        "  allowed_mags: [" + ", ".join(mag_addr(m) for m in range(n_mags)) + "]",
        "  ipv4_pools:",
        *(f"    - {{name: p{p:x}, prefix: {net}}}" for p, net in enumerate(POOLS)),
    ]
    if dual_stack:
        lines += ["  hnp_pool: {prefix: " + HNP_POOL + ", length: 64}"]
    v6 = "true" if dual_stack else "false"
    if profiles == "csv":
        csv_path = path.with_suffix(".csv")
        lines.append(f"mobile_nodes_file: {csv_path.name}")
        path.write_text("\n".join(lines) + "\n")
        with csv_path.open("w") as f:
            f.write("mn_id,ipv6,ipv4.mode,ipv4.pool\n")
            chunk = 50_000
            for start in range(0, mns, chunk):
                f.write(
                    "".join(
                        f"mn{i:07d}@bench.example.net,{v6},lma,p{i % N_POOLS:x}\n"
                        for i in range(start, min(mns, start + chunk))
                    )
                )
        return time.perf_counter() - t
    lines.append("mobile_nodes:")
    with path.open("w") as f:
        f.write("\n".join(lines) + "\n")
        chunk = 50_000
        for start in range(0, mns, chunk):
            f.write(
                "".join(
                    f"  - {{mn_id: mn{i:07d}@bench.example.net, ipv6: {v6}, "
                    f"ipv4: {{mode: lma, pool: p{i % N_POOLS:x}}}}}\n"
                    for i in range(start, min(mns, start + chunk))
                )
            )
    return time.perf_counter() - t


def prefill_store(db: Path, k: int, n_mags: int, now: float) -> float:
    """K active IPv4-only bindings, as the daemon would have stored them: MN i on MAG
    i % n_mags with the (i // 16)-th address of pool i % 16. Returns seconds taken."""
    t = time.perf_counter()
    peers = [Peer(IPv6Address(mag_addr(m))) for m in range(n_mags)]
    routers = [IPv4Address(int(net.network_address) + 1) for net in POOLS]
    bases = [int(net.network_address) + 2 for net in POOLS]
    last_ts = int((now - 60) * 65536)
    store = LmaStore(db)
    try:
        chunk = 50_000
        for start in range(0, k, chunk):
            events = []
            for i in range(start, min(k, start + chunk)):
                p = pool_of(i)
                view = BindingView(
                    mn_id=mn_id(i),
                    mag=peers[i % n_mags],
                    state="active",
                    encapsulation=Encapsulation.IPV6,
                    nat=False,
                    ipv4_hoa=IPv4Address(bases[p] + i // N_POOLS),
                    ipv4_prefix_len=12,
                    ipv4_default_router=routers[p],
                    ipv4_source="lma",
                    ipv4_pool=f"p{p:x}",
                    hnps=(),
                    lifetime_s=3600,
                    expires_at=now + 3600 + (i % 600),
                    registered_at=now - 60,
                    last_sequence=0,
                    last_timestamp=last_ts,
                    wire_profile="rfc5844",
                    access_tech=3,
                    link_layer_id=None,
                )
                events.append(BindingUp(view, "created"))
            store.apply(events)
    finally:
        store.close()
    return time.perf_counter() - t


def code_version() -> dict[str, Any]:
    """Where the pmip_agent under test comes from, and a hash of its sources; recorded at
    every daemon start (a working tree may change while a long run goes on)."""
    pkg = Path(pmip_agent.__file__).resolve().parent
    h = hashlib.sha1()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    snap = os.environ.get(SNAPSHOT_ENV, "")
    return {
        "source": f"snapshot of {snap.split(':', 1)[0][:12]}" if snap else "working tree",
        "package_dir": str(pkg),
        "working_tree_head": head,
        "pmip_agent_sha1": h.hexdigest()[:12],
    }


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Daemon:
    """One ``pmip-agent run`` in the LMA namespace; its start is timed in phases."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, config: Path, log: Path) -> None:
        self.lab, self.ns, self.workdir, self.config, self.log = lab, ns, workdir, config, log
        self.sock = workdir / f"{NODE}.sock"
        self.db = workdir / "state" / f"{NODE}.lma.sqlite"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_spy: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(
        self, expect_bindings: int, profile_out: Path | None = None, spy_out: Path | None = None
    ) -> dict[str, Any]:
        if profile_out is not None:
            argv = [PYTHON, "-m", "cProfile", "-o", str(profile_out), "-m", "pmip_agent.cli"]
        else:
            argv = [AGENT]
        argv += ["run", "--config", str(self.config)]
        self.sock.unlink(missing_ok=True)
        version = code_version()
        t0 = time.perf_counter()
        self.proc = self.lab.spawn(self.ns, argv, self.log)
        pid = self.proc.pid
        spy = self.start_spy = pyspy_start(pid, 600, spy_out) if spy_out is not None else None
        marks: dict[str, float] = {}
        db_name = str(self.db)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode}):\n{self.tail()}")
            now = time.perf_counter() - t0
            if "store_open" not in marks:
                with contextlib.suppress(OSError):
                    fds = os.listdir(f"/proc/{pid}/fd")
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            if os.readlink(f"/proc/{pid}/fd/{fd}") == db_name:
                                marks["store_open"] = now
                                break
            if "store_open" in marks and "mh_socket" not in marks:
                # /proc/PID/net/raw6: the local-address column ends in ":0087" (protocol 135)
                with contextlib.suppress(OSError), open(f"/proc/{pid}/net/raw6") as f:
                    if any(ln.split()[1].endswith(":0087") for ln in f.readlines()[1:]):
                        marks["mh_socket"] = now
            if self.sock.exists():
                try:
                    reply = ctl_request(str(self.sock), {"cmd": "status"}, timeout=1800)
                except (OSError, ValueError):
                    time.sleep(0.01)
                    continue
                if reply.get("ok") and reply["result"]["bindings"] >= expect_bindings:
                    marks["status_ok"] = time.perf_counter() - t0
                    marks["bindings"] = reply["result"]["bindings"]
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)  # py-spy writes what it has so far
                    break
            time.sleep(0.005)
        exe = os.readlink(f"/proc/{pid}/exe")
        timeline = {
            "code": version,
            "pid_exe": exe,
            "store_open_s": round(marks.get("store_open", float("nan")), 3),
            "mh_socket_s": round(marks.get("mh_socket", float("nan")), 3),
            "status_ok_s": round(marks["status_ok"], 3),
            "bindings": marks["bindings"],
            # CPU seconds the daemon used to get there: on a shared machine the wall
            # time above also counts the time other jobs held the cores.
            "cpu_s": round(_proc_ticks(pid) / os.sysconf("SC_CLK_TCK"), 2),
        }
        timeline["phase_config_s"] = timeline["store_open_s"]
        timeline["phase_restore_s"] = round(timeline["mh_socket_s"] - timeline["store_open_s"], 3)
        timeline["phase_first_flush_s"] = round(
            timeline["status_ok_s"] - timeline["mh_socket_s"], 3
        )
        timeline.update(self.memory())
        return timeline

    def settle(self, idle_pct: float = 5.0, timeout: float = 900.0) -> float:
        """Seconds until the daemon goes idle (below ``idle_pct`` % CPU over two half-second
        samples in a row): after a restart the data plane still installs one kernel route
        per restored binding in the background, and a rate measured meanwhile would
        measure that."""
        t0 = time.perf_counter()
        hz = os.sysconf("SC_CLK_TCK")
        quiet = 0
        last = _proc_ticks(self.pid)
        while time.perf_counter() - t0 < timeout and quiet < 2:
            time.sleep(0.5)
            now = _proc_ticks(self.pid)
            quiet = quiet + 1 if (now - last) / hz < idle_pct / 100 * 0.5 else 0
            last = now
        return time.perf_counter() - t0

    def memory(self) -> dict[str, Any]:
        rss = proc_status_kb(self.pid, "VmRSS")
        hwm = proc_status_kb(self.pid, "VmHWM")
        return {
            "rss_bytes": rss * 1024 if rss is not None else None,
            "peak_rss_bytes": hwm * 1024 if hwm is not None else None,
        }

    def stop(self, grace: float = 180.0) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after ``grace`` seconds (a 1M-binding interpreter takes a
        while to free its heap)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return {}
        t = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        rc = proc.returncode
        if rc not in (0, -signal.SIGTERM):
            print(f"  warning: daemon exited with {rc}", file=sys.stderr)
        return {"stop_s": round(time.perf_counter() - t, 3), "exit_status": rc}

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --- profile ------------------------------------------------------------------------------

_EPOLL = "<method 'poll' of 'select.epoll' objects>"
_IMPORT_FNS = {"<built-in method builtins.exec>", "<built-in method builtins.__import__>"}


def profile_rows(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions of a cProfile dump of the daemon, restricted to the PBU path: the call
    tree under ``LmaService._on_mh`` (receive a batch, engine, persist, send, observers).
    A function's own and cumulative time count only the calls made from inside that tree
    (cProfile keeps time per caller -> callee edge), so start-up (imports, config) and the
    epoll wait are left out. Percentages are of ``_on_mh``'s cumulative time."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    roots = [k for k in stats if k[2] == "_on_mh" and k[0].endswith("daemon.py")]
    callees: dict[Any, set[Any]] = {}
    for fn, v in stats.items():
        for caller in v[4]:
            callees.setdefault(caller, set()).add(fn)
    tree, todo = set(roots), list(roots)
    while todo:
        for callee in callees.get(todo.pop(), ()):
            # The graph is not context sensitive: through the import machinery (a lazy
            # import on the PBU path) it would reach every module body run at start-up.
            if callee[0].startswith("<frozen") or callee[2] in _IMPORT_FNS:
                continue
            if callee not in tree:
                tree.add(callee)
                todo.append(callee)
    base = sum(stats[r][3] for r in roots)
    own: dict[Any, tuple[int, float, float]] = {}
    for fn in tree:
        if fn in roots:
            v = stats[fn]
            own[fn] = (v[1], v[2], v[3])
            continue
        edges = [e for caller, e in stats[fn][4].items() if caller in tree]
        own[fn] = (sum(e[1] for e in edges), sum(e[2] for e in edges), sum(e[3] for e in edges))
    total = sum(v[2] for v in stats.values())
    idle = sum(v[2] for k, v in stats.items() if k[2] == _EPOLL)
    # Every PBU enters the engine through receive_ipv6 (refreshes may skip _dispatch).
    pbus = sum(own[k][0] for k in own if k[2] in ("receive_ipv6", "receive_udp"))

    def label(k: tuple[str, int, str]) -> str:
        if k[0] == "~":
            return k[2]
        p = Path(k[0])
        try:
            shown = str(p.resolve().relative_to(ROOT))
        except ValueError:
            shown = "/".join(p.parts[-2:])
        return f"{shown}:{k[1]}({k[2]})"

    def row(k: Any) -> dict[str, Any]:
        n, tt, ct = own[k]
        return {
            "function": label(k),
            "ncalls": n,
            "tottime_s": round(tt, 3),
            "tottime_pct": round(100 * tt / base, 1) if base else 0.0,
            "cumtime_s": round(ct, 3),
            "cumtime_pct": round(100 * ct / base, 1) if base else 0.0,
            "own_us_per_pbu": round(1e6 * tt / pbus, 2) if pbus else None,
        }

    by_tt = sorted(own, key=lambda k: own[k][1], reverse=True)
    ours = [k for k in own if "/pmip_agent/" in k[0]]
    by_ct = sorted(ours, key=lambda k: own[k][2], reverse=True)
    return {
        "profiled_total_s": round(total, 3),
        "epoll_wait_s": round(idle, 3),
        "on_mh_cumtime_s": round(base, 3),
        "pbus_received": pbus,
        "us_per_pbu_under_profiler": round(1e6 * base / pbus, 1) if pbus else None,
        "top_by_tottime": [row(k) for k in by_tt[:top]],
        "top_pmip_by_cumtime": [row(k) for k in by_ct[:top]],
    }


# --- py-spy (optional: used when --py-spy is given and py-spy is installed) ---------------


def pyspy_start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(VENV_BIN))
    if exe is None:
        print("  (py-spy not found: pip install py-spy)", file=sys.stderr)
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", "250", "--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pyspy_summary(proc: subprocess.Popen[bytes] | None, out: Path, top: int = 15) -> Any:
    """Samples of the daemon's busy threads (py-spy leaves idle ones out), by the frame on
    top of the stack (self) and by every function on the stack (inclusive)."""
    if proc is None:
        return None
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if not out.exists():
        return None
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        # "function (path:line)": the line is where the frame was, so drop it
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count

    def rows(d: dict[str, int], only_ours: bool) -> list[dict[str, Any]]:
        items = [(k, v) for k, v in d.items() if not only_ours or "pmip_agent/" in k]
        items.sort(key=lambda kv: kv[1], reverse=True)
        return [{"frame": k, "pct": round(100 * v / total, 1)} for k, v in items[:top]]

    return {
        "samples": total,
        "top_self": rows(own, False),
        "top_pmip_inclusive": rows(incl, True),
    }


# --- the run -------------------------------------------------------------------------------


def per_cpu_second(r: dict[str, Any]) -> int | None:
    """PBAs (or echoes) per CPU second of the daemon (or echo) process: its rate as if it
    had had a core of its own, when another job took CPU time during the run."""
    c = r.get("cpu") or {}
    pct = c.get("daemon_cpu_pct", c.get("echo_cpu_pct"))
    return round(r["per_s"] / (pct / 100)) if pct else None


def cpu_note(r: dict[str, Any]) -> str:
    c = r.get("cpu") or {}
    note = "cpu " + ", ".join(f"{k[: -len('_cpu_pct')]} {v:.0f}%" for k, v in c.items())
    per = r.get("per_cpu_s")
    return f"{note}; {per:,}/CPU-s" if per else note


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def load_phase(
    lab: Lab,
    ns_lma: str,
    ns_gen: str,
    work: Path,
    args: argparse.Namespace,
    variant: str,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    """A fresh daemon, N x M MNs: registration pass, max rate per window, paced run."""
    dual = variant == "ds"
    n_mns = args.mags * args.mns_per_mag
    d = work / f"load-{variant}{'-prof' if profile_out else ''}"
    (d / "state").mkdir(parents=True)
    cfg = d / "lma.yaml"
    write_config(
        cfg,
        d / "state",
        d / f"{NODE}.sock",
        n_mns,
        args.mags,
        dual_stack=dual,
        timestamps=args.timestamps,
        profiles=args.profiles,
    )
    daemon = Daemon(lab, ns_lma, d, cfg, d / "lma.log")
    gen = LoadGen(ns_gen, range(n_mns), args.mags, dual_stack=dual, timestamps=args.timestamps)
    out: dict[str, Any] = {"variant": variant, "mns": n_mns, "mags": args.mags}
    try:
        out["start"] = daemon.start(0, profile_out)
        reg = gen.run_window(max(args.windows), 600, count=n_mns)
        out["registration"] = reg.summary()
        print(
            f"  [{variant}] registration of {n_mns} MNs: {reg.summary()['per_s']:,}/s "
            f"(rejected {reg.rejected}, lost {reg.lost})",
            flush=True,
        )
        out["max"] = {}
        windows = [args.windows[0]] if profile_out else args.windows
        for w in windows:
            spy_out = d / f"py-spy-{w}.txt"
            spy = pyspy_start(daemon.pid, args.duration, spy_out) if args.py_spy else None
            cpu = CpuMeter(daemon=daemon.pid, generator=os.getpid())
            r = gen.run_window(w, args.duration).summary()
            r["cpu"] = cpu.stop()
            r["per_cpu_s"] = per_cpu_second(r)
            if spy is not None:
                r["py_spy"] = pyspy_summary(spy, spy_out)
            out["max"][str(w)] = r
            print(
                f"  [{variant}] window {w}: {r['per_s']:,} PBU/s, p50 {fmt_ms(r['p50_ms'])} ms, "
                f"p99 {fmt_ms(r['p99_ms'])} ms (rejected {r['rejected']}, lost {r['lost']}) "
                f"[{cpu_note(r)}]",
                flush=True,
            )
        if variant == "v4" and not profile_out:
            cpu = CpuMeter(daemon=daemon.pid, generator=os.getpid())
            r = gen.run_paced(args.paced_rate, args.duration).summary()
            r["cpu"] = cpu.stop()
            r["per_cpu_s"] = per_cpu_second(r)
            out["paced"] = {"offered_per_s": args.paced_rate, **r}
            print(
                f"  [{variant}] paced {args.paced_rate:,}/s: achieved {r['per_s']:,}/s, "
                f"p50 {fmt_ms(r['p50_ms'])} ms, p99 {fmt_ms(r['p99_ms'])} ms, "
                f"p99.9 {fmt_ms(r['p999_ms'])} ms [{cpu_note(r)}]",
                flush=True,
            )
        out["memory_after"] = daemon.memory()
        out["db_bytes"] = _db_bytes(daemon.db)
    finally:
        out["stop"] = daemon.stop()
        gen.close()
    return out


def _db_bytes(db: Path) -> int:
    return sum(os.path.getsize(f"{db}{s}") for s in ("", "-wal") if os.path.exists(f"{db}{s}"))


def scale_phase(
    lab: Lab, ns_lma: str, ns_gen: str, work: Path, args: argparse.Namespace, k: int
) -> dict[str, Any]:
    d = work / f"scale-{k}"
    (d / "state").mkdir(parents=True)
    cfg = d / "lma.yaml"
    out: dict[str, Any] = {"bindings": k}
    out["config_write_s"] = round(
        write_config(
            cfg,
            d / "state",
            d / f"{NODE}.sock",
            k,
            args.mags,
            dual_stack=False,
            timestamps=args.timestamps,
            profiles=args.profiles,
        ),
        2,
    )
    out["profiles"] = args.profiles
    out["config_bytes"] = cfg.stat().st_size + (
        cfg.with_suffix(".csv").stat().st_size if args.profiles == "csv" else 0
    )
    daemon = Daemon(lab, ns_lma, d, cfg, d / "lma.log")
    out["store_prefill_s"] = round(prefill_store(daemon.db, k, args.mags, time.time()), 2)
    out["db_bytes"] = _db_bytes(daemon.db)
    gc.collect()
    n_load = min(args.scale_load_mns, k)
    step = max(1, k // n_load)
    if step > 1 and step % 2 == 0:
        step -= 1  # odd: the load MNs spread over every MAG and pool
    load_idx = [j * step for j in range(n_load)]
    gen = LoadGen(ns_gen, load_idx, args.mags, dual_stack=False, timestamps=args.timestamps)
    try:
        print(f"  [{k:,}] starting the daemon with {k:,} bindings in the store...", flush=True)
        start_spy_out = d / "py-spy-start.txt" if args.py_spy else None
        out["start"] = s = daemon.start(k, spy_out=start_spy_out)
        if start_spy_out is not None:
            out["start_py_spy"] = pyspy_summary(daemon.start_spy, start_spy_out)
        print(
            f"  [{k:,}] status bindings={s['bindings']:,} after {s['status_ok_s']:.2f} s "
            f"(config {s['phase_config_s']:.2f} s, restore {s['phase_restore_s']:.2f} s, "
            f"first flush {s['phase_first_flush_s']:.2f} s; {s['cpu_s']:.1f} CPU-s); RSS "
            f"{(s['rss_bytes'] or 0) / 2**20:,.0f} MiB",
            flush=True,
        )
        out["settle_s"] = round(daemon.settle(), 2)
        out["memory_settled"] = daemon.memory()
        print(
            f"  [{k:,}] idle {out['settle_s']:.1f} s after that (data plane routes); RSS "
            f"{(out['memory_settled']['rss_bytes'] or 0) / 2**20:,.0f} MiB",
            flush=True,
        )
        w = args.scale_window
        # One refresh of each load MN first (a restored entry's first PBU is an "update").
        gen.run_window(w, 600, count=n_load)
        spy_out = d / "py-spy.txt"
        spy = pyspy_start(daemon.pid, args.duration, spy_out) if args.py_spy else None
        cpu = CpuMeter(daemon=daemon.pid, generator=os.getpid())
        r = gen.run_window(w, args.duration).summary()
        r["cpu"] = cpu.stop()
        r["per_cpu_s"] = per_cpu_second(r)
        if spy is not None:
            r["py_spy"] = pyspy_summary(spy, spy_out)
        out["load_mns"] = n_load
        out["window"] = w
        out["max"] = r
        out["memory_after"] = daemon.memory()
        print(
            f"  [{k:,}] {n_load} MNs, window {w}: {r['per_s']:,} PBU/s, p50 "
            f"{fmt_ms(r['p50_ms'])} ms, p99 {fmt_ms(r['p99_ms'])} ms "
            f"(rejected {r['rejected']}, lost {r['lost']}) [{cpu_note(r)}]",
            flush=True,
        )
    finally:
        out["stop"] = daemon.stop()
        gen.close()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    return out


def echo_phase(lab: Lab, ns_lma: str, ns_gen: str, args: argparse.Namespace) -> dict[str, Any]:
    n_mns = args.mags * args.mns_per_mag
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns_lma, PYTHON, __file__, "--echo-server", LMAA],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lab.procs.append(proc)  # type: ignore[arg-type]
    gen = LoadGen(ns_gen, range(n_mns), args.mags, dual_stack=False, timestamps=args.timestamps)
    out: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"echo server did not start: {line!r}")
        gen.run_window(max(args.windows), 0.5)  # warm-up
        for w in args.windows:
            cpu = CpuMeter(echo=proc.pid, generator=os.getpid())
            r = gen.run_window(w, args.echo_duration).summary()
            r["cpu"] = cpu.stop()
            r["per_cpu_s"] = per_cpu_second(r)
            out[str(w)] = r
            print(
                f"  echo window {w}: {r['per_s']:,} round trips/s, p50 {fmt_ms(r['p50_ms'])} "
                f"ms, p99 {fmt_ms(r['p99_ms'])} ms [{cpu_note(r)}]",
                flush=True,
            )
    finally:
        gen.close()
        lab.kill(proc)  # type: ignore[arg-type]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="small N, short runs, no 100k/1M")
    ap.add_argument("--mags", type=int, default=None, help="simulated MAGs (16)")
    ap.add_argument("--mns-per-mag", type=int, default=None, help="MNs per MAG (256)")
    ap.add_argument("--windows", default=None, help="outstanding PBUs, e.g. 32,256")
    ap.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    ap.add_argument("--paced-rate", type=int, default=10_000)
    ap.add_argument("--scale", default=None, help="bindings in place, e.g. 1000,100000,1000000")
    ap.add_argument("--scale-load-mns", type=int, default=1000)
    ap.add_argument(
        "--profiles",
        choices=("csv", "yaml"),
        default="csv",
        help="where the daemon's MN profiles are: a mobile_nodes_file (csv, default) or "
        "the YAML mobile_nodes list (yaml: about 5 min to load at 1M)",
    )
    ap.add_argument("--variants", default=None, help="v4 (IPv4-only) and/or ds (dual stack)")
    ap.add_argument(
        "--no-timestamps",
        dest="timestamps",
        action="store_false",
        help="config timestamps: false (sequence numbers) instead of Timestamp options",
    )
    ap.add_argument("--phases", default="echo,load,scale", help="subset of echo,load,scale")
    ap.add_argument("--profile", action="store_true", help="also run the daemon under cProfile")
    ap.add_argument(
        "--py-spy",
        action="store_true",
        help="sample the daemon with py-spy (if installed) during the max-rate runs and "
        "during each scale phase's start",
    )
    ap.add_argument(
        "--snapshot",
        nargs="?",
        const="HEAD",
        metavar="REV",
        help="run on pmip_agent/ as committed at REV (default HEAD), not the working tree",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--echo-server", metavar="ADDR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    q = args.quick
    args.mags = args.mags or (4 if q else 16)
    args.mns_per_mag = args.mns_per_mag or (64 if q else 256)
    args.windows = [int(x) for x in (args.windows or "32,256").split(",")]
    args.duration = args.duration or (2.0 if q else 10.0)
    args.echo_duration = min(args.duration, 2.0 if q else 5.0)
    args.scale = [
        int(x)
        for x in (args.scale or ("1000,10000" if q else "1000,100000,1000000")).split(",")
        if x
    ]
    args.variants = (args.variants or ("v4" if q else "v4,ds")).split(",")
    args.scale_window = max(args.windows)

    work = Path(tempfile.mkdtemp(prefix="pmip-lma-load-"))
    data: dict[str, Any] = {
        "quick": q,
        "machine": machine_info(),
        "setup": {
            "mags": args.mags,
            "mns_per_mag": args.mns_per_mag,
            "windows": args.windows,
            "duration_s": args.duration,
            "paced_rate": args.paced_rate,
            "scale": args.scale,
            "scale_load_mns": args.scale_load_mns,
            "profiles": args.profiles,
            "timestamps": args.timestamps,
            "replay_protection": (
                "Timestamp option patched into each pre-encoded PBU at send time"
                if args.timestamps
                else "timestamps: false, increasing sequence number per MN"
            ),
            "work_dir": str(work),
            "persistence": "SQLite WAL, synchronous=NORMAL (the daemon's default)",
        },
        "goals": GOALS,
        "code_at_start": code_version(),
    }
    lab = None
    t_all = time.perf_counter()
    # Children (``python -m``, ``python -c``) put the cwd first on sys.path: keep the
    # working tree's pmip_agent out of a --snapshot run.
    os.chdir(work)
    try:
        lab, ns_lma, ns_gen = build_lab(args.mags)
        data["setup"]["namespaces"] = [ns_lma, ns_gen]
        seen = lab.run(ns_lma, f"{PYTHON} -c 'import pmip_agent; print(pmip_agent.__file__)'")
        data["setup"]["daemon_imports"] = seen.stdout.strip()
        print(f"pmip_agent in the LMA namespace: {seen.stdout.strip()}", flush=True)
        print(f"namespaces {ns_lma}, {ns_gen}; work dir {work}", flush=True)
        phases = args.phases.split(",")
        data["echo"] = {}
        if "echo" in phases:
            print("baseline: raw MH echo", flush=True)
            data["echo"] = echo_phase(lab, ns_lma, ns_gen, args)
        data["load"] = {}
        for variant in args.variants if "load" in phases else ():
            print(f"load: {variant}, {args.mags} MAGs x {args.mns_per_mag} MNs", flush=True)
            data["load"][variant] = load_phase(lab, ns_lma, ns_gen, work, args, variant)
        if args.profile:
            print("profile: the v4 load under cProfile", flush=True)
            prof = work / "lma.prof"
            run = load_phase(lab, ns_lma, ns_gen, work, args, "v4", profile_out=prof)
            data["profile"] = {"run": run, **profile_rows(prof)}
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copy(prof, OUT_DIR / f"lma_daemon_load{'.quick' if q else ''}.prof")
        data["scale"] = []
        for k in args.scale if "scale" in phases else ():
            print(f"scale: {k:,} bindings", flush=True)
            data["scale"].append(scale_phase(lab, ns_lma, ns_gen, work, args, k))
    finally:
        data["code_at_end"] = code_version()
        if lab is not None:
            lab.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            snap = os.environ.get(SNAPSHOT_ENV)
            if snap:
                shutil.rmtree(snap.split(":", 1)[1], ignore_errors=True)
    data["wall_s"] = round(time.perf_counter() - t_all, 1)
    if data["code_at_end"] != data["code_at_start"]:
        print(
            f"\nWARNING: pmip_agent/ changed during the run ({data['code_at_start']} -> "
            f"{data['code_at_end']}); each daemon start records the version it ran",
            file=sys.stderr,
        )
    report(data, args)
    # Like the other benchmarks: a --quick run never overwrites a full one.
    out = OUT_DIR / f"lma_daemon_load{'.quick' if q else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


def report(data: dict[str, Any], args: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = []

    def run_row(figure: str, r: dict[str, Any], note: str) -> None:
        per = r.get("per_cpu_s")
        others = (r.get("cpu") or {}).get("others_cpu_pct")
        rows.append(
            (
                figure,
                f"{r['per_s']:,}",
                fmt_ms(r["p50_ms"]),
                fmt_ms(r["p99_ms"]),
                f"{per:,}" if per else "",
                f"{others:.0f}" if others is not None else "",
                note,
            )
        )

    def info_row(figure: str, value: str, note: str) -> None:
        rows.append((figure, value, "", "", "", "", note))

    echo = data["echo"]
    for w, r in echo.items():
        run_row(f"raw MH echo, window {w}", r, "round trips/s; baseline")
    for variant, ld in data["load"].items():
        run_row(f"[{variant}] registration ({ld['mns']:,} MNs)", ld["registration"], "created")
        for w, r in ld["max"].items():
            base = echo.get(w, {}).get("per_s")
            ratio = f"{r['per_s'] / base:.1%} of echo; " if base else ""
            run_row(
                f"[{variant}] max rate, window {w}",
                r,
                f"{ratio}goal {GOALS['pbu_per_s_min']:,}",
            )
        if "paced" in ld:
            r = ld["paced"]
            run_row(
                f"[{variant}] paced {r['offered_per_s']:,}/s",
                r,
                f"p99 goal {GOALS['p99_ms_at_10k_max']} ms; from schedule p99 "
                f"{fmt_ms(r.get('from_schedule_p99_ms'))} ms",
            )
    for s in data["scale"]:
        st = s["start"]
        k = f"{s['bindings']:,} bindings"
        run_row(f"{k}: max rate (w {s['window']})", s["max"], f"{s['load_mns']} MNs refreshing")
        info_row(
            f"{k}: start to status",
            f"{st['status_ok_s']:.2f} s",
            f"config {st['phase_config_s']:.2f} s, restore {st['phase_restore_s']:.2f} s, "
            f"1st flush {st['phase_first_flush_s']:.2f} s; daemon CPU {st.get('cpu_s', 0):.1f} s",
        )
        if "settle_s" in s:
            info_row(
                f"{k}: then idle after",
                f"{s['settle_s']:.2f} s",
                "background: data plane routes of the restored bindings",
            )
        info_row(
            f"{k}: RSS after start",
            f"{(st['rss_bytes'] or 0) / 2**20:,.0f} MiB",
            f"peak {(st['peak_rss_bytes'] or 0) / 2**20:,.0f} MiB; after load "
            f"{(s['memory_after']['rss_bytes'] or 0) / 2**20:,.0f} MiB",
        )
    print()
    print("per CPU-s: rate per CPU second of the daemon (echo) process; others %: CPU taken")
    print("by other jobs during the run (of 200 %): above ~10 the rates are contended.")
    print_table(rows, ("figure", "value", "p50 ms", "p99 ms", "per CPU-s", "others %", "note"))
    spied = [
        (f"[{v}] window {w}", r) for v, ld in data["load"].items() for w, r in ld["max"].items()
    ]
    spied += [(f"{sc['bindings']:,} bindings", sc["max"]) for sc in data["scale"]]
    spied += [
        (f"start with {sc['bindings']:,} bindings", {"py_spy": sc["start_py_spy"]})
        for sc in data["scale"]
        if sc.get("start_py_spy")
    ]
    for title, r in spied:
        spy = r.get("py_spy")
        if spy:
            print(f"\npy-spy, {title} ({spy['samples']:,} samples of busy threads), top self:")
            print_table(
                [(x["frame"], f"{x['pct']:.1f}") for x in spy["top_self"][:10]], ("frame", "%")
            )
    prof = data.get("profile")
    if prof:
        print(
            f"\ncProfile of the daemon, PBU path only (_on_mh: {prof['on_mh_cumtime_s']} s for "
            f"{prof['pbus_received']:,} PBUs, {prof['us_per_pbu_under_profiler']} us/PBU "
            "under the profiler), top by own time:"
        )
        for title, key in (
            ("top by own time", "top_by_tottime"),
            ("pmip_agent functions by cumulative time", "top_pmip_by_cumtime"),
        ):
            if key != "top_by_tottime":
                print(f"\n{title}:")
            print_table(
                [
                    (
                        r["function"],
                        f"{r['ncalls']:,}",
                        f"{r['tottime_pct']:.1f}",
                        f"{r['cumtime_pct']:.1f}",
                        f"{r['own_us_per_pbu']}",
                    )
                    for r in prof[key]
                ],
                ("function", "calls", "own %", "cum %", "own us/PBU"),
            )
    del args


if __name__ == "__main__":
    sys.exit(main())
