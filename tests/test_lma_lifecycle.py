"""LMA binding lifecycle and transport: handover (RFC 5213 §5.3.4, §5.4.1), refresh
(§5.3.3), de-registration (§5.3.5), expiry, restart (restore) and reconfiguration; IPv4
transport and NAT detection (seed §4.3, §4.5; RFC 5844 §4.1); malformed input."""

from __future__ import annotations

import dataclasses
import random
from ipaddress import IPv6Address

import pytest
from engine_helpers import (
    LMAA,
    MAG1,
    MAG1_V4,
    MAG2,
    MN_DHCP,
    MN_LMA,
    MN_LMA2,
    MN_STATIC,
    MN_UNKNOWN,
    NAT_PORT,
    NAT_V4,
    STATIC_HOA,
    T0,
    default_profiles,
    events,
    ipv4_answer,
    make_lma,
    make_pools,
    of,
    only_pba,
    pbu,
    register,
    send6,
    send_udp,
    udp_payload,
)

from pmip_agent.core.events import (
    BindingDown,
    BindingPurged,
    BindingUp,
    MessageDropped,
    Peer,
)
from pmip_agent.core.policy import Ipv4Mode, MnProfile
from pmip_agent.core.pools import PrefixPool
from pmip_agent.wire import (
    BindingAck,
    BuFlags,
    HomeNetworkPrefix,
    Ipv4CareOfAddress,
    NatDetection,
    encode,
)
from pmip_agent.wire import ipv6 as ipv6_frame
from pmip_agent.wire.constants import PMIP6_CNTL_PORT

ALL_ONES = 0xFFFF_FFFF


def registered(lma, mn_id=MN_LMA, now=T0, **kw):
    """Register over IPv6 from MAG1 (with an IPv4 request) and drain the events."""
    kw.setdefault("ipv4", "0.0.0.0")
    pba = register(lma, mn_id, now, **kw)
    events(lma)
    return pba


# --- handover and refresh ------------------------------------------------------------------


@pytest.mark.parametrize("name_the_prefix", [False, True])
def test_handover_to_new_mag_keeps_hoa_and_hnp(name_the_prefix):
    """RFC 5213 §5.3.4 / §5.4.1 (HI=3, handoff between MAGs) and seed §3: the binding moves
    to the new MAG with the same IPv4 HoA and HNP; BindingUp says "moved" and names the
    previous MAG; the PBA goes to the new MAG."""
    lma = make_lma()
    first = registered(lma)
    hoa = ipv4_answer(first).address
    (hnp,) = first.find_all(HomeNetworkPrefix)
    kw = {"hnps": ((hnp.prefix, hnp.prefix_len),)} if name_the_prefix else {}
    msg = pbu(MN_LMA, ts=T0 + 5, seq=1, hi=3, ipv4="0.0.0.0", **kw)
    lma.receive_ipv6(encode(msg), MAG2, T0 + 5)
    (out,) = lma.datagrams_to_send()
    assert out.peer == Peer(MAG2)
    up = of(events(lma), BindingUp)
    assert len(up) == 1 and up[0].change == "moved"
    assert up[0].previous_mag == Peer(MAG1)
    view = lma.binding(MN_LMA)
    assert view.mag == Peer(MAG2)
    assert view.ipv4_hoa == hoa
    assert view.hnps == ((hnp.prefix, 64),)
    assert len(list(lma.bindings())) == 1


def test_refresh_from_serving_mag_is_refreshed_and_extends_lifetime():
    """RFC 5213 §5.3.3 (re-registration, HI=5): same MAG, same addresses -> "refreshed";
    the expiry moves to now + lifetime and the old deadline no longer fires."""
    lma = make_lma()
    first = registered(lma, lifetime_s=400)
    hoa = ipv4_answer(first).address
    (hnp,) = first.find_all(HomeNetworkPrefix)
    refresh = pbu(
        MN_LMA,
        ts=T0 + 300,
        seq=2,
        hi=5,
        lifetime_s=400,
        ipv4=hoa,
        ipv4_plen=24,
        hnps=((hnp.prefix, 64),),
    )
    assert send6(lma, refresh, T0 + 300).status == 0
    assert [e.change for e in of(events(lma), BindingUp)] == ["refreshed"]
    assert lma.get_timer() == T0 + 700
    lma.handle_timer(T0 + 400)
    assert events(lma) == []
    assert lma.binding(MN_LMA).expires_at == T0 + 700


# --- de-registration ------------------------------------------------------------------------


