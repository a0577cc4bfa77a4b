"""MAG engine: PBU construction (RFC 5213 §6.9.1, seed §3.4/§4.4, RFC 5844 §3.2.3),
retransmission and back-off (§6.9.4), refresh (§6.9.1.3), NAT keepalives (seed §4.4),
PBA validation (§6.9.1.2) and de-registration (§6.9.1.4)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from engine_helpers import (
    DHCP_PREFIX,
    IPV4_LMAA,
    LMA_NAME,
    LMAA,
    MAG1,
    MAG1_V4,
    MN_DHCP,
    MN_LMA,
    MN_STATIC,
    MN_UNKNOWN,
    MN_V4ONLY,
    MN_V6ONLY,
    NAT_V4,
    STATIC_HOA,
    STATIC_ROUTER,
    T0,
    ZERO4,
    ZERO6,
    decode_transmit,
    default_profiles,
    events,
    make_lma,
    make_mag,
    of,
    pump,
)

from pmip_agent.core.events import (
    BindingLost,
    Deregistered,
    Ipv4Denied,
    Ipv4Granted,
    MessageDropped,
    Peer,
    RegistrationRejected,
    TunnelNeeded,
)
from pmip_agent.core.mag import MagEngine
from pmip_agent.core.policy import Ipv4Mode, LmaPeerSettings, MagSettings, MnProfile
from pmip_agent.wire import (
    AccessTechTypeOption,
    BindingAck,
    BindingUpdate,
    BuFlags,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4CareOfAddress,
    Ipv4DefaultRouter,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    Option,
    Timestamp,
    WireProfile,
    encode,
)
from pmip_agent.wire.constants import PMIP6_CNTL_PORT

HNP = (IPv6Address("2001:db8:100:7::"), 64)


def sent_pbus(mag: MagEngine) -> list[BindingUpdate]:
    out = []
    for t in mag.datagrams_to_send():
        msg = decode_transmit(t)
        assert isinstance(msg, BindingUpdate)
        out.append(msg)
    return out


def one_pbu(mag: MagEngine) -> BindingUpdate:
    (msg,) = sent_pbus(mag)
    return msg


def answer(
    mag: MagEngine,
    to: BindingUpdate,
    now: float,
    *,
    status: int = 0,
    lifetime_s: int = 3600,
    options: tuple[Option, ...] = (),
    seq: int | None = None,
    hnps: tuple[tuple[IPv6Address, int], ...] = (HNP,),
    att: int | None = None,
) -> None:
    """Hand the MAG a PBA for ``to`` built by hand, from the LMAA over IPv6."""
    opts: list[Option] = [to.find(MnIdentifier)]
    opts += [HomeNetworkPrefix(p, n) for p, n in hnps]
    opts.append(to.find(HandoffIndicatorOption))
    opts.append(AccessTechTypeOption(att) if att is not None else to.find(AccessTechTypeOption))
    if to.find(Timestamp) is not None:
        opts.append(to.find(Timestamp))
    opts += options
    pba = BindingAck(status, to.sequence if seq is None else seq, lifetime_s // 4, options=opts)
    mag.receive_ipv6(encode(pba), LMAA, now)


# --- PBU contents ----------------------------------------------------------------------------


def test_static_mode_pbu_requests_profile_address():
    """Seed §3.1/§3.4 (static: the MAG sets the known address and prefix length) and
    RFC 5213 §6.9.1.1: MN-ID, an ALL_ZERO HNP, HI, ATT, Timestamp, A and P flags."""
    mag = make_mag()
    assert mag.attach(MN_STATIC, T0)
    (t,) = mag.datagrams_to_send()
    assert t.peer == Peer(LMAA)
    msg = decode_transmit(t)
    assert msg.flags == BuFlags.A | BuFlags.P
    assert msg.lifetime == 3600 // 4
    assert msg.find(MnIdentifier) == MnIdentifier(MN_STATIC)
    assert msg.find_all(HomeNetworkPrefix) == [HomeNetworkPrefix(ZERO6, 0)]
    assert msg.find(HandoffIndicatorOption) == HandoffIndicatorOption(1)
    assert msg.find(AccessTechTypeOption) == AccessTechTypeOption(3)
    assert msg.find(Timestamp) == Timestamp.from_seconds(T0)
    assert msg.find_all(Ipv4HoaRequest) == [Ipv4HoaRequest(STATIC_HOA, 24)]
    assert msg.find(Ipv4CareOfAddress) is None  # IPv6 transport


def test_lma_mode_pbu_requests_all_zero_rfc5844():
    """RFC 5844 §3.3.1 / seed §3.4: dynamic assignment by the LMA is asked with 0.0.0.0."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    msg = one_pbu(mag)
    (req,) = msg.find_all(Ipv4HoaRequest)
    assert req.address == ZERO4
    assert msg.find(Ipv4HomeAddress) is None


