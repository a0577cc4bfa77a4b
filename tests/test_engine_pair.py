"""A MagEngine and an LmaEngine talking through ``pump``: both wire profiles (seed draft and
RFC 5844), both transports (IPv6, seed §4 IPv4/UDP with and without NAT), handover
between two MAGs (RFC 5213 §5.3.4), long runs of refreshes, and robustness of both
engines against arbitrary and mutated input (RFC 6275 §9.2)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from engine_helpers import (
    IPV4_LMAA,
    LMAA,
    MAG1,
    MAG1_V4,
    MAG2,
    MAG2_V4,
    MN_DHCP,
    MN_LMA,
    MN_STATIC,
    MN_V4ONLY,
    MN_V6ONLY,
    NAT_PORT,
    NAT_V4,
    POOL_NET,
    STATIC_HOA,
    T0,
    decode_transmit,
    events,
    make_lma,
    make_mag,
    of,
    pbu,
    pump,
    run_timers,
    udp_payload,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import binding_acks, binding_updates

from pmip_agent.core.events import (
    BindingDown,
    BindingLost,
    BindingUp,
    Deregistered,
    Ipv4Granted,
    MessageDropped,
    Peer,
    TunnelNeeded,
)
from pmip_agent.wire import (
    BindingAck,
    HandoffIndicatorOption,
    Ipv4CareOfAddress,
    WireProfile,
    encode,
)
from pmip_agent.wire.constants import PMIP6_CNTL_PORT

PROFILES = [WireProfile.RFC5844, WireProfile.DRAFT]
# transport, NAT source (None: the MAG's own IPv4-Proxy-CoA)
TRANSPORTS = [("ipv6", None), ("ipv4", None), ("ipv4", NAT_V4)]
EXPECTED_ENCAP = {("ipv6", None): "ipv6", ("ipv4", None): "ipv4", ("ipv4", NAT_V4): "ipv4-udp"}


def attach_and_pump(mag, lma, mn_id, now, nat_src=None, **kw):
    assert mag.attach(mn_id, now, **kw)
    if mn_id == MN_DHCP:
        mag.learn_ipv4(mn_id, IPv4Address("10.20.7.7"), 16, now)
    return pump(mag, lma, now, nat_src)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("transport", "nat_src"), TRANSPORTS)
@pytest.mark.parametrize("mn_id", [MN_LMA, MN_STATIC, MN_DHCP, MN_V4ONLY, MN_V6ONLY])
def test_registration_end_to_end(profile, transport, nat_src, mn_id):
    """Seed §3.4/§3.5 and §4.4/§4.5: the MAG and the LMA agree on the MN's addresses, the
    tunnel mode (IPv6; IPv4; IPv4-UDP behind a NAT) and the NAT flag; the PBA reached the
    MAG (over the NAT's address and port when there is one)."""
    mag = make_mag(transport=transport, wire_profile=profile)
    lma = make_lma()
    result = attach_and_pump(mag, lma, mn_id, T0, nat_src)
    assert [p.status for p in result.pbas] == [0]
    (up,) = of(result.lma_events, BindingUp)
    assert up.change == "created"
    view = lma.binding(mn_id)
    if mn_id != MN_V6ONLY:  # an IPv6-only PBU has no option that names a profile
        assert view.wire_profile == profile.value
    expected = EXPECTED_ENCAP[(transport, nat_src)]
    assert view.encapsulation.value == expected
    assert view.nat is (nat_src is not None)
    if transport == "ipv4":
        assert view.mag == Peer(MAG1, nat_src or MAG1_V4, NAT_PORT if nat_src else PMIP6_CNTL_PORT)
    (tunnel,) = of(result.mag_events, TunnelNeeded)
    assert tunnel.encapsulation.value == expected
    assert tunnel.nat is view.nat
    assert tunnel.hnps == view.hnps
    assert tunnel.ipv4_hoa == view.ipv4_hoa
    assert tunnel.lma.v6 == LMAA
    if transport == "ipv4":
        assert tunnel.lma.v4 == IPV4_LMAA
    granted = of(result.mag_events, Ipv4Granted)
    if mn_id == MN_V6ONLY:
        assert view.ipv4_hoa is None and granted == []
    else:
        assert [g.hoa for g in granted] == [view.ipv4_hoa]
        assert granted[0].prefix_len == view.ipv4_prefix_len
        assert granted[0].default_router == view.ipv4_default_router
    if mn_id == MN_V4ONLY:
        assert view.hnps == ()
    else:
        assert len(view.hnps) == 1
    if mn_id == MN_STATIC:
        assert view.ipv4_hoa == STATIC_HOA
    if mn_id in (MN_LMA, MN_V4ONLY):
        assert view.ipv4_hoa in POOL_NET
    entry = mag.entry(mn_id)
    assert entry.registered and entry.ipv4_hoa == view.ipv4_hoa and entry.hnps == view.hnps


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("t1", "t2"), [("ipv6", "ipv6"), ("ipv6", "ipv4"), ("ipv4", "ipv6")])
def test_handover_between_two_mags(profile, t1, t2):
    """RFC 5213 §5.3.4 (HI=3, handoff between MAGs) and seed §3 ("the same IPv4 address,
    as it moves between access links"): the MN keeps its IPv4 HoA and HNP on the new MAG,
    which may use another transport; the old MAG's later de-registration is ignored by
    the LMA (§5.3.5) and the old MAG forgets the MN after its timeout (§6.9.1.4)."""
    lma = make_lma()
    mag1 = make_mag(coa=MAG1, ipv4_coa=MAG1_V4, transport=t1, wire_profile=profile)
    mag2 = make_mag(coa=MAG2, ipv4_coa=MAG2_V4, transport=t2, wire_profile=profile)
    first = attach_and_pump(mag1, lma, MN_LMA, T0)
    before = lma.binding(MN_LMA)
    (g1,) = of(first.mag_events, Ipv4Granted)

    second = attach_and_pump(mag2, lma, MN_LMA, T0 + 2, handoff=3)
    assert second.pbus[0].find(HandoffIndicatorOption) == HandoffIndicatorOption(3)
    (up,) = of(second.lma_events, BindingUp)
    assert up.change == "moved"
    assert up.previous_mag == before.mag
    after = lma.binding(MN_LMA)
    assert after.mag.v6 == MAG2
    assert (after.ipv4_hoa, after.hnps) == (before.ipv4_hoa, before.hnps)
    (g2,) = of(second.mag_events, Ipv4Granted)
    assert g2.hoa == g1.hoa
    assert mag2.entry(MN_LMA).hnps == mag1.entry(MN_LMA).hnps

    mag1.detach(MN_LMA, T0 + 3)
    gone = pump(mag1, lma, T0 + 3)
    assert len(gone.pbus) == 1 and gone.pbas == []
    assert [e.reason for e in gone.lma_events] == ["dereg-from-non-serving-mag"]
    mag1.handle_timer(T0 + 4)
    assert events(mag1) == [Deregistered(MN_LMA)]
    assert lma.binding(MN_LMA).state == "active"
    assert lma.binding(MN_LMA).mag.v6 == MAG2


