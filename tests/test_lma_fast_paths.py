"""The LMA's fast paths (first registration and refresh from shared PBA templates, see
pmip_agent/core/templates.py) must be invisible: byte for byte the same PBAs, the same
events and the same binding cache as an engine that runs every PBU through the full decode
and RFC 5213 §5.3 processing."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network, IPv6Address

import pytest
from engine_helpers import (
    HNP_NET,
    MAG1,
    MAG2,
    MN_DHCP,
    MN_DHCP2,
    MN_LMA,
    MN_LMA2,
    MN_STATIC,
    MN_UNKNOWN,
    MN_V4ONLY,
    MN_V6ONLY,
    STATIC_HOA,
    T0,
    default_profiles,
    make_lma,
    make_pools,
    pbu,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmip_agent.core import lma as lma_module
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.policy import Ipv4Mode, MnProfile
from pmip_agent.wire import BuFlags, MnLinkLayerId, WireProfile, decode, encode
from pmip_agent.wire.constants import Status

# Same identifier length as MN_LMA2 and MN_V4ONLY's siblings: they share PBU shapes.
MN_LMA3 = b"mn-lma3@example.net"
MN_V4B = b"mn-v4onlb@example.net"
MN_DHCP3 = b"mn-dhcp3@example.net"  # and MN_DHCP2: HoAs from a DHCP server, one shape
MN_DHCP4 = b"mn-dhcp4@example.net"  # the same shape again, not among MNS
MNS = (
    MN_LMA,
    MN_LMA2,
    MN_LMA3,
    MN_V4ONLY,
    MN_V4B,
    MN_STATIC,
    MN_DHCP,
    MN_DHCP2,
    MN_DHCP3,
    MN_V6ONLY,
    MN_UNKNOWN,
)
# None, or one of three identifiers: two of one length (one shape, masked octets differ),
# one of another length (another shape).
LINK_LAYER_IDS: list[tuple[MnLinkLayerId, ...]] = [
    (),
    (),
    (MnLinkLayerId(b"\x02\0\0\0\0\x01"),),
    (MnLinkLayerId(b"\x02\0\0\0\0\x02"),),
    (MnLinkLayerId(b"\x02\0\0\0\0\0\0\x03"),),
]


def _profiles() -> dict[bytes, MnProfile]:
    profiles = default_profiles()
    profiles[MN_LMA3] = MnProfile(MN_LMA3, Ipv4Mode.LMA)
    profiles[MN_V4B] = MnProfile(MN_V4B, Ipv4Mode.LMA, ipv6=False)
    profiles[MN_DHCP3] = replace(profiles[MN_DHCP2], mn_id=MN_DHCP3)
    profiles[MN_DHCP4] = replace(profiles[MN_DHCP2], mn_id=MN_DHCP4)
    return profiles


def _pair(**kw: object) -> tuple[LmaEngine, LmaEngine]:
    def one() -> LmaEngine:
        # A /29: five home addresses for seven MNs, so exhaustion is reached too.
        return make_lma(_profiles(), pools=make_pools(IPv4Network("10.1.0.0/29")), **kw)

    fast, slow = one(), one()
    slow.fast_paths = False
    return fast, slow


def _drain(lma: LmaEngine) -> tuple[list[object], list[object]]:
    out = [(t.data, t.peer) for t in lma.datagrams_to_send()]
    events = []
    while (ev := lma.next_event()) is not None:
        events.append(ev)
    return out, events


def _both(fast: LmaEngine, slow: LmaEngine, data: bytes, src: IPv6Address, now: float) -> list:
    fast.receive_ipv6(data, src, now)
    slow.receive_ipv6(data, src, now)
    got_fast, got_slow = _drain(fast), _drain(slow)
    assert got_fast == got_slow
    return got_fast[0]


def _same_state(fast: LmaEngine, slow: LmaEngine, now: float) -> None:
    assert sorted(fast.bindings()) == sorted(slow.bindings())
    assert fast.get_timer() == slow.get_timer()
    assert fast.pools.default.used == slow.pools.default.used  # type: ignore[union-attr]
    assert fast.hnp_pool.used == slow.hnp_pool.used  # type: ignore[union-attr]


def _hoa_choice(draw: st.DrawFn, fast: LmaEngine, mn: bytes) -> str | None:
    bound = fast.binding(mn)
    options = [None, "0.0.0.0", "10.1.0.3", str(STATIC_HOA), "10.20.0.9", "10.20.0.10"]
    if bound is not None and bound.ipv4_hoa is not None:
        options += [str(bound.ipv4_hoa)] * 3
    return draw(st.sampled_from(options))


def _hnps_choice(draw: st.DrawFn, fast: LmaEngine, mn: bytes) -> tuple:
    bound = fast.binding(mn)
    options: list[tuple] = [(), ((IPv6Address(0), 0),), ((IPv6Address(0), 0),)]
    options.append(((HNP_NET.network_address + (7 << 80), 64),))
    options.append(((IPv6Address("2001:db8:100::1"), 0),))  # a prefix with length 0
    if bound is not None and bound.hnps:
        options += [bound.hnps] * 3
    return draw(st.sampled_from(options))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_paths_answer_exactly_as_the_full_path(data: st.DataObject) -> None:
    allowed = data.draw(st.sampled_from([None, frozenset({MAG1, MAG2}), frozenset({MAG1})]))
    fast, slow = _pair(allowed_mags=allowed)
    now = T0
    seqs = dict.fromkeys(MNS, 0)
    last_ts = dict.fromkeys(MNS, T0 - 1)
    for _step in range(data.draw(st.integers(5, 40))):
        now += data.draw(st.sampled_from([0.001, 0.05, 1.0, 30.0, 500.0]))
        if data.draw(st.integers(0, 19)) == 0:
            fast.handle_timer(now)
            slow.handle_timer(now)
            assert _drain(fast) == _drain(slow)
            continue
        if data.draw(st.integers(0, 29)) == 0:
            new = replace(fast.settings, max_lifetime_s=data.draw(st.sampled_from([200, 3600])))
            for eng in (fast, slow):
                eng.reconfigure(new, eng.profiles, eng.pools, eng.hnp_pool, now)
            assert _drain(fast) == _drain(slow)
            continue
        mn = data.draw(st.sampled_from(MNS))
        seqs[mn] = (seqs[mn] + data.draw(st.sampled_from([1, 1, 1, 0, -1, 40000]))) & 0xFFFF
        ts_kind = data.draw(st.sampled_from(["fresh"] * 6 + ["replay", "old", "skew", "none"]))
        if ts_kind == "fresh":
            last_ts[mn] = ts = max(now - 0.001, last_ts[mn] + 0.001)
        elif ts_kind == "replay":
            ts = last_ts[mn]
        elif ts_kind == "old":
            ts = last_ts[mn] - 0.01
        elif ts_kind == "skew":
            ts = now + 1.0
        else:
            ts = None
        profile = data.draw(st.sampled_from([WireProfile.RFC5844, WireProfile.DRAFT]))
        msg = pbu(
            mn,
            seq=seqs[mn],
            ts=ts,
            lifetime_s=data.draw(st.sampled_from([400, 400, 400, 0, 8000])),
            hnps=_hnps_choice(data.draw, fast, mn),
            hi=data.draw(st.sampled_from([1, 1, 3, 5, None])),
            att=data.draw(st.sampled_from([3, 3, 4])),
            ipv4=_hoa_choice(data.draw, fast, mn),
            profile=profile,
            flags=data.draw(st.sampled_from([BuFlags.A | BuFlags.P] * 4 + [BuFlags.P])),
            extra=data.draw(st.sampled_from(LINK_LAYER_IDS)),
        )
        raw = encode(msg)
        if data.draw(st.integers(0, 9)) == 0:  # a damaged copy: strict decode must see it
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1 :]
        src = data.draw(st.sampled_from([MAG1, MAG1, MAG1, MAG2]))
        _both(fast, slow, raw, src, now)
        _same_state(fast, slow, now)


def _register(lma: LmaEngine, mn: bytes, seq: int, now: float, **kw: object) -> bytes:
    lma.receive_ipv6(encode(pbu(mn, seq=seq, ts=now - 0.001, **kw)), MAG1, now)
    out, _ = _drain(lma)
    assert len(out) == 1
    return out[0][0]  # type: ignore[index,no-any-return]


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets an item per full decode the LMA engines make from now on."""
    decodes: list[int] = []
    real_decode = lma_module.decode
    monkeypatch.setattr(lma_module, "decode", lambda *a: decodes.append(1) or real_decode(*a))
    return decodes


