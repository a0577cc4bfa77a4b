"""tshark as an independent decoder of what the engines actually send.

A MAG and an LMA engine run real exchanges - the three IPv4 modes, a refused address, a
refresh and a de-registration - in both wire profiles, over IPv6 and over IPv4/UDP
through a NAT. Every message either engine emits is written to a pcap in its on-the-wire
form (IPv6/MH, or IPv4/UDP 5436/IPv6/MH), and tshark must decode each field the way our
own codec does, with no malformed packet and no expert info.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from engine_helpers import (
    IPV4_LMAA,
    LMAA,
    MAG1,
    MAG1_V4,
    MN_DHCP,
    MN_LMA,
    MN_STATIC,
    NAT_PORT,
    NAT_V4,
    T0,
    make_lma,
    make_mag,
)
from pcap import assert_tshark_decodes, ipv6_mh_packet, udp4_packet

from pmip_agent.core.events import Transmit
from pmip_agent.wire import (
    AccessTechTypeOption,
    BindingAck,
    BindingUpdate,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4CareOfAddress,
    Ipv4DefaultRouter,
    Ipv4DhcpSupportMode,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    NatDetection,
    WireProfile,
    decode,
    mh_checksum,
)
from pmip_agent.wire.ipv6 import unwrap

pytestmark = pytest.mark.tshark


def _packet(tx: Transmit, from_mag: bool) -> tuple[bytes, BindingUpdate | BindingAck]:
    """The Transmit as it appears on the wire between MAG and LMA."""
    if tx.peer.v4 is None:
        src, dst = (MAG1, LMAA) if from_mag else (LMAA, MAG1)
        mh = tx.data
        mh = mh[:4] + mh_checksum(mh, src, dst).to_bytes(2, "big") + mh[6:]  # as the kernel
        return ipv6_mh_packet(mh, src, dst), decode(mh, src, dst)
    _src6, _dst6, mh = unwrap(tx.data)
    if from_mag:  # before the NAT: from the MAG's own address
        packet = udp4_packet(tx.data, MAG1_V4, IPV4_LMAA)
    else:  # the LMA answers the NAT's address and port it saw
        packet = udp4_packet(tx.data, IPV4_LMAA, tx.peer.v4, dport=tx.peer.port)
    return packet, decode(mh)


def _expected(msg: BindingUpdate | BindingAck) -> dict[str, object]:
    """What tshark must show, derived from our codec's reading of the same bytes."""
    exp: dict[str, object] = {}
    if isinstance(msg, BindingUpdate):
        exp.update(
            {
                "mip6.mhtype": "5",
                "mip6.bu.p_flag": "1",
                "mip6.bu.a_flag": "1",
                "mip6.bu.seqnr": str(msg.sequence),
                "mip6.bu.lifetime": str(msg.lifetime),
            }
        )
    else:
        exp.update(
            {
                "mip6.mhtype": "6",
                "mip6.ba.p_flag": "1",
                "mip6.ba.status": str(msg.status),
                "mip6.ba.seqnr": str(msg.sequence),
                "mip6.ba.lifetime": str(msg.lifetime),
            }
        )
    hnps = []
    for opt in msg.options:
        kind = type(opt)
        if kind is MnIdentifier:
            exp["mip6.mnid.identifier"] = opt.identifier.decode()
        elif kind is HomeNetworkPrefix:
            hnps.append(opt)
        elif kind is HandoffIndicatorOption:
            exp["mip6.hi"] = str(opt.value)
        elif kind is AccessTechTypeOption:
            exp["mip6.att"] = str(opt.value)
        elif kind in (Ipv4HomeAddress, Ipv4HoaRequest):
            exp["mip6.ipv4ha.ha"] = str(opt.address)
            exp["mip6.ipv4ha.preflen"] = str(opt.prefix_len)
        elif kind in (Ipv4AddressAck, Ipv4HoaReply):
            exp["mip6.ipv4aa.sts"] = str(opt.status)
        elif kind is Ipv4DefaultRouter:
            exp["mip6.ipv4dra.dra"] = str(opt.address)
        elif kind is Ipv4DhcpSupportMode:
            exp["mip6.ipv4dsm.s_flag"] = "1" if opt.server else "0"
        elif kind is NatDetection:
            exp["mip6.natd.refresh_t"] = str(opt.refresh_time)
            exp["mip6.natd.f_flag"] = "1" if opt.forced else "0"
        elif kind is Ipv4CareOfAddress:
            exp["mip6.ipv4coa.addr"] = str(opt.address)
    if hnps:
        exp["mip6.nemo.mnp.mnp"] = [str(o.prefix) for o in hnps]
        exp["mip6.nemo.mnp.pfl"] = [str(o.prefix_len) for o in hnps]
    return exp


