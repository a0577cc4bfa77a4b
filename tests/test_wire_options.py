"""Per-option wire layout: exact bytes of hand-computed vectors, alignment padding, MH length
and the Mobility Header checksum. Every expected byte string below was worked out from the
RFC figures, not produced by the codec."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from pcap import ones_complement_checksum

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
    WireError,
    decode,
    encode,
    mh_checksum,
)
from pmip_agent.wire.options import OPTION_CLASSES

MAG6 = IPv6Address("2001:db8:1::1")
LMA6 = IPv6Address("2001:db8:2::1")
NAI = b"mn1@example.net"  # 15 octets


def walk(mh: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, type, body) of every option after the 12 fixed octets, pads included
    (Pad1 with an empty body). Written here so the tests do not trust the decoder."""
    out, off = [], 12
    while off < len(mh):
        if mh[off] == 0:
            out.append((off, 0, b""))
            off += 1
            continue
        ln = mh[off + 1]
        out.append((off, mh[off], mh[off + 2 : off + 2 + ln]))
        off += 2 + ln
    assert off == len(mh), "options must end exactly at the end of the header"
    return out


def tlv_of(opt: Option) -> tuple[int, bytes]:
    """(offset, Type+Len+body) of the single non-pad option in a PBU carrying ``opt``."""
    mh = encode(BindingUpdate(0, 0, BuFlags.NONE, (opt,)))
    found = [(off, t, body) for off, t, body in walk(mh) if t not in (0, 1)]
    assert len(found) == 1
    off, t, body = found[0]
    return off, bytes((t, len(body))) + body


def option_bytes(opt: Option) -> str:
    return tlv_of(opt)[1].hex()


def parse_back(opt: Option) -> Option:
    return OPTION_CLASSES[opt.TYPE].parse(opt.body())


# --- exact option bytes --------------------------------------------------------------------


def test_mn_identifier_nai():
    """RFC 4283 §3: Type 8, Len = 1 + identifier length, Subtype 1 (NAI), identifier."""
    opt = MnIdentifier(NAI)
    assert option_bytes(opt) == "0810" + "01" + NAI.hex()
    assert parse_back(opt) == opt


def test_mn_identifier_keeps_other_subtypes():
    """RFC 4283 §3: the Subtype octet is carried as is (only 1 = NAI is defined)."""
    opt = MnIdentifier(b"\x01\x02", subtype=200)
    assert option_bytes(opt) == "0803c80102"
    assert parse_back(opt) == opt


def test_home_network_prefix():
    """RFC 5213 §8.3: Type 22, Len 18, Reserved, Prefix Length, 16-octet prefix."""
    opt = HomeNetworkPrefix(IPv6Address("2001:db8:aa::"), 64)
    assert option_bytes(opt) == "1612" + "0040" + "20010db800aa00000000000000000000"
    assert parse_back(opt) == opt


def test_home_network_prefix_zero_asks_for_assignment():
    """RFC 5213 §8.3 / §6.9.1.1: ::/0 in a PBU is encoded as all-zero prefix and length."""
    assert option_bytes(HomeNetworkPrefix(IPv6Address("::"), 0)) == "1612" + "00" * 18


def test_handoff_indicator():
    """RFC 5213 §8.4: Type 23, Len 2, Reserved, HI (3 = handoff between MAGs)."""
    opt = HandoffIndicatorOption(3)
    assert option_bytes(opt) == "17020003"
    assert parse_back(opt) == opt


def test_handoff_indicator_ignores_reserved():
    """RFC 5213 §8.4: Reserved MUST be ignored by the receiver."""
    assert HandoffIndicatorOption.parse(b"\xff\x05") == HandoffIndicatorOption(5)


def test_access_technology_type():
    """RFC 5213 §8.5: Type 24, Len 2, Reserved, ATT (4 = IEEE 802.11a/b/g)."""
    opt = AccessTechTypeOption(4)
    assert option_bytes(opt) == "18020004"
    assert parse_back(opt) == opt


def test_mn_link_layer_identifier():
    """RFC 5213 §8.6: Type 25, Len = 2 + identifier length, 16 reserved bits, identifier."""
    opt = MnLinkLayerId(bytes.fromhex("020000000001"))
    assert option_bytes(opt) == "1908" + "0000" + "020000000001"
    assert parse_back(opt) == opt


