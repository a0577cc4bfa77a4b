"""LMA PBU processing rules and status codes: RFC 5213 §5.3.1 (step order), §5.3.6 (PBA
contents), §5.5 (timestamps and sequence numbers), RFC 6275 §9.5.1, RFC 5844 §3.1.2.1."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from engine_helpers import (
    MAG1,
    MAG2,
    MN_LMA,
    MN_LMA2,
    MN_UNKNOWN,
    MN_V4ONLY,
    MN_V6ONLY,
    T0,
    ZERO6,
    events,
    make_lma,
    of,
    only_pba,
    pbu,
    pbu_v4,
    register,
    send6,
)

from pmip_agent.core.events import BindingUp, MessageDropped, PbuRejected
from pmip_agent.wire import (
    AccessTechTypeOption,
    BaFlags,
    BuFlags,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    MnIdentifier,
    MnLinkLayerId,
    Timestamp,
    UnknownOption,
    WireProfile,
    encode,
)


def assert_rejected(lma, pba, status: int) -> None:
    """A reject carries the status, lifetime 0, and creates no binding (RFC 5213 §5.3.6)."""
    assert pba.status == status
    assert pba.lifetime == 0
    assert list(lma.bindings()) == []
    rejected = of(events(lma), PbuRejected)
    assert [r.status for r in rejected] == [status]


# --- §5.3.1 steps 4-7: identity and authorization ----------------------------------------


def test_missing_mn_identifier_is_160():
    """RFC 5213 §5.3.1 step 4: no MN-ID option -> MISSING_MN_IDENTIFIER_OPTION (160)."""
    lma = make_lma()
    pba = send6(lma, pbu(None, seq=7), T0)
    assert pba.sequence == 7
    assert pba.find(HandoffIndicatorOption) == HandoffIndicatorOption(1)
    assert_rejected(lma, pba, 160)


def test_mag_not_in_allowed_mags_is_154():
    """RFC 5213 §5.3.1 steps 5/6: a MAG not authorized to register -> 154."""
    lma = make_lma(allowed_mags=frozenset({MAG2}))
    pba = send6(lma, pbu(MN_LMA), T0, src=MAG1)
    assert_rejected(lma, pba, 154)
    assert send6(lma, pbu(MN_LMA, ts=T0 + 1), T0 + 1, src=MAG2).status == 0


def test_mag_check_comes_before_mn_lookup():
    """RFC 5213 §5.3.1: step 5/6 (154) precedes step 7 (153)."""
    lma = make_lma(allowed_mags=frozenset({MAG2}))
    assert send6(lma, pbu(MN_UNKNOWN), T0, src=MAG1).status == 154


def test_unknown_mn_is_153():
    """RFC 5213 §5.3.1 step 7: no policy profile for the MN -> NOT_LMA_FOR_THIS_MOBILE_NODE."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_UNKNOWN), T0)
    assert pba.find(MnIdentifier) == MnIdentifier(MN_UNKNOWN)
    assert_rejected(lma, pba, 153)


def test_policy_checks_come_before_the_timestamp_check():
    """RFC 5213 §5.3.1: step 7 (153) precedes step 9 (timestamps), so an unknown MN with a
    stale timestamp gets 153, not 156."""
    lma = make_lma()
    assert send6(lma, pbu(MN_UNKNOWN, ts=T0 - 100), T0).status == 153


# --- §5.3.1 steps 10-12: mandatory options -----------------------------------------------


def test_no_hnp_and_no_ipv4_request_is_158():
    """RFC 5213 §5.3.1 step 10 with RFC 5844 §3.1.2.1: neither an HNP nor an IPv4 HoA
    Request -> 158; the reject carries one ALL_ZERO HNP (RFC 5213 §5.3.6)."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_LMA, hnps=()), T0)
    assert pba.find_all(HomeNetworkPrefix) == [HomeNetworkPrefix(ZERO6, 0)]
    assert_rejected(lma, pba, 158)


def test_missing_handoff_indicator_is_161():
    """RFC 5213 §5.3.1 step 11: no Handoff Indicator option -> 161; the PBA says HI 0."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_LMA, hi=None), T0)
    assert pba.find(HandoffIndicatorOption) == HandoffIndicatorOption(0)
    assert_rejected(lma, pba, 161)


