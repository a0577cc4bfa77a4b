"""LMA IPv4 home address handling, per wire profile: seed §3.1 and §3.5 (draft profile,
DSMIPv6 options 29/30 from RFC 5555 §3.1.1/§3.2.1, plus 38), RFC 5844 §3.1.2 (rfc5844
profile, options 36/37/38/39)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from engine_helpers import (
    DHCP_PREFIX,
    DHCP_ROUTER,
    MN_DHCP,
    MN_DHCP2,
    MN_LMA,
    MN_LMA2,
    MN_STATIC,
    MN_V4ONLY,
    MN_V6ONLY,
    POOL_NET,
    POOL_ROUTER,
    STATIC_HOA,
    STATIC_ROUTER,
    T0,
    default_profiles,
    events,
    ipv4_answer,
    make_lma,
    make_pools,
    of,
    pbu,
    pbu_v4,
    send6,
)

from pmip_agent.core.events import BindingPurged, PbuRejected
from pmip_agent.core.policy import Ipv4Mode, MnProfile
from pmip_agent.wire import (
    BindingAck,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4DefaultRouter,
    Ipv4DhcpSupportMode,
    Ipv4HoaReply,
    OptionType,
    WireProfile,
)

RFC = WireProfile.RFC5844
DRAFT = WireProfile.DRAFT
BOTH = pytest.mark.parametrize("profile", [RFC, DRAFT])


def option_types(pba: BindingAck) -> set[int]:
    return {opt.TYPE for opt in pba.options}


def assert_ipv4_success(pba: BindingAck, profile, hoa, plen, router) -> None:
    """Seed §3.5 Figure 5 / RFC 5844 §3.1.2.6: status 0, the IPv4 answer with status 0,
    the address and its prefix length, and the IPv4 Default-Router Address option."""
    assert pba.status == 0
    answer = ipv4_answer(pba)
    if profile is RFC:
        assert type(answer) is Ipv4HoaReply
        assert OptionType.IPV4_ADDRESS_ACK not in option_types(pba)
        assert OptionType.IPV4_DHCP_SUPPORT_MODE in option_types(pba)
    else:
        assert type(answer) is Ipv4AddressAck
        assert not {OptionType.IPV4_HOA_REPLY, OptionType.IPV4_DHCP_SUPPORT_MODE} & option_types(
            pba
        )
    assert (answer.status, answer.address, answer.prefix_len) == (0, hoa, plen)
    assert pba.find(Ipv4DefaultRouter) == Ipv4DefaultRouter(router)


def ipv4_status(pba: BindingAck) -> int:
    answer = ipv4_answer(pba)
    assert answer is not None, "no IPv4 answer option"
    return answer.status


# --- static ---------------------------------------------------------------------------------


@BOTH
def test_static_match_is_granted(profile):
    """Seed §3.1 (static assignment) and §3.5 / RFC 5844 §3.1.2.2: the profile's address is
    bound and returned with its prefix length and default router."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_STATIC, ipv4=STATIC_HOA, ipv4_plen=24, profile=profile), T0)
    assert_ipv4_success(pba, profile, STATIC_HOA, 24, STATIC_ROUTER)
    view = lma.binding(MN_STATIC)
    assert (view.ipv4_hoa, view.ipv4_source, view.wire_profile) == (
        STATIC_HOA,
        "static",
        profile.value,
    )


def test_static_mismatch_rfc5844_is_171_with_reply_129():
    """RFC 5844 §3.1.2.2: an address the MN is not authorized for -> 171, and the IPv4 HoA
    Reply (echoing the request's address and prefix length, §3.1.2.6) has status 129; no
    Default-Router option on a reject."""
    lma = make_lma()
    wrong = IPv4Address("10.9.0.6")
    pba = send6(lma, pbu(MN_STATIC, ipv4=wrong, ipv4_plen=24), T0)
    assert pba.status == 171
    assert pba.find(Ipv4HoaReply) == Ipv4HoaReply(129, 24, wrong)
    assert pba.find(Ipv4DefaultRouter) is None
    assert lma.binding(MN_STATIC) is None