def test_link_local_address():
    """RFC 5213 §8.7: Type 26, Len 16, the IPv6 link-local address."""
    opt = LinkLocalAddress(IPv6Address("fe80::1"))
    assert option_bytes(opt) == "1a10" + "fe800000000000000000000000000001"
    assert parse_back(opt) == opt


def test_timestamp_48_16_fixed_point():
    """RFC 5213 §8.8: Type 27, Len 8; top 48 bits seconds since 1970, low 16 bits 1/65536 s.
    1700000000 = 0x6553F100; .5 s = 0x8000."""
    opt = Timestamp.from_seconds(1_700_000_000.5)
    assert option_bytes(opt) == "1b08" + "00006553f100" + "8000"
    assert opt.value >> 16 == 1_700_000_000
    assert opt.seconds == 1_700_000_000.5
    assert parse_back(opt) == opt


def test_ipv4_home_address_bit_layout():
    """RFC 5555 §3.1.1: Type 29, Len 6; 16-bit word = Prefix-len (top 6 bits), P flag (mask
    0x0200), 9 reserved bits; then the IPv4 address. 24 << 10 | 0x0200 = 0x6200."""
    opt = Ipv4HomeAddress(IPv4Address("192.0.2.7"), 24, True)
    assert option_bytes(opt) == "1d06" + "6200" + "c0000207"
    assert parse_back(opt) == opt
    assert option_bytes(Ipv4HomeAddress(IPv4Address("192.0.2.7"), 24, False)) == "1d066000c0000207"
    # 32 << 10 = 0x8000: the prefix length really sits in the top six bits.
    assert option_bytes(Ipv4HomeAddress(IPv4Address("10.1.2.3"), 32, True)) == "1d0682000a010203"


def test_ipv4_home_address_zero_asks_for_dynamic_assignment():
    """RFC 5555 §3.1.1 (seed §3.3): 0.0.0.0 requests a dynamically assigned home address."""
    assert option_bytes(Ipv4HomeAddress(IPv4Address("0.0.0.0"))) == "1d06" + "0000" + "00000000"


def test_ipv4_home_address_reserved_bits_do_not_leak():
    """RFC 5555 §3.1.1: the 9 reserved bits are ignored; they must not read as P or length.
    Word 0x61FF: prefix 24, P clear (0x0200 is 0), reserved all ones."""
    got = Ipv4HomeAddress.parse(bytes.fromhex("61ff0a000001"))
    assert got == Ipv4HomeAddress(IPv4Address("10.0.0.1"), 24, False)


def test_ipv4_address_ack():
    """RFC 5555 §3.2.1: Type 30, Len 6; Status, Pref-len (6 bits) + 2 reserved, address.
    24 << 2 = 0x60; status 132 = 0x84 (dynamic assignment not available)."""
    opt = Ipv4AddressAck(0, 24, IPv4Address("10.0.0.5"))
    assert option_bytes(opt) == "1e06" + "00" + "60" + "0a000005"
    assert parse_back(opt) == opt
    assert option_bytes(Ipv4AddressAck(132, 0, IPv4Address("0.0.0.0"))) == "1e06840000000000"
    assert Ipv4AddressAck.parse(bytes.fromhex("00630a000005")) == opt  # reserved bits ignored


def test_nat_detection():
    """RFC 5555 §3.2.2: Type 31, Len 6; F flag (0x8000) + 15 reserved bits, 32-bit refresh."""
    opt = NatDetection(110, forced=True)
    assert option_bytes(opt) == "1f06" + "8000" + "0000006e"
    assert parse_back(opt) == opt
    assert option_bytes(NatDetection(0xFFFF_FFFF)) == "1f06" + "0000" + "ffffffff"
    assert NatDetection.parse(bytes.fromhex("7fff00000001")) == NatDetection(1, False)


def test_ipv4_care_of_address():
    """RFC 5555 §3.1.2: Type 32, Len 6; 16 reserved bits, the IPv4 care-of address."""
    opt = Ipv4CareOfAddress(IPv4Address("192.0.2.1"))
    assert option_bytes(opt) == "2006" + "0000" + "c0000201"
    assert parse_back(opt) == opt


def test_gre_key_with_and_without_key():
    """RFC 5845 §3.1: Type 33; Len 6 with a GRE key identifier, Len 2 without one."""
    assert option_bytes(GreKey(0x12345678)) == "2106" + "0000" + "12345678"
    assert option_bytes(GreKey()) == "2102" + "0000"
    assert parse_back(GreKey(0x12345678)) == GreKey(0x12345678)
    assert parse_back(GreKey()) == GreKey()


