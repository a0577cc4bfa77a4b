"""A deterministic fuzz slice for ``make test``: random and mutated inputs built from valid
encodings. ``decode`` (and ``unwrap``) may only raise ``WireError``.

``decode`` turns any unexpected exception into ``WireError("decoder-fault")``, so "only
WireError escapes" alone could never fail; the slice therefore also fails on that reason,
which marks a decoder bug. Whatever does decode must re-encode to an equal message.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

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
    Timestamp,
    UnknownOption,
    WireError,
    decode,
    encode,
)
from pmip_agent.wire.ipv6 import unwrap, wrap
from pmip_agent.wire.options import OPTION_CLASSES

SEED = 0x5213_5844
N_INPUTS = 50_000
N_UNWRAP = 2_000
SRC = IPv6Address("2001:db8:1::1")
DST = IPv6Address("2001:db8:2::1")

DECODE_REASONS = {
    "short-header",
    "bad-header-length",
    "unsupported-mh-type",
    "short-message",
    "bad-checksum",
    "option-overrun",
    "misaligned-option",
    "duplicate-option",
    "bad-option-length",
    "bad-prefix-length",
}
UNWRAP_REASONS = {"short-ipv6", "not-ipv6", "not-mobility-header", "bad-ipv6-length"}

A4 = IPv4Address
A6 = IPv6Address
SEEDS = [
    BindingUpdate(
        1,
        100,
        BuFlags.A | BuFlags.P,
        (
            MnIdentifier(b"mn1@example.net"),
            HomeNetworkPrefix(A6("::"), 0),
            HandoffIndicatorOption(1),
            AccessTechTypeOption(3),
            Timestamp(0x00006553F1008000),
            Ipv4HomeAddress(A4("0.0.0.0"), 0, True),
            Ipv4CareOfAddress(A4("192.0.2.1")),
        ),
    ),
    BindingAck(
        0,
        1,
        100,
        BaFlags.P,
        (
            MnIdentifier(b"mn1@example.net"),
            HomeNetworkPrefix(A6("2001:db8:aa::"), 64),
            HandoffIndicatorOption(1),
            AccessTechTypeOption(3),
            Timestamp(0x00006553F1008000),
            Ipv4AddressAck(0, 24, A4("10.0.0.5")),
            NatDetection(110, True),
            Ipv4DefaultRouter(A4("10.0.0.1")),
        ),
    ),
    BindingUpdate(
        2,
        0,
        BuFlags.A | BuFlags.P,
        (
            MnIdentifier(b"mn2@example.net"),
            HomeNetworkPrefix(A6("2001:db8:bb::"), 64),
            HomeNetworkPrefix(A6("2001:db8:cc::"), 64),
            MnLinkLayerId(b"\x02\0\0\0\0\x02"),
            LinkLocalAddress(A6("fe80::2")),
            Ipv4HoaRequest(A4("0.0.0.0")),
            GreKey(7),
            UnknownOption(200, b"vendor"),
        ),
    ),
    BindingAck(
        171,
        2,
        0,
        BaFlags.P,
        (
            MnIdentifier(b"mn2@example.net"),
            Ipv4HoaReply(129, 24, A4("10.0.0.9")),
            Ipv4DefaultRouter(A4("10.0.0.1")),
            Ipv4DhcpSupportMode(True),
            GreKey(None),
        ),
    ),
    BindingUpdate(3, 1, BuFlags.A | BuFlags.P, ()),
]
KNOWN_TYPES = sorted(OPTION_CLASSES)


def option_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of each TLV option in a well-formed header; stops at junk."""
    spans, off = [], 12
    while off < len(data):
        if data[off] == 0:
            off += 1
            continue
        if off + 1 >= len(data):
            break
        end = off + 2 + data[off + 1]
        if end > len(data):
            break
        if data[off] != 1:
            spans.append((off, end - off))
        off = end
    return spans


def close(rng: random.Random, data: bytearray) -> bytearray:
    """Pad to a multiple of 8 (sometimes with junk PadN content) and fix Header Len, so the
    input gets past the framing checks into option parsing."""
    n = -len(data) % 8
    if n == 1:
        data.append(0)
    elif n > 1:
        fill = rng.randrange(256) if rng.random() < 0.2 else 0
        data += bytes((1, n - 2)) + bytes([fill]) * (n - 2)
    if 8 <= len(data) <= 2048:
        data[1] = len(data) // 8 - 1
    return data


def random_tlv(rng: random.Random) -> bytes:
    otype = rng.choice(KNOWN_TYPES) if rng.random() < 0.8 else rng.randrange(256)
    if rng.random() < 0.5:  # a plausible length for the type
        length = {22: 18, 26: 16, 27: 8, 23: 2, 24: 2, 39: 2}.get(otype, rng.choice((2, 6, 6, 8)))
    else:
        length = rng.randrange(0, 24)
    return bytes((otype, length)) + rng.randbytes(length)


