"""A tiny pcap writer and tshark helpers for checking what we put on the wire.

No scapy: packets are built by hand so the test owns every byte. Two forms are written:

* IPv6 / MH (Next Header 135), the plain PMIPv6 transport;
* IPv4 / UDP (dst port 5436, pmip6-cntl) / IPv6 / MH, the seed draft's Figure 6 and the
  RFC 5844 §4 IPv4 transport, with correct IPv4 header and UDP checksums.

Frames use LINKTYPE_RAW (101): each record starts with the IP header and tshark picks IPv4 or
IPv6 from the version nibble, so both forms can sit in one file.

tshark 4.0 dissects UDP port 5436 as a bare Mobility Header, so the UDP form needs
``-d udp.port==5436,ipv6`` (wire-facts.md); :func:`tshark_fields` adds it by default.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from pmip_agent.wire.constants import PMIP6_CNTL_PORT
from pmip_agent.wire.ipv6 import wrap

LINKTYPE_RAW = 101  # raw IPv4 or IPv6, chosen by the version nibble
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

_PCAP_GLOBAL = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
_PCAP_MAGIC = 0xA1B2C3D4

IPPROTO_UDP = 17
DECODE_AS_UDP5436_IPV6 = f"udp.port=={PMIP6_CNTL_PORT},ipv6"
EXPERT_FILTER = "_ws.malformed || _ws.expert"
# Unit separator: never part of an address, number or NAI we put in a test message.
_SEP = "\x1f"
# Between repeated occurrences of one field. Not tshark's default ",", which also appears
# inside values such as mip6.timestamp_tmp ("Nov 14, 2023 ...").
AGGREGATOR = "|"


# --- checksums and packet builders ---------------------------------------------------------


def ones_complement_checksum(data: bytes) -> int:
    """RFC 1071 checksum, written independently of the codec's so it can cross-check it."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv6_mh_packet(mh: bytes, src: IPv6Address, dst: IPv6Address) -> bytes:
    """IPv6 header (Next Header 135) + Mobility Header, via the codec's own ``wrap``."""
    return wrap(mh, src, dst)


def udp4_packet(
    payload: bytes,
    src: IPv4Address,
    dst: IPv4Address,
    sport: int = PMIP6_CNTL_PORT,
    dport: int = PMIP6_CNTL_PORT,
    ttl: int = 64,
    ident: int = 1,
) -> bytes:
    """IPv4 + UDP + payload with a correct IPv4 header checksum and UDP checksum."""
    udp_len = 8 + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_UDP, udp_len)
    udp_wo_sum = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp_sum = ones_complement_checksum(pseudo + udp_wo_sum) or 0xFFFF  # RFC 768: 0 is sent as ~0
    udp = udp_wo_sum[:6] + struct.pack("!H", udp_sum) + udp_wo_sum[8:]
    total = 20 + udp_len
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, ttl, IPPROTO_UDP, 0, src.packed, dst.packed
    )
    hdr = hdr[:10] + struct.pack("!H", ones_complement_checksum(hdr)) + hdr[12:]
    return hdr + udp


def udp4_ipv6_mh_packet(
    mh: bytes,
    src6: IPv6Address,
    dst6: IPv6Address,
    src4: IPv4Address,
    dst4: IPv4Address,
    sport: int = PMIP6_CNTL_PORT,
) -> bytes:
    """IPv4 / UDP (dst 5436) / IPv6 / MH, the seed's Figure 6 layout."""
    return udp4_packet(wrap(mh, src6, dst6), src4, dst4, sport=sport)


# --- pcap ----------------------------------------------------------------------------------


def write_pcap(path: Path | str, packets: Iterable[bytes], linktype: int = LINKTYPE_RAW) -> Path:
    """Write classic little-endian pcap, one record per packet, one second apart."""
    path = Path(path)
    with path.open("wb") as f:
        f.write(_PCAP_GLOBAL.pack(_PCAP_MAGIC, 2, 4, 0, 0, 65535, linktype))
        for i, pkt in enumerate(packets):
            f.write(_PCAP_RECORD.pack(1_700_000_000 + i, 0, len(pkt), len(pkt)))
            f.write(pkt)
    return path


def read_pcap(path: Path | str) -> tuple[int, list[bytes]]:
    """(linktype, packets) of a file written by :func:`write_pcap`; used to test the writer."""
    data = Path(path).read_bytes()
    magic, major, minor, _zone, _sig, _snap, linktype = _PCAP_GLOBAL.unpack_from(data)
    if (magic, major, minor) != (_PCAP_MAGIC, 2, 4):
        raise ValueError("not a little-endian pcap 2.4 file")
    packets, off = [], _PCAP_GLOBAL.size
    while off < len(data):
        _sec, _usec, incl, orig = _PCAP_RECORD.unpack_from(data, off)
        off += _PCAP_RECORD.size
        if incl != orig:
            raise ValueError("truncated record")
        packets.append(data[off : off + incl])
        off += incl
    return linktype, packets


# --- tshark --------------------------------------------------------------------------------


def tshark_binary() -> str:
    """Path of tshark. Missing tshark FAILS the caller (``make test`` installs it): it must
    never turn into a skip that hides an unchecked wire format."""
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed; `make test` installs it (apt package tshark)")
    return path