def dereg(mn_id=MN_LMA, now=T0 + 10, seq=2, **kw):
    kw.setdefault("ipv4", "0.0.0.0")
    return pbu(mn_id, ts=now, seq=seq, hi=4, lifetime_s=0, **kw)


def test_deregistration_keeps_entry_for_min_delay_then_purges():
    """RFC 5213 §5.3.5: a lifetime-0 PBU from the serving MAG is acknowledged (status 0),
    forwarding stops (BindingDown "deregistered"), the entry waits MinDelayBeforeBCEDelete
    and is then deleted (BindingPurged) with its HoA back in the pool."""
    lma = make_lma(pools=make_pools("10.1.0.0/30"))  # a single usable address
    hoa = ipv4_answer(registered(lma)).address
    pba = send6(lma, dereg(now=T0 + 10), T0 + 10)
    assert (pba.status, pba.lifetime) == (0, 0)
    down = of(events(lma), BindingDown)
    assert [d.reason for d in down] == ["deregistered"]
    assert lma.binding(MN_LMA).state == "deregistered"
    assert lma.get_timer() == T0 + 20
    # the address is still held during the wait
    assert send6(lma, pbu(MN_LMA2, ts=T0 + 15, ipv4="0.0.0.0"), T0 + 15).status == 130
    events(lma)
    lma.handle_timer(T0 + 19.9)
    assert events(lma) == []
    lma.handle_timer(T0 + 20)
    assert events(lma) == [BindingPurged(MN_LMA, hoa)]
    assert lma.binding(MN_LMA) is None
    assert lma.hnp_pool.used == 0
    pba = send6(lma, pbu(MN_LMA2, ts=T0 + 21, ipv4="0.0.0.0"), T0 + 21)
    assert ipv4_answer(pba).address == hoa


def test_deregistered_event_carries_purge_deadline_for_restore():
    """RFC 5213 §5.3.5: the entry waits MinDelayBeforeBCEDelete after the de-registration.
    The BindingDown view (what a store keeps) says so, and restoring it after a restart
    purges the entry at that deadline, not at the old registration expiry."""
    lma = make_lma()
    hoa = ipv4_answer(registered(lma, lifetime_s=400)).address
    send6(lma, dereg(now=T0 + 10), T0 + 10)
    (down,) = of(events(lma), BindingDown)
    assert (down.binding.state, down.binding.expires_at) == ("deregistered", T0 + 20)
    new = make_lma()
    new.restore([down.binding], T0 + 12)
    assert events(new) == []  # a deregistered entry is not announced as up
    assert new.get_timer() == T0 + 20
    new.handle_timer(T0 + 20)
    assert events(new) == [BindingPurged(MN_LMA, hoa)]


@pytest.mark.parametrize("mag", [MAG1, MAG2])
def test_reattach_within_min_delay_keeps_addresses(mag):
    """RFC 5213 §5.3.5: a valid PBU with lifetime > 0 during the wait updates the entry and
    ends the wait; the MN keeps its HoA and HNP."""
    lma = make_lma()
    first = registered(lma)
    hoa = ipv4_answer(first).address
    hnps = lma.binding(MN_LMA).hnps
    assert send6(lma, dereg(now=T0 + 10), T0 + 10).status == 0
    events(lma)
    pba = send6(lma, pbu(MN_LMA, ts=T0 + 15, seq=3, ipv4="0.0.0.0"), T0 + 15, src=mag)
    assert ipv4_answer(pba).address == hoa
    view = lma.binding(MN_LMA)
    assert (view.state, view.ipv4_hoa, view.hnps, view.mag) == ("active", hoa, hnps, Peer(mag))
    assert len(of(events(lma), BindingUp)) == 1
    lma.handle_timer(T0 + 25)  # the old MinDelay deadline is void
    assert events(lma) == []
    assert lma.binding(MN_LMA).state == "active"


def test_dereg_from_non_serving_mag_is_ignored():
    """RFC 5213 §5.3.5 step 1: a lifetime-0 PBU from a MAG other than the serving one MUST
    be ignored: no PBA, no state change."""
    lma = make_lma()
    registered(lma)
    before = lma.binding(MN_LMA)
    lma.receive_ipv6(encode(dereg(now=T0 + 10)), MAG2, T0 + 10)
    assert only_pba(lma) is None
    assert [e.reason for e in events(lma)] == ["dereg-from-non-serving-mag"]
    assert lma.binding(MN_LMA) == before


