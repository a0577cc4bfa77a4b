"""The LMA's re-registration fast path (RFC 5213 §5.3.3) must answer exactly as the full
path would, and step aside for anything it cannot prove unchanged."""

from __future__ import annotations

from dataclasses import replace

from engine_helpers import MAG1, MAG2, MN_LMA, T0, events, make_lma, of, pbu

from pmip_agent.core.events import BindingUp, PbuRejected
from pmip_agent.core.lma import LmaEngine
from pmip_agent.wire import encode
from pmip_agent.wire.constants import Status
from pmip_agent.wire.messages import decode


def _registered(now: float = T0) -> tuple[LmaEngine, list[bytes]]:
    lma = make_lma()
    lma.receive_ipv6(encode(pbu(MN_LMA, seq=1, ts=now, ipv4="0.0.0.0")), MAG1, now)
    out = [t.data for t in lma.datagrams_to_send()]
    events(lma)
    return lma, out


def _refresh(lma: LmaEngine, seq: int, t: float, src=MAG1, **kw):  # type: ignore[no-untyped-def]
    lma.receive_ipv6(encode(pbu(MN_LMA, seq=seq, ts=t, ipv4="0.0.0.0", **kw)), src, t)
    return [tx.data for tx in lma.datagrams_to_send()], events(lma)


def test_fast_refresh_answers_exactly_as_the_full_path() -> None:
    """Same PBA bytes and the same event as an engine that has no template to use."""
    fast, _ = _registered()
    slow, _ = _registered()
    for entry in slow._cache.values():
        entry.refresh = None  # force the full path
    for i in range(1, 4):
        t = T0 + 10 * i
        got_fast, ev_fast = _refresh(fast, 1 + i, t)
        for entry in slow._cache.values():
            entry.refresh = None
        got_slow, ev_slow = _refresh(slow, 1 + i, t)
        assert got_fast == got_slow and len(got_fast) == 1
        assert ev_fast == ev_slow and of(ev_fast, BindingUp)[0].change == "refreshed"
    pba = decode(got_fast[0])
    assert pba.status == Status.ACCEPTED and pba.sequence == 4
    entry = next(iter(fast._cache.values()))
    assert entry.refresh is not None  # the fast engine did use its template
    assert entry.expires_at == T0 + 30 + entry.lifetime_s


def test_replayed_or_stale_timestamp_falls_back_and_is_rejected() -> None:
    """RFC 5213 §5.5: an equal timestamp gives 156, a lower one 157, fast path or not."""
    lma, _ = _registered()
    _refresh(lma, 2, T0 + 1)
    data, _ = _refresh(lma, 3, T0 + 1)  # the same timestamp again: a replay
    assert decode(data[0]).status == Status.TIMESTAMP_MISMATCH
    lma.receive_ipv6(encode(pbu(MN_LMA, seq=4, ts=T0 + 0.5, ipv4="0.0.0.0")), MAG1, T0 + 1)
    assert (
        decode(lma.datagrams_to_send()[0].data).status == Status.TIMESTAMP_LOWER_THAN_PREV_ACCEPTED
    )
    assert of(events(lma), PbuRejected)


def test_changed_pbu_other_mag_or_reload_take_the_full_path() -> None:
    """A different option value, another MAG (a handover) or a reconfiguration must not be
    answered from the template."""
    lma, _ = _registered()
    _, evs = _refresh(lma, 2, T0 + 1, hi=3)  # a changed Handoff Indicator
    assert of(evs, BindingUp)[0].change == "refreshed"  # accepted, via the full path
    _, evs = _refresh(lma, 3, T0 + 2, src=MAG2)
    moved = of(evs, BindingUp)[0]
    assert moved.change == "moved" and moved.binding.mag.v6 == MAG2
    _, evs = _refresh(lma, 4, T0 + 3)  # back from MAG1: moved again, not "refreshed"
    assert of(evs, BindingUp)[0].change == "moved"
    lma.reconfigure(
        replace(lma.settings, max_lifetime_s=200), lma.profiles, lma.pools, lma.hnp_pool, T0 + 4
    )
    data, evs = _refresh(lma, 5, T0 + 5)
    assert decode(data[0]).lifetime == 200 // 4  # the new configuration's answer


def test_deregistered_binding_is_not_refreshed_from_the_template() -> None:
    """After de-registration the entry waits for MinDelayBeforeBCEDelete; a PBU then re-
    creates it through the full path (change "created"), never as a silent refresh."""
    lma, _ = _registered()
    _refresh(lma, 2, T0 + 1)
    lma.receive_ipv6(
        encode(pbu(MN_LMA, seq=3, ts=T0 + 2, ipv4="0.0.0.0", lifetime_s=0)), MAG1, T0 + 2
    )
    lma.datagrams_to_send()
    events(lma)
    _, evs = _refresh(lma, 4, T0 + 3)
    assert of(evs, BindingUp)[0].change == "created"