def test_static_mismatch_draft_ipv4_only_is_rejected_with_ack_130():
    """Seed §3.5 with RFC 5555 §3.2.1: an IPv4-only draft PBU for a wrong address is
    refused (BA 129) with IPv4 Address Ack status 130 and Pref-len 0."""
    lma = make_lma()
    wrong = IPv4Address("10.9.0.6")
    pba = send6(lma, pbu_v4(MN_STATIC, wrong, profile=DRAFT), T0)
    assert pba.status == 129
    assert pba.find(Ipv4AddressAck) == Ipv4AddressAck(130, 0, wrong)
    assert lma.binding(MN_STATIC) is None


def test_static_mismatch_draft_dual_stack_keeps_ipv6_only():
    """Seed §3.4/§3.5 (DSMIPv6 style): the BA accepts the IPv6 part (status 0) while the
    IPv4 Address Ack refuses the address (130); the binding has no IPv4 HoA."""
    lma = make_lma()
    wrong = IPv4Address("10.9.0.6")
    pba = send6(lma, pbu(MN_STATIC, ipv4=wrong, profile=DRAFT), T0)
    assert pba.status == 0
    assert pba.find(Ipv4AddressAck) == Ipv4AddressAck(130, 0, wrong)
    assert pba.find(Ipv4DefaultRouter) is None
    assert len(pba.find_all(HomeNetworkPrefix)) == 1
    view = lma.binding(MN_STATIC)
    assert view.ipv4_hoa is None and len(view.hnps) == 1


# --- dynamic from the LMA pool --------------------------------------------------------------