def test_missing_access_technology_type_is_162():
    """RFC 5213 §5.3.1 step 12: no Access Technology Type option -> 162; PBA ATT is 0."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_LMA, att=None), T0)
    assert pba.find(AccessTechTypeOption) == AccessTechTypeOption(0)
    assert_rejected(lma, pba, 162)


def test_reject_echoes_the_request_hnps():
    """RFC 5213 §5.3.6: on a reject, every HNP option of the request is in the reply."""
    lma = make_lma()
    hnps = ((IPv6Address("2001:db8:100:1::"), 64), (IPv6Address("2001:db8:100:2::"), 64))
    pba = send6(lma, pbu(MN_LMA, hnps=hnps, hi=None), T0)
    assert pba.status == 161
    assert pba.find_all(HomeNetworkPrefix) == [HomeNetworkPrefix(p, n) for p, n in hnps]


# --- §5.5: timestamps --------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-0.5, -0.31, 0.31, 5.0])
def test_timestamp_outside_window_is_156_with_lma_time(offset):
    """RFC 5213 §5.5 step 9: a timestamp more than TimestampValidityWindow (300 ms) away
    from the LMA clock -> 156, and the PBA Timestamp is the LMA's current time."""
    lma = make_lma()
    now = T0 + 10
    pba = send6(lma, pbu(MN_LMA, ts=now + offset), now)
    assert pba.find(Timestamp) == Timestamp.from_seconds(now)
    assert_rejected(lma, pba, 156)


@pytest.mark.parametrize("offset", [-0.29, 0.0, 0.29])
def test_timestamp_inside_window_is_accepted_and_echoed(offset):
    """RFC 5213 §5.5 step 7: a valid timestamp is accepted and returned unchanged."""
    lma = make_lma()
    msg = pbu(MN_LMA, ts=T0 + offset)
    pba = send6(lma, msg, T0)
    assert pba.status == 0
    assert pba.find(Timestamp) == msg.find(Timestamp)


def test_timestamp_equal_to_last_accepted_is_156():
    """RFC 5213 §5.5 steps 6 and 9: a timestamp must be greater than every accepted one;
    an equal one is not "lower" (157) so it is a mismatch (156)."""
    lma = make_lma()
    register(lma, MN_LMA, T0)
    events(lma)
    now = T0 + 0.1
    pba = send6(lma, pbu(MN_LMA, ts=T0, seq=2), now)
    assert pba.status == 156
    assert pba.find(Timestamp) == Timestamp.from_seconds(now)
    assert of(events(lma), PbuRejected)[0].status == 156
    assert lma.binding(MN_LMA).last_timestamp == Timestamp.from_seconds(T0).value


def test_timestamp_lower_than_last_accepted_is_157_with_lma_time():
    """RFC 5213 §5.5 step 8: lower than a previously accepted timestamp -> 157, with the
    PBA Timestamp set to the LMA's time of day."""
    lma = make_lma()
    register(lma, MN_LMA, T0 + 0.2)
    events(lma)
    now = T0 + 0.25
    pba = send6(lma, pbu(MN_LMA, ts=T0 + 0.1, seq=2), now)
    assert pba.status == 157
    assert pba.find(Timestamp) == Timestamp.from_seconds(now)
    assert lma.binding(MN_LMA).state == "active"


def test_sequence_number_ignored_when_timestamp_present():
    """RFC 5213 §5.5 step 5: with a Timestamp, the LMA ignores the sequence number but
    copies it into the PBA."""
    lma = make_lma()
    register(lma, MN_LMA, T0, seq=500)
    pba = send6(lma, pbu(MN_LMA, ts=T0 + 1, seq=3), T0 + 1)
    assert (pba.status, pba.sequence) == (0, 3)


# --- §5.5 / RFC 6275 §9.5.1: sequence numbers ---------------------------------------------