def test_ipv4_hoa_request():
    """RFC 5844 §3.3.1: Type 36, Len 6; Prefix-len (6 bits) + 10 reserved bits, address."""
    opt = Ipv4HoaRequest(IPv4Address("10.0.0.5"), 24)
    assert option_bytes(opt) == "2406" + "6000" + "0a000005"
    assert parse_back(opt) == opt
    assert option_bytes(Ipv4HoaRequest(IPv4Address("0.0.0.0"))) == "2406" + "0000" + "00000000"
    assert Ipv4HoaRequest.parse(bytes.fromhex("63ff0a000005")) == opt  # reserved ignored


def test_ipv4_hoa_reply():
    """RFC 5844 §3.3.2: Type 37, Len 6; Status, Pref-len (6 bits) + 2 reserved, address."""
    opt = Ipv4HoaReply(0, 24, IPv4Address("10.0.0.5"))
    assert option_bytes(opt) == "2506" + "00" + "60" + "0a000005"
    assert parse_back(opt) == opt
    assert option_bytes(Ipv4HoaReply(130, 0, IPv4Address("0.0.0.0"))) == "2506820000000000"


def test_ipv4_default_router():
    """RFC 5844 §3.3.3: Type 38, Len 6; 16 reserved bits, default-router address."""
    opt = Ipv4DefaultRouter(IPv4Address("10.0.0.1"))
    assert option_bytes(opt) == "2606" + "0000" + "0a000001"
    assert parse_back(opt) == opt


def test_ipv4_dhcp_support_mode():
    """RFC 5844 §3.3.4: Type 39, Len 2; 15 reserved bits then S (0x0001): 1 = MAG is the
    DHCP server, 0 = MAG is a DHCP relay."""
    assert option_bytes(Ipv4DhcpSupportMode(True)) == "2702" + "0001"
    assert option_bytes(Ipv4DhcpSupportMode(False)) == "2702" + "0000"
    assert Ipv4DhcpSupportMode.parse(b"\xff\xfe") == Ipv4DhcpSupportMode(False)
    assert Ipv4DhcpSupportMode.parse(b"\x00\x01") == Ipv4DhcpSupportMode(True)


@pytest.mark.parametrize(
    "opt",
    [
        Ipv4HomeAddress(IPv4Address("10.0.0.1"), 33),
        Ipv4AddressAck(0, 33, IPv4Address("10.0.0.1")),
        Ipv4HoaRequest(IPv4Address("10.0.0.1"), 40),
        Ipv4HoaReply(0, 63, IPv4Address("10.0.0.1")),
    ],
)
def test_encoder_refuses_ipv4_prefix_longer_than_32(opt):
    """RFC 5555 §3.1.1 / RFC 5844 §3.3.1: an IPv4 prefix length is at most 32."""
    with pytest.raises(ValueError):
        encode(BindingUpdate(1, 1, options=(opt,)))


# --- whole messages ------------------------------------------------------------------------


def test_pbu_vector_without_padding():
    """RFC 6275 §6.1.7 + RFC 5213 §8.1: Payload Proto 59, Header Len 3 (32 octets), MH Type
    5, Sequence, flags A|P = 0x8200, Lifetime; HNP lands on 8n+4 (offset 12) unpadded."""
    pbu = BindingUpdate(
        0x1234, 0x19, BuFlags.A | BuFlags.P, (HomeNetworkPrefix(IPv6Address("::"), 0),)
    )
    expected = "3b030500" + "0000" + "1234" + "8200" + "0019" + "1612" + "00" * 18
    assert encode(pbu).hex() == expected
    assert decode(bytes.fromhex(expected)) == pbu


def test_pba_vector_with_padn():
    """RFC 6275 §6.1.8 + RFC 5213 §8.2: Status, flags P = 0x20, Sequence, Lifetime. The
    Timestamp (8n+2) needs PadN of 4 at offset 12; 4 more octets of PadN close the 8n."""
    ts = Timestamp(0x00006553F1008000)
    pba = BindingAck(0, 0x1234, 0x19, BaFlags.P, (ts,))
    expected = (
        "3b030600" + "0000" + "00" + "20" + "1234" + "0019"
        + "0104" + "00000000"  # PadN, 4 octets of content, at 12..17
        + "1b08" + "00006553f1008000"  # Timestamp at 18 = 8*2 + 2
        + "0102" + "0000"  # PadN closing to 32 octets
    )  # fmt: skip
    assert encode(pba).hex() == expected
    assert decode(bytes.fromhex(expected)) == pba