def test_handover_back_and_forth_keeps_one_binding():
    """RFC 5213 §5.4.1 (one mobility session per MN here): moving MAG1 -> MAG2 -> MAG1
    keeps a single binding and the same addresses."""
    lma = make_lma()
    mag1, mag2 = make_mag(coa=MAG1), make_mag(coa=MAG2, ipv4_coa=MAG2_V4)
    attach_and_pump(mag1, lma, MN_STATIC, T0)
    attach_and_pump(mag2, lma, MN_STATIC, T0 + 1, handoff=3)
    mag1.detach(MN_STATIC, T0 + 1.5)
    pump(mag1, lma, T0 + 1.5)
    mag1.handle_timer(T0 + 2.5)
    back = attach_and_pump(mag1, lma, MN_STATIC, T0 + 5, handoff=3)
    (up,) = of(back.lma_events, BindingUp)
    assert (up.change, up.previous_mag.v6) == ("moved", MAG2)
    assert len(lma) == 1
    assert lma.binding(MN_STATIC).ipv4_hoa == STATIC_HOA


def test_sequence_mode_handover_resyncs():
    """RFC 5213 §5.5 / RFC 6275 §9.5.1 without timestamps: the new MAG's lower sequence
    number gets 135, then it registers with a greater one."""
    lma = make_lma(timestamps=False)
    mag1 = make_mag(coa=MAG1, timestamps=False, sequence_start=30000)
    mag2 = make_mag(coa=MAG2, timestamps=False, sequence_start=1)
    attach_and_pump(mag1, lma, MN_LMA, T0)
    result = attach_and_pump(mag2, lma, MN_LMA, T0 + 1, handoff=3)
    assert [p.status for p in result.pbas] == [135, 0]
    assert lma.binding(MN_LMA).mag.v6 == MAG2