@pytest.mark.parametrize("lma_timestamps", [True, False])
def test_sequence_mode_stale_sequence_is_135_with_last_accepted(lma_timestamps):
    """RFC 5213 §5.5 (no Timestamp option: fall back to sequence numbers) and RFC 6275
    §9.5.1: a sequence not greater than the last accepted -> 135, and the PBA carries the
    last accepted sequence number and no Timestamp option."""
    lma = make_lma(timestamps=lma_timestamps)
    first = send6(lma, pbu(MN_LMA, ts=None, seq=10), T0)
    assert first.status == 0 and first.find(Timestamp) is None
    for stale in (10, 9, 0):
        pba = send6(lma, pbu(MN_LMA, ts=None, seq=stale), T0 + 1)
        assert (pba.status, pba.sequence) == (135, 10)
        assert pba.find(Timestamp) is None
    newer = send6(lma, pbu(MN_LMA, ts=None, seq=11), T0 + 2)
    assert (newer.status, newer.sequence) == (0, 11)


def test_sequence_mode_compares_modulo_2_16():
    """RFC 6275 §9.5.1: sequence numbers compare modulo 2**16, so 2 follows 65534."""
    lma = make_lma(timestamps=False)
    assert send6(lma, pbu(MN_LMA, ts=None, seq=65534), T0).status == 0
    assert send6(lma, pbu(MN_LMA, ts=None, seq=2), T0 + 1).status == 0
    pba = send6(lma, pbu(MN_LMA, ts=None, seq=65535), T0 + 2)
    assert (pba.status, pba.sequence) == (135, 2)


def test_sequence_mode_accepts_any_number_without_binding():
    """RFC 6275 §9.5.1: with no Binding Cache entry, any sequence number is accepted."""
    lma = make_lma(timestamps=False)
    assert send6(lma, pbu(MN_LMA, ts=None, seq=40000), T0).status == 0
    assert send6(lma, pbu(MN_LMA2, ts=None, seq=0), T0).status == 0


# --- prefixes and per-family authorization ------------------------------------------------


def test_prefix_set_mismatch_is_159():
    """RFC 5213 §5.4.1.1: a PBU whose HNPs differ from the entry's prefix set -> 159."""
    lma = make_lma()
    first = register(lma, MN_LMA, T0)
    (assigned,) = first.find_all(HomeNetworkPrefix)
    other = IPv6Address(int(assigned.prefix) + (1 << 64))
    pba = send6(lma, pbu(MN_LMA, ts=T0 + 1, hnps=((other, 64),)), T0 + 1)
    assert pba.status == 159
    assert lma.binding(MN_LMA).hnps == ((assigned.prefix, 64),)


def test_prefix_not_owned_by_lma_is_155():
    """RFC 5213 §5.3.2: a NON_ZERO HNP the LMA does not own -> 155."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_LMA, hnps=((IPv6Address("2001:db8:999::"), 64),)), T0)
    assert_rejected(lma, pba, 155)


def test_hnp_for_ipv4_only_profile_is_172_rfc5844():
    """RFC 5844 §3.1.2.1: an HNP option for an MN not authorized for IPv6 mobility -> 172
    (NOT_AUTHORIZED_FOR_IPV6_MOBILITY_SERVICE), with or without an IPv4 request."""
    for kwargs in ({}, {"ipv4": "0.0.0.0"}):
        lma = make_lma()
        pba = send6(lma, pbu(MN_V4ONLY, **kwargs), T0)
        assert_rejected(lma, pba, 172)


def test_hnp_for_ipv4_only_profile_draft_is_refused():
    """Seed §3 / RFC 5213 §5.3.1: the draft has no code 172; the PBU is still refused
    (129, administratively prohibited) and no binding is made."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_V4ONLY, ipv4="0.0.0.0", profile=WireProfile.DRAFT), T0)
    assert_rejected(lma, pba, 129)


def test_two_ipv4_hoa_requests_is_173():
    """RFC 5844 §3.1.2.1: more than one IPv4 HoA Request option -> 173, and the PBA has an
    IPv4 HoA Reply echoing the request with a failure status (§3.1.2.6)."""
    lma = make_lma()
    msg = pbu(
        MN_LMA,
        ipv4="0.0.0.0",
        extra=(Ipv4HoaRequest(IPv4Address("10.1.0.9"), 32),),
    )
    pba = send6(lma, msg, T0)
    reply = pba.find(Ipv4HoaReply)
    assert reply is not None and reply.status >= 128
    assert reply.address == IPv4Address(0)
    assert_rejected(lma, pba, 173)
    assert lma.pools.get(None).used == 0
    assert lma.hnp_pool.used == 0


# --- PBA contents (§5.3.6) and other message-level rules ----------------------------------


