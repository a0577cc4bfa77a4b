"""bench/daemon_steps.py: its probes name functions the daemons have, its wrappers mark
calls and wake-ups without changing what the calls do, and its reading of the marks
gives the known answers of a hand-written run."""

from __future__ import annotations

import os
import selectors
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import daemon_steps
from daemon_steps import Segment


@pytest.mark.parametrize("role", sorted(daemon_steps.PROBES))
def test_every_probe_names_a_function_of_the_daemon(role: str) -> None:
    for target in daemon_steps.PROBES[role]:
        holder, attr = daemon_steps._resolve(target)
        assert callable(getattr(holder, attr)), target


def test_a_missing_probe_target_is_an_error() -> None:
    with pytest.raises(AttributeError, match="no_such_method"):
        daemon_steps._resolve("pmip_agent.daemon:MagService.no_such_method")


def test_install_marks_calls_sends_and_wakeups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Link:
        def send(self, data: bytes, addr: tuple[str, int]) -> int:
            return len(data)

    def work(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x * 2

    fake = types.ModuleType("daemon_steps_fake")
    fake.Link = Link  # type: ignore[attr-defined]
    fake.work = work  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "daemon_steps_fake", fake)
    # install() replaces the selector's select; put the original back after the test
    monkeypatch.setattr(selectors.EpollSelector, "select", selectors.EpollSelector.select)
    probes = {"daemon_steps_fake:work": "work", "daemon_steps_fake:Link.send": "send-mn"}
    out = tmp_path / "mag.marks"
    marks, dump = daemon_steps.install(probes, out, every_s=None)

    offer = bytes(240) + b"\x35\x01\x02" + b"\xff"
    assert fake.work(21) == 42
    with pytest.raises(ValueError):
        fake.work(-1)
    assert Link().send(offer, ("255.255.255.255", 68)) == len(offer)
    assert Link().send(b"\x01\x02", ("::1", 0)) == 2
    r, w = os.pipe()
    try:
        os.write(w, b"x")  # always readable: two wake-ups
        with selectors.EpollSelector() as sel:
            sel.register(r, selectors.EVENT_READ)
            assert sel.select(0)
            assert sel.select(0)
    finally:
        os.close(r)
        os.close(w)
    names = [m for _, m in marks]
    assert names == [
        "work>", "work<", "work>", "work<",  # the raised error is marked too
        "send-mn OFFER>", "send-mn OFFER<", "send-mn>", "send-mn<",
        "wake", "wake",
    ]  # fmt: skip
    times = [t for t, _ in marks]
    assert times == sorted(times)
    dump()
    assert daemon_steps.read_marks(out) == marks
    fake.work(1)
    dump()  # appends the new marks only
    assert daemon_steps.read_marks(out) == marks and len(marks) == len(names) + 2


def test_a_line_cut_short_is_left_out(tmp_path: Path) -> None:
    out = tmp_path / "lma.marks"
    out.write_text("100 wake\n150 mh-read>\n2")
    assert daemon_steps.read_marks(out) == [(100, "wake"), (150, "mh-read>")]


def _run(*wakes: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Marks of successive wake-ups, each given as (us from its wake, mark) pairs."""
    marks = []
    for n, wake in enumerate(wakes):
        base = n * 1_000_000_000
        marks.append((base, "wake"))
        marks += [(base + us * 1000, mark) for us, mark in wake]
    return marks


SEG = Segment("mag", "PBA -> OFFER", "mh-read>", "send-mn OFFER<", ("send-lma",))
USUAL = [(10, "mh-read>"), (40, "decode>"), (90, "decode<"), (150, "send-mn OFFER<")]


def test_steps_take_the_usual_path_of_the_matching_wakeups() -> None:
    slower = [(20, "mh-read>"), (50, "decode>"), (130, "decode<"), (230, "send-mn OFFER<")]
    faster = [(5, "mh-read>"), (35, "decode>"), (75, "decode<"), (120, "send-mn OFFER<")]
    other_path = [(10, "mh-read>"), (20, "flush>"), (90, "send-mn OFFER<")]
    marks = _run(
        USUAL,
        slower,
        faster,
        other_path,
        [(10, "server-read>"), (50, "send-mn OFFER<")],  # does not start the segment
        [(10, "mh-read>"), (20, "send-lma<"), (50, "send-mn OFFER<")],  # ruled out
        [(10, "mh-read>"), (50, "flush<")],  # never reaches its end
        [(10, "mh-read>"), (60, "send-mn OFFER<"), (70, "flush<")],  # cut at the end mark
    )
    got = daemon_steps.steps(marks, SEG)
    assert got["matched"] == 5 and got["usual"] == 3
    assert [r["mark"] for r in got["steps"]] == ["wake", *(m for _, m in USUAL)]
    assert [r["step_us"] for r in got["steps"]] == [0.0, 10.0, 30.0, 50.0, 60.0]
    assert [r["since_wake_us"] for r in got["steps"]] == [0.0, 10.0, 40.0, 90.0, 150.0]


def test_steps_of_a_segment_never_reached() -> None:
    assert daemon_steps.steps(_run(USUAL), Segment("lma", "x", "mh-read>", "send-mag<")) == {
        "matched": 0,
        "usual": 0,
        "steps": [],
    }


def test_marks_before_the_first_wakeup_are_left_out() -> None:
    marks = [(1, "mh-read>"), (2, "send-mn OFFER<"), *_run(USUAL)]
    assert [len(w) for w in daemon_steps.wakeups(marks)] == [1 + len(USUAL)]
