"""bench/kernel_steps.py's reading of `perf script` lines: the figures it reports for a
short, hand-written trace whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import kernel_steps

MAG, MN, LMA = 300, 200, 400


def line(comm: str, tid: int, cpu: int, t_us: int, event: str, detail: str) -> str:
    return f"{comm:>16} {tid:5d}/{tid:<5d} [{cpu:03d}] {t_us / 1e6:.6f}: {event}: {detail}"


def switch(cpu: int, t: int, prev: int, state: str, nxt: int) -> str:
    return line(
        "x",
        prev,
        cpu,
        t,
        "sched:sched_switch",
        f"prev_comm=x prev_pid={prev} prev_prio=120 prev_state={state} ==> "
        f"next_comm=y next_pid={nxt} next_prio=120",
    )


def wakeup(cpu: int, t: int, waker: int, wakee: int, target: int) -> str:
    return line(
        "x",
        waker,
        cpu,
        t,
        "sched:sched_wakeup",
        f"comm=y pid={wakee} prio=120 target_cpu={target:03d}",
    )


def syscall(comm: str, tid: int, cpu: int, t: int, edge: str, call: str, ret: str = "") -> str:
    detail = ret if edge == "exit" else "fd: 0x00000003"
    return line(comm, tid, cpu, t, f"syscalls:sys_{edge}_{call}", detail)


def xmit(comm: str, tid: int, cpu: int, t: int, dev: str, length: int) -> str:
    return line(comm, tid, cpu, t, "net:net_dev_xmit", f"dev={dev} skbaddr=0x1 len={length} rc=0")


# CPU 1 idle throughout. The MN sends a DISCOVER on CPU 0 and wakes the MAG there (a busy
# CPU while CPU 1 is idle: "stacked"); the MAG is switched in 10 us later, reads the
# datagram at 40 us and relays it on k0 at 140 us (a 30 us send). Its next recvfrom
# finds nothing (EAGAIN), it sends a PBU all the same, and sleeps.
TRACE = [
    switch(0, 0, 0, "R", MN),
    switch(1, 0, MAG, "S", 0),  # the MAG waits for input on CPU 1, which goes idle
    syscall("python", MN, 0, 5, "enter", "sendto"),
    xmit("python", MN, 0, 6, "eth0", 302),
    wakeup(0, 8, MN, MAG, 0),
    syscall("python", MN, 0, 9, "exit", "sendto", "0x12c"),
    switch(0, 18, MN, "S", MAG),
    syscall("pmip-agent", MAG, 0, 30, "enter", "recvfrom"),
    syscall("pmip-agent", MAG, 0, 40, "exit", "recvfrom", "0x12c"),
    syscall("pmip-agent", MAG, 0, 140, "enter", "sendto"),
    xmit("pmip-agent", MAG, 0, 150, "k0", 350),
    syscall("pmip-agent", MAG, 0, 170, "exit", "sendto", "0x15e"),
    syscall("pmip-agent", MAG, 0, 180, "enter", "recvfrom"),
    syscall("pmip-agent", MAG, 0, 182, "exit", "recvfrom", "0xfffffffffffffff5"),
    syscall("pmip-agent", MAG, 0, 200, "enter", "sendto"),  # a send with no datagram read
    xmit("pmip-agent", MAG, 0, 201, "tr0", 142),
    syscall("pmip-agent", MAG, 0, 210, "exit", "sendto", "0x80"),
    switch(0, 220, MAG, "S", 0),
]


def test_the_figures_of_a_known_trace() -> None:
    tasks = kernel_steps.analyse(kernel_steps.parse(TRACE), cpus=2)
    mag = tasks[MAG]
    assert mag.wakeup is None and mag.delays == [10.0]  # woken at 8, switched in at 18
    assert mag.stacked == 1  # placed on the MN's busy CPU 0 while CPU 1 was idle
    assert mag.wake_to_send == [122.0]  # switched in at 18, first send at 140
    assert mag.sends == [30.0, 10.0]
    # Only the datagram read at 40 counts; the EAGAIN at 182 does not start a new one.
    assert dict(mag.recv_to_send) == {"k0/350": [100.0]}
    assert mag.xmit == {"k0": 1, "tr0": 1}
    assert tasks[MN].sends == [4.0] and tasks[MN].wake_to_send == []
    assert kernel_steps.roles(tasks) == {"relay": MAG, "mn": MN}  # no one else on tr0


def test_roles_tell_the_lma_from_the_relay() -> None:
    extra = [
        switch(1, 230, 0, "R", LMA),
        syscall("pmip-agent", LMA, 1, 240, "enter", "sendto"),
        xmit("pmip-agent", LMA, 1, 241, "tr0", 150),
        syscall("pmip-agent", LMA, 1, 250, "exit", "sendto", "0x88"),
    ]
    tasks = kernel_steps.analyse(kernel_steps.parse(TRACE + extra), cpus=2)
    assert kernel_steps.roles(tasks) == {"relay": MAG, "mn": MN, "lma": LMA}


def test_returned_values() -> None:
    assert kernel_steps._returned("0x12c") == 300
    assert kernel_steps._returned("0xfffffffffffffff5") == -11
    assert kernel_steps._returned("") == -1


def test_percentiles_are_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert kernel_steps.percentile(xs, 50) == 50.0
    assert kernel_steps.percentile(xs, 90) == 90.0
    empty = kernel_steps.stats([])
    assert empty["n"] == 0 and empty["p50"] != empty["p50"]  # NaN: nothing to rank


def test_a_send_without_a_frame_is_not_counted() -> None:
    """A datagram read, then a send that puts nothing on a lab link (a local socket, say):
    the frame of a later send must not be charged with that recv -> send time."""
    trace = [
        syscall("pmip-agent", MAG, 0, 10, "exit", "recvfrom", "0x12c"),
        syscall("pmip-agent", MAG, 0, 20, "enter", "sendto"),
        syscall("pmip-agent", MAG, 0, 25, "exit", "sendto", "0x10"),
        syscall("pmip-agent", MAG, 0, 90, "enter", "sendto"),
        xmit("pmip-agent", MAG, 0, 91, "tr0", 142),
        syscall("pmip-agent", MAG, 0, 95, "exit", "sendto", "0x80"),
    ]
    tasks = kernel_steps.analyse(kernel_steps.parse(trace), cpus=2)
    assert tasks[MAG].sends == [5.0, 5.0]
    assert dict(tasks[MAG].recv_to_send) == {}


def test_a_lost_switch_in_starts_no_wake() -> None:
    """perf can lose events under load. A thread seen asleep and then sending, with no
    switch-in between, must not yield a wake -> send from its previous wake."""
    trace = [
        switch(0, 0, 0, "R", MAG),
        switch(0, 10, MAG, "S", 0),
        switch(0, 20, 0, "R", MAG),  # a wake that sends nothing
        switch(0, 30, MAG, "S", 0),
        # the switch-in of the next wake is lost
        syscall("pmip-agent", MAG, 0, 100_000, "enter", "sendto"),
        syscall("pmip-agent", MAG, 0, 100_010, "exit", "sendto", "0x80"),
    ]
    tasks = kernel_steps.analyse(kernel_steps.parse(trace), cpus=2)
    assert tasks[MAG].wake_to_send == []
    assert tasks[MAG].sends == [10.0]