def test_lma_mode_pbu_requests_all_zero_draft():
    """Seed §3.3/§3.4: the draft uses the RFC 5555 IPv4 Home Address option (29) with
    0.0.0.0; RFC 5555 §3.1.1 forbids prefix length 0, so it is 32."""
    mag = make_mag(wire_profile=WireProfile.DRAFT)
    mag.attach(MN_LMA, T0)
    msg = one_pbu(mag)
    assert msg.find(Ipv4HomeAddress) == Ipv4HomeAddress(ZERO4, 32)
    assert msg.find(Ipv4HoaRequest) is None


def test_dhcp_mode_waits_for_dhcp_answer():
    """Seed §3.1 Figure 3: in DHCP-server mode the PBU (step 3) follows the DHCP server's
    offer (step 2), so attach alone sends nothing; learn_ipv4 sends the learned address."""
    mag = make_mag()
    assert mag.attach(MN_DHCP, T0)
    assert mag.datagrams_to_send() == []
    assert mag.get_timer() is None
    assert mag.entry(MN_DHCP).state == "waiting-address"
    hoa = IPv4Address("10.20.5.6")
    mag.learn_ipv4(MN_DHCP, hoa, DHCP_PREFIX.prefixlen, T0 + 1)
    msg = one_pbu(mag)
    assert msg.find_all(Ipv4HoaRequest) == [Ipv4HoaRequest(hoa, 16)]
    assert msg.find(Timestamp) == Timestamp.from_seconds(T0 + 1)


def test_each_pbu_says_what_was_asked_when_it_was_queued():
    """PBUs are built when taken (datagrams_to_send), after the DHCP answers went out; each
    still carries the request, time and sequence number of the moment it was queued, not
    the entry's state at the taking. Here the server's OFFER and then another address in
    its ACK are learned before the daemon takes anything."""
    mag = make_mag()
    assert mag.attach(MN_DHCP, T0)
    first, second = IPv4Address("10.20.5.6"), IPv4Address("10.20.5.7")
    mag.learn_ipv4(MN_DHCP, first, 16, T0 + 1)
    mag.learn_ipv4(MN_DHCP, second, 16, T0 + 2)
    a, b = sent_pbus(mag)
    assert a.find_all(Ipv4HoaRequest) == [Ipv4HoaRequest(first, 16)]
    assert b.find_all(Ipv4HoaRequest) == [Ipv4HoaRequest(second, 16)]
    assert a.find(Timestamp) == Timestamp.from_seconds(T0 + 1)
    assert b.find(Timestamp) == Timestamp.from_seconds(T0 + 2)
    assert b.sequence == (a.sequence + 1) & 0xFFFF
    assert mag.datagrams_to_send() == []


def test_ipv6_only_mn_sends_no_ipv4_option_and_ipv4_only_mn_no_hnp():
    """RFC 5844 §3.2.3.1: the HNP option is present only if IPv6 mobility is wanted; the
    IPv4 HoA Request only when IPv4 is."""
    mag = make_mag()
    mag.attach(MN_V6ONLY, T0)
    mag.attach(MN_V4ONLY, T0)
    v6, v4 = sent_pbus(mag)
    assert v6.find(Ipv4HoaRequest) is None and len(v6.find_all(HomeNetworkPrefix)) == 1
    assert v4.find(HomeNetworkPrefix) is None and v4.find(Ipv4HoaRequest) is not None


@pytest.mark.parametrize("force_udp", [False, True])
def test_ipv4_transport_pbu_framing(force_udp):
    """Seed §4.4 Figure 6: IPv4 (to IPv4-LMAA) / UDP 5436 (RFC 5844 §4) / IPv6 (v6MAG ->
    LMAA) / MH with a valid checksum; the IPv4 CoA option carries the MAG's own address
    for NAT detection (seed §4.3); F is set when UDP is forced (RFC 5844 §4.2.2.1)."""
    mag = make_mag(transport="ipv4", force_udp=force_udp)
    mag.attach(MN_LMA, T0)
    (t,) = mag.datagrams_to_send()
    assert t.peer == Peer(LMAA, IPV4_LMAA, PMIP6_CNTL_PORT)
    assert t.data[0] >> 4 == 6
    assert t.data[8:24] == MAG1.packed and t.data[24:40] == LMAA.packed
    msg = decode_transmit(t)  # checks the MH checksum
    assert msg.find(Ipv4CareOfAddress) == Ipv4CareOfAddress(MAG1_V4)
    assert bool(msg.flags & BuFlags.F) is force_udp