@pytest.mark.parametrize("nat_src", [None, NAT_V4])
def test_long_run_stays_registered(nat_src):
    """RFC 5213 §6.9.1.3 (refresh before the lifetime ends) and seed §4.4 (re-send within
    every NAT refresh time): over three hours the binding never lapses on either side."""
    lma = make_lma(max_lifetime_s=600, nat_refresh_s=110)
    mag = make_mag(transport="ipv4")
    attach_and_pump(mag, lma, MN_LMA, T0, nat_src)
    total = run_timers(mag, lma, T0 + 3 * 3600, nat_src)
    assert of(total.lma_events, BindingDown) == []
    assert of(total.mag_events, BindingLost) == []
    assert {e.change for e in of(total.lma_events, BindingUp)} == {"refreshed"}
    assert all(p.status == 0 for p in total.pbas)
    interval = 99 if nat_src else 480
    assert len(total.pbus) == pytest.approx(3 * 3600 / interval, abs=1)
    assert lma.binding(MN_LMA).state == "active"


def test_lma_restart_with_restore_keeps_mag_registered():
    """RFC 5213 §5.3.3: after the LMA restarts from its stored bindings, the MAG's next
    refresh is accepted as a plain refresh with the same addresses."""
    lma = make_lma()
    mag = make_mag()
    first = attach_and_pump(mag, lma, MN_LMA, T0)
    (granted,) = of(first.mag_events, Ipv4Granted)
    views = list(lma.bindings())
    lma2 = make_lma()
    lma2.restore(views, T0 + 100)
    events(lma2)
    deadline = mag.get_timer()
    mag.handle_timer(deadline)
    result = pump(mag, lma2, deadline)
    assert [e.change for e in of(result.lma_events, BindingUp)] == ["refreshed"]
    assert lma2.binding(MN_LMA).ipv4_hoa == granted.hoa
    assert result.mag_events == []


def test_lma_loses_state_and_mag_gets_same_address_back():
    """RFC 5844 §3.1.2.2 (a NON_ZERO request for an address the MN is authorized for):
    after an LMA restart without its store, the MAG's refresh names the address it had
    and the new LMA grants it again."""
    mag = make_mag()
    first = attach_and_pump(mag, make_lma(), MN_LMA, T0)
    (granted,) = of(first.mag_events, Ipv4Granted)
    hnps = mag.entry(MN_LMA).hnps
    fresh = make_lma()
    deadline = mag.get_timer()
    mag.handle_timer(deadline)
    result = pump(mag, fresh, deadline)
    assert [e.change for e in of(result.lma_events, BindingUp)] == ["created"]
    assert fresh.binding(MN_LMA).ipv4_hoa == granted.hoa
    assert fresh.binding(MN_LMA).hnps == hnps


def test_detach_then_reattach_within_min_delay_keeps_address():
    """RFC 5213 §5.3.5: a new registration during MinDelayBeforeBCEDelete revives the entry
    with the same addresses."""
    lma = make_lma()
    mag = make_mag()
    first = attach_and_pump(mag, lma, MN_LMA, T0)
    (granted,) = of(first.mag_events, Ipv4Granted)
    mag.detach(MN_LMA, T0 + 5)
    gone = pump(mag, lma, T0 + 5)
    assert gone.mag_events == [Deregistered(MN_LMA)]
    assert [e.reason for e in of(gone.lma_events, BindingDown)] == ["deregistered"]
    again = attach_and_pump(mag, lma, MN_LMA, T0 + 8)
    assert of(again.mag_events, Ipv4Granted)[0].hoa == granted.hoa
    lma.handle_timer(T0 + 20)
    assert events(lma) == []


# --- robustness: arbitrary and mutated input -------------------------------------------------


def _valid_messages() -> tuple[list[bytes], list[bytes]]:
    """Real PBUs (as the MAG sends them) and real PBAs (as the LMA answers), both profiles
    and framings, as seeds for mutation."""
    pbus, pbas = [], []
    for profile in PROFILES:
        for transport, nat in TRANSPORTS:
            for mn in (MN_LMA, MN_STATIC, MN_DHCP, MN_V4ONLY):
                mag = make_mag(transport=transport, wire_profile=profile)
                result = attach_and_pump(mag, make_lma(), mn, T0, nat)
                pbus += [t.data for t in result.to_lma]
                pbas += [t.data for t in result.to_mag]
    extra = pbu(MN_LMA, ipv4="0.0.0.0", extra=(Ipv4CareOfAddress(MAG1_V4),))
    pbus.append(udp_payload(extra, bare=True))
    return pbus, pbas


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            del buf[rng.randrange(len(buf) + 1) :]
        else:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


def _feed_everywhere(lma, mag, data: bytes, now: float, seen: dict[str, int]) -> None:
    lma.receive_ipv6(data, MAG1, now)
    lma.receive_udp(data, NAT_V4, NAT_PORT, now)
    mag.receive_ipv6(data, LMAA, now)
    mag.receive_udp(data, IPV4_LMAA, PMIP6_CNTL_PORT, now)
    for t in lma.datagrams_to_send():
        assert isinstance(decode_transmit(t), BindingAck)  # whatever comes out is well formed
        seen["pba"] += 1
    for t in mag.datagrams_to_send():
        decode_transmit(t)
    for e in events(lma) + events(mag):
        seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1