@BOTH
def test_dynamic_request_allocates_from_pool(profile):
    """Seed §3.1 (Figure 2) / RFC 5844 §3.1.2.2: 0.0.0.0 makes the LMA allocate from its
    pool; the answer carries the pool's prefix length and router."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_LMA, ipv4="0.0.0.0", profile=profile), T0)
    hoa = ipv4_answer(pba).address
    assert hoa in POOL_NET and hoa != POOL_ROUTER
    assert_ipv4_success(pba, profile, hoa, 24, POOL_ROUTER)
    view = lma.binding(MN_LMA)
    assert (view.ipv4_hoa, view.ipv4_source, view.ipv4_pool) == (hoa, "lma", "pool0")
    assert lma.pools.get(None).is_allocated(hoa)


def test_two_dynamic_mns_get_different_addresses():
    """RFC 5844 §3.1.2.2: each allocation is a distinct address."""
    lma = make_lma()
    a = ipv4_answer(send6(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0)).address
    b = ipv4_answer(send6(lma, pbu(MN_LMA2, ipv4="0.0.0.0"), T0)).address
    assert a != b and {a, b} <= set(POOL_NET.hosts())


def test_exhausted_pool_rfc5844_is_130_with_reply_128():
    """RFC 5844 §3.1.2.2: no address to allocate -> 130 (insufficient resources) and an
    IPv4 HoA Reply with status 128; the HNP taken for the request is given back."""
    lma = make_lma(pools=make_pools("10.1.0.0/30"))  # one usable address after the router
    assert send6(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0).status == 0
    pba = send6(lma, pbu(MN_LMA2, ipv4="0.0.0.0"), T0)
    assert pba.status == 130
    assert pba.find(Ipv4HoaReply) == Ipv4HoaReply(128, 0, IPv4Address(0))
    assert lma.binding(MN_LMA2) is None
    assert lma.hnp_pool.used == 1


def test_exhausted_pool_draft_ack_132():
    """Seed §3.5 with RFC 5555 §4.5 ("MUST return error code 132"): IPv4-only -> the PBU
    is refused with ack 132; dual stack -> accepted for IPv6 with ack 132."""
    lma = make_lma(pools=make_pools("10.1.0.0/30"))
    assert send6(lma, pbu(MN_LMA, ipv4="0.0.0.0", profile=DRAFT), T0).status == 0
    only4 = send6(lma, pbu_v4(MN_V4ONLY, profile=DRAFT), T0)
    assert only4.status == 130 and ipv4_status(only4) == 132
    dual = send6(lma, pbu(MN_LMA2, ipv4="0.0.0.0", profile=DRAFT), T0)
    assert dual.status == 0 and ipv4_status(dual) == 132
    assert lma.binding(MN_LMA2).ipv4_hoa is None


# --- no IPv4 service ------------------------------------------------------------------------


@pytest.mark.parametrize("ipv4_only", [False, True])
def test_no_ipv4_service_rfc5844_is_170(ipv4_only):
    """RFC 5844 §3.1.2.1: an IPv4 request for an MN not authorized for IPv4 -> 170, whether
    or not the PBU also has an HNP; nothing is bound."""
    lma = make_lma()
    msg = pbu_v4(MN_V6ONLY) if ipv4_only else pbu(MN_V6ONLY, ipv4="0.0.0.0")
    pba = send6(lma, msg, T0)
    assert pba.status == 170
    assert ipv4_status(pba) >= 128
    assert lma.binding(MN_V6ONLY) is None
    assert of(events(lma), PbuRejected)[0].status == 170


def test_no_ipv4_service_draft():
    """Seed §3.5 (RFC 5555 status 129, administratively prohibited): dual stack -> BA 0
    with ack 129 and no IPv4 in the binding; IPv4 only -> BA 129 with ack 129."""
    lma = make_lma()
    dual = send6(lma, pbu(MN_V6ONLY, ipv4="0.0.0.0", profile=DRAFT), T0)
    assert dual.status == 0 and ipv4_status(dual) == 129
    assert lma.binding(MN_V6ONLY).ipv4_hoa is None
    lma2 = make_lma()
    only4 = send6(lma2, pbu_v4(MN_V6ONLY, profile=DRAFT), T0)
    assert only4.status == 129 and ipv4_status(only4) == 129
    assert lma2.binding(MN_V6ONLY) is None


# --- dhcp-server mode -----------------------------------------------------------------------


@BOTH
def test_dhcp_reported_address_inside_prefix_is_anchored(profile):
    """Seed §3.1 (Figure 3): the MAG reports what the DHCP server assigned; an address in
    the MN's prefix and outside the LMA's pools is anchored as is."""
    lma = make_lma()
    hoa = IPv4Address("10.20.3.4")
    pba = send6(lma, pbu(MN_DHCP, ipv4=hoa, ipv4_plen=16, profile=profile), T0)
    assert_ipv4_success(pba, profile, hoa, DHCP_PREFIX.prefixlen, DHCP_ROUTER)
    view = lma.binding(MN_DHCP)
    assert (view.ipv4_hoa, view.ipv4_source) == (hoa, "dhcp-server")


def test_dhcp_reported_address_outside_prefix_is_refused():
    """Seed §3.1 / RFC 5844 §3.1.2.2: an address outside the MN's DHCP prefix is not
    authorized: rfc5844 -> 171 with reply 129; draft -> ack 130."""
    lma = make_lma()
    outside = IPv4Address("10.30.0.1")
    rfc = send6(lma, pbu(MN_DHCP, ipv4=outside, ipv4_plen=16), T0)
    assert rfc.status == 171 and ipv4_status(rfc) == 129
    draft = send6(lma, pbu(MN_DHCP, ipv4=outside, profile=DRAFT), T0)
    assert draft.status == 0 and ipv4_status(draft) == 130
    assert lma.binding(MN_DHCP).ipv4_hoa is None
    draft4 = send6(make_lma(), pbu_v4(MN_DHCP, outside, profile=DRAFT), T0)
    assert draft4.status == 129 and ipv4_status(draft4) == 130


def test_dhcp_reported_address_inside_lma_pool_is_refused():
    """RFC 5844 §3.1.2.2 ("topologically anchored ... and authorized"): an address that
    belongs to an LMA pool cannot be claimed through the DHCP-server mode."""
    profiles = default_profiles()
    profiles[MN_DHCP] = MnProfile(
        MN_DHCP, Ipv4Mode.DHCP_SERVER, dhcp_prefix=IPv4Network("10.0.0.0/8")
    )
    lma = make_lma(profiles)
    in_pool = IPv4Address("10.1.0.77")
    pba = send6(lma, pbu(MN_DHCP, ipv4=in_pool, ipv4_plen=8), T0)
    assert pba.status == 171 and ipv4_status(pba) == 129
    # the same prefix outside the pool is fine
    assert send6(lma, pbu(MN_DHCP, ipv4="10.2.0.7", ipv4_plen=8), T0).status == 0


def test_dhcp_mode_cannot_ask_for_dynamic_assignment():
    """Seed §3.1: in DHCP-server mode the LMA "does not allocate any address", so 0.0.0.0 is
    refused (171 with reply 132, dynamic assignment not available)."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_DHCP, ipv4="0.0.0.0"), T0)
    assert pba.status == 171 and ipv4_status(pba) == 132
    assert lma.pools.get(None).used == 0