def test_unknown_mn_attach_returns_false():
    """RFC 5213 §6.2 (no policy profile, no service): attach is refused and nothing sent."""
    mag = make_mag()
    assert mag.attach(MN_UNKNOWN, T0) is False
    profiles = default_profiles()
    profiles[MN_UNKNOWN] = MnProfile(MN_UNKNOWN, lma="no-such-lma")
    other = make_mag(profiles)
    assert other.attach(MN_UNKNOWN, T0) is False
    assert mag.datagrams_to_send() == [] and other.datagrams_to_send() == []
    assert len(mag) == 0 and len(other) == 0


def test_attach_is_idempotent():
    """RFC 5213 §6.9.1.1: one binding update list entry per MN; a repeated attach while
    it is being served sends nothing new."""
    mag = make_mag()
    assert mag.attach(MN_LMA, T0)
    one_pbu(mag)
    assert mag.attach(MN_LMA, T0 + 0.5)
    assert mag.datagrams_to_send() == []


# --- retransmission and back-off ---------------------------------------------------------------


def drive_unanswered(mag: MagEngine, until: float) -> list[tuple[float, BindingUpdate]]:
    """Fire the MAG's timers up to ``until`` with nobody answering."""
    sent = [(T0, m) for m in sent_pbus(mag)]
    while (deadline := mag.get_timer()) is not None and deadline <= until:
        mag.handle_timer(deadline)
        sent += [(deadline, m) for m in sent_pbus(mag)]
    return sent


def test_retransmission_doubles_then_backs_off_and_retries():
    """RFC 5213 §6.9.4 with RFC 6275 §12: retransmit after INITIAL_BINDACK_TIMEOUT (1 s),
    doubling to MAX_BINDACK_TIMEOUT (32 s); each retransmission has a fresh (greater)
    sequence number and the latest timestamp; after the last one the MAG waits
    retry_after_failure_s and starts a new attempt."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    sent = drive_unanswered(mag, T0 + 63)
    times = [t - T0 for t, _ in sent]
    assert times == [0, 1, 3, 7, 15, 31]
    seqs = [m.sequence for _, m in sent]
    assert seqs == sorted(set(seqs))
    assert [m.find(Timestamp) for _, m in sent] == [Timestamp.from_seconds(t) for t, _ in sent]
    assert mag.entry(MN_LMA).state == "backoff"
    assert mag.get_timer() == T0 + 63 + 32
    mag.handle_timer(T0 + 95)
    again = one_pbu(mag)
    assert again.sequence > seqs[-1]
    assert mag.entry(MN_LMA).state == "registering"


def test_retransmission_timeout_is_capped():
    """RFC 5213 §6.9.4: the doubling stops at MAX_BINDACK_TIMEOUT."""
    mag = make_mag(max_bindack_timeout_s=4.0, max_transmissions=6)
    mag.attach(MN_LMA, T0)
    times = [t - T0 for t, _ in drive_unanswered(mag, T0 + 100)]
    assert times[:6] == [0, 1, 3, 7, 11, 15]


def test_lma_down_then_back_recovers():
    """RFC 5213 §6.9.4 ("MAY continue to send these messages at this slower rate"): after
    failed attempts, the next attempt once the LMA is back registers the MN."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    drive_unanswered(mag, T0 + 63)  # the LMA is down: everything is lost
    lma = make_lma()
    retry_at = mag.get_timer()
    mag.handle_timer(retry_at)
    result = pump(mag, lma, retry_at)
    assert mag.entry(MN_LMA).registered
    assert len(of(result.mag_events, TunnelNeeded)) == 1
    assert len(of(result.mag_events, Ipv4Granted)) == 1


# --- refresh and NAT keepalive -----------------------------------------------------------------