def test_pad1_before_ipv4_option_and_padn_after():
    """RFC 6275 §6.2.2: one octet of padding is Pad1 (a single 0). MNID of 7 octets ends at
    19, so the IPv4 CoA (4n, RFC 5555 §3.1.2) needs one Pad1 to start at 20."""
    pbu = BindingUpdate(
        1,
        0,
        BuFlags.A | BuFlags.P,
        (MnIdentifier(b"abcd"), Ipv4CareOfAddress(IPv4Address("192.0.2.1"))),
    )
    expected = (
        "3b030500" + "0000" + "0001" + "8200" + "0000"
        + "080501" + "61626364"  # MNID at 12..18
        + "00"  # Pad1 at 19
        + "20060000c0000201"  # IPv4 CoA at 20
        + "01020000"  # PadN to 32
    )  # fmt: skip
    assert encode(pbu).hex() == expected
    assert decode(bytes.fromhex(expected)) == pbu


def test_trailing_pad1_closes_the_header():
    """RFC 6275 §6.2.2: an MNID of 19 octets (12..30) leaves 1 octet, closed with Pad1."""
    mh = encode(BindingUpdate(1, 0, options=(MnIdentifier(b"x" * 16),)))
    assert len(mh) == 32 and mh[31] == 0 and mh[1] == 3


def test_flags_and_status_positions():
    """RFC 5213 §8.1: P is 0x0200 of the BU flags (octets 8-9); §8.2: P is 0x20 of the BA
    flags octet (7), Status is octet 6. RFC 6275 §6.1.7: Lifetime in 4 s units (octets 10-11)."""
    bu = encode(BindingUpdate(7, 65535, BuFlags.P))
    assert bu[8:10] == b"\x02\x00" and bu[6:8] == b"\x00\x07" and bu[10:12] == b"\xff\xff"
    ba = encode(BindingAck(171, 7, 0, BaFlags.P))
    assert ba[6] == 171 and ba[7] == 0x20 and ba[8:10] == b"\x00\x07"


def test_header_len_limit():
    """RFC 6275 §6.1: Header Len is 8 bits, so a Mobility Header is at most (255 + 1) * 8 =
    2048 octets; the encoder fills that exactly and refuses one octet more."""
    big = tuple(UnknownOption(200 + i, bytes(255)) for i in range(7))  # 12 + 7 * 257 = 1811
    fits = encode(BindingUpdate(1, 1, options=(*big, UnknownOption(250, bytes(235)))))
    assert len(fits) == 2048 and fits[1] == 255
    with pytest.raises(ValueError):
        encode(BindingUpdate(1, 1, options=(*big, UnknownOption(250, bytes(236)))))


# --- alignment -----------------------------------------------------------------------------

# (option, x, y): the option's type octet must sit at offset x*n + y from the MH start.
ALIGNED = [
    pytest.param(HomeNetworkPrefix(IPv6Address("2001:db8::"), 64), 8, 4, id="HNP 8n+4 RFC5213 8.3"),
    pytest.param(LinkLocalAddress(IPv6Address("fe80::1")), 8, 6, id="LLA 8n+6 RFC5213 8.7"),
    pytest.param(Timestamp(1 << 16), 8, 2, id="Timestamp 8n+2 RFC5213 8.8"),
    pytest.param(Ipv4HomeAddress(IPv4Address("10.0.0.1"), 24), 4, 0, id="IPv4HoA 4n RFC5555 3.1.1"),
    pytest.param(Ipv4CareOfAddress(IPv4Address("10.0.0.1")), 4, 0, id="IPv4CoA 4n RFC5555 3.1.2"),
    pytest.param(
        Ipv4AddressAck(0, 24, IPv4Address("10.0.0.1")), 4, 0, id="IPv4Ack 4n RFC5555 3.2.1"
    ),
    pytest.param(NatDetection(110), 4, 0, id="NATD 4n RFC5555 3.2.2"),
    pytest.param(Ipv4HoaRequest(IPv4Address("10.0.0.1"), 24), 4, 0, id="HoAReq 4n RFC5844 3.3.1"),
    pytest.param(Ipv4HoaReply(0, 24, IPv4Address("10.0.0.1")), 4, 0, id="HoARep 4n RFC5844 3.3.2"),
    pytest.param(Ipv4DefaultRouter(IPv4Address("10.0.0.1")), 4, 0, id="DRA 4n RFC5844 3.3.3"),
    pytest.param(GreKey(0x12345678), 4, 0, id="GRE key 4n RFC5845 6.1"),
]