def test_dereg_without_binding_is_silently_ignored():
    """RFC 5213 §5.4.1.x: a lifetime-0 PBU matching no session is silently ignored."""
    lma = make_lma()
    lma.receive_ipv6(encode(dereg(now=T0)), MAG1, T0)
    assert only_pba(lma) is None
    assert list(lma.bindings()) == []
    assert all(type(e) is MessageDropped for e in events(lma))


# --- expiry ---------------------------------------------------------------------------------


def test_lifetime_expiry_takes_binding_down_and_purges():
    """RFC 5213 §5.3.3 / §5.1 (lifetime): with no refresh, the entry expires at its
    lifetime: BindingDown("expired") then BindingPurged, addresses back in the pools."""
    lma = make_lma()
    hoa = ipv4_answer(registered(lma, lifetime_s=400)).address
    assert lma.get_timer() == T0 + 400
    lma.handle_timer(T0 + 399.9)
    assert events(lma) == []
    lma.handle_timer(T0 + 400)
    evs = events(lma)
    assert [type(e) for e in evs] == [BindingDown, BindingPurged]
    assert evs[0].reason == "expired" and evs[0].binding.mn_id == MN_LMA
    assert evs[1] == BindingPurged(MN_LMA, hoa)
    assert lma.binding(MN_LMA) is None
    assert lma.get_timer() is None
    assert (lma.pools.get(None).used, lma.hnp_pool.used) == (0, 0)


# --- restart --------------------------------------------------------------------------------


def test_restore_after_restart_brings_bindings_back():
    """RFC 5213 §5.1 (the binding cache outlives a restart when kept in a store): restored
    entries are identical, announced with BindingUp("restored"), keep their expiry, and
    their addresses are not handed to anyone else."""
    old = make_lma()
    registered(old, MN_LMA, T0)
    registered(old, MN_STATIC, T0, ipv4=STATIC_HOA, ipv4_plen=24)
    registered(old, MN_DHCP, T0, ipv4="10.20.1.1", ipv4_plen=16)
    views = sorted(old.bindings(), key=lambda v: v.mn_id)

    new = make_lma()  # fresh pools: nothing allocated
    new.restore(views, T0 + 5)
    up = of(events(new), BindingUp)
    assert sorted(e.binding.mn_id for e in up) == [MN_DHCP, MN_LMA, MN_STATIC]
    assert {e.change for e in up} == {"restored"}
    assert sorted(new.bindings(), key=lambda v: v.mn_id) == views
    assert new.get_timer() == T0 + 400

    restored = new.binding(MN_LMA)
    pba = send6(new, pbu(MN_LMA2, ts=T0 + 6, ipv4="0.0.0.0"), T0 + 6)
    assert ipv4_answer(pba).address != restored.ipv4_hoa
    assert new.binding(MN_LMA2).hnps != restored.hnps
    # a replayed timestamp is still caught: the replay state came back too
    stale = send6(new, pbu(MN_LMA, ts=T0, seq=9, ipv4="0.0.0.0"), T0 + 0.1)
    assert stale.status == 156


def test_restore_purges_lapsed_and_reports_conflicts():
    """RFC 5213 §5.3.3 (lifetime): an entry that expired while the LMA was down is purged,
    not restored; two entries claiming one HoA cannot both come back."""
    old = make_lma()
    registered(old, MN_LMA, T0, lifetime_s=100)
    (view,) = old.bindings()
    clash = view._replace(mn_id=MN_LMA2, expires_at=T0 + 1000)

    new = make_lma()
    new.restore([view], T0 + 200)
    assert events(new) == [BindingPurged(MN_LMA, view.ipv4_hoa)]
    assert new.binding(MN_LMA) is None

    new2 = make_lma()
    new2.restore([view._replace(expires_at=T0 + 1000), clash], T0 + 50)
    evs = events(new2)
    assert [type(e) for e in evs] == [BindingUp, MessageDropped]
    assert evs[1].reason == "restore-conflict"
    assert new2.binding(MN_LMA2) is None


# --- reconfiguration ------------------------------------------------------------------------


