"""Who held the CPUs during the slow DHCP attaches: bench/dhcp_attach.py with the kernel's
scheduler trace on.

    sudo .venv/bin/python bench/attach_tails.py --kernel-relay

It takes bench/dhcp_attach.py's options and runs it (``--breakdown 0``) with the
``sched_switch`` and ``sched_wakeup`` events of /sys/kernel/tracing on, and the ``irq``
ones (whose context tells who is on a CPU between switches), on the ``mono`` clock
(time.perf_counter's), and puts the tracing settings back afterwards. Each measured
attach has a window, DISCOVER sent -> ACK received. For each window, from the trace:

* **outside**: the CPU time of every task that ran in it and is not the lab's (the
  daemons', Kea's and this process's threads) nor idle: kernel threads such as
  ``kdamond`` (DAMON's reclaim) or ``kworker``, other processes on the machine;
* **waits**: how long each lab task woken in the window waited for a CPU before it ran.

Then, per flow: how many attaches took longer than 2x the direct lease's p99 ("slow": two
of them put a flow's p99 past the goal of 2x), and how many of those, and of all
attaches, had an outside task on a CPU for ``--outside-ms`` (0.2) or more in their window
("touched"); and the five slowest attaches, with their outside tasks and their lab
tasks' longest wait.

Writes build/bench/attach_tails.json (``--tag T``: attach_tails.T.json). Needs root.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import dhcp_attach  # noqa: E402  (bench/ is on sys.path from here on)
from common import finish_machine_info, machine_info, print_table, write_json  # noqa: E402

NAME = "attach_tails"
TRACING = Path("/sys/kernel/tracing")
EVENTS = ("sched/sched_switch", "sched/sched_wakeup", "irq")  # irq: context between switches
BUFFER_KB = 32768  # per CPU: a 100-attach run writes about 3 MB

# "  comm-tid  [cpu] flags  seconds: event: payload"; the comm is right-aligned in 16
_LINE = re.compile(r"^(.{16})-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+):\s+(\w+):\s")
_SWITCH = re.compile(r"prev_comm=.* prev_pid=\d+ .* ==> next_comm=(.*) next_pid=(\d+)")
_WAKEUP = re.compile(r"comm=(.*) pid=(\d+) prio=")


# --- the trace --------------------------------------------------------------------------


class SchedTrace:
    """The scheduler events of the whole machine while inside ``with``; ``lines`` after."""

    def __init__(self, root: Path = TRACING) -> None:
        self.root = root
        self.lines: list[str] = []
        self.overrun = 0  # events the ring buffer lost on cpu0
        self._saved: dict[str, str] = {}

    def _set(self, name: str, value: str) -> None:
        path = self.root / name
        if name not in self._saved:
            text = path.read_text().strip()
            if name == "trace_clock":  # "[local] global ... mono ...": the selected one
                text = re.search(r"\[(\S+)\]", text).group(1)  # type: ignore[union-attr]
            elif name == "buffer_size_kb":  # "7 (expanded: 1408)" until the buffer is used
                text = text.split()[0]
            self._saved[name] = text
        path.write_text(value)

    def __enter__(self) -> SchedTrace:
        if not (self.root / "trace").exists():
            raise SystemExit(f"no tracefs at {self.root}: mount -t tracefs nodev {self.root}")
        self._set("tracing_on", "0")
        self._set("trace_clock", "mono")
        self._set("buffer_size_kb", str(BUFFER_KB))
        for event in EVENTS:
            self._set(f"events/{event}/enable", "1")
        (self.root / "trace").write_text("")
        (self.root / "tracing_on").write_text("1")
        return self

    def __exit__(self, *exc: object) -> None:
        (self.root / "tracing_on").write_text("0")
        try:
            if exc[0] is None:
                with (self.root / "trace").open() as f:
                    self.lines = f.readlines()
            overrun = (self.root / "per_cpu" / "cpu0" / "stats").read_text()
            self.overrun = int(re.search(r"overrun: (\d+)", overrun).group(1))  # type: ignore[union-attr]
        finally:
            (self.root / "trace").write_text("")
            failed: list[str] = []
            for name, value in reversed(self._saved.items()):
                try:  # each one, whatever became of the others
                    (self.root / name).write_text(value)
                except OSError as e:
                    failed.append(f"{name} = {value!r}: {e}")
            if failed:
                raise SystemExit("could not put back: " + "; ".join(failed))


@dataclass(frozen=True, slots=True)
class Run:
    """A task on a CPU from ``start`` to ``end`` (seconds, the trace's clock)."""

    start: float
    end: float
    tid: int
    comm: str


@dataclass(slots=True)
class Schedule:
    runs: list[Run] = field(default_factory=list)  # by start; no idle
    wakeups: list[tuple[float, int, str]] = field(default_factory=list)  # (t, tid, comm)
    switch_ins: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    longest: float = 0.0  # the longest run, for the window search
    starts: list[float] = field(default_factory=list)  # of runs

    def runs_in(self, a: float, b: float) -> Iterator[tuple[Run, float]]:
        """Each run overlapping [a, b], with how long it overlaps (s)."""
        lo = bisect.bisect_left(self.starts, a - self.longest)
        hi = bisect.bisect_right(self.starts, b)
        for r in self.runs[lo:hi]:
            overlap = min(r.end, b) - max(r.start, a)
            if overlap > 0:
                yield r, overlap

    def wait_after(self, tid: int, t: float) -> float | None:
        """From a wake-up of ``tid`` at ``t`` to its next switch-in (s)."""
        ins = self.switch_ins.get(tid, [])
        i = bisect.bisect_left(ins, t)
        return ins[i] - t if i < len(ins) else None


def parse(lines: Iterable[str]) -> Schedule:
    """Who was on each CPU when, from the context (``comm-tid``) of every event and from
    ``sched_switch``; and the ``sched_wakeup`` lines.

    This kernel does not trace every switch: none out of some tasks (a ``tokio-rt-worker``
    of this machine's), and only some out of the idle task. When an event on a CPU is
    another task's than the one current there (the last switch's next task, else the
    last event's own), the switch between them is placed at that task's wake-up if it
    came between the two events, else half-way."""
    sched = Schedule()
    current: dict[int, tuple[float, int, str]] = {}  # cpu -> (since, tid, comm)
    last: dict[int, float] = {}  # cpu -> its last event
    woken: dict[int, float] = {}  # tid -> its last wake-up

    def close(cpu: int, until: float) -> None:
        since, tid, comm = current[cpu]
        if tid != 0 and until > since:
            sched.runs.append(Run(since, until, tid, comm))
            sched.longest = max(sched.longest, until - since)

    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        tid, cpu, t, event = int(m.group(2)), int(m.group(3)), float(m.group(4)), m.group(5)
        if cpu in current and current[cpu][1] != tid:  # a switch the trace lacks
            w, seen = woken.get(tid, -1.0), last[cpu]
            at = w if seen <= w < t else (seen + t) / 2
            close(cpu, at)
            current[cpu] = (at, tid, m.group(1).strip())
            sched.switch_ins[tid].append(at)
        elif cpu not in current:
            current[cpu] = (t, tid, m.group(1).strip())
        last[cpu] = t
        rest = line[m.end() :]
        if event == "sched_wakeup":
            w = _WAKEUP.match(rest)
            if w is not None:
                sched.wakeups.append((t, int(w.group(2)), w.group(1)))
                woken[int(w.group(2))] = t
        elif event == "sched_switch":
            s = _SWITCH.match(rest)
            if s is not None:
                close(cpu, t)
                current[cpu] = (t, int(s.group(2)), s.group(1))
                sched.switch_ins[int(s.group(2))].append(t)
    sched.runs.sort(key=lambda r: r.start)
    sched.starts = [r.start for r in sched.runs]
    for ins in sched.switch_ins.values():
        ins.sort()
    return sched


# --- per attach -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    flow: str
    index: int
    ack_ms: float
    outside_ms: dict[str, float]  # comm -> CPU time in the window
    lab_ms: dict[str, float]  # lab process -> CPU time in the window
    longest_wait: tuple[str, float]  # (lab process, ms) of the longest wait for a CPU

    @property
    def outside_total_ms(self) -> float:
        return sum(self.outside_ms.values())


def window(sched: Schedule, sample: dict[str, Any], lab: dict[int, str]) -> Window:
    """What ran during one attach: ``sample`` as dhcp_attach writes it; ``lab``: thread
    id -> lab process name."""
    a, b = sample["sent_at"], sample["done_at"]
    outside: dict[str, float] = defaultdict(float)
    mine: dict[str, float] = defaultdict(float)
    for run, overlap in sched.runs_in(a, b):
        owner = lab.get(run.tid)
        if owner is None:
            outside[run.comm] += overlap * 1e3
        else:
            mine[owner] += overlap * 1e3
    longest = ("", 0.0)
    lo = bisect.bisect_left(sched.wakeups, (a,))
    for t, tid, _comm in sched.wakeups[lo:]:
        if t > b:
            break
        owner = lab.get(tid)
        wait = sched.wait_after(tid, t) if owner is not None else None
        if wait is not None and wait * 1e3 > longest[1]:
            longest = (owner or "", wait * 1e3)
    return Window(
        sample["flow"], sample["index"], sample["ack_ms"], dict(outside), dict(mine), longest
    )


def summary(windows: list[Window], slow_ms: float, outside_ms: float) -> dict[str, Any]:
    slow = [w for w in windows if w.ack_ms > slow_ms]

    def touched(ws: list[Window]) -> int:
        return sum(1 for w in ws if w.outside_total_ms >= outside_ms)

    return {
        "attaches": len(windows),
        "slow": len(slow),
        "slow_with_outside": touched(slow),
        "all_with_outside": touched(windows),
        "slowest": sorted(windows, key=lambda w: -w.ack_ms)[:5],
    }


# --- the run ----------------------------------------------------------------------------


def main() -> int:
    parser = dhcp_attach.make_parser(__doc__, breakdown=0)
    parser.add_argument(
        "--outside-ms",
        type=float,
        default=0.2,
        help="outside CPU time in a window that counts as touched (0.2 ms)",
    )
    args = parser.parse_args()
    info = machine_info()
    with SchedTrace() as trace:
        data = dhcp_attach.run(args)
    sched = parse(trace.lines)
    lab = {tid: name for name, tids in data["lab_tasks"].items() for tid in tids}
    direct_p99 = data["results"]["direct-kea"]["ack_ms"]["p99"]
    slow_ms = dhcp_attach.GOAL_RATIO * direct_p99
    out: dict[str, Any] = {
        "trace_lines": len(trace.lines),
        "trace_overrun_cpu0": trace.overrun,
        "slow_ms": slow_ms,
        "outside_ms": args.outside_ms,
        "flows": {},
    }
    print(
        f"\nscheduler trace: {len(trace.lines)} lines (cpu0 overrun {trace.overrun}); "
        f"slow: an attach over {slow_ms:.2f} ms ({dhcp_attach.GOAL_RATIO:g}x the direct "
        f"lease's p99); touched: {args.outside_ms:g} ms or more of outside tasks in it"
    )
    rows, detail = [], []
    for flow in dhcp_attach.FLOWS:
        samples = [s for s in data["samples"][flow] if s["ok"]]
        windows = [window(sched, s, lab) for s in samples]
        got = summary(windows, slow_ms, args.outside_ms)
        rows.append(
            (
                flow,
                got["attaches"],
                f"{data['results'][flow]['ack_ms']['p99']:.2f}",
                got["slow"],
                got["slow_with_outside"],
                f"{got['all_with_outside']}/{got['attaches']}",
            )
        )
        for w in got["slowest"]:
            top = sorted(w.outside_ms.items(), key=lambda kv: -kv[1])[:2]
            detail.append(
                (
                    flow,
                    f"{w.ack_ms:.2f}",
                    f"{w.outside_total_ms:.2f}",
                    ", ".join(f"{c} {ms:.2f}" for c, ms in top) or "-",
                    f"{w.longest_wait[0]} {w.longest_wait[1]:.2f}",
                )
            )
        out["flows"][flow] = {
            **{k: v for k, v in got.items() if k != "slowest"},
            "windows": [
                {
                    "index": w.index,
                    "ack_ms": w.ack_ms,
                    "outside_ms": w.outside_ms,
                    "lab_ms": w.lab_ms,
                    "longest_wait": w.longest_wait,
                }
                for w in windows
            ],
        }
    print()
    print_table(rows, ("flow", "attaches", "p99 ms", "slow", "slow+touched", "all touched"))
    print("\nthe five slowest of each flow (ms):")
    print_table(detail, ("flow", "attach", "outside", "outside tasks", "longest lab wait"), left=1)
    data["tails"] = out
    data["machine"] = finish_machine_info(info)
    dhcp_attach.report(data)
    write_json(NAME, data, quick=args.quick, tag=args.tag)
    failed = sum(r["attaches"] - r["ok"] for r in data["results"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
