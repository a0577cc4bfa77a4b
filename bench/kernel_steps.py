"""Where a DHCP attach bench spends its time, as the kernel sees it: the daemons' run time
per message, their send syscalls and how the scheduler places their wake-ups.

    sudo .venv/bin/python bench/kernel_steps.py dhcp_attach --n 60
    sudo .venv/bin/python bench/kernel_steps.py relay_floor --n 60

Options it does not know go to the bench. Runs ``bench/<bench>.py --breakdown 0 ...``
(its JSON tagged ``kernel_steps``) under ``perf record -a`` with scheduler,
network-device and socket-syscall tracepoints (CLOCK_MONOTONIC), then reads ``perf
script`` back. The lab's processes are told apart by the frames they send, on the lab's
interface names:

* ``relay``: the one sending most on ``k0`` (MAG1 toward Kea: the MAG daemon in
  dhcp_attach, the plain relay in relay_floor);
* ``lma``: the other one sending on ``tr0`` (the LMA, or relay_floor's echo);
* ``kea``: ``kea-dhcp4``; ``mn``: the one sending most on ``eth0`` (the bench's client).

Per role, main thread only (the daemons' other threads are left out):

* ``send``: a ``sendto``/``sendmsg`` syscall, entry to exit. The kernel's share of a send,
  including the receiving namespace's network stack and the wake-up of the reader.
* ``wake -> send``: from being switched in after a sleep to its first send syscall. The
  time the process needs to answer: event loop, receive, user code.
* ``recv -> send (dev/len)``: from a ``recvfrom``/``recvmsg`` returning to the next send,
  by the frame that send put on the wire (device and length): the process's work for
  each kind of message, mostly in user space. In dhcp_attach, MAG1's ``k0/350`` is a
  relayed DISCOVER, ``k0/362`` a relayed REQUEST, ``acc1/342`` an OFFER or ACK to the MN
  (flows 2 and 3) and ``tr0/142`` flow 2's PBU (in flow 3 the OFFER goes before it).
* ``wakeups``: each ``sched_wakeup`` to the switch-in that follows (the scheduling
  delay), and how many of them were placed on a CPU that was running something while
  another CPU was idle.

The bench's own figures come out as usual, with the tracing's cost in them: compare
this tool's figures between its own runs, not with an untraced run. Writes
build/bench/kernel_steps.<bench>.json (``--tag T``: kernel_steps.<bench>.T.json) and
keeps perf's data only while it is read. Needs root and ``perf`` (Debian:
``linux-perf``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402  (bench/ is on sys.path from here on)
    arg_parser,
    finish_machine_info,
    machine_info,
    percentile,
    print_table,
    write_json,
)

NAME = "kernel_steps"
BENCHES = ("dhcp_attach", "relay_floor")
SENDS = ("sendto", "sendmsg")
RECVS = ("recvfrom", "recvmsg")
TRACEPOINTS = [
    "sched:sched_switch",
    "sched:sched_wakeup",
    "net:net_dev_xmit",
    *(f"syscalls:sys_{edge}_{call}" for call in SENDS + RECVS for edge in ("enter", "exit")),
]

_LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
_DEV = re.compile(r"dev=(\S+) .*len=(\d+)")
_WAKEUP = re.compile(r"comm=(.+?) pid=(\d+) .*target_cpu=(\d+)")
_SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.+? next_pid=(\d+)")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of ``perf script -F comm,pid,tid,cpu,time,event,trace``; time in us."""

    us: float
    cpu: int
    pid: int
    tid: int
    comm: str
    name: str
    detail: str


def parse(lines: Iterable[str]) -> Iterator[Event]:
    for line in lines:
        m = _LINE.match(line)
        if m is not None:
            comm, pid, tid, cpu, t, name, detail = m.groups()
            yield Event(float(t) * 1e6, int(cpu), int(pid), int(tid), comm, name, detail)