def test_refresh_at_fraction_of_lifetime_with_hi_5():
    """RFC 5213 §6.9.1.3: the re-registration has the same options with the assigned HNPs,
    HI = 5; it is sent at refresh_fraction of the granted lifetime (RFC 5213 gives no
    timing). A refresh that changes nothing yields no new TunnelNeeded."""
    mag = make_mag(refresh_fraction=0.8)
    lma = make_lma(max_lifetime_s=1000)
    mag.attach(MN_LMA, T0)
    first = pump(mag, lma, T0)
    (granted,) = of(first.mag_events, Ipv4Granted)
    assert granted.lifetime_s == 1000
    view = mag.entry(MN_LMA)
    assert mag.get_timer() == T0 + 800
    mag.handle_timer(T0 + 800)
    refresh = pump(mag, lma, T0 + 800)
    (msg,) = refresh.pbus
    assert msg.find(HandoffIndicatorOption) == HandoffIndicatorOption(5)
    assert [(o.prefix, o.prefix_len) for o in msg.find_all(HomeNetworkPrefix)] == list(view.hnps)
    assert msg.find(Ipv4HoaRequest) == Ipv4HoaRequest(granted.hoa, granted.prefix_len)
    assert msg.find(Timestamp) == Timestamp.from_seconds(T0 + 800)
    assert (refresh.pbas[0].status, refresh.mag_events) == (0, [])
    assert mag.get_timer() == T0 + 1600


def test_nat_keepalive_interval_is_fraction_of_refresh_time():
    """Seed §4.4 ("MUST send a proxy binding update every refresh time specified in the NAT
    detection option"): the MAG re-registers at nat_keepalive_fraction (0.9) of it."""
    mag = make_mag(transport="ipv4")
    lma = make_lma(nat_refresh_s=110)
    mag.attach(MN_LMA, T0)
    result = pump(mag, lma, T0, nat_src=NAT_V4)
    (tunnel,) = of(result.mag_events, TunnelNeeded)
    assert (tunnel.nat, tunnel.encapsulation.value) == (True, "ipv4-udp")
    assert mag.get_timer() == pytest.approx(T0 + 99)
    mag.handle_timer(T0 + 99)
    again = pump(mag, lma, T0 + 99, nat_src=NAT_V4)
    assert again.pbus[0].find(HandoffIndicatorOption) == HandoffIndicatorOption(5)
    assert mag.get_timer() == pytest.approx(T0 + 198)


def test_no_keepalive_without_nat():
    """Seed §4.4 / RFC 5555 §3.2.2: an all-ones refresh time means no NAT and no
    keepalives: the MAG only refreshes the lifetime."""
    mag = make_mag(transport="ipv4")
    lma = make_lma()
    mag.attach(MN_LMA, T0)
    result = pump(mag, lma, T0)
    (tunnel,) = of(result.mag_events, TunnelNeeded)
    assert (tunnel.nat, tunnel.encapsulation.value) == (False, "ipv4")
    assert mag.get_timer() == T0 + 3600 * 0.8


def test_registration_lapses_when_refresh_is_unanswered():
    """RFC 5213 §6.9.1.3 (the binding lives for its lifetime): when no refresh is answered
    before the granted lifetime ends, the MAG stops forwarding (BindingLost "expired")."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    answer(mag, one_pbu(mag), T0, lifetime_s=40, options=(Ipv4HoaReply(0, 24, STATIC_HOA),))
    assert of(events(mag), TunnelNeeded)
    assert mag.get_timer() == T0 + 32
    lost = []
    while (deadline := mag.get_timer()) <= T0 + 40:
        mag.handle_timer(deadline)
        mag.datagrams_to_send()
        lost += of(events(mag), BindingLost)
    assert lost == [BindingLost(MN_LMA, "expired")]
    assert not mag.entry(MN_LMA).registered


# --- PBA validation --------------------------------------------------------------------------


def test_pba_with_unknown_sequence_is_ignored():
    """RFC 5213 §6.9.1.2: a PBA that matches no outstanding PBU is ignored."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    msg = one_pbu(mag)
    answer(mag, msg, T0, seq=(msg.sequence + 7) & 0xFFFF)
    assert [e.reason for e in events(mag)] == ["pba-unexpected-sequence"]
    assert mag.entry(MN_LMA).state == "registering"
    answer(mag, msg, T0, options=(Ipv4HoaReply(0, 24, IPv4Address("10.1.0.9")),))
    assert mag.entry(MN_LMA).registered