def test_second_mn_of_a_kind_is_registered_and_refreshed_without_decoding(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first MN of a shape and profile kind teaches the template (full path); the next
    one, and every refresh, are answered from it: no decode call, same answer."""
    fast, slow = _pair()
    decodes = _count_decodes(monkeypatch)
    for lma in (fast, slow):
        _register(lma, MN_LMA2, 1, T0, ipv4="0.0.0.0")
    assert len(decodes) == 2
    decodes.clear()
    got = _register(fast, MN_LMA3, 1, T0 + 1, ipv4="0.0.0.0")
    assert not decodes
    assert got == _register(slow, MN_LMA3, 1, T0 + 1, ipv4="0.0.0.0")
    pba = decode(got)
    assert pba.status == Status.ACCEPTED and pba.sequence == 1
    decodes.clear()
    bound = fast.binding(MN_LMA3)
    assert bound is not None and bound.ipv4_hoa is not None
    # RFC 5213 §5.3.3: the MAG refreshes with the prefix and address it was given.
    refresh = {"ipv4": str(bound.ipv4_hoa), "hnps": bound.hnps}
    got = _register(fast, MN_LMA3, 2, T0 + 2, **refresh)
    assert got == _register(slow, MN_LMA3, 2, T0 + 2, **refresh)
    learnt = len(decodes)  # the first refresh of this shape teaches its template
    got = _register(fast, MN_LMA3, 3, T0 + 3, **refresh)
    assert len(decodes) == learnt
    assert got == _register(slow, MN_LMA3, 3, T0 + 3, **refresh)


def test_mns_with_their_own_link_layer_ids_share_one_template(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A MAG names each MN's interface (RFC 5213 §8.6), so no two new MNs send the same
    octets; the identifier is masked like the MN-ID, and the PBA echoes each MN's own.
    A refresh naming another interface is an update: the full path's, not the template's."""
    fast, slow = _pair()
    decodes = _count_decodes(monkeypatch)
    llid2, llid3 = MnLinkLayerId(b"\x02\0\0\0\0\x02"), MnLinkLayerId(b"\x02\0\0\0\0\x03")
    for lma in (fast, slow):
        _register(lma, MN_LMA2, 1, T0, ipv4="0.0.0.0", extra=(llid2,))
    decodes.clear()
    got = _register(fast, MN_LMA3, 1, T0 + 1, ipv4="0.0.0.0", extra=(llid3,))
    assert not decodes
    assert got == _register(slow, MN_LMA3, 1, T0 + 1, ipv4="0.0.0.0", extra=(llid3,))
    assert llid3 in decode(got).options
    assert fast.binding(MN_LMA3).link_layer_id == llid3.identifier  # type: ignore[union-attr]
    bound = fast.binding(MN_LMA3)
    refresh = {"ipv4": str(bound.ipv4_hoa), "hnps": bound.hnps}  # type: ignore[union-attr]
    for lma in (fast, slow):
        _register(lma, MN_LMA3, 2, T0 + 2, extra=(llid3,), **refresh)  # learns the refresh
    moved = encode(pbu(MN_LMA3, seq=3, ts=T0 + 3, extra=(llid2,), **refresh))
    decodes.clear()
    fast.receive_ipv6(moved, MAG1, T0 + 3)
    assert decodes == [1]  # the full path
    slow.receive_ipv6(moved, MAG1, T0 + 3)
    got_fast, got_slow = _drain(fast), _drain(slow)
    assert got_fast == got_slow
    assert got_fast[1][0].change == "updated"  # type: ignore[attr-defined]
    assert fast.binding(MN_LMA3).link_layer_id == llid2.identifier  # type: ignore[union-attr]


def test_mns_with_server_assigned_addresses_share_one_template(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed §3.1, Figure 3: the MAG reports the address the DHCP server assigned. The
    second MN of a shape is anchored from the template after the same checks (inside the
    profile's DHCP prefix, outside the LMA's pools, held by no other MN); an address that
    fails one, or a refresh asking for "any" address, gets the full path's answer."""
    fast, slow = _pair()
    decodes = _count_decodes(monkeypatch)
    for lma in (fast, slow):
        _register(lma, MN_DHCP2, 1, T0, ipv4="10.20.0.9")
    decodes.clear()
    got = _register(fast, MN_DHCP3, 1, T0 + 1, ipv4="10.20.0.10")
    assert not decodes
    assert got == _register(slow, MN_DHCP3, 1, T0 + 1, ipv4="10.20.0.10")
    assert decode(got).status == Status.ACCEPTED
    assert sorted(fast.bindings()) == sorted(slow.bindings())
    bound = fast.binding(MN_DHCP3)
    assert bound is not None and str(bound.ipv4_hoa) == "10.20.0.10"
    assert bound.ipv4_source == "dhcp-server"
    for lma in (fast, slow):  # teaches the refresh template
        _register(lma, MN_DHCP3, 2, T0 + 2, ipv4="10.20.0.10", hnps=bound.hnps)
    refused = [
        (MN_DHCP3, "0.0.0.0"),  # a refresh naming no address
        (MN_DHCP4, "10.20.0.10"),  # MN_DHCP3's
        (MN_DHCP4, "10.1.0.3"),  # outside the DHCP prefix (in the LMA's pool)
        (MN_DHCP4, "0.0.0.0"),  # RFC 5844 status 132 when nothing was assigned
    ]
    for seq, (mn, asked) in enumerate(refused, start=3):
        decodes.clear()
        now = T0 + seq
        raw = encode(pbu(mn, seq=seq, ts=now, ipv4=asked, hnps=bound.hnps))
        out = _both(fast, slow, raw, MAG1, now)
        assert decodes == [1, 1], (mn, asked)  # both engines took the full path
        assert decode(out[0][0]).status != Status.ACCEPTED, (mn, asked)
        _same_state(fast, slow, now)


def test_exhausted_pool_still_gets_the_full_path_reject() -> None:
    """RFC 5844 §3.1.2.2: with the pool empty the fast path steps aside and the full path
    answers 130 with IPv4 HoA Reply status 128, leaving the pools as the full path would."""
    fast, slow = _pair()
    now = T0
    mns = [b"mn%02d@example.net" % i for i in range(7)]
    for eng in (fast, slow):
        eng.profiles = {m: MnProfile(m, Ipv4Mode.LMA) for m in mns}
    answers = []
    for mn in mns:
        now += 1
        out = _both(fast, slow, encode(pbu(mn, seq=1, ts=now, ipv4="0.0.0.0")), MAG1, now)
        answers.append(decode(out[0][0]).status)
    assert answers[:5] == [Status.ACCEPTED] * 5
    assert answers[5:] == [Status.INSUFFICIENT_RESOURCES] * 2
    _same_state(fast, slow, now)


def test_changed_profile_kind_or_settings_do_not_reuse_templates() -> None:
    """A template belongs to one profile kind and one configuration: a static-HoA MN or a
    reconfigured LMA is answered by the full path."""
    fast, slow = _pair()
    for eng in (fast, slow):
        _register(eng, MN_LMA, 1, T0, ipv4="0.0.0.0")
        eng.reconfigure(
            replace(eng.settings, max_lifetime_s=200), eng.profiles, eng.pools, eng.hnp_pool, T0
        )
        _drain(eng)
    got = _register(fast, MN_LMA2, 1, T0 + 1, ipv4="0.0.0.0")
    assert got == _register(slow, MN_LMA2, 1, T0 + 1, ipv4="0.0.0.0")
    assert decode(got).lifetime == 200 // 4
    got = _register(fast, MN_STATIC, 1, T0 + 2, ipv4="0.0.0.0")
    assert got == _register(slow, MN_STATIC, 1, T0 + 2, ipv4="0.0.0.0")
    assert fast.binding(MN_STATIC).ipv4_hoa == STATIC_HOA  # type: ignore[union-attr]