def test_reconfigure_keeps_untouched_bindings_and_drops_removed_profiles():
    """RFC 5213 §5.3.1 steps 5-8 (authorization comes from the policy profile): after a
    configuration change, bindings still authorized stay as they are; those whose profile
    is gone go down ("policy-changed") and are purged."""
    lma = make_lma()
    registered(lma, MN_LMA, T0)
    registered(lma, MN_STATIC, T0, ipv4=STATIC_HOA, ipv4_plen=24)
    kept = lma.binding(MN_LMA)
    profiles = default_profiles()
    del profiles[MN_STATIC]
    lma.reconfigure(lma.settings, profiles, make_pools(), PrefixPool(lma.hnp_pool.network), T0 + 1)
    evs = events(lma)
    assert [type(e) for e in evs] == [BindingDown, BindingPurged]
    assert (evs[0].binding.mn_id, evs[0].reason) == (MN_STATIC, "policy-changed")
    assert evs[1] == BindingPurged(MN_STATIC, STATIC_HOA)
    assert lma.binding(MN_LMA) == kept
    assert lma.binding(MN_STATIC) is None
    # the kept HoA and HNP are claimed in the new pools
    pba = send6(lma, pbu(MN_LMA2, ts=T0 + 2, ipv4="0.0.0.0"), T0 + 2)
    assert ipv4_answer(pba).address != kept.ipv4_hoa
    assert lma.binding(MN_LMA2).hnps != kept.hnps
    assert send6(lma, pbu(MN_STATIC, ts=T0 + 3), T0 + 3).status == 153
    # and the kept binding still expires on its old schedule
    lma.handle_timer(T0 + 400)
    assert [e.reason for e in of(events(lma), BindingDown)] == ["expired"]


def test_reconfigure_drops_bindings_of_a_mag_no_longer_allowed():
    """RFC 5213 §5.3.1 steps 5/6: a MAG removed from the allowed set loses its bindings."""
    lma = make_lma()
    registered(lma, MN_LMA, T0)
    settings = dataclasses.replace(lma.settings, allowed_mags=frozenset({MAG2}))
    lma.reconfigure(settings, lma.profiles, make_pools(), PrefixPool(lma.hnp_pool.network), T0)
    assert [type(e) for e in events(lma)] == [BindingDown, BindingPurged]
    assert lma.binding(MN_LMA) is None


# --- IPv4 transport and NAT detection ----------------------------------------------------------


def test_nat_detected_when_ipv4_coa_differs_from_source():
    """Seed §4.3/§4.5 (DSMIPv6 NAT detection, RFC 5555 §4.1): the IPv4 CoA option differs
    from the outer source -> a NAT: the PBA has a NAT Detection option with the refresh
    time, the tunnel is IPv4-UDP, and the PBA goes to the address and port actually seen,
    framed IPv4/UDP/IPv6/MH from the LMAA to the MAG's IPv6 address (seed Figure 8)."""
    lma = make_lma(nat_refresh_s=110)
    msg = pbu(MN_LMA, ipv4="0.0.0.0", extra=(Ipv4CareOfAddress(MAG1_V4),))
    pba, out = send_udp(lma, msg, T0, src4=NAT_V4, port=NAT_PORT)
    assert pba.status == 0
    assert pba.find(NatDetection) == NatDetection(110, True)
    assert out.peer == Peer(MAG1, NAT_V4, NAT_PORT)
    src6, dst6, _ = ipv6_frame.unwrap(out.data)
    assert (src6, dst6) == (LMAA, MAG1)
    view = lma.binding(MN_LMA)
    assert (view.nat, view.encapsulation.value) == (True, "ipv4-udp")
    assert view.mag == Peer(MAG1, NAT_V4, NAT_PORT)
    assert [e.change for e in of(events(lma), BindingUp)] == ["created"]


def test_no_nat_when_ipv4_coa_matches_source():
    """Seed §4.3 / RFC 5555 §3.2.2: no NAT on the path -> refresh time all ones (no
    keepalives), F clear, tunnel mode IPv4 (RFC 5844 §4.1.3.1); the PBA goes back to the
    MAG's address, to the source port of the PBU."""
    lma = make_lma()
    msg = pbu(MN_LMA, ipv4="0.0.0.0", extra=(Ipv4CareOfAddress(MAG1_V4),))
    pba, out = send_udp(lma, msg, T0, src4=MAG1_V4, port=PMIP6_CNTL_PORT)
    assert pba.find(NatDetection) == NatDetection(ALL_ONES, False)
    assert out.peer == Peer(MAG1, MAG1_V4, PMIP6_CNTL_PORT)
    view = lma.binding(MN_LMA)
    assert (view.nat, view.encapsulation.value) == (False, "ipv4")