def test_refusals_of_earlier_transmissions_wait_for_the_latest():
    """PBUs held up on the way (a next hop's neighbour entry resolving, say) reach the LMA
    together. It refuses the stale ones (156, timestamp mismatch) and accepts the last.
    The MAG leaves the refusals of earlier transmissions to the latest one's answer, so
    it registers instead of backing off while the LMA holds the binding."""
    mag, lma = make_mag(), make_lma()
    mag.attach(MN_LMA, T0)
    sent = drive_unanswered(mag, T0 + 3)
    assert [t - T0 for t, _ in sent] == [0, 1, 3]
    late = T0 + 3.05
    pbas = []
    for _, pbu in sent:
        lma.receive_ipv6(encode(pbu), MAG1, late)
        pbas += lma.datagrams_to_send()
    assert [decode_transmit(t).status for t in pbas] == [156, 156, 0]
    for t in pbas:
        mag.receive_ipv6(t.data, LMAA, late)
    evs = events(mag)
    dropped = [(e.reason, e.detail) for e in of(evs, MessageDropped)]
    assert dropped == [("pba-superseded", "status 156")] * 2
    assert of(evs, RegistrationRejected) == [] and of(evs, Ipv4Denied) == []
    assert len(of(evs, Ipv4Granted)) == 1 and len(of(evs, TunnelNeeded)) == 1
    assert mag.entry(MN_LMA).registered


def test_late_refusal_of_the_latest_transmission_sends_a_fresh_one():
    """All the PBUs were held up longer than the timestamp window: the LMA refuses them
    all (156). The latest one's refusal is explained by its delay, so the MAG sends a PBU
    with a fresh timestamp at once, and registers on its answer instead of backing off."""
    mag, lma = make_mag(), make_lma()
    mag.attach(MN_LMA, T0)
    sent = drive_unanswered(mag, T0 + 1)
    late = T0 + 2.5
    for _, pbu in sent:
        lma.receive_ipv6(encode(pbu), MAG1, late)
    pbas = lma.datagrams_to_send()
    assert [decode_transmit(t).status for t in pbas] == [156, 156]
    for t in pbas:
        mag.receive_ipv6(t.data, LMAA, late)
    dropped = [(e.reason, e.detail) for e in of(events(mag), MessageDropped)]
    assert dropped == [
        ("pba-superseded", "status 156"),
        ("pba-late", "status 156 after 1.500 s: PBU sent again"),
    ]
    (fresh,) = sent_pbus(mag)
    assert fresh.find(Timestamp) == Timestamp.from_seconds(late)
    assert fresh.sequence > sent[-1][1].sequence
    lma.receive_ipv6(encode(fresh), MAG1, late + 0.01)
    (pba,) = lma.datagrams_to_send()
    mag.receive_ipv6(pba.data, LMAA, late + 0.01)
    evs = events(mag)
    assert of(evs, RegistrationRejected) == [] and of(evs, Ipv4Denied) == []
    assert len(of(evs, Ipv4Granted)) == 1 and mag.entry(MN_LMA).registered


def test_prompt_refusal_of_the_latest_transmission_ends_the_attempt():
    """The latest PBU's refusal is the answer, whatever came before it. A 156 that comes
    back within the timestamp window means clocks that differ: the attempt backs off."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    (_, first), (_, second) = drive_unanswered(mag, T0 + 1)
    answer(mag, second, T0 + 1.1, status=156)
    assert of(events(mag), RegistrationRejected) == [RegistrationRejected(MN_LMA, 156)]
    assert mag.entry(MN_LMA).state == "backoff"
    answer(mag, first, T0 + 1.2)  # the attempt is over: nothing outstanding
    assert [e.reason for e in events(mag)] == ["pba-unexpected-sequence"]
    assert not mag.entry(MN_LMA).registered


def test_pba_with_other_access_technology_is_ignored():
    """RFC 5213 §6.9.1.2: a PBA whose ATT differs from the request MUST be ignored."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    answer(mag, one_pbu(mag), T0, att=9)
    assert [e.reason for e in events(mag)] == ["pba-mismatched-options"]
    assert not mag.entry(MN_LMA).registered


def test_pba_from_unknown_source_is_ignored():
    """RFC 5213 §6.9.1.2 (the PBA comes from the LMA the PBU went to): a PBA from another
    IPv6 address is dropped, also when the LMA has no IPv4 address configured."""
    for ipv4_lmaa in (IPV4_LMAA, None):
        settings = MagSettings(
            proxy_coa=MAG1,
            lmas={LMA_NAME: LmaPeerSettings(LMA_NAME, LMAA, ipv4_lmaa)},
            profiles=default_profiles(),
        )
        mag = MagEngine(settings)
        mag.attach(MN_LMA, T0)
        msg = one_pbu(mag)
        pba = BindingAck(
            0, msg.sequence, 900, options=(msg.find(MnIdentifier), HomeNetworkPrefix(*HNP))
        )
        mag.receive_ipv6(encode(pba), IPv6Address("2001:db8:666::1"), T0)
        assert [e.reason for e in events(mag)] == ["pba-from-unknown-lma"]
        assert not mag.entry(MN_LMA).registered