UNALIGNED = [
    pytest.param(MnIdentifier(b"mn"), id="MNID none RFC4283 3"),
    pytest.param(HandoffIndicatorOption(1), id="HI none RFC5213 8.4"),
    pytest.param(AccessTechTypeOption(3), id="ATT none RFC5213 8.5"),
    pytest.param(MnLinkLayerId(b"\x02\0\0\0\0\1"), id="MNLLI none RFC5213 8.6"),
    pytest.param(Ipv4DhcpSupportMode(True), id="DSM none RFC5844 3.3.4"),
]


def _shifted(opt: Option, shift: int) -> bytes:
    """A PBU whose first option (unknown type 250, no alignment) is ``shift`` + 2 octets."""
    return encode(BindingUpdate(1, 1, options=(UnknownOption(250, b"s" * shift), opt)))


def _assert_well_padded(mh: bytes) -> None:
    """RFC 6275 §6.1, §6.2.2 and §6.2.3: total a multiple of 8, Header Len matches, pads are Pad1
    or PadN whose content is zero."""
    assert len(mh) % 8 == 0
    assert mh[1] == len(mh) // 8 - 1
    for _off, t, body in walk(mh):
        if t == 1:
            assert body == bytes(len(body))


@pytest.mark.parametrize(("opt", "x", "y"), ALIGNED)
@pytest.mark.parametrize("shift", range(0, 8))
def test_option_lands_on_its_alignment(opt, x, y, shift):
    """RFC 6275 §6.2: each option is padded so its Type octet is at x*n + y; the padding is
    the shortest that gets there."""
    mh = _shifted(opt, shift)
    _assert_well_padded(mh)
    (off, _t, _b) = next(e for e in walk(mh) if e[1] == opt.TYPE)
    assert off % x == y
    first_end = 12 + 2 + shift
    assert off - first_end == (y - first_end) % x  # minimal padding
    assert decode(mh).options[1] == opt


@pytest.mark.parametrize("opt", UNALIGNED)
@pytest.mark.parametrize("shift", range(0, 8))
def test_unaligned_option_is_not_padded(opt, shift):
    """Options with no alignment requirement follow the previous option directly."""
    mh = _shifted(opt, shift)
    _assert_well_padded(mh)
    (off, _t, _b) = next(e for e in walk(mh) if e[1] == opt.TYPE)
    assert off == 12 + 2 + shift
    assert decode(mh).options[1] == opt


@pytest.mark.parametrize(("opt", "x", "y"), ALIGNED)
def test_declared_alignment_matches_rfc(opt, x, y):
    """The class constant the decoder enforces is the RFC's x*n+y."""
    declared = OPTION_CLASSES[opt.TYPE].ALIGN
    assert declared == (x, y)


