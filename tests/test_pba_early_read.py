"""`templates.accepted_ipv4`: the MAG reads, from a PBA's bytes, the sequence number and
the IPv4 address it accepts, so that a DHCP server's ACK held for that PBA can go on to
the MN before the PBA's intake (MagService._on_mh). Anything it is unsure of gives None,
and the decoder decides as always."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from pmip_agent.core.templates import accepted_ipv4
from pmip_agent.wire import BindingAck, decode, encode
from pmip_agent.wire.options import (
    Ipv4AddressAck,
    Ipv4DefaultRouter,
    Ipv4HoaReply,
    MnIdentifier,
    Timestamp,
)

HOA = IPv4Address("10.50.0.100")


def pba(status: int = 0, reply: object = None, sequence: int = 4242) -> bytes:
    options = (MnIdentifier(b"dhcp@example.net"), Timestamp.from_seconds(1.0e9))
    if reply is not None:
        options += (reply, Ipv4DefaultRouter(IPv4Address("10.50.0.1")))
    return encode(BindingAck(status, sequence, 900, options=options))


def test_an_accepting_pba_gives_its_sequence_number_and_address() -> None:
    for reply in (Ipv4AddressAck(0, 24, HOA), Ipv4HoaReply(0, 24, HOA)):  # draft, RFC 5844
        data = pba(reply=reply)
        assert decode(data).find(type(reply)) == reply  # what the decoder reads too
        assert accepted_ipv4(data) == (4242, HOA.packed)


def test_anything_else_gives_none() -> None:
    assert accepted_ipv4(pba(status=130, reply=Ipv4HoaReply(0, 24, HOA))) is None  # refused
    assert accepted_ipv4(pba(reply=Ipv4HoaReply(130, 24, HOA))) is None  # address refused
    assert accepted_ipv4(pba(reply=Ipv4AddressAck(129, 24, HOA))) is None
    assert accepted_ipv4(pba()) is None  # no IPv4 address in it
    data = pba(reply=Ipv4HoaReply(0, 24, HOA))
    assert accepted_ipv4(data[:20]) is None  # cut before the option
    assert accepted_ipv4(data[:11]) is None
    not_a_pba = bytearray(data)
    not_a_pba[2] = 5  # a Binding Update's type
    assert accepted_ipv4(bytes(not_a_pba)) is None


@given(st.binary(max_size=120))
def test_no_input_makes_it_raise(data: bytes) -> None:
    got = accepted_ipv4(data)
    assert got is None or (len(got[1]) == 4 and 0 <= got[0] < 65536)