@dataclass(slots=True)
class _Task:
    """What is tracked per thread while the events are read."""

    sends: list[float] = field(default_factory=list)
    wake_to_send: list[float] = field(default_factory=list)
    recv_to_send: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    delays: list[float] = field(default_factory=list)
    stacked: int = 0  # wake-ups placed on a busy CPU while another was idle
    xmit: Counter[str] = field(default_factory=Counter)  # frames sent, by device
    comm: str = ""
    asleep: bool = False
    woke_at: float | None = None  # switched in after a sleep, no send yet
    recv_done: float | None = None
    send_at: float | None = None
    pending: float | None = None  # recv -> send time waiting for the frame it sent
    wakeup: tuple[float, bool] | None = None


def analyse(events: Iterable[Event], cpus: int) -> dict[int, _Task]:
    """Per thread: the figures above, from the events in time order."""
    tasks: dict[int, _Task] = defaultdict(_Task)
    running = [0] * cpus
    for e in events:
        name = e.name
        if name == "sched:sched_switch":
            m = _SWITCH.search(e.detail)
            if m is None:
                continue
            prev, state, nxt = int(m.group(1)), m.group(2), int(m.group(3))
            running[e.cpu] = nxt
            if prev:
                tasks[prev].asleep = state.startswith("S")  # waiting for input, not preempted
            if nxt:
                t = tasks[nxt]
                if t.wakeup is not None:
                    t.delays.append(e.us - t.wakeup[0])
                    t.stacked += t.wakeup[1]
                    t.wakeup = None
                if t.asleep:
                    t.asleep, t.woke_at, t.recv_done = False, e.us, None
        elif name == "sched:sched_wakeup":
            m = _WAKEUP.search(e.detail)
            if m is None:
                continue
            target = int(m.group(3))
            busy = target < cpus and running[target] != 0
            idle_elsewhere = any(running[c] == 0 for c in range(cpus) if c != target)
            tasks[int(m.group(2))].wakeup = (e.us, busy and idle_elsewhere)
        else:
            t = tasks[e.tid]
            t.comm = e.comm
            if t.asleep:  # running, but its switch-in was lost: no wake -> send from it
                t.asleep, t.woke_at, t.recv_done = False, None, None
            if name == "net:net_dev_xmit":
                m = _DEV.search(e.detail)
                if m is not None:
                    t.xmit[m.group(1)] += 1
                    if t.pending is not None:
                        t.recv_to_send[f"{m.group(1)}/{m.group(2)}"].append(t.pending)
                        t.pending = None
            elif name.startswith("syscalls:sys_enter_"):
                call = name[len("syscalls:sys_enter_") :]
                if call in SENDS:
                    t.send_at = e.us
                    if t.woke_at is not None:
                        t.wake_to_send.append(e.us - t.woke_at)
                        t.woke_at = None
                    if t.recv_done is not None:
                        t.pending, t.recv_done = e.us - t.recv_done, None
            elif name.startswith("syscalls:sys_exit_"):
                call = name[len("syscalls:sys_exit_") :]
                if call in SENDS and t.send_at is not None:
                    t.sends.append(e.us - t.send_at)
                    t.send_at = t.pending = None  # no frame from this send: not counted
                elif call in RECVS and _returned(e.detail) >= 0:
                    t.recv_done = e.us  # a datagram came (not EAGAIN)
    return tasks


def _returned(detail: str) -> int:
    """A syscall's return value from its exit tracepoint (negative: an errno)."""
    try:
        value = int(detail.split()[-1], 16)
    except (IndexError, ValueError):
        return -1
    return value - (1 << 64) if value >= 1 << 63 else value


