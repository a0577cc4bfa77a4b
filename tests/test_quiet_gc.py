"""quiet_gc: the daemons' collections at their quiet moments, as often as CPython's default
thresholds would collect, with CPython's own trigger moved to a backstop."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pmip_agent import quiet_gc


@pytest.fixture(autouse=True)
def _gc_as_it_was() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.disable()  # the test, not CPython, decides when collections run
    gc.collect()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        gc.enable()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _young(n: int) -> list[list[int]]:
    return [[i] for i in range(n)]  # n container objects that stay alive


def test_take_over_freezes_start_up_and_moves_the_trigger_to_the_backstop() -> None:
    kept = _young(10)
    quiet_gc.take_over()
    assert gc.get_threshold() == (quiet_gc.BACKSTOP, *quiet_gc.DEFAULTS[1:])
    assert gc.get_freeze_count() >= len(kept)


def test_nothing_is_collected_before_the_young_threshold() -> None:
    kept = _young(quiet_gc.DEFAULTS[0] // 2)
    assert quiet_gc.collect_if_due(now=0.0) is None
    assert kept


def _due(middle: bool, oldest: bool) -> list[list[int]]:
    """Counts as CPython keeps them when a collection of that generation is due."""
    if oldest:
        for _ in range(quiet_gc.DEFAULTS[2]):
            gc.collect(1)  # each one counts toward the oldest generation
    if middle:
        for _ in range(quiet_gc.DEFAULTS[1]):
            gc.collect(0)  # each one counts toward the middle generation
    return _young(quiet_gc.DEFAULTS[0] + 10)


def test_past_the_young_threshold_the_young_generation_and_its_cycles() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    kept = _due(middle=False, oldest=False)
    assert quiet_gc.collect_if_due(now=0.0) == 0
    assert gone() is None and kept
    assert gc.get_count()[0] < quiet_gc.DEFAULTS[0]


def test_every_tenth_time_the_middle_generation() -> None:
    kept = _due(middle=True, oldest=False)
    assert quiet_gc.collect_if_due(now=0.0) == 1 and kept


def test_the_oldest_generation_at_most_once_per_full_every_s() -> None:
    kept = _due(middle=True, oldest=True)
    last = quiet_gc._last_full
    assert quiet_gc.collect_if_due(now=last + quiet_gc.FULL_EVERY_S) == 2
    kept += _due(middle=True, oldest=True)
    assert quiet_gc.collect_if_due(now=last + quiet_gc.FULL_EVERY_S + 1.0) == 1  # too soon
    assert kept
