"""The data plane end to end, in namespaces: MN - MAG1/MAG2 - (NAT) - LMA - CN.

Real daemons with the data plane on; real TUN devices, raw and UDP sockets, nftables
masquerade, kernel routes and rules. The MN and CN are plain Linux hosts: busybox ping,
TCP and UDP sockets. Nothing of the data plane is replaced by a stand-in.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dataplane_lab import (
    CN_V4,
    CN_V6,
    MAG_ACCESS_MAC,
    MN_ID,
    NAT_OUTSIDE,
    ROUTER_V4,
    TUN_MTU,
    DataplaneLab,
    transfer,
)
from netns import Lab, wait_for
from pcap import ones_complement_checksum
from scapy.layers.inet import ICMP, IP, TCP, UDP, Ether
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap

pytestmark = pytest.mark.netns

TEN_MB = 10 * 1024 * 1024


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab("d" + re.sub(r"\W", "", request.node.name)[-5:])
    try:
        yield lab
    finally:
        lab.close()


def _ping(dp: DataplaneLab, dst: str, count: int = 3) -> str:
    out = dp.lab.run(dp.ns_mn, f"busybox ping -c {count} -W 2 -i 0.2 {dst}", check=False)
    return out.stdout + out.stderr


def _inner(frame: bytes, transport: str) -> list[bytes]:
    """The inner packets of a captured tunnel frame ([] for anything else). A frame of the
    IPv4-UDP tunnel may be a UDP GSO super-datagram (the capture sees it before the
    segmentation a NIC would do): its segments are whole inner packets, back to back."""
    eth = Ether(frame)
    if transport == "ipv6":
        if IPv6 in eth and eth[IPv6].nh in (4, 41):
            return [bytes(eth[IPv6].payload)]
    elif IP in eth:
        ip = eth[IP]
        if transport == "ipv4" and ip.proto in (4, 41):
            return [bytes(ip.payload)]
        if transport == "nat" and UDP in ip and 5437 in (ip[UDP].sport, ip[UDP].dport):
            data, out = bytes(frame[14 + ip.ihl * 4 + 8 :]), []
            while len(data) >= 20:
                size = (
                    int.from_bytes(data[2:4])
                    if data[0] >> 4 == 4
                    else 40 + int.from_bytes(data[4:6])
                )
                out.append(data[:size])
                data = data[size:]
            return out
    return []


def _checksums_ok(packet: bytes) -> bool:
    p = IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)
    original = bytes(p)
    for layer in (IP, TCP, UDP, ICMP):
        if layer in p:
            del p[layer].chksum
    return bytes(p.__class__(bytes(p))) == original


def _udp_tunnel_gso(daemon: Any) -> bool:
    """Whether the daemon's data plane writes IPv4-UDP bursts with UDP tunnel GSO: on
    kernels from 6.17 (its startup log names the TAP device, or says "off" and why)."""
    line = next(ln for ln in daemon.log.read_text().splitlines() if "data plane: " in ln)
    return "udp tunnel gso off" not in line


def _partial_burst_ok(packet: bytes) -> bool:
    """An IPv4 TCP super-packet as NEEDS_CSUM has it: total length and header checksum
    right, and the TCP checksum field holding the pseudo-header sum, which the kernel
    completes per segment."""
    p = IP(packet)
    if p.ihl != 5 or p.len != len(packet) or TCP not in p:
        return False
    if ones_complement_checksum(packet[:20]) != 0:
        return False
    pseudo = packet[12:20] + bytes((0, 6)) + (len(packet) - 20).to_bytes(2)
    return p[TCP].chksum == ~ones_complement_checksum(pseudo) & 0xFFFF  # the sum itself


def _tunnel_gso_writes(daemon: Any) -> int:
    """Stop ``daemon`` and return how many bursts its forwarder wrote to the TAP device
    (its stop log's counters). Fails the test if the kernel refused any."""
    daemon.stop()
    log = daemon.log.read_text()
    assert "udp tunnel gso refused" not in log
    line = next(ln for ln in log.splitlines() if "plane stopped" in ln)
    written = re.search(r"'tunnel-gso': (\d+)", line)
    assert written, line
    return int(written[1])


def _tun_delta(
    dp: DataplaneLab, ns: str, before: dict[str, Any], direction: str
) -> tuple[int, int]:
    """(bytes, packets) a TUN device counted in ``direction`` since ``before``."""
    now = dp.link_stats(ns, "pmip0")[direction]
    return now["bytes"] - before[direction]["bytes"], now["packets"] - before[direction]["packets"]


@pytest.mark.parametrize("transport", ["ipv6", "ipv4", "nat", "nat-strict-rp-filter"])
def test_ipv4_only_mn_reaches_the_cn_through_the_tunnel(
    lab: Lab, tmp_path: Path, transport: str
) -> None:
    """Seed §3.4/§3.5 (IPv6 transport: IPv4 in IPv6), §4.4/§4.5 (IPv4 transport: IPv4 in
    IPv4; behind a NAT: IPv4 in UDP 5437). Ping, then 10 MB each way over TCP with the
    SHA-256 checked; the packets crossed both TUN devices, and every tunnel packet
    captured on the LMA's transport link carries a valid inner packet. With strict
    reverse-path filtering on MAG1 its forwarder has no UDP tunnel GSO and cuts the
    bursts itself, the path of kernels before 6.17."""
    strict = transport == "nat-strict-rp-filter"
    transport = "nat" if strict else transport
    dp = DataplaneLab(lab, tmp_path, transport).build()
    if strict:
        for conf in ("all", "acc1", "tr0"):  # all strict; the links as loose as before
            lab.run(
                dp.ns_mags[0], f"sysctl -qw net.ipv4.conf.{conf}.rp_filter={1 + (conf != 'all')}"
            )
    dp.start()
    if strict:
        assert not _udp_tunnel_gso(dp.mags[0])
        assert "rp_filter is 1 (strict)" in dp.mags[0].log.read_text()
    entry = dp.register(0)
    hoa = entry["ipv4_hoa"]
    dp.configure_mn_ipv4(hoa)
    assert " 0% packet loss" in _ping(dp, CN_V4), _ping(dp, CN_V4)
    assert " 0% packet loss" in _ping(dp, ROUTER_V4, 1)  # the MAG answers for the router

    capture = dp.server(
        dp.ns_lma,
        "capture",
        "capture",
        "--iface",
        "tr0" if transport == "nat" else "br0",
        "--out",
        str(tmp_path / "wire.pcap"),
        "--count",
        "300",
        "--seconds",
        "20",
    )
    mag_tun = dp.link_stats(dp.ns_mags[0], "pmip0")
    lma_tun = dp.link_stats(dp.ns_lma, "pmip0")
    sent, received = transfer(dp, CN_V4, TEN_MB)
    assert received["bytes"] == sent["bytes"] == TEN_MB
    assert received["sha256"] == sent["sha256"]
    assert received["peer"] == hoa  # the CN saw the home address, not the MAG's
    # Both TUN devices carried it: the MAG's reads it out (tx), the LMA's writes it in (rx).
    mag_bytes, mag_reads = _tun_delta(dp, dp.ns_mags[0], mag_tun, "tx")
    lma_bytes, lma_writes = _tun_delta(dp, dp.ns_lma, lma_tun, "rx")
    assert mag_bytes >= TEN_MB and lma_bytes >= TEN_MB
    # The offloads took effect: the MAG read TSO super-packets (it cut them into
    # segments itself: what the capture below checks), and on the IPv4-UDP tunnel the
    # LMA wrote whole GRO runs. A TUN device counts a super-packet once. (Raw sockets
    # merge only the runs that queued up before a receive: how many depends on load.)
    assert mag_reads * 4 < mag_bytes / TUN_MTU, (mag_reads, mag_bytes)
    if transport == "nat":
        assert lma_writes * 4 < lma_bytes / TUN_MTU, (lma_writes, lma_bytes)
    assert capture.result(30)["frames"] > 0
    inner = [p for f in rdpcap(str(tmp_path / "wire.pcap")) for p in _inner(bytes(f), transport)]
    assert len(inner) > 100, "no tunnel packets on the transport link"
    packets = [p for p in inner if len(p) <= TUN_MTU]
    for packet in packets[:600]:  # scapy takes about a millisecond a packet
        assert _checksums_ok(packet), packet.hex()
    # Longer ones are UDP tunnel GSO bursts, which these veth links pass on whole (a NIC
    # cuts them: see the next test). Only where the MAG uses that offload.
    bursts = [p for p in inner if len(p) > TUN_MTU]
    if transport == "nat" and _udp_tunnel_gso(dp.mags[0]):
        assert bursts, "the MAG has UDP tunnel GSO, but no burst crossed the link whole"
        for burst in bursts[:50]:
            assert _partial_burst_ok(burst), burst[:60].hex()
    else:
        assert not bursts, [len(b) for b in bursts[:5]]
    if transport == "nat":
        assert dp.nat_data_bytes() >= TEN_MB  # through the NAT, on the data port

    # And back: CN -> MN (the LMA's host route, the MAG's delivery on the access link).
    sink = dp.server(dp.ns_mn, "sink", "sink", "--bind", hoa, "--port", "5002")
    source = dp.tool(
        dp.ns_cn, "source", "source", "--to", hoa, "--port", "5002", "--bytes", str(TEN_MB)
    )
    down, got = source.result(60), sink.result(30)
    assert got["sha256"] == down["sha256"] and got["bytes"] == TEN_MB


def test_udp_tunnel_gso_bursts_leave_a_plain_link_as_valid_datagrams(
    lab: Lab, tmp_path: Path
) -> None:
    """RFC 5844 §4 on the wire. MAG1's uplink is made a NIC without checksum or UDP
    tunnel segmentation offload, so its kernel cuts each burst the forwarder hands it
    (one TAP write, UDP tunnel GSO) into datagrams in software, as a real link needs
    them. Every tunnel datagram captured behind the NAT is then one inner packet that
    fits the tunnel MTU, with its IP and TCP checksums and the outer IP and UDP
    checksums right (the NAT rewrote the outer ones), and 10 MB arrive intact."""
    dp = DataplaneLab(lab, tmp_path, "nat").build()
    features = "tx off tx-udp_tnl-segmentation off tx-udp_tnl-csum-segmentation off"
    lab.run(dp.ns_mags[0], f"ethtool -K tr0 {features}")
    dp.start()
    if not _udp_tunnel_gso(dp.mags[0]):
        pytest.skip(
            "CANNOT RUN HERE: this kernel has no UDP tunnel GSO for TAP devices "
            "(TUN_F_UDP_TUNNEL_GSO, Linux 6.17); the forwarder cuts bursts itself"
        )
    hoa = dp.register(0)["ipv4_hoa"]
    dp.configure_mn_ipv4(hoa)
    assert " 0% packet loss" in _ping(dp, CN_V4), _ping(dp, CN_V4)
    pcap = tmp_path / "wire.pcap"
    capture = dp.server(
        dp.ns_lma, "capture", "capture", "--iface", "tr0", "--out", str(pcap),
        "--count", "400", "--seconds", "20",
    )  # fmt: skip
    sent, received = transfer(dp, CN_V4, TEN_MB)
    assert received["sha256"] == sent["sha256"] and received["bytes"] == TEN_MB
    assert capture.result(30)["frames"] > 0
    up = 0
    for frame in rdpcap(str(pcap)):
        eth = Ether(bytes(frame))
        if IP not in eth or UDP not in eth[IP] or eth[IP].src != NAT_OUTSIDE:
            continue  # the LMA's own sends carry partial checksums on this veth
        outer = bytes(eth[IP])
        assert _checksums_ok(outer), outer[:60].hex()  # outer IPv4 and UDP
        (packet,) = _inner(bytes(frame), "nat")
        assert len(packet) <= TUN_MTU, len(packet)
        assert _checksums_ok(packet), packet[:60].hex()
        up += len(packet) > 1000
    assert up > 100, f"{up} full-sized datagrams from MAG1 in the capture"
    assert _tunnel_gso_writes(dp.mags[0]) > 0


def test_dual_stack_mn_configures_its_home_prefix_from_router_advertisements(
    lab: Lab, tmp_path: Path
) -> None:
    """RFC 5213 §6.7: the MAG advertises the MN's home network prefix; the MN configures
    an address in it by SLAAC and reaches an IPv6 CN through the tunnel (IPv6 in IPv4/UDP,
    behind the NAT; its TCP bursts through UDP tunnel GSO where the kernel has it), its
    IPv4 working alongside."""
    dp = DataplaneLab(lab, tmp_path, "nat", dual_stack=True, ra_interval_s=120).build()
    dp.start()
    entry = dp.register(0)
    hnp = entry["ipv6_hnps"][0]
    addr = wait_for(dp.mn_global_ipv6, 15, what="an address from the advertised prefix")
    # The MN forgets it (its link flaps; the MAG's stays up): its Router Solicitation is
    # answered at once, not at the next periodic advertisement two minutes away.
    dp.lab.run(dp.ns_mn, "ip link set eth0 down")
    assert dp.mn_global_ipv6() is None
    dp.lab.run(dp.ns_mn, "ip link set eth0 up")
    assert wait_for(dp.mn_global_ipv6, 5, what="the address again, from a solicited RA") == addr
    assert addr.startswith(hnp.split("/")[0].rstrip(":"))
    mtu = dp.lab.run(dp.ns_mn, "cat /proc/sys/net/ipv6/conf/eth0/mtu").stdout.strip()
    assert mtu == str(TUN_MTU)  # the RA's MTU option: the tunnel's
    assert " 0% packet loss" in _ping(dp, CN_V6), _ping(dp, CN_V6)
    sent, received = transfer(dp, CN_V6, 2 * 1024 * 1024, port=5003)
    assert received["sha256"] == sent["sha256"]
    assert received["peer"] == addr
    dp.configure_mn_ipv4(entry["ipv4_hoa"])
    assert " 0% packet loss" in _ping(dp, CN_V4)
    if _udp_tunnel_gso(dp.mags[0]):  # IPv6 TCP bursts took the TAP device too
        assert _tunnel_gso_writes(dp.mags[0]) > 0


def test_ipv4_refused_means_no_ipv4_routing_at_all(lab: Lab, tmp_path: Path) -> None:
    """Seed §3.4: when the LMA refuses the IPv4 home address the MAG "MUST not enable
    IPv4 routing for the mobile node's IPv4 traffic". The MAG here could route the MN's
    packets natively (it has a route to the CN, the LMA forwards), and does, once its
    data plane is stopped: so the drop is the data plane's doing."""
    dp = DataplaneLab(lab, tmp_path, "ipv4", ipv4_authorized=False).build()
    dp.lab.run(dp.ns_mags[0], "ip route add 198.51.100.0/24 via 192.0.2.1")
    dp.lab.run(dp.ns_mags[0], "sysctl -qw net.ipv4.ip_forward=1")
    dp.start()
    dp.attach(0)
    wait_for(lambda: "IPv4 denied" in dp.mags[0].log_text(), 10, what="the MAG's IPv4 refusal")
    assert dp.mag_entry(0) is None
    # As if the MN insisted on an address, and knew the MAG's MAC: its packets do reach
    # the MAG (no router address answers ARP for a refused MN).
    dp.configure_mn_ipv4("10.10.0.2")
    dp.lab.run(dp.ns_mn, f"ip neigh replace {ROUTER_V4} lladdr {MAG_ACCESS_MAC} dev eth0")
    lma_in = dp.link_packets(dp.ns_lma, "pmip0")[0]  # what tunnels delivered at the LMA
    tun_capture = dp.server(
        dp.ns_mags[0], "capture", "capture", "--iface", "pmip0",
        "--out", str(tmp_path / "tun.pcap"), "--count", "1000", "--seconds", "2.5",
    )  # fmt: skip
    echo = dp.server(dp.ns_cn, "echo", "echo", "--bind", CN_V4, "--port", "9000")
    probe = dp.tool(
        dp.ns_mn, "probe", "probe", "--to", CN_V4, "--port", "9000", "--rate", "50",
        "--duration", "1",
    )  # fmt: skip
    assert probe.result(10)["sent"] >= 40
    heard = echo.stop()
    assert heard["received"] == 0, "the CN heard an MN whose IPv4 service was refused"
    # None of it entered the tunnel either (the kernel's own IPv6 chatter may have).
    tun_capture.result(10)
    from_mn = [f for f in rdpcap(str(tmp_path / "tun.pcap")) if bytes(f)[:1] == b"\x45"]
    assert from_mn == [], "the MN's IPv4 packets reached the tunnel device"
    assert dp.link_packets(dp.ns_lma, "pmip0")[0] == lma_in
    # Control: without the MAG's data plane the same packets are routed.
    dp.mags[0].stop()
    echo = dp.server(dp.ns_cn, "echo", "echo", "--bind", CN_V4, "--port", "9001")
    probe = dp.tool(
        dp.ns_mn, "probe", "probe", "--to", CN_V4, "--port", "9001", "--rate", "50",
        "--duration", "1",
    )  # fmt: skip
    probe.result(10)
    assert echo.stop()["received"] >= 40


def test_handover_keeps_the_home_address_and_the_tcp_connection(lab: Lab, tmp_path: Path) -> None:
    """Handover MAG1 -> MAG2, both behind one NAT (so the LMA tells them apart by their
    keepalives' Proxy-CoA), while a TCP transfer and a 1 kHz UDP probe run. The home
    address stays, the LMA moves the binding in one step, the TCP connection survives
    with every byte intact, and the interruption is measured (bench/handover.py reports
    it; here it must stay well under a second)."""
    dp = DataplaneLab(lab, tmp_path, "nat").build()
    dp.start()
    hoa = dp.register(0)["ipv4_hoa"]
    dp.configure_mn_ipv4(hoa)
    assert " 0% packet loss" in _ping(dp, CN_V4)
    echo = dp.server(dp.ns_cn, "echo", "echo", "--bind", CN_V4, "--port", "9000")
    probe = dp.tool(dp.ns_mn, "probe", "probe", "--to", CN_V4, "--port", "9000", "--duration", "3")
    sink = dp.server(dp.ns_cn, "sink", "sink", "--bind", CN_V4, "--port", "5004")
    source = dp.tool(
        dp.ns_mn, "source", "source", "--to", CN_V4, "--port", "5004",
        "--bytes", str(TEN_MB), "--rate", str(4 * 1024 * 1024),
    )  # fmt: skip
    wait_for(lambda: dp.link_packets(dp.ns_mags[0], "pmip0")[1] > 2000, 10, what="traffic")
    entry = dp.register(1)  # the handover
    assert entry["ipv4_hoa"] == hoa
    binding = dp.lma_binding()
    assert binding is not None and binding["ipv4_hoa"] == hoa
    sent, received = source.result(60), sink.result(30)
    assert received["sha256"] == sent["sha256"] and received["bytes"] == TEN_MB
    rtt = probe.result(30)
    uplink = echo.stop()
    report = {"probe_round_trip": rtt, "probe_uplink": uplink}
    (tmp_path / "handover.json").write_text(json.dumps(report))
    print(f"\nhandover interruption: {json.dumps(report)}")
    assert rtt["echoed"] > 2000
    assert rtt["max_gap_ms"] is not None and rtt["max_gap_ms"] < 1000, report
    log = dp.lma.log_text()
    assert "binding moved" in log and MN_ID in log


def test_kill_9_and_restart_reinstalls_routes_without_duplicates(lab: Lab, tmp_path: Path) -> None:
    """A daemon killed with -9 leaves its rules and routes behind (its TUN device goes
    with the process). The restarted LMA reinstalls the data path of every restored
    binding, the restarted MAG re-registers and rebuilds its rules, and each removes what
    its previous run left, so nothing is doubled and the MN reaches the CN again."""
    dp = DataplaneLab(lab, tmp_path, "ipv4").build()
    dp.start()
    hoa = dp.register(0)["ipv4_hoa"]
    dp.configure_mn_ipv4(hoa)
    assert " 0% packet loss" in _ping(dp, CN_V4)

    def ours(ns: str) -> list[str]:
        rules = dp.lab.run(ns, "ip rule show").stdout + dp.lab.run(ns, "ip -6 rule show").stdout
        return sorted(
            line.split(":", 1)[1].strip() for line in rules.splitlines() if "proto 77" in line
        )

    before = ours(dp.ns_mags[0])
    assert len(before) == 3, before  # the MN's rule, and the drop rule per IP version
    dp.mags[0].stop(signal.SIGKILL)
    dp.lma.stop(signal.SIGKILL)
    assert ours(dp.ns_mags[0]) == before  # left behind
    dp.lma.start()
    dp.mags[0].start()
    entry = wait_for(lambda: dp.mag_entry(0), 10, what="re-registration")
    assert entry["ipv4_hoa"] == hoa
    wait_for(lambda: " 0% packet loss" in _ping(dp, CN_V4, 1), 10, what="the CN again")
    assert ours(dp.ns_mags[0]) == before
    aggregates = dp.lab.run(dp.ns_lma, "ip route show proto 77").stdout
    assert aggregates.count("unreachable 10.10.0.0/24") == 1, aggregates


def test_a_recreated_access_link_is_served_again(lab: Lab, tmp_path: Path) -> None:
    """An access link deleted and created again (a link per attachment, or one moved to
    another namespace) takes its sysctls, routes and addresses with it. The MAG
    deregisters the MN without tripping over the missing link, and when the link is back
    it prepares it again: proxy ARP, the default router's address, the MN's routes."""
    dp = DataplaneLab(lab, tmp_path, "ipv4").build()
    dp.start()
    hoa = dp.register(0)["ipv4_hoa"]
    dp.configure_mn_ipv4(hoa)
    assert " 0% packet loss" in _ping(dp, CN_V4)
    mag = dp.ns_mags[0]
    for _ in range(2):  # twice: what one deletion leaves behind must not spoil the next
        lab.run(mag, "ip link del acc1")
        wait_for(lambda: dp.mag_entry(0) is None, 10, what="the deregistration")
        lab.link(mag, "acc1", dp.ns_sw, "p1")
        lab.run(mag, "ip link set acc1 down")
        lab.run(mag, f"ip link set acc1 address {MAG_ACCESS_MAC}")
        lab.run(dp.ns_sw, "ip link set p1 master br0")
        lab.run(mag, "ip link set acc1 up")
        assert wait_for(lambda: dp.mag_entry(0), 10, what="re-registration")["ipv4_hoa"] == hoa
        wait_for(lambda: " 0% packet loss" in _ping(dp, CN_V4, 1), 10, what="the CN again")
        assert lab.run(mag, "sysctl -n net.ipv4.conf.acc1.proxy_arp").stdout.strip() == "1"
        assert f"inet {ROUTER_V4}/32" in lab.run(mag, "ip -4 addr show dev acc1").stdout
    assert "Traceback" not in dp.mags[0].log_text()


def test_gratuitous_arp_completes_a_waiting_neighbor_entry(lab: Lab, tmp_path: Path) -> None:
    """An MN that asked for its router before the MAG held the address (its link had
    just come up) learns it from the MAG's announcement, not from its retry a second
    later."""
    mag, mn = lab.ns("mag"), lab.ns("mn")
    lab.link(mag, "acc1", mn, "eth0")
    lab.addr(mn, "eth0", "10.10.0.2/24")
    lab.run(mn, "sysctl -qw net.ipv4.neigh.eth0.retrans_time_ms=30000")  # no retry here
    asking = lab.spawn(mn, ["ping", "-c", "1", "-W", "5", ROUTER_V4], tmp_path / "ping.log")
    wait_for(
        lambda: "INCOMPLETE" in lab.run(mn, f"ip neigh show {ROUTER_V4}").stdout, 5, what="ARP"
    )
    mac = json.loads(lab.run(mag, "ip -j link show acc1").stdout)[0]["address"]
    code = "from ipaddress import IPv4Address as A; from pmip_agent.dataplane.arp import announce"
    code += f"; assert announce('acc1', A('{ROUTER_V4}'))"
    lab.run(mag, f'{sys.executable} -c "{code}"')
    wait_for(lambda: mac in lab.run(mn, f"ip neigh show {ROUTER_V4}").stdout, 2, what="the entry")
    lab.kill(asking)