def test_nat_binding_moves_when_nat_port_changes():
    """Seed §4.4 (keepalives keep the NAT binding; a new NAT mapping must be followed):
    a refresh from a new public port updates the binding's peer ("updated")."""
    lma = make_lma()
    coa = (Ipv4CareOfAddress(MAG1_V4),)
    send_udp(lma, pbu(MN_LMA, ipv4="0.0.0.0", extra=coa), T0, src4=NAT_V4, port=NAT_PORT)
    events(lma)
    msg = pbu(MN_LMA, ts=T0 + 99, seq=2, hi=5, ipv4="0.0.0.0", extra=coa)
    _, out = send_udp(lma, msg, T0 + 99, src4=NAT_V4, port=NAT_PORT + 1)
    assert out.peer.port == NAT_PORT + 1
    assert [e.change for e in of(events(lma), BindingUp)] == ["updated"]
    assert lma.binding(MN_LMA).mag.port == NAT_PORT + 1


def test_forced_udp_flag():
    """RFC 5844 §4.1.3.1: F=1 sets the IPv4-UDP mode (the PBA's NAT Detection option has F
    set); with AcceptForcedIPv4UDPEncapsulationRequest off, F=1 is refused with 129."""
    msg = pbu(MN_LMA, ipv4="0.0.0.0", flags=BuFlags.A | BuFlags.P | BuFlags.F)
    lma = make_lma()
    pba, _ = send_udp(lma, msg, T0)
    assert pba.find(NatDetection) == NatDetection(ALL_ONES, True)
    assert lma.binding(MN_LMA).encapsulation.value == "ipv4-udp"
    strict = make_lma(accept_forced_udp=False)
    pba, _ = send_udp(strict, msg, T0)
    assert pba.status == 129
    assert strict.binding(MN_LMA) is None


def test_bare_rfc5844_framing_is_answered_in_bare_framing():
    """RFC 5844 §4.1.3.2: a PBU carried as a bare MH in UDP is answered the same way: UDP
    payload = the MH, checksum zero, to the source address and port of the PBU."""
    lma = make_lma()
    pba, out = send_udp(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0, port=5999, bare=True)
    assert out.data[0] >> 4 != 6  # no inner IPv6 header: starts with Payload Proto 59
    assert out.data[4:6] == b"\0\0"
    assert out.peer.v4 == MAG1_V4 and out.peer.port == 5999
    assert pba.status == 0 and ipv4_answer(pba).status == 0
    view = lma.binding(MN_LMA)
    assert view.mag.v4 == MAG1_V4
    assert view.encapsulation.value == "ipv4"