# --- IPv4 only: no HNP required (seed §3, RFC 5844 §3.1.2.1) ----------------------------------


@BOTH
@pytest.mark.parametrize("mn", [MN_LMA, MN_V4ONLY])
def test_ipv4_only_pbu_needs_no_hnp(profile, mn):
    """Seed §3 ("does not mandate IPv6 home address") and RFC 5844 §3.1.2.1: an IPv4 HoA
    request without any HNP option is accepted; no HNP is assigned or returned
    (§3.1.2.6), one binding serves the IPv4 address (seed §3.2)."""
    lma = make_lma()
    pba = send6(lma, pbu_v4(mn, profile=profile), T0)
    assert pba.status == 0
    assert pba.find(HomeNetworkPrefix) is None
    assert ipv4_status(pba) == 0
    view = lma.binding(mn)
    assert view.hnps == () and view.ipv4_hoa in POOL_NET
    assert lma.hnp_pool.used == 0


# --- no HoA is ever bound to two MNs ---------------------------------------------------------


def test_static_address_is_not_given_to_a_second_static_mn():
    """RFC 5844 §3.1.2.2 (the MN must be authorized for that address): two profiles naming
    the same static address cannot both bind it."""
    profiles = default_profiles()
    twin = b"mn-static-twin@example.net"
    profiles[twin] = MnProfile(twin, Ipv4Mode.STATIC, ipv4_hoa=STATIC_HOA, ipv4_prefix_len=24)
    lma = make_lma(profiles)
    assert send6(lma, pbu(MN_STATIC, ipv4=STATIC_HOA, ipv4_plen=24), T0).status == 0
    pba = send6(lma, pbu(twin, ipv4=STATIC_HOA, ipv4_plen=24), T0)
    assert pba.status == 171
    assert lma.binding(twin) is None


def test_dhcp_address_is_not_given_to_a_second_mn():
    """RFC 5844 §3.1.2.2: a DHCP-assigned address already bound to one MN is refused for
    another MN of the same prefix."""
    lma = make_lma()
    hoa = IPv4Address("10.20.0.9")
    assert send6(lma, pbu(MN_DHCP, ipv4=hoa, ipv4_plen=16), T0).status == 0
    pba = send6(lma, pbu(MN_DHCP2, ipv4=hoa, ipv4_plen=16), T0)
    assert pba.status == 171
    assert lma.binding(MN_DHCP2) is None


def test_pool_address_is_not_given_to_a_second_mn():
    """RFC 5844 §3.1.2.2: an LMA-mode MN cannot name another MN's pool address; asking for
    0.0.0.0 gets a different one."""
    lma = make_lma()
    taken = ipv4_answer(send6(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0)).address
    pba = send6(lma, pbu(MN_LMA2, ipv4=taken, ipv4_plen=24), T0)
    assert pba.status == 171
    assert lma.binding(MN_LMA2) is None
    other = ipv4_answer(send6(lma, pbu(MN_LMA2, ipv4="0.0.0.0"), T0 + 1)).address
    assert other != taken