def _run_tshark(args: Sequence[str]) -> str:
    proc = subprocess.run(
        [tshark_binary(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"tshark {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def _dissect_opts(decode_as_udp5436_ipv6: bool) -> list[str]:
    # Checksum validation on, so a wrong IPv4 or UDP checksum becomes expert info too.
    # (tshark has no MH checksum check at all: see test_wire_options for ours.)
    args = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    return [*args, "-d", DECODE_AS_UDP5436_IPV6] if decode_as_udp5436_ipv6 else args


def tshark_fields(
    pcap_path: Path | str,
    fields: Sequence[str],
    decode_as_udp5436_ipv6: bool = True,
    display_filter: str | None = None,
) -> list[dict[str, str]]:
    """One dict per frame: field name -> tshark's text for it ("" when absent; repeated
    occurrences joined by :data:`AGGREGATOR`)."""
    args = ["-n", "-r", str(pcap_path), *_dissect_opts(decode_as_udp5436_ipv6)]
    if display_filter:
        args += ["-Y", display_filter]
    args += ["-T", "fields", "-E", f"separator={_SEP}", "-E", f"aggregator={AGGREGATOR}"]
    args += ["-E", "occurrence=a", "-E", "quote=n"]
    for field in fields:
        args += ["-e", field]
    rows = []
    for line in _run_tshark(args).splitlines():
        values = line.split(_SEP)
        if len(values) != len(fields):
            raise AssertionError(
                f"tshark printed {len(values)} columns for {len(fields)}: {line!r}"
            )
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def expert_hits(pcap_path: Path | str, decode_as_udp5436_ipv6: bool = True) -> list[str]:
    """Frames matching ``_ws.malformed || _ws.expert``, each with tshark's expert messages."""
    rows = tshark_fields(
        pcap_path,
        ["frame.number", "_ws.expert.message", "_ws.expert.severity", "_ws.malformed"],
        decode_as_udp5436_ipv6,
        display_filter=EXPERT_FILTER,
    )
    return [
        f"frame {r['frame.number']}: expert={r['_ws.expert.message']!r} "
        f"severity={r['_ws.expert.severity']!r} malformed={r['_ws.malformed']!r}"
        for r in rows
    ]


def tshark_verbose(pcap_path: Path | str, decode_as_udp5436_ipv6: bool = True) -> str:
    """Full dissection text, attached to failure messages."""
    return _run_tshark(["-n", "-r", str(pcap_path), *_dissect_opts(decode_as_udp5436_ipv6), "-V"])


def assert_no_expert(pcap_path: Path | str, decode_as_udp5436_ipv6: bool = True) -> None:
    """Zero hits for ``_ws.malformed || _ws.expert`` (wire-facts.md: fail on any)."""
    hits = expert_hits(pcap_path, decode_as_udp5436_ipv6)
    if hits:
        raise AssertionError(
            "tshark flagged malformed/expert info:\n"
            + "\n".join(hits)
            + "\n\n"
            + tshark_verbose(pcap_path, decode_as_udp5436_ipv6)
        )


# str: the whole value; frozenset: any one of these whole values (e.g. a time field whose
# text format differs between tshark versions); list/tuple: the occurrences, in order.
Expected = str | frozenset[str] | Sequence[str]


def assert_tshark_decodes(
    packets: Sequence[bytes],
    expectations: Sequence[Mapping[str, Expected]],
    *,
    pcap_path: Path | str | None = None,
    decode_as_udp5436_ipv6: bool = True,
) -> list[dict[str, str]]:
    """Write ``packets`` to a pcap, check tshark's value for every expected field of every
    packet, and check there is no malformed or expert info at all.

    ``expectations[i]`` maps a tshark field to its expected text for packet ``i``: a string
    is compared with the whole value ("" = field absent), a frozenset lists acceptable whole
    values, a list/tuple gives the occurrences in order. Returns the decoded rows.
    Engine-emitted messages can be checked the same way.
    """
    if len(packets) != len(expectations):
        raise ValueError("one expectation mapping per packet")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(pcap_path) if pcap_path is not None else Path(tmp) / "check.pcap"
        write_pcap(path, packets)
        fields = sorted({"frame.number"} | {f for exp in expectations for f in exp})
        rows = tshark_fields(path, fields, decode_as_udp5436_ipv6)
        if len(rows) != len(packets):
            raise AssertionError(f"tshark read {len(rows)} frames, wrote {len(packets)}")
        problems = []
        for i, (row, exp) in enumerate(zip(rows, expectations, strict=True), start=1):
            for field, want in exp.items():
                value = row[field]
                if isinstance(want, str):
                    ok = value == want
                elif isinstance(want, frozenset):
                    ok = value in want
                else:
                    ok = (value.split(AGGREGATOR) if value else []) == list(want)
                if not ok:
                    problems.append(f"frame {i}: {field} = {value!r}, expected {want!r}")
        if problems:
            raise AssertionError(
                "tshark decoded unexpected values:\n"
                + "\n".join(problems)
                + "\n\n"
                + tshark_verbose(path, decode_as_udp5436_ipv6)
            )
        assert_no_expert(path, decode_as_udp5436_ipv6)
        return rows