def test_ipv6_transport_has_no_nat_option():
    """Seed §4.5 / RFC 5213 §5.3.6: the NAT Detection option belongs to IPv4 transport
    only; over IPv6 the PBA has none and the tunnel mode is IPv6."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0)
    assert pba.find(NatDetection) is None
    assert lma.binding(MN_LMA).encapsulation.value == "ipv6"


# --- malformed input --------------------------------------------------------------------------


MALFORMED = [
    b"",
    b"\x3b",
    b"\x3b\x00\x05\x00\x00\x00\x00\x00",  # BU too short for its fixed fields
    b"\x3b\x01\x05\x00\x00\x00" + bytes(10),  # well formed, but no P flag: not a PBU
    b"\x3b\x00\x07\x00\x00\x00\x00\x00",  # unsupported MH type
    b"\x3b\x02\x05\x00\x00\x00\x00\x01\x82\x00\x00\x10\x08\xff\x01abc" + bytes(6),  # MNID overrun
    b"\x60" + bytes(10),  # looks like IPv6 but is too short
    bytes(range(256)),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_bytes_are_dropped_not_raised(data):
    """RFC 6275 §9.2 (malformed Mobility Headers are discarded): garbage produces a
    MessageDropped event and no PBA, on both inputs."""
    lma = make_lma()
    lma.receive_ipv6(data, MAG1, T0)
    lma.receive_udp(data, MAG1_V4, PMIP6_CNTL_PORT, T0)
    assert lma.datagrams_to_send() == []
    evs = events(lma)
    assert len(evs) == 2 and all(type(e) is MessageDropped for e in evs)


def test_bad_inner_checksum_over_udp_is_dropped():
    """Seed §4.4 Figure 6 with RFC 6275 §6.1.1: inside IPv4/UDP the MH checksum is ours to
    check; a corrupted one drops the PBU."""
    lma = make_lma()
    data = bytearray(udp_payload(pbu(MN_LMA)))
    data[44] ^= 0xFF  # a checksum octet of the MH (IPv6 header is 40 octets)
    lma.receive_udp(bytes(data), MAG1_V4, PMIP6_CNTL_PORT, T0)
    assert lma.datagrams_to_send() == []
    assert [e.reason for e in events(lma)] == ["bad-checksum"]


def test_binding_ack_sent_to_lma_is_dropped():
    """RFC 5213 §5.3: the LMA processes PBUs only; a PBA sent to it is dropped."""
    lma = make_lma()
    lma.receive_ipv6(encode(BindingAck(0, 1, 10)), MAG1, T0)
    assert lma.datagrams_to_send() == []
    assert [e.reason for e in events(lma)] == ["unexpected-message"]


def test_oversized_reply_is_dropped_not_raised():
    """RFC 6275 §6.1 (an MH is at most 2048 octets): a valid 2048-octet PBU whose PBA, with
    the options the LMA adds, would not fit produces a MessageDropped, never an exception."""
    lma = make_lma({MN_LMA: default_profiles()[MN_LMA]}, timestamps=False)
    base = int(lma.hnp_pool.network.network_address)
    hnps = tuple((IPv6Address(base + (i << 64)), 64) for i in range(83))
    msg = pbu(MN_LMA, ts=None, hnps=hnps, ipv4="0.0.0.0", extra=(Ipv4CareOfAddress(MAG1_V4),))
    data = udp_payload(msg, bare=True)
    assert len(data) == 2048
    lma.receive_udp(data, NAT_V4, NAT_PORT, T0)  # must not raise
    assert lma.datagrams_to_send() == []
    assert [e.reason for e in of(events(lma), MessageDropped)] == ["reply-too-large"]


def test_unknown_mn_over_udp_gets_reject_to_observed_address():
    """RFC 5844 §4.1.3.2: every PBA, rejects included, goes to the source address and port
    of the PBU."""
    lma = make_lma()
    pba, out = send_udp(lma, pbu(MN_UNKNOWN), T0, src4=NAT_V4, port=NAT_PORT)
    assert pba.status == 153
    assert (out.peer.v4, out.peer.port) == (NAT_V4, NAT_PORT)


def test_restored_deadlines_fire_exactly_after_refreshes_and_deregistrations():
    """RFC 5213 §5.3.3 and §5.3.5 across a restart: restored entries are armed outside the
    timer heap, restored in several batches in no particular order. Whatever happens to
    them after (refreshed to a later expiry, de-registered to an earlier one, left alone),
    get_timer names the earliest true deadline and handle_timer purges exactly the entries
    due, each once."""
    mns = [b"mn%03d@example.net" % i for i in range(60)]
    profiles = {m: MnProfile(m, Ipv4Mode.LMA) for m in mns}
    old = make_lma(profiles)
    for i, m in enumerate(mns):  # lifetimes 100..395 s, registered over 60 s
        registered(old, m, T0 + i, lifetime_s=100 + (i * 37) % 300)
    views = list(old.bindings())
    random.Random(5).shuffle(views)

    new = make_lma(profiles)
    now = T0 + 61
    new.restore(views[:20], now)
    assert new.get_timer() == min(v.expires_at for v in views[:20])
    new.restore(views[20:45], now)  # a later batch, with earlier deadlines among them
    new.restore(views[45:], now)
    assert len(of(events(new), BindingUp)) == 60
    expected = {v.mn_id: v.expires_at for v in views}
    assert new.get_timer() == min(expected.values())

    # At now + 1: every 3rd MN refreshes (a later expiry), every 7th de-registers (an
    # earlier one: MinDelayBeforeBCEDelete). The rest keep their restored deadlines.
    now += 1
    for i, m in enumerate(mns):
        if i % 7 == 0:
            pba = send6(new, pbu(m, ts=now, seq=2, lifetime_s=0, ipv4="0.0.0.0"), now)
            assert pba.status == 0
            expected[m] = now + 10
        elif i % 3 == 0:
            pba = send6(new, pbu(m, ts=now, seq=2, lifetime_s=600, ipv4="0.0.0.0"), now)
            assert pba.status == 0
            expected[m] = now + 600
    events(new)

    while expected:
        due = new.get_timer()
        assert due == min(expected.values())
        new.handle_timer(due - 0.001)
        assert of(events(new), BindingPurged) == []  # nothing before its time
        new.handle_timer(due)
        purged = [e.mn_id for e in of(events(new), BindingPurged)]
        assert sorted(purged) == sorted(m for m, t in expected.items() if t == due)
        for m in purged:
            del expected[m]
    assert new.get_timer() is None and len(new) == 0
    assert new.pools.get(None).used == 0
