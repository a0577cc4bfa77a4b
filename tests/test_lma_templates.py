"""The premise of the LMA's PBU shapes (pmip_agent/core/templates.py), checked against the
strict decoder: a PBU that differs from an accepted one only in the masked fields decodes
to the same options with the new values, and any other change is not recognised."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    access_tech_types,
    handoff_indicators,
    mn_link_layer_ids,
    option_lists,
    timestamps,
    unknown_options,
)

from pmip_agent.core.templates import PbaTemplate, ShapeBook, option_offsets
from pmip_agent.wire import (
    BindingAck,
    BindingUpdate,
    HomeNetworkPrefix,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    MnLinkLayerId,
    Timestamp,
    decode,
    encode,
)

DECODED = {"flags": 0, "lifetime": 0, "wire_profile": None, "att": 0}

others = option_lists(
    st.one_of(handoff_indicators, access_tech_types, mn_link_layer_ids, unknown_options),
    max_size=4,
)


@st.composite
def shaped_pbus(draw: st.DrawFn) -> BindingUpdate:
    """MN-ID first, one timestamp, at most one HNP and one IPv4 request, other options."""
    opts = [MnIdentifier(draw(st.binary(min_size=1, max_size=40)), draw(st.integers(0, 255)))]
    rest = list(draw(others))
    rest.append(draw(timestamps))
    if draw(st.booleans()):
        prefix = IPv6Address(draw(st.integers(0, 2**128 - 1)))
        rest.append(HomeNetworkPrefix(prefix, draw(st.integers(0, 128))))
    v4 = IPv4Address(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["none", "rfc", "draft"]))
    if kind == "rfc":
        rest.append(Ipv4HoaRequest(v4, draw(st.integers(0, 32))))
    elif kind == "draft":
        rest.append(Ipv4HomeAddress(v4, draw(st.integers(0, 32)), draw(st.booleans())))
    opts += draw(st.permutations(rest))
    return BindingUpdate(
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        tuple(opts),
    )


def _masked(shape, raw: bytes) -> set[int]:  # type: ignore[no-untyped-def]
    spans = [(4, 2), (6, 2), (15, raw[13] - 1), (shape.ts, 8)]
    spans += [(shape.hnp, 16)] if shape.hnp else []
    spans += [(shape.v4, 4)] if shape.v4 else []
    spans += [(shape.llid, shape.llid_len)] if shape.llid else []
    return {o + i for o, n in spans for i in range(n)}


@settings(max_examples=300, deadline=None)
@given(shaped_pbus(), st.data())
def test_masked_fields_change_values_never_the_decoding(msg: BindingUpdate, data) -> None:  # type: ignore[no-untyped-def]
    raw = encode(msg)
    book = ShapeBook()
    shape = book.learn(raw, DECODED)
    assert shape is not None and book.find(raw) is shape
    masked = _masked(shape, raw)
    variant = bytearray(raw)
    for i in masked:
        variant[i] = data.draw(st.integers(0, 255))
    variant = bytes(variant)
    assert book.find(variant) is shape
    got = decode(variant)  # the strict decoder accepts it: the shape skipped no rule
    assert isinstance(got, BindingUpdate)
    assert [type(o) for o in got.options] == [type(o) for o in msg.options]
    assert (got.flags, got.lifetime) == (msg.flags, msg.lifetime)
    assert got.options[0].identifier == variant[15 : 14 + raw[13]]  # type: ignore[attr-defined]
    stamp = next(o for o in got.options if type(o) is Timestamp)
    assert stamp.value == int.from_bytes(variant[shape.ts : shape.ts + 8], "big")
    for old, new in zip(msg.options, got.options, strict=True):
        if type(old) in (HomeNetworkPrefix, Ipv4HoaRequest, Ipv4HomeAddress):
            assert old.prefix_len == new.prefix_len  # type: ignore[attr-defined]
        elif type(old) is MnLinkLayerId:
            ends = (shape.llid, shape.llid + shape.llid_len)
            assert new.identifier == variant[ends[0] : ends[1]]  # type: ignore[attr-defined]
        elif type(old) not in (MnIdentifier, Timestamp):
            assert old == new
    # Any octet outside the masked fields changed: not this shape any more.
    pos = data.draw(st.sampled_from([i for i in range(len(raw)) if i not in masked]))
    other = bytearray(raw)
    other[pos] ^= data.draw(st.integers(1, 255))
    assert book.find(bytes(other)) is None


def test_template_derived_from_a_pba_rebuilds_it_and_refuses_misfits() -> None:
    """A PBA template gives back the PBA it came from, and refuses an identifier of
    another length or a missing address."""
    pbu = encode(
        BindingUpdate(
            7,
            100,
            0xC000,
            (
                MnIdentifier(b"mn@example.net"),
                HomeNetworkPrefix(IPv6Address(0), 0),
                Timestamp(5 << 16),
                Ipv4HoaRequest(IPv4Address(0)),
            ),
        )
    )
    shape = ShapeBook().learn(pbu, DECODED)
    assert shape is not None
    hnp = IPv6Address("2001:db8:100:7::")
    hoa = IPv4Address("10.1.0.9")
    pba = encode(
        BindingAck(
            0,
            7,
            100,
            0x20,
            (
                MnIdentifier(b"mn@example.net"),
                HomeNetworkPrefix(hnp, 64),
                Timestamp(5 << 16),
                Ipv4HoaReply(0, 24, hoa),
            ),
        )
    )
    template = PbaTemplate.derive(shape, pba, 0)
    assert template is not None
    stamp = (5 << 16).to_bytes(8, "big")
    assert template.build(b"\0\7", b"mn@example.net", stamp, hnp.packed, hoa.packed) == pba
    assert template.build(b"\0\7", b"mn@example.org!", stamp, hnp.packed, hoa.packed) is None
    assert template.build(b"\0\7", b"mn@example.net", stamp, hnp.packed, None) is None
    assert sorted(option_offsets(pba)) == [8, 22, 27, 37]