def roles(tasks: dict[int, _Task]) -> dict[str, int]:
    """The lab's processes (their main threads, whose tid is their pid), by what they send."""

    def most(dev: str, but: int | None = None) -> int | None:
        n, tid = max(((t.xmit[dev], tid) for tid, t in tasks.items() if tid != but), default=(0, 0))
        return tid if n else None

    found = {"relay": most("k0"), "mn": most("eth0")}
    if found["relay"] is not None:
        found["lma"] = most("tr0", but=found["relay"])
    kea = [tid for tid, t in tasks.items() if t.comm == "kea-dhcp4" and t.xmit]
    if kea:
        found["kea"] = max(kea, key=lambda tid: sum(tasks[tid].xmit.values()))
    return {role: tid for role, tid in found.items() if tid is not None}


def stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": percentile(xs, 50), "p90": percentile(xs, 90)}


def summarise(tasks: dict[int, _Task]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, tid in roles(tasks).items():
        t = tasks[tid]
        out[role] = {
            "tid": tid,
            "comm": t.comm,
            "send_us": stats(t.sends),
            "wake_to_send_us": stats(t.wake_to_send),
            "recv_to_send_us": {k: stats(v) for k, v in sorted(t.recv_to_send.items())},
            "wakeup_delay_us": stats(t.delays),
            "wakeups_stacked": t.stacked,
        }
    return out


def trace(bench: str, bench_args: list[str], cpus: int) -> dict[str, Any]:
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("kernel_steps: needs perf (Debian: apt-get install linux-perf)")
    with tempfile.TemporaryDirectory(prefix="pmip-kernel-steps-") as tmp:
        data = Path(tmp) / "perf.data"
        record = [perf, "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-o", str(data)]
        for tp in TRACEPOINTS:
            record += ["-e", tp]
        workload = [sys.executable, str(HERE / f"{bench}.py"), "--breakdown", "0", *bench_args]
        run = subprocess.run([*record, "--", *workload], check=False)
        if run.returncode != 0:
            raise SystemExit(f"kernel_steps: {bench} under perf exited {run.returncode}")
        script = subprocess.Popen(
            [perf, "script", "-i", str(data), "-F", "comm,pid,tid,cpu,time,event,trace"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert script.stdout is not None
        tasks = analyse(parse(script.stdout), cpus)
        script.wait()
    return summarise(tasks)


def _fmt(s: dict[str, float]) -> tuple[str, str, str]:
    return str(s["n"]), f"{s['p50']:.0f}", f"{s['p90']:.0f}"


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("bench", choices=BENCHES, help="the bench to run under perf")
    parser.epilog = (
        "Options it does not know go to the bench, e.g. `kernel_steps.py dhcp_attach --n 60`.\n"
        "Needs root and perf (Debian: linux-perf). Details: bench/README.md, kernel_steps."
    )
    args, bench_args = parser.parse_known_args()  # the rest goes to the bench
    if args.quick:
        bench_args.append("--quick")
    bench_args += ["--tag", f"{NAME}.{args.tag}" if args.tag else NAME]
    if os.geteuid() != 0:
        raise SystemExit("kernel_steps: needs root (perf record -a, network namespaces)")
    info = machine_info()
    cpus = os.cpu_count() or 1
    res = trace(args.bench, bench_args, cpus)
    if "relay" not in res:
        raise SystemExit("kernel_steps: no process sent on k0: not the lab's trace")
    rows = []
    for role, r in res.items():
        rows.append((role, "send", *_fmt(r["send_us"])))
        rows.append((role, "wake -> send", *_fmt(r["wake_to_send_us"])))
        for frame, s in r["recv_to_send_us"].items():
            if s["n"] >= 5:
                rows.append((role, f"recv -> send ({frame})", *_fmt(s)))
        d = r["wakeup_delay_us"]
        rows.append((role, f"wakeup delay ({r['wakeups_stacked']} stacked)", *_fmt(d)))
    print(f"\n{args.bench} under perf, main threads, us:")
    print_table(rows, ("role", "step", "n", "p50", "p90"), left=2)
    data = {"bench": args.bench, "bench_args": bench_args, "roles": res}
    data["machine"] = finish_machine_info(info)
    write_json(f"{NAME}.{args.bench}", data, quick=args.quick, tag=args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
