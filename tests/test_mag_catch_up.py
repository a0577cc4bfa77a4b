"""When the MAG runs the work its DHCP answers went ahead of (commit, logs, tunnel setup):
``daemon.catch_up_delay``, the rule ``MagService.flush`` applies after each flush."""

from __future__ import annotations

from itertools import pairwise

import pytest

from pmip_agent.daemon import DHCP_EXCHANGE_S, MN_TURN_S, catch_up_delay


@pytest.mark.parametrize(
    ("exchange_open", "answered", "due_in", "expected"),
    [
        (False, False, None, 0.0),  # nothing to make way for: at once
        (False, False, 0.03, 0.0),  # and what was held back goes with it
        (True, False, None, DHCP_EXCHANGE_S),  # an MN was OFFERed: it is about to REQUEST
        (True, True, None, DHCP_EXCHANGE_S),
        (True, False, 0.01, None),  # the bound runs from the first flush that held it back
        (False, True, None, MN_TURN_S),  # an MN was just answered: its turn first
        (False, True, 0.04, MN_TURN_S),  # the ACK ends the exchange: brought forward
        (False, True, MN_TURN_S / 2, None),  # never put off
    ],
)
def test_catch_up_delay(
    exchange_open: bool, answered: bool, due_in: float | None, expected: float | None
) -> None:
    assert catch_up_delay(exchange_open, answered, due_in) == expected


def test_a_stream_of_answers_cannot_starve_the_catch_up() -> None:
    """An answer every MN_TURN_S / 4, as flush would see them: the catch-up still runs
    MN_TURN_S after the first, and again at least every MN_TURN_S after that."""
    step = MN_TURN_S / 4
    due: float | None = None  # when the scheduled catch-up runs
    ran: list[float] = []
    for i in range(40):
        now = i * step
        if due is not None and due <= now:
            ran.append(due)
            due = None
        delay = catch_up_delay(False, True, None if due is None else due - now)
        if delay == 0.0:
            ran.append(now)
        elif delay is not None:
            due = now + delay
    assert ran[0] == pytest.approx(MN_TURN_S)
    assert len(ran) >= 8
    assert all(b - a <= MN_TURN_S + step for a, b in pairwise(ran))
