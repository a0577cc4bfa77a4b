"""Hypothesis strategies for every mobility option class and both messages.

Every strategy draws only values the encoder accepts (field ranges of the RFC layouts), so
``encode`` never raises on them. ``OPTION_STRATEGIES`` maps each class of
``pmip_agent.wire.options.OPTION_CLASSES`` (plus ``UnknownOption``) to its strategy; a test
checks the map stays complete when an option class is added.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from pmip_agent.wire import (
    AccessTechTypeOption,
    BaFlags,
    BindingAck,
    BindingUpdate,
    BuFlags,
    GreKey,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4CareOfAddress,
    Ipv4DefaultRouter,
    Ipv4DhcpSupportMode,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    LinkLocalAddress,
    MnIdentifier,
    MnLinkLayerId,
    NatDetection,
    Option,
    Timestamp,
    UnknownOption,
)
from pmip_agent.wire.messages import MAX_MH_LEN, OPTIONS_OFFSET
from pmip_agent.wire.options import OPTION_CLASSES

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
ipv4_prefix_lens = st.integers(0, 32)

ipv4_addresses = st.builds(IPv4Address, u32)
ipv6_addresses = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
link_local_addresses = st.builds(
    lambda iid: IPv6Address((0xFE80 << 112) | iid), st.integers(0, 2**64 - 1)
)

mn_identifiers = st.builds(MnIdentifier, identifier=st.binary(min_size=1, max_size=254), subtype=u8)
nai_identifiers = st.builds(
    MnIdentifier,
    identifier=st.from_regex(r"[a-z0-9]{1,16}@[a-z0-9]{1,12}\.(net|org)", fullmatch=True).map(
        str.encode
    ),
)
home_network_prefixes = st.builds(
    HomeNetworkPrefix, prefix=ipv6_addresses, prefix_len=st.integers(0, 128)
)
handoff_indicators = st.builds(HandoffIndicatorOption, u8)
access_tech_types = st.builds(AccessTechTypeOption, u8)
mn_link_layer_ids = st.builds(MnLinkLayerId, st.binary(min_size=1, max_size=253))
link_local_address_options = st.builds(LinkLocalAddress, link_local_addresses | ipv6_addresses)
timestamps = st.builds(Timestamp, st.integers(0, 2**64 - 1))
ipv4_home_addresses = st.builds(
    Ipv4HomeAddress, address=ipv4_addresses, prefix_len=ipv4_prefix_lens, p_flag=st.booleans()
)
ipv4_address_acks = st.builds(
    Ipv4AddressAck, status=u8, prefix_len=ipv4_prefix_lens, address=ipv4_addresses
)
nat_detections = st.builds(NatDetection, refresh_time=u32, forced=st.booleans())
ipv4_care_of_addresses = st.builds(Ipv4CareOfAddress, ipv4_addresses)
gre_keys = st.builds(GreKey, st.none() | u32)
ipv4_hoa_requests = st.builds(Ipv4HoaRequest, address=ipv4_addresses, prefix_len=ipv4_prefix_lens)
ipv4_hoa_replies = st.builds(
    Ipv4HoaReply, status=u8, prefix_len=ipv4_prefix_lens, address=ipv4_addresses
)
ipv4_default_routers = st.builds(Ipv4DefaultRouter, ipv4_addresses)
ipv4_dhcp_support_modes = st.builds(Ipv4DhcpSupportMode, st.booleans())

# Types that are neither Pad1/PadN nor a class we decode: kept as UnknownOption.
UNKNOWN_OPTION_TYPES = [t for t in range(2, 256) if t not in OPTION_CLASSES]
unknown_options = st.builds(
    UnknownOption, type=st.sampled_from(UNKNOWN_OPTION_TYPES), data=st.binary(max_size=255)
)

OPTION_STRATEGIES: dict[type[Option], st.SearchStrategy[Option]] = {
    MnIdentifier: mn_identifiers,
    HomeNetworkPrefix: home_network_prefixes,
    HandoffIndicatorOption: handoff_indicators,
    AccessTechTypeOption: access_tech_types,
    MnLinkLayerId: mn_link_layer_ids,
    LinkLocalAddress: link_local_address_options,
    Timestamp: timestamps,
    Ipv4HomeAddress: ipv4_home_addresses,
    Ipv4AddressAck: ipv4_address_acks,
    NatDetection: nat_detections,
    Ipv4CareOfAddress: ipv4_care_of_addresses,
    GreKey: gre_keys,
    Ipv4HoaRequest: ipv4_hoa_requests,
    Ipv4HoaReply: ipv4_hoa_replies,
    Ipv4DefaultRouter: ipv4_default_routers,
    Ipv4DhcpSupportMode: ipv4_dhcp_support_modes,
    UnknownOption: unknown_options,
}

any_option: st.SearchStrategy[Option] = st.one_of(*OPTION_STRATEGIES.values())


def _option_type(opt: Option) -> int:
    return opt.type if isinstance(opt, UnknownOption) else opt.TYPE


def _worst_case_len(options: list[Option]) -> int:
    # Type + Len + body + at most 7 octets of padding before each option, + final padding.
    return OPTIONS_OFFSET + sum(2 + len(o.body()) + 7 for o in options) + 7


def _valid_option_list(options: list[Option]) -> tuple[Option, ...]:
    """Drop repeats of singleton options (RFC 6275 §6.2: decoders reject them)."""
    seen: set[int] = set()
    kept = []
    for opt in options:
        t = _option_type(opt)
        if not type(opt).REPEATABLE:
            if t in seen:
                continue
            seen.add(t)
        kept.append(opt)
    return tuple(kept)


def option_lists(
    option: st.SearchStrategy[Option] = any_option, max_size: int = 10
) -> st.SearchStrategy[tuple[Option, ...]]:
    """Option tuples that a decoder accepts: no repeated singleton, MH within 2048 octets."""
    return (
        st.lists(option, max_size=max_size)
        .map(_valid_option_list)
        .filter(lambda opts: _worst_case_len(list(opts)) <= MAX_MH_LEN)
    )


bu_flags = st.builds(BuFlags, u16)
ba_flags = st.builds(BaFlags, u8)


def binding_updates(
    options: st.SearchStrategy[tuple[Option, ...]] | None = None,
) -> st.SearchStrategy[BindingUpdate]:
    return st.builds(
        BindingUpdate,
        sequence=u16,
        lifetime=u16,
        flags=bu_flags,
        options=option_lists() if options is None else options,
    )


def binding_acks(
    options: st.SearchStrategy[tuple[Option, ...]] | None = None,
) -> st.SearchStrategy[BindingAck]:
    return st.builds(
        BindingAck,
        status=u8,
        sequence=u16,
        lifetime=u16,
        flags=ba_flags,
        options=option_lists() if options is None else options,
    )


def messages() -> st.SearchStrategy[BindingUpdate | BindingAck]:
    return binding_updates() | binding_acks()