def test_accepted_pba_reports_grant_and_tunnel():
    """Seed §3.4: on status 0 with IPv4 status 0 the MAG sets up the tunnel and the MN's
    IPv4 route: Ipv4Granted with the address, prefix length and default router."""
    mag = make_mag()
    mag.attach(MN_STATIC, T0)
    opts = (Ipv4HoaReply(0, 24, STATIC_HOA), Ipv4DefaultRouter(STATIC_ROUTER))
    answer(mag, one_pbu(mag), T0, options=opts)
    evs = events(mag)
    assert of(evs, Ipv4Granted) == [Ipv4Granted(MN_STATIC, STATIC_HOA, 24, STATIC_ROUTER, 3600)]
    (tunnel,) = of(evs, TunnelNeeded)
    assert (tunnel.ipv4_hoa, tunnel.hnps, tunnel.lma) == (STATIC_HOA, (HNP,), Peer(LMAA))
    assert tunnel.encapsulation.value == "ipv6"


# --- IPv4 refusals are never reported as grants (seed §3.4) ---------------------------------------


def test_rejected_static_address_is_denied():
    """RFC 5844 §3.2.3.2 / seed §3.4: a PBA with 171 and reply status 129: the MN's IPv4
    traffic must not be routed: RegistrationRejected and Ipv4Denied, no Ipv4Granted."""
    mag_profiles = default_profiles()
    mag_profiles[MN_STATIC] = MnProfile(
        MN_STATIC, Ipv4Mode.STATIC, ipv4_hoa=IPv4Address("10.9.0.99"), ipv4_prefix_len=24
    )
    mag = make_mag(mag_profiles)
    lma = make_lma()
    mag.attach(MN_STATIC, T0)
    result = pump(mag, lma, T0)
    assert result.pbas[0].status == 171
    evs = result.mag_events
    assert of(evs, RegistrationRejected) == [RegistrationRejected(MN_STATIC, 171)]
    assert of(evs, Ipv4Denied) == [Ipv4Denied(MN_STATIC, 129)]
    assert of(evs, Ipv4Granted) == [] and of(evs, TunnelNeeded) == []
    assert mag.entry(MN_STATIC).state == "backoff"
    assert mag.get_timer() == T0 + 32