def _exchange(profile: WireProfile, transport: str) -> list[tuple[bytes, dict[str, object]]]:
    """Run the scenarios and keep every message each engine sent, in order."""
    lma = make_lma()
    mag = make_mag(transport=transport, wire_profile=profile)
    seen: list[tuple[bytes, dict[str, object]]] = []
    now = T0

    def carry() -> None:
        for _ in range(4):
            moved = False
            for tx in mag.datagrams_to_send():
                moved = True
                packet, msg = _packet(tx, from_mag=True)
                seen.append((packet, _expected(msg)))
                if tx.peer.v4 is None:
                    lma.receive_ipv6(tx.data, MAG1, now)
                else:
                    lma.receive_udp(tx.data, NAT_V4, NAT_PORT, now)
            for tx in lma.datagrams_to_send():
                moved = True
                packet, msg = _packet(tx, from_mag=False)
                seen.append((packet, _expected(msg)))
                if tx.peer.v4 is None:
                    mag.receive_ipv6(tx.data, LMAA, now)
                else:
                    mag.receive_udp(tx.data, IPV4_LMAA, 5436, now)
            if not moved:
                return

    mag.attach(MN_LMA, now)  # an address from the LMA's pool
    mag.attach(MN_STATIC, now)  # the profile's static address
    mag.attach(MN_DHCP, now)
    mag.learn_ipv4(MN_DHCP, IPv4Address("10.20.0.50"), 16, now)  # what a DHCP server gave
    carry()
    now += 1
    mag.learn_ipv4(MN_DHCP, IPv4Address("10.99.0.9"), 16, now)  # outside its prefix: refused
    carry()
    now = mag.get_timer() or now  # the next refresh or retransmission
    mag.handle_timer(now)
    carry()
    mag.detach(MN_LMA, now)  # de-registration
    carry()
    return seen


@pytest.mark.parametrize("transport", ["ipv6", "ipv4"])
@pytest.mark.parametrize("profile", [WireProfile.DRAFT, WireProfile.RFC5844])
def test_tshark_decodes_everything_the_engines_send(profile: WireProfile, transport: str) -> None:
    seen = _exchange(profile, transport)
    kinds = {e["mip6.mhtype"] for _p, e in seen}
    statuses = {e.get("mip6.ba.status") for _p, e in seen} - {None}
    assert kinds == {"5", "6"} and len(seen) >= 8, seen
    assert "0" in statuses and len(statuses) >= 2, statuses  # an accept and a refusal
    if transport == "ipv4":  # the NAT was detected and said so
        assert any("mip6.natd.refresh_t" in e for _p, e in seen)
    packets = [p for p, _e in seen]
    expectations = [e for _p, e in seen]
    assert_tshark_decodes(packets, expectations)  # type: ignore[arg-type]


def test_draft_and_rfc5844_engines_differ_on_the_wire() -> None:
    """The profile decides the codepoints: 29/30 in the draft, 36/37/39 in rfc5844."""
    draft = [e for _p, e in _exchange(WireProfile.DRAFT, "ipv6")]
    rfc = [e for _p, e in _exchange(WireProfile.RFC5844, "ipv6")]
    assert not any("mip6.ipv4dsm.s_flag" in e for e in draft)
    assert any("mip6.ipv4dsm.s_flag" in e for e in rfc)
    assert any(e.get("mip6.ipv4ha.ha") == "10.9.0.5" for e in draft + rfc)
