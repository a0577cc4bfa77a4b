"""Property tests: encode and decode are inverse, with and without checksum addresses, and
the IPv6 wrapping of the seed's Figure 6 round-trips."""

from __future__ import annotations

import struct

import strategies as s
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import ones_complement_checksum

from pmip_agent.wire import decode, encode, mh_checksum
from pmip_agent.wire.ipv6 import unwrap, wrap
from pmip_agent.wire.messages import MAX_MH_LEN
from pmip_agent.wire.options import OPTION_CLASSES, UnknownOption

PROPS = settings(max_examples=300, deadline=None)


def test_every_option_class_has_a_strategy():
    """A new option class without a strategy would silently escape the round-trip tests."""
    assert set(s.OPTION_STRATEGIES) == set(OPTION_CLASSES.values()) | {UnknownOption}


@PROPS
@given(st.sampled_from(sorted(s.OPTION_STRATEGIES, key=lambda c: c.__name__)).flatmap(
    lambda cls: s.OPTION_STRATEGIES[cls]
))  # fmt: skip
def test_option_body_round_trip(opt):
    """Each option class parses its own body back to an equal option."""
    if isinstance(opt, UnknownOption):
        assert UnknownOption(opt.type, opt.body()) == opt
    else:
        assert type(opt).parse(opt.body()) == opt


@PROPS
@given(s.messages())
def test_decode_encode(msg):
    """decode(encode(m)) == m, and the header is a well-formed multiple of 8."""
    data = encode(msg)
    assert len(data) % 8 == 0 and len(data) <= MAX_MH_LEN
    assert data[1] == len(data) // 8 - 1
    assert decode(data) == msg


@PROPS
@given(s.messages())
def test_encode_decode_is_identity_on_encodings(msg):
    """encode(decode(b)) == b for every b = encode(m): nothing is lost or reordered."""
    data = encode(msg)
    assert encode(decode(data)) == data


@PROPS
@given(s.messages(), s.ipv6_addresses, s.ipv6_addresses)
def test_round_trip_with_checksum(msg, src, dst):
    """With addresses the checksum is filled, verifies against an independent RFC 1071 sum,
    decodes (verified) to the same message and re-encodes to the same octets."""
    data = encode(msg, src, dst)
    pseudo = src.packed + dst.packed + struct.pack("!I", len(data)) + b"\0\0\0\x87"
    assert ones_complement_checksum(pseudo + data) == 0
    assert int.from_bytes(data[4:6], "big") == mh_checksum(data, src, dst)
    assert data[:4] + b"\0\0" + data[6:] == encode(msg)
    back = decode(data, src, dst)
    assert back == msg
    assert encode(back, src, dst) == data


@PROPS
@given(s.messages(), s.ipv6_addresses, s.ipv6_addresses, st.integers(0, 255))
def test_ipv6_wrap_unwrap(msg, src, dst, hop_limit):
    """Seed §4.4 Figure 6: IPv6 (v6MAG -> LMAA, Next Header 135) / MH round-trips through
    wrap/unwrap, and the inner addresses verify the MH checksum."""
    mh = encode(msg, src, dst)
    packet = wrap(mh, src, dst, hop_limit)
    assert len(packet) == 40 + len(mh)
    assert packet[0] >> 4 == 6 and packet[6] == 135 and packet[7] == hop_limit
    assert unwrap(packet) == (src, dst, mh)
    src2, dst2, inner = unwrap(packet)
    assert decode(inner, src2, dst2) == msg