def test_mn_link_layer_id_decodes_at_any_offset():
    """RFC 5213 §8.6 sets no fixed alignment for the MN Link-layer Identifier ("based on
    the size of the identifier, the option MUST be aligned appropriately"), so a receiver
    must not reject one a sender placed elsewhere than we would."""
    lli = bytes.fromhex("19080000020000000001")  # MNLLI with a 6-octet identifier
    for lead in range(0, 8):
        pad = b"" if lead == 0 else (b"\0" if lead == 1 else bytes((1, lead - 2)) + bytes(lead - 2))
        body = pad + lli
        tail = -(12 + len(body)) % 8
        body += b"\0" if tail == 1 else (bytes((1, tail - 2)) + bytes(tail - 2) if tail else b"")
        mh = bytes((59, (12 + len(body)) // 8 - 1, 5, 0, 0, 0, 0, 1, 2, 0, 0, 1)) + body
        assert decode(mh).options == (MnLinkLayerId(bytes.fromhex("020000000001")),), lead


def test_total_length_is_multiple_of_eight_for_every_option_mix():
    """RFC 6275 §6.1: "the length of the Mobility Header MUST be a multiple of 8 octets"."""
    every = [
        MnIdentifier(NAI),
        HomeNetworkPrefix(IPv6Address("2001:db8::"), 64),
        HandoffIndicatorOption(1),
        AccessTechTypeOption(3),
        MnLinkLayerId(b"\x02\0\0\0\0\1"),
        LinkLocalAddress(IPv6Address("fe80::1")),
        Timestamp(5),
        Ipv4HomeAddress(IPv4Address("0.0.0.0")),
        Ipv4AddressAck(0, 24, IPv4Address("10.0.0.1")),
        NatDetection(110),
        Ipv4CareOfAddress(IPv4Address("192.0.2.1")),
        GreKey(7),
        Ipv4HoaRequest(IPv4Address("0.0.0.0")),
        Ipv4HoaReply(0, 24, IPv4Address("10.0.0.1")),
        Ipv4DefaultRouter(IPv4Address("10.0.0.1")),
        Ipv4DhcpSupportMode(False),
    ]
    assert {type(o) for o in every} == set(OPTION_CLASSES.values())
    for n in range(len(every) + 1):
        for opts in (tuple(every[:n]), tuple(reversed(every[:n]))):
            mh = encode(BindingUpdate(1, 1, options=opts))
            _assert_well_padded(mh)
            assert decode(mh).options == opts


# --- checksum ------------------------------------------------------------------------------


def _pseudo(src: IPv6Address, dst: IPv6Address, length: int) -> bytes:
    return src.packed + dst.packed + struct.pack("!I", length) + b"\0\0\0\x87"


SAMPLE = BindingUpdate(
    9,
    100,
    BuFlags.A | BuFlags.P,
    (
        MnIdentifier(NAI),
        HomeNetworkPrefix(IPv6Address("::"), 0),
        HandoffIndicatorOption(1),
        AccessTechTypeOption(3),
        Timestamp.from_seconds(1_700_000_000),
        Ipv4HomeAddress(IPv4Address("0.0.0.0")),
        Ipv4CareOfAddress(IPv4Address("192.0.2.1")),
    ),
)


def test_checksum_left_zero_without_addresses():
    """RFC 6275 §6.1.1 with IPV6_CHECKSUM: the kernel fills the field; we leave it zero."""
    assert encode(SAMPLE)[4:6] == b"\0\0"


def test_checksum_over_ipv6_pseudo_header():
    """RFC 6275 §6.1.1: one's complement of the one's complement sum over the RFC 8200 §8.1
    pseudo-header (next header 135) and the MH. Summing the filled-in header with its
    pseudo-header must give 0xFFFF, i.e. our independent RFC 1071 routine returns 0."""
    mh = encode(SAMPLE, MAG6, LMA6)
    assert mh[4:6] != b"\0\0"
    assert ones_complement_checksum(_pseudo(MAG6, LMA6, len(mh)) + mh) == 0
    zeroed = mh[:4] + b"\0\0" + mh[6:]
    expected = ones_complement_checksum(_pseudo(MAG6, LMA6, len(mh)) + zeroed)
    assert int.from_bytes(mh[4:6], "big") == expected == mh_checksum(mh, MAG6, LMA6)
    assert decode(mh, MAG6, LMA6) == SAMPLE


def test_checksum_detects_every_flipped_byte():
    """RFC 6275 §9.2: a Mobility Header with a wrong checksum is discarded. Flipping any
    octet (other than Header Len and MH Type, which fail earlier checks) gives
    "bad-checksum" when addresses are given."""
    mh = encode(SAMPLE, MAG6, LMA6)
    for pos in range(len(mh)):
        for mask in (0x01, 0x80):
            bad = bytearray(mh)
            bad[pos] ^= mask
            with pytest.raises(WireError) as exc:
                decode(bytes(bad), MAG6, LMA6)
            want = {1: "bad-header-length", 2: "unsupported-mh-type"}.get(pos, "bad-checksum")
            assert exc.value.reason == want, (pos, mask)


def test_checksum_depends_on_pseudo_header_addresses():
    """RFC 6275 §6.1.1: the addresses are in the sum; another destination fails."""
    mh = encode(SAMPLE, MAG6, LMA6)
    with pytest.raises(WireError) as exc:
        decode(mh, MAG6, IPv6Address("2001:db8:2::2"))
    assert exc.value.reason == "bad-checksum"


def test_checksum_not_verified_without_addresses():
    """Without src/dst (raw socket; the kernel verified IPV6_CHECKSUM) decode does not
    look at the field, so a header with any checksum value decodes."""
    mh = bytearray(encode(SAMPLE, MAG6, LMA6))
    mh[4:6] = b"\xde\xad"
    assert decode(bytes(mh)) == SAMPLE