def test_engines_never_raise_on_random_or_mutated_bytes():
    """RFC 6275 §9.2 (malformed messages are dropped): 3000 random byte strings and 3000
    mutations of real PBUs/PBAs reach both engines on both inputs, then 1500 mutated PBAs
    answer the PBU a MAG is actually waiting for (so they pass the sequence check);
    nothing raises, every LMA output decodes, and the LMA still works afterwards."""
    rng = random.Random(20240501)
    pbus, pbas = _valid_messages()
    seeds = pbus + pbas
    lma = make_lma()
    mag = make_mag(transport="ipv4")
    now = T0
    seen = {"pba": 0}
    for i in range(3000):
        if i % 100 == 0:  # keep PBUs outstanding on the MAG
            for mn in (MN_LMA, MN_STATIC, MN_V4ONLY):
                mag.detach(mn, now)
                mag.handle_timer(now + 5)
                mag.attach(mn, now)
        now += 0.01
        size = rng.choice((0, 1, 7, 8, 12, 40, 48, 64, rng.randrange(300)))
        raw = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.3:
            raw = bytes((0x3B, max(0, (size - 8) // 8) if size >= 8 else 0)) + raw[2:]
        _feed_everywhere(lma, mag, raw, now, seen)
        mutated = _mutate(rng, rng.choice(seeds))
        _feed_everywhere(lma, mag, mutated, now, seen)
        _feed_everywhere(make_lma(timestamps=False), mag, mutated, now, seen)  # no replay state
    # the mutations got past the decoder often enough to exercise the LMA's logic
    assert seen["pba"] > 100 and seen["MessageDropped"] > 3000
    assert seen.get("PbuRejected", 0) > 10 and seen.get("BindingUp", 0) > 10

    # mutated live PBAs: answers to the PBU a MAG is actually waiting for
    mag_seen: dict[str, int] = {}
    modes = [(p, t) for p in PROFILES for t, _ in TRANSPORTS[:2]]
    for i in range(1500):
        profile, transport = modes[i % len(modes)]
        live = make_mag(transport=transport, wire_profile=profile)
        mn = (MN_LMA, MN_STATIC, MN_V4ONLY, MN_V6ONLY)[i % 4]
        live.attach(mn, T0)
        (out,) = live.datagrams_to_send()
        peer_lma = make_lma()
        if out.peer.v4 is None:
            peer_lma.receive_ipv6(out.data, MAG1, T0)
        else:
            peer_lma.receive_udp(out.data, MAG1_V4, PMIP6_CNTL_PORT, T0)
        (reply,) = peer_lma.datagrams_to_send()
        data = _mutate(rng, reply.data)
        if reply.peer.v4 is None:
            live.receive_ipv6(data, LMAA, T0)
        else:
            live.receive_udp(data, IPV4_LMAA, PMIP6_CNTL_PORT, T0)
        live.handle_timer(T0 + 10_000)
        live.datagrams_to_send()
        for e in events(live):
            mag_seen[type(e).__name__] = mag_seen.get(type(e).__name__, 0) + 1
    assert mag_seen.get("TunnelNeeded", 0) > 10
    assert mag_seen.get("MessageDropped", 0) > 100
    # still functional
    fresh_mag = make_mag(coa=IPv6Address("2001:db8:d::1"))
    result = attach_and_pump(fresh_mag, lma, MN_DHCP, now + 1)
    assert [p.status for p in result.pbas] == [0]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(msg=binding_updates() | binding_acks(), via_udp=st.booleans())
def test_engines_never_raise_on_well_formed_messages(msg, via_udp):
    """RFC 5213 §5.3.1 / §6.9.1.2: any well-formed Mobility Header, whatever its options,
    yields a PBA or an event on the LMA and is handled or dropped by the MAG."""
    lma = make_lma(timestamps=False)
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    mag.datagrams_to_send()
    data = encode(msg)
    if via_udp:
        lma.receive_udp(data, NAT_V4, NAT_PORT, T0)
        mag.receive_udp(data, IPV4_LMAA, PMIP6_CNTL_PORT, T0)
    else:
        lma.receive_ipv6(data, MAG1, T0)
        mag.receive_ipv6(data, LMAA, T0)
    replies = [decode_transmit(t) for t in lma.datagrams_to_send()]
    lma_events = events(lma)
    assert all(isinstance(r, BindingAck) for r in replies)
    assert replies or lma_events
    if isinstance(msg, BindingAck):
        assert any(type(e) is MessageDropped for e in lma_events)