@pytest.mark.parametrize("reply_cls", [Ipv4HoaReply, Ipv4AddressAck])
def test_status_0_with_ipv4_refusal_is_denied(reply_cls):
    """Seed §3.4 ("If the Status field in the IPv4 Address Acknowledgment Option indicates
    the rejection ... MUST not enable IPv4 routing"): BA 0 with a non-zero IPv4 status ->
    Ipv4Denied and an IPv6-only tunnel, never Ipv4Granted."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    answer(mag, one_pbu(mag), T0, options=(reply_cls(129, 0, ZERO4),))
    evs = events(mag)
    assert of(evs, Ipv4Denied) == [Ipv4Denied(MN_LMA, 129)]
    assert of(evs, Ipv4Granted) == []
    (tunnel,) = of(evs, TunnelNeeded)
    assert tunnel.ipv4_hoa is None and tunnel.hnps == (HNP,)
    assert mag.entry(MN_LMA).ipv4_hoa is None


def test_static_mode_pba_granting_other_address_is_denied():
    """Seed §3.1/§3.4: a static MN may only get its profile address; a PBA "granting"
    another one is a refusal, not a grant."""
    mag = make_mag()
    mag.attach(MN_STATIC, T0)
    answer(mag, one_pbu(mag), T0, options=(Ipv4HoaReply(0, 24, IPv4Address("10.9.0.77")),))
    evs = events(mag)
    assert of(evs, Ipv4Granted) == []
    assert [d.mn_id for d in of(evs, Ipv4Denied)] == [MN_STATIC]
    assert of(evs, TunnelNeeded)[0].ipv4_hoa is None


def test_dhcp_mode_pba_granting_other_address_is_denied():
    """Seed §3.1 Figure 3: the LMA anchors the reported address; any other answer is
    refused."""
    mag = make_mag()
    mag.attach(MN_DHCP, T0)
    mag.learn_ipv4(MN_DHCP, IPv4Address("10.20.0.5"), 16, T0)
    answer(mag, one_pbu(mag), T0, options=(Ipv4HoaReply(0, 16, IPv4Address("10.20.0.6")),))
    evs = events(mag)
    assert of(evs, Ipv4Granted) == [] and len(of(evs, Ipv4Denied)) == 1


def test_missing_ipv4_answer_is_denied():
    """Seed §3.4 ("an IPv4 address acknowledgment option MUST be presented in reply"): an
    accepted PBA without it does not grant IPv4."""
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    answer(mag, one_pbu(mag), T0)
    evs = events(mag)
    assert of(evs, Ipv4Granted) == [] and of(evs, Ipv4Denied) == [Ipv4Denied(MN_LMA, 128)]


def test_draft_dual_stack_refusal_end_to_end():
    """Seed §3.4/§3.5 (draft profile): the LMA accepts IPv6 and refuses the address in the
    IPv4 Address Ack (130); the MAG reports Ipv4Denied and an IPv6-only tunnel."""
    mag_profiles = default_profiles()
    mag_profiles[MN_STATIC] = MnProfile(
        MN_STATIC, Ipv4Mode.STATIC, ipv4_hoa=IPv4Address("10.9.0.99"), ipv4_prefix_len=24
    )
    mag = make_mag(mag_profiles, wire_profile=WireProfile.DRAFT)
    mag.attach(MN_STATIC, T0)
    result = pump(mag, make_lma(), T0)
    assert result.pbas[0].status == 0
    assert of(result.mag_events, Ipv4Denied) == [Ipv4Denied(MN_STATIC, 130)]
    assert of(result.mag_events, Ipv4Granted) == []
    assert of(result.mag_events, TunnelNeeded)[0].ipv4_hoa is None


def test_refused_hint_falls_back_to_dynamic_request():
    """RFC 5844 §3.2.3.2: after 171 the MAG "SHOULD NOT request the same IPv4 address
    again, but MAY request the local mobility anchor to perform the address assignment"."""
    mag = make_mag()
    lma = make_lma()
    mag.attach(MN_LMA, T0, ipv4_hint=IPv4Address("10.99.0.1"))  # not in the LMA's pool
    first = pump(mag, lma, T0)
    assert first.pbus[0].find(Ipv4HoaRequest).address == IPv4Address("10.99.0.1")
    assert first.pbas[0].status == 171
    mag.handle_timer(mag.get_timer())
    second = pump(mag, lma, T0 + 32)
    assert second.pbus[0].find(Ipv4HoaRequest).address == ZERO4
    assert len(of(second.mag_events, Ipv4Granted)) == 1


# --- de-registration --------------------------------------------------------------------------


def registered_mag() -> tuple[MagEngine, object]:
    mag = make_mag()
    lma = make_lma()
    mag.attach(MN_LMA, T0)
    pump(mag, lma, T0)
    assert mag.entry(MN_LMA).registered
    return mag, lma


def test_detach_sends_lifetime_zero_and_deregisters_on_pba():
    """RFC 5213 §6.9.1.4: lifetime 0, the same options with the assigned HNPs, HI = 4;
    the entry goes on the PBA (Deregistered)."""
    mag, lma = registered_mag()
    view = mag.entry(MN_LMA)
    mag.detach(MN_LMA, T0 + 10)
    result = pump(mag, lma, T0 + 10)
    (msg,) = result.pbus
    assert msg.lifetime == 0
    assert msg.find(HandoffIndicatorOption) == HandoffIndicatorOption(4)
    assert [(o.prefix, o.prefix_len) for o in msg.find_all(HomeNetworkPrefix)] == list(view.hnps)
    assert msg.find(Ipv4HoaRequest).address == view.ipv4_hoa
    assert result.pbas[0].status == 0
    assert result.mag_events == [Deregistered(MN_LMA)]
    assert mag.entry(MN_LMA) is None and mag.get_timer() is None
    assert lma.binding(MN_LMA).state == "deregistered"


def test_detach_deregisters_after_timeout_without_pba():
    """RFC 5213 §6.9.1.4: "or after INITIAL_BINDACK_TIMEOUT timeout waiting for the
    reply", the MAG removes the entry anyway."""
    mag, _ = registered_mag()
    mag.detach(MN_LMA, T0 + 10)
    assert one_pbu(mag).lifetime == 0
    assert mag.get_timer() == T0 + 11
    mag.handle_timer(T0 + 10.5)
    assert events(mag) == []
    mag.handle_timer(T0 + 11)
    assert events(mag) == [Deregistered(MN_LMA)]
    assert mag.entry(MN_LMA) is None
    assert mag.datagrams_to_send() == []


