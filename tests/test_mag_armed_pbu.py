"""MagEngine.arm_ipv4 / armed_sent: the PBU of seed Figure 3, step 3, built at the MN's
DISCOVER with 0.0.0.0 for the address, and sent by someone else (the MAG's kernel relay,
relay.c's send_pbu) with the OFFER's address patched in and the checksum mended.

`patch` does here, in Python, what send_pbu does: these tests check that the PBU the LMA
then reads is the one learn_ipv4 would have sent, and that the engine registers from it."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from engine_helpers import (
    DHCP_PREFIX,
    LMAA,
    MAG1,
    MN_DHCP,
    MN_LMA,
    T0,
    events,
    make_lma,
    make_mag,
    of,
)

from pmip_agent.core.events import Ipv4Granted
from pmip_agent.wire import BindingAck, BindingUpdate, Ipv4HoaRequest, Timestamp, decode
from pmip_agent.wire.ipv6 import unwrap
from pmip_agent.wire.messages import mh_checksum

HOA = IPv4Address("10.20.7.9")


def patch(packet: bytes, hoa_at: int, hoa: IPv4Address) -> bytes:
    """relay.c's send_pbu: the address in, the checksum mended incrementally (the
    one's complement sum of the old checksum's complement and the address's two words)."""
    csum_at = 40 + 4
    old = int.from_bytes(packet[csum_at : csum_at + 2], "big")
    words = int.from_bytes(hoa.packed[:2], "big") + int.from_bytes(hoa.packed[2:], "big")
    total = (~old & 0xFFFF) + words
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    csum = ~total & 0xFFFF
    out = bytearray(packet)
    out[hoa_at : hoa_at + 4] = hoa.packed
    out[csum_at : csum_at + 2] = csum.to_bytes(2, "big")
    return bytes(out)


def test_the_armed_pbu_patched_is_the_pbu_learn_ipv4_sends() -> None:
    """The same options and values as learn_ipv4's PBU, with the address of the OFFER;
    a valid Mobility Header checksum; from the Proxy-CoA to the LMA."""
    armed_mag, plain_mag = make_mag(), make_mag()
    for mag in (armed_mag, plain_mag):
        assert mag.attach(MN_DHCP, T0, link_layer_id=bytes.fromhex("020000000042"))
    armed = armed_mag.arm_ipv4(MN_DHCP, DHCP_PREFIX.prefixlen, T0)
    assert armed is not None
    sequence, packet, hoa_at, lmaa = armed
    assert lmaa == LMAA and armed_mag.datagrams_to_send() == []  # nothing sent by the engine
    assert packet[hoa_at : hoa_at + 4] == bytes(4)
    src, dst, mh = unwrap(patch(packet, hoa_at, HOA))
    assert (src, dst) == (MAG1, LMAA)
    assert int.from_bytes(mh[4:6], "big") == mh_checksum(mh, MAG1, LMAA)
    sent = decode(mh)
    plain_mag.learn_ipv4(MN_DHCP, HOA, DHCP_PREFIX.prefixlen, T0)
    (tx,) = plain_mag.datagrams_to_send()
    expected = decode(tx.data)
    assert isinstance(sent, BindingUpdate) and isinstance(expected, BindingUpdate)
    assert sent.sequence == sequence
    assert sent.find_all(Ipv4HoaRequest) == [Ipv4HoaRequest(HOA, DHCP_PREFIX.prefixlen)]
    assert sent.find(Timestamp) == Timestamp.from_seconds(T0)
    assert sent == replace(expected, sequence=sequence)


def test_an_armed_pbu_sent_registers_the_mn() -> None:
    """The LMA accepts the patched PBU; told it went (armed_sent), the MAG takes the PBA
    as the answer to it and grants the address."""
    mag, lma = make_mag(), make_lma()
    assert mag.attach(MN_DHCP, T0)
    armed = mag.arm_ipv4(MN_DHCP, DHCP_PREFIX.prefixlen, T0)
    assert armed is not None
    sequence, packet, hoa_at, _lmaa = armed
    _src, _dst, mh = unwrap(patch(packet, hoa_at, HOA))
    lma.receive_ipv6(mh, MAG1, T0 + 0.001)
    (pba_tx,) = lma.datagrams_to_send()
    pba = decode(pba_tx.data)
    assert isinstance(pba, BindingAck) and pba.status == 0 and pba.sequence == sequence
    assert mag.armed_sent(MN_DHCP, sequence, HOA, DHCP_PREFIX.prefixlen, T0)
    assert mag.reporting_ipv4(MN_DHCP) == (sequence, HOA, LMAA)
    mag.learn_ipv4(MN_DHCP, HOA, DHCP_PREFIX.prefixlen, T0 + 0.001)  # the OFFER's copy
    assert mag.datagrams_to_send() == []  # already on its way
    mag.receive_ipv6(pba_tx.data, LMAA, T0 + 0.002)
    granted = of(events(mag), Ipv4Granted)
    assert [g.hoa for g in granted] == [HOA]
    assert mag.entry(MN_DHCP).registered


def test_an_armed_pbu_never_sent_costs_a_sequence_number_only() -> None:
    """No armed_sent (the kernel could not send it): learn_ipv4 sends its own PBU, with
    the next number, and a late armed_sent changes nothing."""
    mag = make_mag()
    assert mag.attach(MN_DHCP, T0)
    armed = mag.arm_ipv4(MN_DHCP, DHCP_PREFIX.prefixlen, T0)
    assert armed is not None
    mag.learn_ipv4(MN_DHCP, HOA, DHCP_PREFIX.prefixlen, T0 + 0.001)
    (tx,) = mag.datagrams_to_send()
    msg = decode(tx.data)
    assert isinstance(msg, BindingUpdate) and msg.sequence == (armed[0] + 1) & 0xFFFF
    assert not mag.armed_sent(MN_DHCP, armed[0], HOA, DHCP_PREFIX.prefixlen, T0)
    assert mag.reporting_ipv4(MN_DHCP) == (msg.sequence, HOA, LMAA)


def test_nothing_is_armed_but_for_an_mn_waiting_for_its_address() -> None:
    """An MN whose address the LMA allocates registers at attach; one over IPv4/UDP goes
    in UDP (the kernel sends IPv6 only); a held LMA sends nothing."""
    mag = make_mag()
    assert mag.attach(MN_LMA, T0)
    assert mag.arm_ipv4(MN_LMA, 32, T0) is None
    over_ipv4 = make_mag(transport="ipv4")
    assert over_ipv4.attach(MN_DHCP, T0)
    assert over_ipv4.arm_ipv4(MN_DHCP, 16, T0) is None
    held = make_mag()
    held.hold("lma1")
    assert held.attach(MN_DHCP, T0)
    assert held.arm_ipv4(MN_DHCP, 16, T0) is None
    assert mag.arm_ipv4(b"unknown@example.net", 16, T0) is None