def test_pba_echoes_mnid_hi_att_timestamp_llid_and_sets_p():
    """RFC 5213 §5.3.6: the PBA repeats the MN-ID, HI, ATT, MN-LL-ID and Timestamp of the
    PBU, copies its sequence number and sets the P flag."""
    lma = make_lma()
    msg = pbu(MN_LMA, seq=4242, hi=4, att=4, extra=(MnLinkLayerId(b"\x02\x00\x00\x00\x00\x01"),))
    pba = send6(lma, msg, T0)
    assert pba.status == 0
    assert pba.sequence == 4242
    assert pba.flags & BaFlags.P
    assert pba.find(MnIdentifier) == MnIdentifier(MN_LMA)
    assert pba.find(HandoffIndicatorOption) == HandoffIndicatorOption(4)
    assert pba.find(AccessTechTypeOption) == AccessTechTypeOption(4)
    assert pba.find(Timestamp) == msg.find(Timestamp)
    assert pba.find(MnLinkLayerId) == MnLinkLayerId(b"\x02\x00\x00\x00\x00\x01")
    assert lma.binding(MN_LMA).link_layer_id == b"\x02\x00\x00\x00\x00\x01"


def test_accepted_pba_carries_assigned_hnp_and_lifetime():
    """RFC 5213 §5.3.2/§5.3.6: an ALL_ZERO HNP gets a prefix from the LMA; the PBA lifetime
    is the granted one, capped by the LMA's maximum."""
    lma = make_lma(max_lifetime_s=1000)
    pba = send6(lma, pbu(MN_LMA, lifetime_s=4000), T0)
    (hnp,) = pba.find_all(HomeNetworkPrefix)
    assert hnp.prefix_len == 64 and hnp.prefix != ZERO6
    assert pba.lifetime == 1000 // 4
    view = lma.binding(MN_LMA)
    assert view.hnps == ((hnp.prefix, 64),)
    assert view.lifetime_s == 1000 and view.expires_at == T0 + 1000


def test_unknown_options_are_skipped():
    """RFC 5213 §8.1/§8.2: the LMA ignores and skips options it does not understand."""
    lma = make_lma()
    msg = pbu(MN_LMA, extra=(UnknownOption(200, b"\x01\x02\x03"),))
    assert send6(lma, msg, T0).status == 0


def test_no_ack_requested_means_no_pba():
    """RFC 6275 §9.5.1: without the A flag no acknowledgement is sent; the binding exists."""
    lma = make_lma()
    lma.receive_ipv6(encode(pbu(MN_LMA, flags=BuFlags.P)), MAG1, T0)
    assert only_pba(lma) is None
    assert lma.binding(MN_LMA).state == "active"
    assert [e.change for e in of(events(lma), BindingUp)] == ["created"]


def test_binding_update_without_p_flag_is_dropped():
    """RFC 5213 §5.3.1 (a PBU has the P flag): a plain Binding Update gets no PBA."""
    lma = make_lma()
    lma.receive_ipv6(encode(pbu(MN_LMA, flags=BuFlags.A)), MAG1, T0)
    assert only_pba(lma) is None
    assert [e.reason for e in of(events(lma), MessageDropped)] == ["not-proxy-registration"]
    assert list(lma.bindings()) == []


def test_no_ipv4_service_with_ipv6_only_pbu_is_accepted():
    """RFC 5213 §5.3.2: an IPv6-only PBU for an MN without IPv4 service is accepted and the
    PBA carries no IPv4 options (RFC 5844 §3.1.2.6 applies only to IPv4 requests)."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_V6ONLY), T0)
    assert pba.status == 0
    assert pba.find(Ipv4HoaReply) is None
    assert lma.binding(MN_V6ONLY).ipv4_hoa is None


def test_reject_of_ipv4_only_pbu_has_no_hnp_option():
    """RFC 5844 §3.1.2.6: a reply to a PBU with only an IPv4 HoA Request carries no HNP
    option, even on a reject (this overrides the ALL_ZERO HNP rule of RFC 5213)."""
    lma = make_lma()
    pba = send6(lma, pbu_v4(MN_V6ONLY), T0)
    assert pba.status == 170
    assert pba.find(HomeNetworkPrefix) is None
    assert pba.find(Ipv4HoaReply) is not None
