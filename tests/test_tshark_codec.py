"""tshark, an independent dissector, reads our PBUs and PBAs the way we meant them.

Both wire profiles (seed draft: options 29-32 and 38; RFC 5844: 36-39), both transports
(IPv6 / MH and IPv4 / UDP 5436 / IPv6 / MH), and zero malformed or expert items. tshark is
installed by ``make test``; without it these tests fail rather than skip.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pcap
import pytest
from pcap import (
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    Expected,
    assert_no_expert,
    assert_tshark_decodes,
    ipv6_mh_packet,
    ones_complement_checksum,
    read_pcap,
    tshark_fields,
    udp4_ipv6_mh_packet,
    udp4_packet,
    write_pcap,
)

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
    NatDetection,
    Timestamp,
    WireProfile,
    encode,
)

MAG6 = IPv6Address("2001:db8:1::1")  # v6MAG / Proxy-CoA
LMA6 = IPv6Address("2001:db8:2::1")  # LMAA
MAG4 = IPv4Address("192.0.2.1")  # IPv4-Proxy-CoA
LMA4 = IPv4Address("198.51.100.1")  # IPv4-LMAA
MAG_PORT = 49152
NAI = b"mn1@example.net"
TS = Timestamp.from_seconds(1_700_000_000.5)
# tshark 4.0 prints absolute times like this in -T fields; later versions may use ISO 8601.
TS_TEXT = frozenset({"Nov 14, 2023 22:13:20.500000000 UTC", "2023-11-14T22:13:20.500000000Z"})
HNP = HomeNetworkPrefix(IPv6Address("2001:db8:aa::"), 64)

COMMON_PBU = (MnIdentifier(NAI), HomeNetworkPrefix(IPv6Address("::"), 0))
COMMON_PBU_TAIL = (HandoffIndicatorOption(1), AccessTechTypeOption(4), TS)
COMMON_PBA = (MnIdentifier(NAI), HNP, HandoffIndicatorOption(1), AccessTechTypeOption(4), TS)

# Each option's tshark field is checked with the octets of the option itself (Type, Len,
# body), hand-computed from the RFC figure, plus the decoded sub-fields.
ALL_OPTION_FIELDS = [
    "mip6.options.ipv4ha",  # 29
    "mip6.options.ipv4aa",  # 30
    "mip6.options.natd",  # 31
    "mip6.options.ipv4coa",  # 32
    "mip6.options.ipv4hareq",  # 36
    "mip6.options.ipv4harep",  # 37
    "mip6.options.ipv4dra",  # 38
    "mip6.options.ipv4dsm",  # 39
]


def absent_except(**present: str) -> dict[str, str]:
    """Every IPv4 option field empty, except the ones given (by option field suffix)."""
    out = {f: "" for f in ALL_OPTION_FIELDS}
    for key, value in present.items():
        out[f"mip6.options.{key}"] = value
    return out


def common_pbu_fields(msg: BindingUpdate, mh: bytes) -> dict[str, Expected]:
    return {
        "mip6.proto": "59",
        "mip6.mhtype": "5",
        "mip6.hlen": str(len(mh) // 8 - 1),
        "mip6.csum": f"0x{mh[4]:02x}{mh[5]:02x}",
        "mip6.bu.seqnr": str(msg.sequence),
        "mip6.bu.lifetime": str(msg.lifetime),
        "mip6.bu.a_flag": "1",
        "mip6.bu.h_flag": "0",
        "mip6.bu.p_flag": "1",
        "mip6.mnid.subtype": "1",
        "mip6.mnid.identifier": "mn1@example.net",
        "mip6.nemo.mnp.mnp": "::",
        "mip6.nemo.mnp.pfl": "0",
        "mip6.hi": "1",
        "mip6.att": "4",
        "mip6.timestamp_tmp": TS_TEXT,
    }


def common_pba_fields(msg: BindingAck, mh: bytes) -> dict[str, Expected]:
    return {
        "mip6.proto": "59",
        "mip6.mhtype": "6",
        "mip6.hlen": str(len(mh) // 8 - 1),
        "mip6.csum": f"0x{mh[4]:02x}{mh[5]:02x}",
        "mip6.ba.status": str(msg.status),
        "mip6.ba.seqnr": str(msg.sequence),
        "mip6.ba.lifetime": str(msg.lifetime),
        "mip6.ba.p_flag": "1",
        "mip6.ba.k_flag": "0",
        "mip6.mnid.identifier": "mn1@example.net",
        "mip6.nemo.mnp.mnp": "2001:db8:aa::",
        "mip6.nemo.mnp.pfl": "64",
        "mip6.hi": "1",
        "mip6.att": "4",
        "mip6.timestamp_tmp": TS_TEXT,
    }


def profile_cases(profile: WireProfile) -> list[tuple[BindingUpdate | BindingAck, dict]]:
    """(message, expected tshark fields) for a representative PBU/PBA exchange."""
    if profile is WireProfile.DRAFT:
        pbu = BindingUpdate(
            0x2A01,
            150,
            BuFlags.A | BuFlags.P,
            (
                *COMMON_PBU,
                *COMMON_PBU_TAIL,
                Ipv4HomeAddress(IPv4Address("0.0.0.0")),  # seed §3.3: ask for dynamic HoA
                Ipv4CareOfAddress(MAG4),  # seed §4.3: NAT detection
            ),
        )
        pbu_fields = {
            "mip6.ipv4ha.ha": "0.0.0.0",
            "mip6.ipv4ha.preflen": "0",
            "mip6.ipv4ha.p_flag": "0",
            "mip6.ipv4coa.addr": "192.0.2.1",
            **absent_except(ipv4ha="1d06000000000000", ipv4coa="20060000c0000201"),
        }
        rereg = BindingUpdate(
            0x2A02,
            150,
            BuFlags.A | BuFlags.P,
            (
                *COMMON_PBU,
                *COMMON_PBU_TAIL,
                Ipv4HomeAddress(IPv4Address("10.0.0.5"), 24, p_flag=True),
                Ipv4CareOfAddress(MAG4),
            ),
        )
        rereg_fields = {
            "mip6.ipv4ha.ha": "10.0.0.5",
            "mip6.ipv4ha.preflen": "24",
            "mip6.ipv4ha.p_flag": "1",  # mask 0x0200 of the word (RFC 5555 §3.1.1)
            **absent_except(ipv4ha="1d0662000a000005", ipv4coa="20060000c0000201"),
        }
        pba = BindingAck(
            0,
            0x2A01,
            150,
            BaFlags.P,
            (
                *COMMON_PBA,
                Ipv4AddressAck(0, 24, IPv4Address("10.0.0.5")),
                NatDetection(110, forced=True),
                Ipv4DefaultRouter(IPv4Address("10.0.0.1")),
            ),
        )
        pba_fields = {
            "mip6.ipv4aa.sts": "0",
            "mip6.ipv4ha.preflen": "24",
            "mip6.ipv4ha.ha": "10.0.0.5",
            "mip6.natd.f_flag": "1",
            "mip6.natd.refresh_t": "110",
            "mip6.ipv4dra.dra": "10.0.0.1",
            **absent_except(
                ipv4aa="1e0600600a000005", natd="1f068000" + "0000006e", ipv4dra="260600000a000001"
            ),
        }
        nack = BindingAck(
            129, 0x2A02, 0, BaFlags.P, (*COMMON_PBA, Ipv4AddressAck(132, 0, IPv4Address("0.0.0.0")))
        )
        nack_fields = {
            "mip6.ipv4aa.sts": "132",
            "mip6.ipv4ha.ha": "0.0.0.0",
            **absent_except(ipv4aa="1e06840000000000"),
        }
    else:
        pbu = BindingUpdate(
            0x3B01,
            150,
            BuFlags.A | BuFlags.P,
            (
                *COMMON_PBU,
                *COMMON_PBU_TAIL,
                LinkLocalAddress(IPv6Address("fe80::1")),
                Ipv4HoaRequest(IPv4Address("0.0.0.0")),  # RFC 5844 §3.3.1: dynamic
            ),
        )
        pbu_fields = {
            "mip6.lila_lla": "fe80::1",
            "mip6.ipv4ha.ha": "0.0.0.0",
            "mip6.ipv4ha.preflen": "0",
            **absent_except(ipv4hareq="2406000000000000"),
        }
        rereg = BindingUpdate(
            0x3B02,
            150,
            BuFlags.A | BuFlags.P,
            (*COMMON_PBU, *COMMON_PBU_TAIL, Ipv4HoaRequest(IPv4Address("10.0.0.5"), 24)),
        )
        rereg_fields = {
            "mip6.ipv4ha.ha": "10.0.0.5",
            "mip6.ipv4ha.preflen": "24",
            **absent_except(ipv4hareq="240660000a000005"),
        }
        pba = BindingAck(
            0,
            0x3B01,
            150,
            BaFlags.P,
            (
                *COMMON_PBA,
                Ipv4HoaReply(0, 24, IPv4Address("10.0.0.5")),
                Ipv4DefaultRouter(IPv4Address("10.0.0.1")),
                Ipv4DhcpSupportMode(True),
            ),
        )
        pba_fields = {
            "mip6.ipv4aa.sts": "0",
            "mip6.ipv4ha.preflen": "24",
            "mip6.ipv4ha.ha": "10.0.0.5",
            "mip6.ipv4dra.dra": "10.0.0.1",
            "mip6.ipv4dsm.s_flag": "1",
            **absent_except(
                ipv4harep="250600600a000005", ipv4dra="260600000a000001", ipv4dsm="27020001"
            ),
        }
        nack = BindingAck(
            171,  # NOT_AUTHORIZED_FOR_IPV4_HOME_ADDRESS
            0x3B02,
            0,
            BaFlags.P,
            (
                *COMMON_PBA,
                Ipv4HoaReply(129, 0, IPv4Address("0.0.0.0")),
                Ipv4DhcpSupportMode(False),
            ),
        )
        nack_fields = {
            "mip6.ipv4aa.sts": "129",
            "mip6.ipv4dsm.s_flag": "0",
            **absent_except(ipv4harep="2506810000000000", ipv4dsm="27020000"),
        }
    return [(pbu, pbu_fields), (rereg, rereg_fields), (pba, pba_fields), (nack, nack_fields)]


def packets_and_expectations(profile: WireProfile) -> tuple[list[bytes], list[dict]]:
    """Each message twice: IPv6 / MH, then IPv4 / UDP / IPv6 / MH (MAG port 49152 <-> 5436)."""
    packets, expectations = [], []
    for msg, fields in profile_cases(profile):
        to_lma = isinstance(msg, BindingUpdate)
        src6, dst6 = (MAG6, LMA6) if to_lma else (LMA6, MAG6)
        src4, dst4 = (MAG4, LMA4) if to_lma else (LMA4, MAG4)
        mh = encode(msg, src6, dst6)
        common = common_pbu_fields(msg, mh) if to_lma else common_pba_fields(msg, mh)
        inner = {"ipv6.src": str(src6), "ipv6.dst": str(dst6), "ipv6.nxt": "135"}
        packets.append(ipv6_mh_packet(mh, src6, dst6))
        expectations.append({**common, **fields, **inner, "ip.src": "", "udp.dstport": ""})
        sport = MAG_PORT if to_lma else 5436
        dport = 5436 if to_lma else MAG_PORT
        packets.append(
            udp4_packet(ipv6_mh_packet(mh, src6, dst6), src4, dst4, sport=sport, dport=dport)
        )
        expectations.append(
            {
                **common,
                **fields,
                **inner,
                "ip.src": str(src4),
                "ip.dst": str(dst4),
                "ip.proto": "17",
                "ip.checksum.status": "1",  # Good, with ip.check_checksum on
                "udp.srcport": str(sport),
                "udp.dstport": str(dport),
                "udp.checksum.status": "1",
            }
        )
    return packets, expectations


@pytest.mark.tshark
@pytest.mark.parametrize("profile", list(WireProfile))
def test_tshark_decodes_profile(profile, tmp_path):
    """Seed §3.3/§4.4 (draft profile) and RFC 5844 §3.3/§4 (rfc5844 profile): PBU, re-
    registration PBU, PBA and a refusing PBA, in both transports, read back field by field
    with no malformed or expert item."""
    packets, expectations = packets_and_expectations(profile)
    rows = assert_tshark_decodes(packets, expectations, pcap_path=tmp_path / f"{profile}.pcap")
    assert len(rows) == 8


@pytest.mark.tshark
def test_tshark_needs_decode_as_for_the_seed_udp_layout(tmp_path):
    """wire-facts.md: tshark 4.0 reads UDP 5436 as a bare MH; the seed's IPv4/UDP/IPv6/MH
    layout is only dissected to the MH with ``-d udp.port==5436,ipv6``."""
    mh = encode(BindingUpdate(1, 1, options=(MnIdentifier(NAI),)), MAG6, LMA6)
    path = write_pcap(tmp_path / "udp.pcap", [udp4_ipv6_mh_packet(mh, MAG6, LMA6, MAG4, LMA4)])
    with_da = tshark_fields(path, ["frame.protocols", "mip6.mnid.identifier"])
    assert with_da == [
        {"frame.protocols": "raw:ip:udp:ipv6:mipv6", "mip6.mnid.identifier": "mn1@example.net"}
    ]
    without = tshark_fields(path, ["frame.protocols", "ipv6.src"], decode_as_udp5436_ipv6=False)
    assert without[0]["ipv6.src"] == ""  # not dissected as inner IPv6 without -d


@pytest.mark.tshark
def test_tshark_gre_key_option(tmp_path):
    """RFC 5845: GRE Key with (Len 6) and without (Len 2) a key; tshark shows the key only
    when present and flags neither."""
    packets = [
        ipv6_mh_packet(encode(BindingUpdate(1, 1, options=(opt,)), MAG6, LMA6), MAG6, LMA6)
        for opt in (GreKey(0x12345678), GreKey())
    ]
    assert_tshark_decodes(
        packets,
        [
            {"mip6.gre_key": "305419896", "mip6.options.grek": "2106000012345678"},
            {"mip6.gre_key": "", "mip6.options.grek": "21020000"},
        ],
        pcap_path=tmp_path / "gre.pcap",
    )


@pytest.mark.tshark
def test_tshark_reads_repeated_hnp_options(tmp_path):
    """RFC 5213 §5.3.1: one HNP option per prefix; every one sits on 8n+4 and tshark reads
    them in order (list expectations compare occurrence by occurrence)."""
    hnps = (HNP, HomeNetworkPrefix(IPv6Address("2001:db8:bb::"), 56))
    mh = encode(BindingAck(0, 9, 9, BaFlags.P, (MnIdentifier(NAI), *hnps)), LMA6, MAG6)
    assert_tshark_decodes(
        [ipv6_mh_packet(mh, LMA6, MAG6)],
        [
            {
                "mip6.nemo.mnp.mnp": ["2001:db8:aa::", "2001:db8:bb::"],
                "mip6.nemo.mnp.pfl": ["64", "56"],
            }
        ],
        pcap_path=tmp_path / "hnp.pcap",
    )


@pytest.mark.tshark
@pytest.mark.parametrize(("linktype", "v4"), [(LINKTYPE_IPV6, False), (LINKTYPE_IPV4, True)])
def test_tshark_reads_ip_linktypes(linktype, v4, tmp_path):
    """The writer also produces LINKTYPE_IPV6 (229) and LINKTYPE_IPV4 (228) files."""
    mh = encode(BindingAck(0, 5, 5, options=(MnIdentifier(NAI),)), LMA6, MAG6)
    pkt = udp4_ipv6_mh_packet(mh, LMA6, MAG6, LMA4, MAG4) if v4 else ipv6_mh_packet(mh, LMA6, MAG6)
    path = write_pcap(tmp_path / "lt.pcap", [pkt], linktype=linktype)
    assert tshark_fields(path, ["mip6.mhtype", "mip6.ba.seqnr"]) == [
        {"mip6.mhtype": "6", "mip6.ba.seqnr": "5"}
    ]
    assert_no_expert(path)


# --- the checks themselves can fail --------------------------------------------------------


@pytest.mark.tshark
def test_expert_check_catches_malformed_option(tmp_path):
    """A HNP with Len 17 (RFC 5213 §8.3 says 18) is reported by tshark, and our helper
    turns that into a failure: the zero-expert assertion is not vacuous."""
    mh = bytearray(encode(BindingUpdate(1, 1, options=(HNP,)), MAG6, LMA6))
    assert mh[12:14] == b"\x16\x12"
    mh[13] = 17
    with pytest.raises(AssertionError, match="should be 18"):
        assert_tshark_decodes(
            [ipv6_mh_packet(bytes(mh), MAG6, LMA6)], [{}], pcap_path=tmp_path / "m.pcap"
        )


@pytest.mark.tshark
def test_expert_check_catches_bad_udp_checksum(tmp_path):
    """With checksum validation on, a wrong UDP checksum is an expert item too."""
    mh = encode(BindingUpdate(1, 1, options=(MnIdentifier(NAI),)), MAG6, LMA6)
    pkt = bytearray(udp4_ipv6_mh_packet(mh, MAG6, LMA6, MAG4, LMA4))
    pkt[26] ^= 0xFF  # UDP checksum, high octet
    with pytest.raises(AssertionError, match=r"(?i)bad checksum"):
        assert_tshark_decodes([bytes(pkt)], [{}], pcap_path=tmp_path / "c.pcap")


@pytest.mark.tshark
def test_field_mismatch_is_reported(tmp_path):
    mh = encode(BindingAck(0, 5, 5, BaFlags.P), LMA6, MAG6)
    with pytest.raises(AssertionError, match=r"mip6\.ba\.status = '0', expected '1'"):
        assert_tshark_decodes(
            [ipv6_mh_packet(mh, LMA6, MAG6)],
            [{"mip6.ba.status": "1"}],
            pcap_path=tmp_path / "f.pcap",
        )


@pytest.mark.tshark
def test_tshark_does_not_check_mh_checksum(tmp_path):
    """Finding recorded in wire-facts.md: tshark 4.0 has no MH checksum validation, so a
    wrong one passes the expert check; test_wire_options verifies ours instead."""
    mh = bytearray(encode(BindingUpdate(1, 1, options=(MnIdentifier(NAI),)), MAG6, LMA6))
    mh[4:6] = b"\x12\x34"
    path = write_pcap(tmp_path / "k.pcap", [ipv6_mh_packet(bytes(mh), MAG6, LMA6)])
    assert tshark_fields(path, ["mip6.csum"]) == [{"mip6.csum": "0x1234"}]
    assert_no_expert(path)


def test_missing_tshark_fails_instead_of_skipping(monkeypatch, tmp_path):
    """`make test` installs tshark, so its absence is an error, never a silent skip."""
    monkeypatch.setattr(pcap.shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match="tshark is not installed"):
        tshark_fields(tmp_path / "none.pcap", ["frame.number"])


# --- the pcap writer -----------------------------------------------------------------------


def test_udp4_packet_checksums():
    """RFC 791 header checksum and RFC 768 UDP checksum (pseudo-header, protocol 17) both
    sum to zero over the packet; the UDP destination port is pmip6-cntl 5436 (RFC 5844 §4)."""
    payload = ipv6_mh_packet(encode(BindingUpdate(1, 1), MAG6, LMA6), MAG6, LMA6)
    pkt = udp4_ipv6_mh_packet(encode(BindingUpdate(1, 1), MAG6, LMA6), MAG6, LMA6, MAG4, LMA4)
    assert pkt[28:] == payload
    assert ones_complement_checksum(pkt[:20]) == 0
    assert struct.unpack("!HHHH", pkt[20:28])[1:3] == (5436, 8 + len(payload))
    pseudo = MAG4.packed + LMA4.packed + struct.pack("!BBH", 0, 17, 8 + len(payload))
    assert ones_complement_checksum(pseudo + pkt[20:]) == 0
    assert pkt[9] == 17 and struct.unpack("!H", pkt[2:4])[0] == len(pkt)


def test_udp_zero_checksum_is_sent_as_ffff():
    """RFC 768: a computed UDP checksum of zero is transmitted as all ones. A payload word
    equal to the checksum of the zero payload makes the sum come out as zero."""
    base = udp4_packet(bytes(4), MAG4, LMA4)[26:28]
    pkt = udp4_packet(base + b"\0\0", MAG4, LMA4)
    assert pkt[26:28] == b"\xff\xff"
    pseudo = MAG4.packed + LMA4.packed + struct.pack("!BBH", 0, 17, 12)
    assert ones_complement_checksum(pseudo + pkt[20:]) == 0


def test_pcap_file_round_trip(tmp_path):
    pkts = [b"\x60" + bytes(39), b"\x45" + bytes(27)]
    path = write_pcap(tmp_path / "rt.pcap", pkts)
    assert read_pcap(path) == (pcap.LINKTYPE_RAW, pkts)
    assert path.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"  # little-endian classic pcap magic
