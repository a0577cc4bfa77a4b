"""bench/attach_tails.py: its reading of a scheduler trace gives the known answers of a
hand-written one, with the switches this kernel leaves out, and it puts the tracing
settings back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import attach_tails
from attach_tails import Run, SchedTrace, parse, summary, window


def line(comm: str, tid: int, cpu: int, t: float, event: str, payload: str) -> str:
    return f"{comm:>16}-{tid:<7} [{cpu:03d}] d..2. {t:.6f}: {event}: {payload}\n"


def switch(cpu: int, t: float, prev: tuple[str, int], nxt: tuple[str, int]) -> str:
    return line(
        *prev,
        cpu,
        t,
        "sched_switch",
        f"prev_comm={prev[0]} prev_pid={prev[1]} prev_prio=120 prev_state=S ==> "
        f"next_comm={nxt[0]} next_pid={nxt[1]} next_prio=120",
    )


def wakeup(by: tuple[str, int], cpu: int, t: float, woken: tuple[str, int]) -> str:
    return line(
        *by, cpu, t, "sched_wakeup", f"comm={woken[0]} pid={woken[1]} prio=120 target_cpu=00{cpu}"
    )


def softirq(task: tuple[str, int], cpu: int, t: float) -> str:
    return line(*task, cpu, t, "softirq_entry", "vec=3 [action=NET_RX]")


IDLE = ("<idle>", 0)
KEA = ("kea-dhcp4", 10)
MAG = ("pmip-agent", 20)
MN = ("python", 30)
KDAMOND = ("kdamond.0", 77)
HIDDEN = ("tokio-rt-worker", 75)  # never switched out, in the trace


def test_runs_come_from_the_switches_between_them() -> None:
    sched = parse(
        [
            "# tracer: nop\n",
            switch(0, 1.000, IDLE, MN),
            wakeup(MN, 0, 1.001, MAG),
            switch(0, 1.002, MN, MAG),
            switch(0, 1.004, MAG, IDLE),
        ]
    )
    assert sched.runs == [Run(1.000, 1.002, 30, "python"), Run(1.002, 1.004, 20, "pmip-agent")]
    assert sched.wait_after(20, 1.001) == pytest.approx(0.001)


def test_a_missing_switch_out_of_idle_is_placed_at_the_wake_up() -> None:
    sched = parse(
        [
            switch(1, 2.000, KEA, IDLE),
            wakeup(MN, 0, 2.003, KEA),  # woken from another CPU, onto idle CPU 1
            softirq(KEA, 1, 2.005),  # running; its switch in is not in the trace
            switch(1, 2.006, KEA, IDLE),
        ]
    )
    assert sched.runs == [Run(2.003, 2.006, 10, "kea-dhcp4")]
    assert sched.wait_after(10, 2.003) == 0.0


def test_a_task_never_switched_out_holds_the_cpu_until_half_way_to_the_next() -> None:
    sched = parse(
        [
            switch(1, 3.000, KEA, IDLE),
            wakeup(IDLE, 1, 3.001, HIDDEN),
            softirq(HIDDEN, 1, 3.002),
            wakeup(MN, 0, 3.0025, KEA),  # queued behind the hidden task
            softirq(HIDDEN, 1, 3.004),
            softirq(KEA, 1, 3.006),  # Kea got the CPU between 3.004 and 3.006
            switch(1, 3.007, KEA, IDLE),
        ]
    )
    assert sched.runs == [
        Run(3.001, pytest.approx(3.005), 75, "tokio-rt-worker"),
        Run(pytest.approx(3.005), 3.007, 10, "kea-dhcp4"),
    ]
    assert sched.wait_after(10, 3.0025) == pytest.approx(0.0025)


def test_a_window_splits_its_cpu_time_between_the_lab_and_the_rest() -> None:
    sched = parse(
        [
            switch(0, 4.000, IDLE, MN),
            switch(1, 4.000, IDLE, KDAMOND),
            wakeup(MN, 0, 4.0002, KEA),  # to CPU 1, where kdamond runs
            wakeup(MN, 0, 4.0003, MAG),
            switch(0, 4.0004, MN, MAG),
            switch(0, 4.0008, MAG, IDLE),
            switch(1, 4.0015, KDAMOND, KEA),
            switch(1, 4.0019, KEA, MN),
            switch(1, 4.0020, MN, IDLE),
        ]
    )
    lab = {10: "kea", 20: "mag1", 30: "bench"}
    got = window(
        sched,
        {"flow": "flow3-relay", "index": 7, "ack_ms": 2.0, "sent_at": 4.0, "done_at": 4.002},
        lab,
    )
    assert got.outside_ms == {"kdamond.0": pytest.approx(1.5)}
    assert got.lab_ms == {
        "bench": pytest.approx(0.5),
        "mag1": pytest.approx(0.4),
        "kea": pytest.approx(0.4),
    }
    assert got.longest_wait[0] == "kea"
    assert got.longest_wait[1] == pytest.approx(1.3)
    # Outside the window, nothing counts.
    later = window(
        sched,
        {"flow": "flow3-relay", "index": 8, "ack_ms": 1.0, "sent_at": 4.0016, "done_at": 4.003},
        lab,
    )
    assert later.outside_ms == {}
    assert later.lab_ms["kea"] == pytest.approx(0.3)

    counts = summary([got, later], slow_ms=1.5, outside_ms=0.2)
    assert (counts["slow"], counts["slow_with_outside"], counts["all_with_outside"]) == (1, 1, 1)
    assert counts["slowest"][0] is got


def test_the_tracing_settings_are_put_back(tmp_path: Path) -> None:
    """SchedTrace against a stand-in for tracefs (its files are plain files here)."""
    root = tmp_path
    (root / "per_cpu" / "cpu0").mkdir(parents=True)
    (root / "per_cpu" / "cpu0" / "stats").write_text("entries: 3\noverrun: 2\n")
    (root / "trace").write_text("")
    (root / "tracing_on").write_text("1\n")
    (root / "trace_clock").write_text("[local] global counter uptime perf mono\n")
    (root / "buffer_size_kb").write_text("7 (expanded: 1408)\n")  # as a fresh tracefs says
    for event in attach_tails.EVENTS:
        (root / "events" / event).mkdir(parents=True)
        (root / "events" / event / "enable").write_text("0\n")
    with SchedTrace(root) as trace:
        assert (root / "trace_clock").read_text() == "mono"
        assert (root / "tracing_on").read_text() == "1"
        assert (root / "buffer_size_kb").read_text() == str(attach_tails.BUFFER_KB)
        for event in attach_tails.EVENTS:
            assert (root / "events" / event / "enable").read_text() == "1"
        (root / "trace").write_text(switch(0, 1.0, IDLE, MN))
    assert trace.lines == [switch(0, 1.0, IDLE, MN)]
    assert trace.overrun == 2
    assert (root / "trace_clock").read_text() == "local"
    assert (root / "tracing_on").read_text() == "1"
    assert (root / "buffer_size_kb").read_text() == "7"
    for event in attach_tails.EVENTS:
        assert (root / "events" / event / "enable").read_text() == "0"
    assert (root / "trace").read_text() == ""


def test_no_tracefs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no tracefs"), SchedTrace(tmp_path):
        pass
