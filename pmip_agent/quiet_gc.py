"""The cyclic garbage collector, moved off the signalling path.

CPython collects its youngest generation whenever 700 more container objects are alive
than at its last collection, and an older one every tenth time, wherever the daemon
happens to be: inside a PBU, a PBA or a DHCP exchange. Traced in a 100-attach run of
bench/dhcp_attach.py, MAG1 collected 19 times after start-up: 18 young collections (0.21
ms at p50, 0.29 ms at most) and one of the middle generation (0.46 ms): about one per ten
attaches.

So the daemons collect at their quiet moments instead (`collect_if_due`: the MAG's
catch-up held back until its MNs' DHCP answers were out, the LMA's settle after its
PBAs), as often as CPython's own thresholds would. CPython's trigger stays, at
`BACKSTOP`, for a daemon that is never quiet. What start-up made (modules,
configuration, restored bindings) is frozen out of every collection (`gc.freeze`): it
lives until shutdown.
"""

from __future__ import annotations

import gc
import time

DEFAULTS = (700, 10, 10)  # CPython's thresholds, kept at the quiet moments
BACKSTOP = 50_000  # young objects before CPython collects anyway, quiet or not
FULL_EVERY_S = 60.0  # at most this often a full collection, which walks every binding

_last_full = 0.0


def take_over() -> None:
    """At the end of start-up: freeze what it made; CPython's trigger to the backstop."""
    gc.freeze()
    gc.set_threshold(BACKSTOP, DEFAULTS[1], DEFAULTS[2])


def collect_if_due(now: float | None = None) -> int | None:
    """At a quiet moment: the collection CPython's default thresholds call for by now,
    if any (the oldest generation at most once per FULL_EVERY_S). Returns the generation
    collected, or None."""
    global _last_full
    count0, count1, count2 = gc.get_count()
    if count0 < DEFAULTS[0]:
        return None
    now = time.monotonic() if now is None else now
    if count1 >= DEFAULTS[1] and count2 >= DEFAULTS[2] and now - _last_full >= FULL_EVERY_S:
        generation = 2
        _last_full = now
    elif count1 >= DEFAULTS[1]:
        generation = 1
    else:
        generation = 0
    gc.collect(generation)
    return generation