def test_detach_of_unregistered_mn_is_immediate():
    """RFC 5213 §6.9.1.4 applies to registered MNs; a DHCP-mode MN that never registered
    is simply forgotten."""
    mag = make_mag()
    mag.attach(MN_DHCP, T0)
    mag.detach(MN_DHCP, T0 + 1)
    assert mag.datagrams_to_send() == []
    assert events(mag) == [Deregistered(MN_DHCP)]


# --- sequence-number mode (RFC 6275 §9.5.1) ------------------------------------------------------


def test_mag_resyncs_sequence_after_135():
    """RFC 6275 §9.5.1: a 135 PBA carries the last accepted sequence number; the MAG
    continues above it and registers."""
    lma = make_lma(timestamps=False)
    other = make_mag(timestamps=False, sequence_start=5000)
    other.attach(MN_LMA, T0)
    pump(other, lma, T0)  # the LMA now has sequence 5001 for MN_LMA
    mag = make_mag(timestamps=False, sequence_start=10, coa=IPv6Address("2001:db8:c::1"))
    mag.attach(MN_LMA, T0 + 1, handoff=3)
    result = pump(mag, lma, T0 + 1)
    assert [p.status for p in result.pbas] == [135, 0]
    assert result.pbus[1].sequence == 5002
    assert mag.entry(MN_LMA).registered


# --- holding signalling while the LMA cannot be reached safely (e.g. no IPsec SA) -------


def test_held_lma_gets_no_pbu_and_release_sends_it():
    """An attach while the LMA is held sends nothing and arms no timer; the release sends
    the PBU at once, and it registers."""
    mag = make_mag()
    mag.hold(LMA_NAME)
    assert mag.attach(MN_LMA, T0)
    assert sent_pbus(mag) == [] and mag.get_timer() is None
    mag.release(LMA_NAME, T0 + 5)
    result = pump(mag, make_lma(), T0 + 5)
    assert len(result.pbus) == 1 and mag.entry(MN_LMA).registered


def test_held_lma_keeps_the_binding_past_its_lifetime_then_refreshes():
    """While held, a registered MN is neither refreshed, retransmitted nor expired (no
    BindingLost); on release the refresh goes out with HI 5 and is accepted."""
    mag = make_mag(refresh_fraction=0.8)
    lma = make_lma(max_lifetime_s=100)
    mag.attach(MN_LMA, T0)
    pump(mag, lma, T0)
    hoa = mag.entry(MN_LMA).ipv4_hoa
    mag.hold(LMA_NAME)
    mag.handle_timer(T0 + 80)  # the refresh comes due
    assert sent_pbus(mag) == [] and mag.get_timer() is None
    assert of(events(mag), BindingLost) == []
    assert mag.entry(MN_LMA).registered
    mag.release(LMA_NAME, T0 + 90)
    result = pump(mag, lma, T0 + 90)
    (pbu,) = result.pbus
    assert pbu.find(HandoffIndicatorOption) == HandoffIndicatorOption(5)
    assert result.mag_events == [] and mag.entry(MN_LMA).ipv4_hoa == hoa


def test_hold_during_retransmissions_parks_instead_of_giving_up():
    """A PBU lost as the hold begins is not retransmitted into the hold, and the attempt
    does not fail: it goes again on release."""
    mag = make_mag(max_transmissions=2)
    mag.attach(MN_LMA, T0)
    sent_pbus(mag)
    mag.hold(LMA_NAME)
    mag.handle_timer(T0 + 1)
    assert sent_pbus(mag) == [] and mag.entry(MN_LMA).state == "registering"
    mag.release(LMA_NAME, T0 + 50)
    assert len(sent_pbus(mag)) == 1
    assert mag.get_timer() == T0 + 51


def test_detach_while_held_forgets_the_mn_without_signalling():
    mag = make_mag()
    mag.attach(MN_LMA, T0)
    pump(mag, make_lma(), T0)
    mag.hold(LMA_NAME)
    mag.detach(MN_LMA, T0 + 1)
    assert sent_pbus(mag) == [] and mag.entry(MN_LMA) is None
    assert of(events(mag), Deregistered)