def test_static_address_inside_pool_is_never_allocated_to_a_dynamic_mn():
    """RFC 5844 §3.1.2.2 / seed §3: a static HoA that lies inside an LMA pool must not be
    handed out by the pool while its owner holds it."""
    profiles = default_profiles()
    first_pool_address = IPv4Address("10.1.0.2")
    profiles[MN_STATIC] = MnProfile(
        MN_STATIC, Ipv4Mode.STATIC, ipv4_hoa=first_pool_address, ipv4_prefix_len=24
    )
    lma = make_lma(profiles)
    assert send6(lma, pbu(MN_STATIC, ipv4=first_pool_address, ipv4_plen=24), T0).status == 0
    got = ipv4_answer(send6(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0)).address
    assert got != first_pool_address
    hoas = [v.ipv4_hoa for v in lma.bindings()]
    assert len(hoas) == len(set(hoas)) == 2


def test_pool_address_held_dynamically_is_refused_to_static_owner():
    """RFC 5844 §3.1.2.2: the reverse order: once the pool gave an address to a dynamic
    MN, a static profile naming it is refused (171), not silently double-bound."""
    profiles = default_profiles()
    first_pool_address = IPv4Address("10.1.0.2")
    profiles[MN_STATIC] = MnProfile(
        MN_STATIC, Ipv4Mode.STATIC, ipv4_hoa=first_pool_address, ipv4_prefix_len=24
    )
    lma = make_lma(profiles)
    got = ipv4_answer(send6(lma, pbu(MN_LMA, ipv4="0.0.0.0"), T0)).address
    assert got == first_pool_address
    assert send6(lma, pbu(MN_STATIC, ipv4=first_pool_address, ipv4_plen=24), T0).status == 171


def test_dhcp_address_reusable_after_purge():
    """RFC 5213 §5.3.5 (entry deleted after MinDelayBeforeBCEDelete): once the holder's entry
    is purged, the address can be bound to another MN."""
    lma = make_lma(min_delay_before_bce_delete_s=1.0)
    hoa = IPv4Address("10.20.0.9")
    assert send6(lma, pbu(MN_DHCP, ipv4=hoa, ipv4_plen=16), T0).status == 0
    dereg = pbu(MN_DHCP, ipv4=hoa, ipv4_plen=16, lifetime_s=0, seq=2, ts=T0 + 1, hi=4)
    assert send6(lma, dereg, T0 + 1).status == 0
    assert send6(lma, pbu(MN_DHCP2, ipv4=hoa, ipv4_plen=16, ts=T0 + 1.5), T0 + 1.5).status == 171
    events(lma)
    lma.handle_timer(T0 + 2)
    assert of(events(lma), BindingPurged) == [BindingPurged(MN_DHCP, hoa)]
    assert send6(lma, pbu(MN_DHCP2, ipv4=hoa, ipv4_plen=16, ts=T0 + 3), T0 + 3).status == 0


# --- DHCP Support Mode (RFC 5844 §3.3.4) ------------------------------------------------------


@pytest.mark.parametrize(
    ("mn", "ipv4", "server"),
    [
        (MN_LMA, "0.0.0.0", True),
        (MN_STATIC, str(STATIC_HOA), True),
        (MN_DHCP, "10.20.0.33", False),
    ],
)
def test_dhcp_support_mode_flag(mn, ipv4, server):
    """RFC 5844 §3.3.4: S=1 tells the MAG to be the DHCP server (the LMA or the profile
    gave the address); S=0 makes it a DHCP relay (an external DHCP server assigns)."""
    lma = make_lma()
    pba = send6(lma, pbu(mn, ipv4=ipv4, ipv4_plen=24), T0)
    assert pba.status == 0
    assert pba.find(Ipv4DhcpSupportMode) == Ipv4DhcpSupportMode(server)


def test_no_dhcp_support_mode_on_reject():
    """RFC 5844 §3.1.2.6: a rejected PBA carries neither the Default-Router nor the DHCP
    Support Mode option."""
    lma = make_lma()
    pba = send6(lma, pbu(MN_STATIC, ipv4="10.9.9.9", ipv4_plen=24), T0)
    assert pba.status == 171
    assert pba.find(Ipv4DhcpSupportMode) is None
    assert pba.find(Ipv4DefaultRouter) is None