def m_flip_bits(rng: random.Random, d: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(d) * 8)
        d[i // 8] ^= 1 << (i % 8)
    return d


def m_set_byte(rng: random.Random, d: bytearray) -> bytearray:
    d[rng.randrange(len(d))] = rng.randrange(256)
    return d


def m_truncate(rng: random.Random, d: bytearray) -> bytearray:
    return d[: rng.randrange(len(d))]


def m_truncate_closed(rng: random.Random, d: bytearray) -> bytearray:
    if len(d) <= 12:
        return d
    return close(rng, d[: rng.randrange(12, len(d) + 1)])


def m_extend(rng: random.Random, d: bytearray) -> bytearray:
    return d + rng.randbytes(rng.randint(1, 16))


def m_corrupt_length(rng: random.Random, d: bytearray) -> bytearray:
    spans = option_spans(bytes(d))
    if spans:
        off, _ = rng.choice(spans)
        d[off + 1] = rng.choice((0, 1, 2, 5, 6, 7, 17, 19, 255, rng.randrange(256)))
    return d


def m_header_len(rng: random.Random, d: bytearray) -> bytearray:
    if len(d) > 1:
        d[1] = rng.randrange(256)
    return d


def m_insert_option(rng: random.Random, d: bytearray) -> bytearray:
    cuts = [12] + [off + ln for off, ln in option_spans(bytes(d))]
    at = rng.choice(cuts)
    return close(rng, d[:at] + random_tlv(rng) + d[at:])


def m_swap_type(rng: random.Random, d: bytearray) -> bytearray:
    spans = option_spans(bytes(d))
    if spans:
        off, _ = rng.choice(spans)
        d[off] = rng.choice(KNOWN_TYPES)
    return d


def m_duplicate_option(rng: random.Random, d: bytearray) -> bytearray:
    spans = option_spans(bytes(d))
    if not spans:
        return d
    off, ln = rng.choice(spans)
    return close(rng, d + d[off : off + ln])


def m_shift(rng: random.Random, d: bytearray) -> bytearray:
    """Insert 1-7 octets of padding in front of an option: tests misalignment paths."""
    spans = option_spans(bytes(d))
    if not spans:
        return d
    off, _ = rng.choice(spans)
    n = rng.randint(1, 7)
    padding = b"\0" if n == 1 else bytes((1, n - 2)) + bytes(n - 2)
    return close(rng, d[:off] + padding + d[off:])


def m_random(rng: random.Random, d: bytearray) -> bytearray:
    out = bytearray(rng.randbytes(rng.randrange(0, 64)))
    if len(out) >= 8 and rng.random() < 0.7:
        out[2] = rng.choice((5, 6))
        out = close(rng, out)
    return out


MUTATORS: list[Callable[[random.Random, bytearray], bytearray]] = [
    m_flip_bits,
    m_set_byte,
    m_truncate,
    m_truncate_closed,
    m_extend,
    m_corrupt_length,
    m_header_len,
    m_insert_option,
    m_insert_option,
    m_swap_type,
    m_duplicate_option,
    m_shift,
    m_random,
]


def mutate(rng: random.Random, base: bytes) -> bytes:
    d = bytearray(base)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not d:
            break
        d = rng.choice(MUTATORS)(rng, d)
    return bytes(d)


def check_decode(data: bytes, reasons: Counter, *addrs: IPv6Address) -> bool:
    try:
        msg = decode(data, *addrs)
    except WireError as exc:
        assert exc.reason != "decoder-fault", f"decoder bug on {data.hex()}: {exc}"
        assert exc.reason in DECODE_REASONS, f"undocumented reason {exc.reason!r}"
        reasons[exc.reason] += 1
        return False
    # Anything accepted must survive a canonical re-encode unchanged.
    assert decode(encode(msg)) == msg, data.hex()
    return True


def test_fuzz_decode_only_raises_wire_error():
    """RFC 6275 §9.2 receivers discard malformed headers: they must never crash on them."""
    rng = random.Random(SEED)
    bases = [encode(m, SRC, DST) for m in SEEDS]
    reasons: Counter = Counter()
    accepted = 0
    for _ in range(N_INPUTS):
        data = mutate(rng, rng.choice(bases))
        accepted += check_decode(data, reasons)
        check_decode(data, reasons, SRC, DST)
    # The mutations must reach every check, not just the first one, and some must pass.
    assert set(reasons) == DECODE_REASONS, sorted(DECODE_REASONS - set(reasons))
    assert accepted > N_INPUTS // 20, accepted


def test_fuzz_unwrap_only_raises_wire_error():
    """Seed §4.4: the inner IPv6 header comes from the network too."""
    rng = random.Random(SEED + 1)
    bases = [wrap(encode(m, SRC, DST), SRC, DST) for m in SEEDS]
    seen: Counter = Counter()
    for _ in range(N_UNWRAP):
        d = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            if not d:
                break
            d = rng.choice((m_flip_bits, m_set_byte, m_truncate, m_extend))(rng, d)
        try:
            src, dst, inner = unwrap(bytes(d))
        except WireError as exc:
            assert exc.reason in UNWRAP_REASONS, exc.reason
            seen[exc.reason] += 1
            continue
        seen["ok"] += 1
        # Accepted means: version 6, Next Header 135, lengths agree; all else is carried.
        assert d[0] >> 4 == 6
        assert wrap(inner, src, dst, d[7])[4:] == bytes(d[4:])
    assert set(seen) == UNWRAP_REASONS | {"ok"}, seen
