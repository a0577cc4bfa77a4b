"""Every strictness rule of ``decode``: each malformed input gets its own stable reason.

Inputs are built octet by octet here (not with ``encode``) so that each test controls the
exact layout it is about."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from pmip_agent.wire import (
    AccessTechTypeOption,
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
)
from pmip_agent.wire.ipv6 import unwrap, wrap
from pmip_agent.wire.options import OPTION_CLASSES

BU_FIXED = bytes.fromhex("0001" + "8200" + "0010")  # sequence 1, flags A|P, lifetime 16


def pad(n: int, fill: int = 0) -> bytes:
    """RFC 6275 §6.2.2 (Pad1) / §6.2.3 (PadN): n octets of padding as Pad1 or one PadN."""
    if n == 0:
        return b""
    if n == 1:
        return b"\0"
    return bytes((1, n - 2)) + bytes([fill]) * (n - 2)


def tlv(otype: int, body: bytes) -> bytes:
    return bytes((otype, len(body))) + body


def mh(options: bytes, mh_type: int = 5, fixed: bytes = BU_FIXED, close: bool = True) -> bytes:
    """Header + fixed part + ``options``, closed with padding to a multiple of 8 and with a
    Header Len that matches (unless ``close`` is false)."""
    body = fixed + options
    if close:
        body += pad(-(6 + len(body)) % 8)
    return bytes((59, (6 + len(body)) // 8 - 1, mh_type, 0, 0, 0)) + body


def placed(otype: int, body: bytes, at: int | None = None) -> bytes:
    """The option, preceded by the padding that puts it at MH offset ``at`` (default: the
    first offset satisfying its class's declared alignment)."""
    if at is None:
        x, y = OPTION_CLASSES[otype].ALIGN
        at = 12 + (y - 12) % x
    return pad(at - 12) + tlv(otype, body)


def first_type(data: bytes) -> int:
    return decode(data).options[0].TYPE


def reason(data: bytes, *args) -> str:
    with pytest.raises(WireError) as exc:
        decode(data, *args)
    return exc.value.reason


# --- framing -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(0, 8))
def test_short_header(n):
    """RFC 6275 §6.1: the fixed Mobility Header part is 6 octets and the header a multiple
    of 8: fewer than 8 octets is never a Mobility Header."""
    assert reason(bytes.fromhex("3b00050000000000")[:n]) == "short-header"


def test_short_message():
    """RFC 6275 §6.1.7/§6.1.8: a BU or BA needs 6 octets of message data after the 6-octet
    header; an 8-octet header (Header Len 0) cannot hold them."""
    assert reason(bytes.fromhex("3b00050000000000")) == "short-message"
    assert reason(bytes.fromhex("3b00060000000000")) == "short-message"


def test_header_len_must_match_data():
    """RFC 6275 §6.1: Header Len is the length in 8-octet units excluding the first 8; a
    header whose Header Len disagrees with the octets received is rejected."""
    good = mh(tlv(23, b"\0\1"))
    assert len(good) == 16 and decode(good).options == (HandoffIndicatorOption(1),)
    for hdr_len in (0, 2, 3, 255):
        assert reason(good[:1] + bytes((hdr_len,)) + good[2:]) == "bad-header-length"
    assert reason(good + bytes(8)) == "bad-header-length"  # trailing octets
    assert reason(good[:-1]) == "bad-header-length"  # truncated
    assert reason(good + b"\0") == "bad-header-length"  # not a multiple of 8


@pytest.mark.parametrize("mh_type", [t for t in range(256) if t not in (5, 6)])
def test_unsupported_mh_type(mh_type):
    """RFC 6275 §6.1: MH Type 5 is the Binding Update, 6 the Binding Acknowledgement; this
    codec carries only those two."""
    assert reason(mh(b"", mh_type=mh_type)) == "unsupported-mh-type"


# --- option overrun ------------------------------------------------------------------------


def test_option_length_past_end():
    """RFC 6275 §6.2.1: an option's Length may not reach past the end of the header."""
    # MNID at offset 12 claims 10 octets of data; only 2 remain before the end at 16.
    data = mh(bytes((8, 10, 1, ord("a"))), close=False)
    assert len(data) == 16
    assert reason(data) == "option-overrun"
    # The same with room to spare further on: a Length one too large by one octet.
    data = mh(tlv(23, b"\0\1")[:1] + bytes((3,)) + b"\0\1", close=False)
    assert len(data) == 16
    assert reason(data) == "option-overrun"


def test_option_type_without_length_octet():
    """RFC 6275 §6.2.1: every option but Pad1 has a Length octet; a Type in the last octet
    of the header has none."""
    data = mh(b"\0\0\0" + bytes((23,)), close=False)
    assert len(data) == 16
    assert reason(data) == "option-overrun"


def test_unknown_option_overrun_also_rejected():
    """RFC 6275 §6.2.1: unknown options are skipped by their Length, which must also fit."""
    assert reason(mh(bytes((200, 3, 0, 0)), close=False)) == "option-overrun"


# --- option lengths ------------------------------------------------------------------------

FIXED_LENGTHS = {  # type: the one valid Len
    22: 18,  # RFC 5213 §8.3
    23: 2,  # RFC 5213 §8.4
    24: 2,  # RFC 5213 §8.5
    26: 16,  # RFC 5213 §8.7
    27: 8,  # RFC 5213 §8.8
    29: 6,  # RFC 5555 §3.1.1
    30: 6,  # RFC 5555 §3.2.1
    31: 6,  # RFC 5555 §3.2.2
    32: 6,  # RFC 5555 §3.1.2
    36: 6,  # RFC 5844 §3.3.1
    37: 6,  # RFC 5844 §3.3.2
    38: 6,  # RFC 5844 §3.3.3
    39: 2,  # RFC 5844 §3.3.4
}


@pytest.mark.parametrize(("otype", "good"), sorted(FIXED_LENGTHS.items()))
def test_fixed_option_lengths(otype, good):
    """Each fixed-size option (RFC 5213 §8.3-8.8, RFC 5555 §3.1-3.2, RFC 5844 §3.3.1-3.3.4)
    "MUST be set to" its one Length; any other gives "bad-option-length"."""
    assert first_type(mh(placed(otype, bytes(good)))) == otype
    for bad in sorted({0, 1, good - 1, good + 1, good + 2, 40} - {good}):
        assert reason(mh(placed(otype, bytes(bad)))) == "bad-option-length", bad


def test_gre_key_lengths():
    """RFC 5845: the GRE Key option is Len 2 (no key) or Len 6 (with key), nothing else."""
    assert decode(mh(placed(33, bytes(2)))).options == (GreKey(None),)
    assert decode(mh(placed(33, bytes(2) + b"\0\0\0\7"))).options == (GreKey(7),)
    for bad in (0, 1, 3, 4, 5, 7, 10):
        assert reason(mh(placed(33, bytes(bad)))) == "bad-option-length", bad


def test_mn_identifier_minimum_length():
    """RFC 4283 §3: Subtype plus at least one octet of identifier."""
    assert decode(mh(placed(8, b"\x01a"))).options == (MnIdentifier(b"a"),)
    for bad in (b"", b"\x01"):
        assert reason(mh(placed(8, bad))) == "bad-option-length"


def test_mn_link_layer_id_minimum_length():
    """RFC 5213 §8.6: 16 reserved bits then a non-empty link-layer identifier."""
    assert decode(mh(placed(25, b"\0\0\x01"))).options == (MnLinkLayerId(b"\x01"),)
    for bad in (b"", b"\0", b"\0\0"):
        assert reason(mh(placed(25, bad))) == "bad-option-length"


# --- prefix lengths ------------------------------------------------------------------------


@pytest.mark.parametrize("plen", [33, 40, 63])
def test_ipv4_prefix_length_over_32(plen):
    """RFC 5555 §3.1.1/§3.2.1 and RFC 5844 §3.3.1/§3.3.2: Prefix-len is an IPv4 prefix
    length, so 33..63 (which 6 bits can carry) is malformed."""
    addr = bytes((10, 0, 0, 1))
    word = (plen << 10).to_bytes(2, "big")
    assert reason(mh(placed(29, word + addr))) == "bad-prefix-length"
    assert reason(mh(placed(36, word + addr))) == "bad-prefix-length"
    assert reason(mh(placed(30, bytes((0, plen << 2)) + addr))) == "bad-prefix-length"
    assert reason(mh(placed(37, bytes((0, plen << 2)) + addr))) == "bad-prefix-length"


def test_ipv4_prefix_length_32_accepted():
    """RFC 5555 §3.1.1: 32 is the largest valid IPv4 prefix length."""
    got = decode(mh(placed(29, (32 << 10).to_bytes(2, "big") + bytes((10, 0, 0, 1)))))
    assert got.options == (Ipv4HomeAddress(IPv4Address("10.0.0.1"), 32),)


@pytest.mark.parametrize("plen", [129, 200, 255])
def test_hnp_prefix_length_over_128(plen):
    """RFC 5213 §8.3: Prefix Length is an IPv6 prefix length (0..128)."""
    assert reason(mh(placed(22, bytes((0, plen)) + bytes(16)))) == "bad-prefix-length"


# --- alignment -----------------------------------------------------------------------------

ALIGNED_TYPES = sorted(t for t, cls in OPTION_CLASSES.items() if cls.ALIGN[0] > 1)
SIZES = {22: 18, 26: 16, 27: 8, 33: 6}


def test_aligned_types_are_the_rfc_ones():
    """RFC 5213 §8.3/8.7/8.8, RFC 5555 §3.1-3.2, RFC 5844 §3.3.1-3.3.3, RFC 5845: the options
    with an alignment rule. (Their x*n+y values are checked in test_wire_options.)"""
    assert ALIGNED_TYPES == [22, 26, 27, 29, 30, 31, 32, 33, 36, 37, 38]


@pytest.mark.parametrize("otype", ALIGNED_TYPES)
def test_misaligned_option(otype):
    """RFC 6275 §6.2: an option whose Type octet is not at its x*n+y offset is misplaced.
    Every wrong residue is tried; the right one decodes."""
    x, y = OPTION_CLASSES[otype].ALIGN
    body = bytes(SIZES.get(otype, 6))
    for at in range(12, 12 + x):
        data = mh(placed(otype, body, at))
        if at % x == y:
            assert first_type(data) == otype
        else:
            assert reason(data) == "misaligned-option", at


@pytest.mark.parametrize("otype", [8, 23, 24, 25, 39])
def test_unaligned_options_accepted_anywhere(otype):
    """RFC 4283 §3, RFC 5213 §8.4-8.6, RFC 5844 §3.3.4: no alignment requirement."""
    body = {8: b"\x01mn", 25: b"\0\0\x01"}.get(otype, b"\0\1")
    for at in range(12, 20):
        assert first_type(mh(placed(otype, body, at))) == otype


# --- repetition ----------------------------------------------------------------------------

EXAMPLES: dict[int, Option] = {
    8: MnIdentifier(b"mn@example.net"),
    22: HomeNetworkPrefix(IPv6Address("2001:db8::"), 64),
    23: HandoffIndicatorOption(1),
    24: AccessTechTypeOption(3),
    25: MnLinkLayerId(b"\x02\0\0\0\0\1"),
    26: LinkLocalAddress(IPv6Address("fe80::1")),
    27: Timestamp(1 << 16),
    29: Ipv4HomeAddress(IPv4Address("0.0.0.0")),
    30: Ipv4AddressAck(0, 24, IPv4Address("10.0.0.5")),
    31: NatDetection(110),
    32: Ipv4CareOfAddress(IPv4Address("192.0.2.1")),
    33: GreKey(5),
    36: Ipv4HoaRequest(IPv4Address("0.0.0.0")),
    37: Ipv4HoaReply(0, 24, IPv4Address("10.0.0.5")),
    38: Ipv4DefaultRouter(IPv4Address("10.0.0.1")),
    39: Ipv4DhcpSupportMode(True),
}
SINGLETONS = sorted(t for t, cls in OPTION_CLASSES.items() if not cls.REPEATABLE)


def test_examples_cover_every_option_class():
    assert set(EXAMPLES) == set(OPTION_CLASSES)


def test_repeatable_types():
    """RFC 5213 §5.3.1: one HNP option per prefix; RFC 5844 §3.1.2.1: more than one IPv4 HoA
    Request is answered with status 173, so it must decode. Everything else is single."""
    assert sorted(set(OPTION_CLASSES) - set(SINGLETONS)) == [22, 36]


@pytest.mark.parametrize("otype", SINGLETONS)
def test_duplicate_singleton(otype):
    """Apart from HNP (RFC 5213 §5.3.1) and IPv4 HoA Request (RFC 5844 §3.1.2.1), each
    option describes the one MN, timestamp, address... of the message (RFC 5213 §8, RFC 5555
    §3, RFC 5844 §3.3): a second one, even with another value and after other options, is
    "duplicate-option" instead of silently shadowing the first."""
    opt = EXAMPLES[otype]
    between = AccessTechTypeOption(2) if otype == 23 else HandoffIndicatorOption(2)
    twice = encode(BindingUpdate(1, 1, options=(opt, between, opt)))
    assert reason(twice) == "duplicate-option"
    assert reason(encode(BindingAck(0, 1, 1, options=(opt, opt)))) == "duplicate-option"


def test_home_network_prefix_may_repeat():
    """RFC 5213 §5.3.1/§6.9.1.1: one HNP option per prefix, order kept."""
    hnps = tuple(HomeNetworkPrefix(IPv6Address(f"2001:db8:{i}::"), 64) for i in range(1, 4))
    assert decode(encode(BindingAck(0, 1, 1, options=hnps))).options == hnps


def test_ipv4_hoa_request_may_repeat():
    """RFC 5844 §3.1.2.1: a PBU with more than one IPv4 HoA Request is well-formed (the LMA
    answers status 173), so it decodes with both."""
    reqs = (Ipv4HoaRequest(IPv4Address("0.0.0.0")), Ipv4HoaRequest(IPv4Address("10.0.0.9"), 24))
    assert decode(encode(BindingUpdate(1, 1, options=reqs))).options == reqs


# --- unknown options and padding -----------------------------------------------------------


def test_unknown_option_skipped_kept_and_reencoded():
    """RFC 6275 §6.2.1: an unrecognised option is skipped using its Length; it is kept as
    UnknownOption, in place, and the message re-encodes to the same octets."""
    options = tlv(8, b"\x01mn") + tlv(200, b"abc") + tlv(23, b"\0\1") + tlv(2, b"") + tlv(200, b"z")
    data = mh(options)
    msg = decode(data)
    assert msg.options == (
        MnIdentifier(b"mn"),
        UnknownOption(200, b"abc"),
        HandoffIndicatorOption(1),
        UnknownOption(2, b""),
        UnknownOption(200, b"z"),
    )
    assert encode(msg) == data


def test_unknown_option_is_not_alignment_checked():
    """RFC 6275 §6.2: alignment is a property of a known option's definition; an unknown
    option can only be skipped, at whatever offset it sits."""
    for lead in range(8):
        data = mh(pad(lead) + tlv(250, b"\x01\x02\x03"))
        msg = decode(data)
        assert msg.options == (UnknownOption(250, b"\x01\x02\x03"),)
        # Padding in front of an unknown option is not kept (its rule is unknown), so the
        # octets re-encode identically only when there was none; the message stays equal.
        assert decode(encode(msg)) == msg
        assert (encode(msg) == data) == (lead == 0)


def test_padn_content_is_ignored():
    """RFC 6275 §6.2.3: PadN content is zero on send but, like Pad1 runs, ignored on receipt."""
    ts = tlv(27, (1 << 16).to_bytes(8, "big"))  # Timestamp, 8n+2
    zero = mh(pad(6) + ts)
    junk = mh(pad(6, fill=0xA5) + ts)
    pad1s = mh(b"\0" * 6 + ts)
    expected = (Timestamp(1 << 16),)
    assert decode(zero).options == decode(junk).options == decode(pad1s).options == expected
    assert encode(decode(junk)) == zero  # re-encoded with zero padding


def test_padding_only_message():
    """RFC 6275 §6.2: a BU may carry no options at all, only closing padding."""
    data = mh(pad(4))
    assert decode(data) == BindingUpdate(1, 16, BuFlags.A | BuFlags.P, ())


# --- inner IPv6 header (seed Figure 6) -----------------------------------------------------


def test_unwrap_rejects_bad_ipv6_framing():
    """Seed §4.4 / RFC 5844 §4: only a bare IPv6 header with Next Header 135 and a Payload
    Length equal to the octets that follow is accepted."""
    src, dst = IPv6Address("2001:db8:1::1"), IPv6Address("2001:db8:2::1")
    inner = mh(tlv(23, b"\0\1"))
    good = wrap(inner, src, dst)
    assert unwrap(good) == (src, dst, inner)
    cases = {
        "short-ipv6": good[:39],
        "not-ipv6": b"\x45" + good[1:],
        "not-mobility-header": good[:6] + b"\x3b" + good[7:],
        "bad-ipv6-length": good + b"\0",
    }
    for want, data in cases.items():
        with pytest.raises(WireError) as exc:
            unwrap(data)
        assert exc.value.reason == want
