"""The seed's three IPv4 home address flows (§3.1, Figures 2 and 3) with real DHCP clients
(busybox udhcpc, dhclient, dhcpcd) and a real DHCP server (Kea) behind the relay hook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from dhcp_lab import MNS, DhcpLab, mn_python
from frame_capture import Sniffer
from netns import Lab, wait_for

from pmip_agent.daemon import DHCP_EXCHANGE_S, MN_TURN_S

pytestmark = pytest.mark.netns


@pytest.fixture
def dhcp_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DhcpLab]:
    lab = Lab("d" + request.node.name[-3:])
    try:
        env = DhcpLab(lab, tmp_path).build()
        env.start()
        yield env
    finally:
        lab.close()


def _in(ip: str, net: str) -> bool:
    return IPv4Address(ip) in IPv4Network(net)


@pytest.mark.parametrize("client", ["udhcpc", "dhcpcd"])
def test_lma_allocation_flow(dhcp_lab: DhcpLab, client: str) -> None:
    """Figure 2: DISCOVER -> PBU 0.0.0.0 -> PBA with HoA and router -> OFFER/REQUEST/ACK.
    The lease carries the HoA, the mask from the prefix length, the PBA's default router,
    and is no longer than the binding (lease_s 600 here)."""
    mn = "lma@example.net"
    ns = dhcp_lab.attach_mn(mn)
    lease = dhcp_lab.client(ns, client, f"{client}-lma")
    assert _in(lease["ip"], "10.10.0.0/24") and lease["ip"] != "10.10.0.1"
    assert lease["router"] == "10.10.0.1"
    assert lease["subnet"] in ("255.255.255.0", "24")
    assert 0 < int(lease["lease"]) <= 600
    binding = wait_for(lambda: dhcp_lab.lma_binding(mn), 5, what="LMA binding")
    assert binding["ipv4_hoa"] == lease["ip"] and binding["ipv4_source"] == "lma"


def test_lma_allocation_ack_goes_before_the_catch_up(tmp_path: Path) -> None:
    """Figure 2, steps 5-7 beside the tunnel setup: the MAG holds back its commit, logs
    and tunnel setup while the MN's exchange runs, and MN_TURN_S more once it has sent
    the ACK, so that the MN the ACK wakes reads it first (MagService.flush). The grant's
    log line, which that work writes, is timestamped at least MN_TURN_S after the ACK
    left on the access link; with the work done at once, it was 0.3-0.4 ms after.

    The MN sends no Router Solicitation: one that reached the MAG before the DISCOVER
    would attach the MN, and the grant would be logged before any DHCP. The hold lasts at
    most DHCP_EXCHANGE_S from the OFFER: an MN slower than that to REQUEST (a loaded
    machine) gets its ACK after the catch-up, and the line is then timestamped at least
    DHCP_EXCHANGE_S after the OFFER left.

    A fresh lab's first PBUs can be held up for 1-2 s on the way (the transport link's
    link-local address still tentative). The DISCOVER then waits for the grant all the
    same: the LMA's refusals of the stale transmissions do not end the attempt (see
    test_mag.py, test_refusals_of_earlier_transmissions_wait_for_the_latest)."""
    mn = "lma@example.net"
    lab = Lab("dturn")
    try:
        env = DhcpLab(lab, tmp_path, log_format="json").build()
        env.start()
        ns = env.attach_mn(mn, solicits=False)
        sniffer = Sniffer(env.ns_mag["mag1"], ("acc1",))
        try:
            env.client(ns, "udhcpc", "udhcpc-turn")
            seen = sniffer.drain()
        finally:
            sniffer.close()
        mag_log = env.mags["mag1"]
        granted = wait_for(
            lambda: [
                entry["ts"]
                for line in mag_log.log_text().splitlines()
                if line.startswith("{")
                and (entry := json.loads(line))["msg"].startswith(f"IPv4 granted: mn={mn} ")
            ],
            5,
            what="the MAG's log of the grant",
        )
    finally:
        lab.close()
    offer_out = next(s.ts for s in seen if s.out and s.kind == "OFFER")
    ack_out = next(s.ts for s in seen if s.out and s.kind == "ACK")
    held_until = min(ack_out + MN_TURN_S, offer_out + DHCP_EXCHANGE_S)
    assert granted[0] >= held_until, (granted[0] - ack_out, granted[0] - offer_out, seen)


def test_first_pbus_held_up_on_the_way_still_register(dhcp_lab: DhcpLab) -> None:
    """MAG1's link to the LMA is made anew just before the MN attaches, so its link-local
    address is still tentative: the kernel sends no Neighbour Solicitation for the next
    hop, and holds the PBUs (sent from the proxy CoA on lo) until a retry a second or so
    later. The original and the retransmissions then reach the LMA together, and it
    refuses the stale ones (156, timestamp mismatch). The MAG waits for the latest one's
    answer: an acceptance, or a refusal of that one too, which it meets with a fresh PBU
    at once (pba-late). It registers, and the waiting DISCOVER gets its OFFER. Before,
    the MAG took the first refusal, denied the MN and backed off (retry_after_failure_s,
    2 s here)."""
    mn = "lma@example.net"
    mag1 = dhcp_lab.ns_mag["mag1"]
    dhcp_lab.lab.run(mag1, "ip link del tr0")
    dhcp_lab.link_transport("mag1")
    ns = dhcp_lab.attach_mn(mn)
    tentative = dhcp_lab.lab.run(mag1, "ip -6 addr show dev tr0 scope link tentative").stdout
    assert "fe80::" in tentative, "the premise: tr0's link-local address is tentative"
    lease = dhcp_lab.client(ns, "udhcpc", "udhcpc-held")
    assert _in(lease["ip"], "10.10.0.0/24")
    log = dhcp_lab.mags["mag1"].log_text()
    assert "pba-superseded" in log  # the premise: stale transmissions were refused
    assert "registration rejected" not in log and "IPv4 denied" not in log


def test_an_access_link_absent_at_start_is_prepared_when_its_mn_registers(
    dhcp_lab: DhcpLab,
) -> None:
    """The MAGs start before any MN's link exists. That is noted once, not warned about
    for each sysctl that cannot be set yet; proxy ARP and the rest are set on the link
    when an MN on it registers."""
    log = dhcp_lab.mags["mag1"].log_text()
    assert "access link acc1 is not there yet" in log
    assert "cannot set" not in log
    ns = dhcp_lab.attach_mn("lma@example.net")
    dhcp_lab.client(ns, "udhcpc", "udhcpc-absent")
    mag1 = dhcp_lab.ns_mag["mag1"]
    wait_for(
        lambda: (
            dhcp_lab.lab.run(mag1, "sysctl -n net.ipv4.conf.acc1.proxy_arp").stdout.strip() == "1"
        ),
        5,
        what="proxy ARP on acc1",
    )
    assert dhcp_lab.lab.run(mag1, "sysctl -n net.ipv6.conf.acc1.accept_dad").stdout.strip() == "0"
    assert "cannot set" not in dhcp_lab.mags["mag1"].log_text()


@pytest.mark.parametrize("client", ["udhcpc", "dhclient"])
def test_static_flow(dhcp_lab: DhcpLab, client: str) -> None:
    """Seed §3.1 static: the MAG registers the profile's HoA, then serves it by DHCP."""
    mn = "static@example.net"
    ns = dhcp_lab.attach_mn(mn)
    lease = dhcp_lab.client(ns, client, f"{client}-static")
    assert lease["ip"] == "10.9.0.5" and lease["router"] == "10.9.0.1"
    assert dhcp_lab.lma_binding(mn)["ipv4_source"] == "static"  # type: ignore[index]


def test_dhcp_server_flow_through_relay(dhcp_lab: DhcpLab) -> None:
    """Figure 3: the MAG relays to Kea with giaddr and option 82 (circuit-id, remote-id,
    link-selection = the MN's home prefix). Kea's only pool is guarded by that hint, so a
    lease from it proves the hint arrived. The MAG passes the server's OFFER on and, in
    the same breath, reports the offered HoA in a PBU (seed §3.1, "meanwhile"); the
    server's ACK reaches the MN only after the LMA anchored the address.

    The order on the wire, from kernel timestamps on MAG1's interfaces: the OFFER leaves
    for the MN before the PBU leaves for the LMA (see MagService.flush), and the ACK
    after the PBA came back."""
    mn = "dhcp@example.net"
    ns = dhcp_lab.attach_mn(mn)
    sniffer = Sniffer(dhcp_lab.ns_mag["mag1"], ("acc1", "tr0", "k0"))
    try:
        lease = dhcp_lab.client(ns, "udhcpc", "udhcpc-dhcp")
        seen = sniffer.drain()
    finally:
        sniffer.close()

    def first(ifname: str, out: bool, kind: str, after: float = 0.0) -> float:
        times = [s.ts for s in seen if (s.ifname, s.out, s.kind) == (ifname, out, kind)]
        later = [t for t in times if t > after]
        assert later, f"no {kind} {'out on' if out else 'in on'} {ifname} after {after}: {seen}"
        return later[0]

    offer_in = first("k0", False, "OFFER")
    offer_out = first("acc1", True, "OFFER", after=offer_in)
    pbu_out = first("tr0", True, "PBU", after=offer_in)
    assert offer_out < pbu_out, "the PBU went out before the MN's OFFER"
    pba_in = first("tr0", False, "PBA", after=pbu_out)
    ack_out = first("acc1", True, "ACK", after=offer_out)
    assert ack_out > pba_in, "the MN got its ACK before the LMA anchored the address"
    assert _in(lease["ip"], "10.50.0.0/24") and int(lease["ip"].split(".")[-1]) >= 100
    assert lease["router"] == "10.50.0.1"
    binding = dhcp_lab.lma_binding(mn)
    assert binding is not None and binding["ipv4_hoa"] == lease["ip"]
    assert binding["ipv4_source"] == "dhcp-server"
    log = (dhcp_lab.tmp / "kea.log").read_text()
    assert "DHCP4_LEASE_ALLOC" in log


def test_lma_refuses_address_outside_authorized_prefix(dhcp_lab: DhcpLab) -> None:
    """Seed §6: the LMA anchors a DHCP-assigned HoA only inside the MN's authorized prefix.
    Kea offers 10.50.0.x, the LMA has this MN on 10.60.0.0/24: refused, Kea's ACK is not
    passed on (the OFFER went on while the PBU was out), and the MN gets no lease."""
    mn = "wrongprefix@example.net"
    ns = dhcp_lab.attach_mn(mn)
    with pytest.raises(AssertionError, match="udhcpc lease"):
        dhcp_lab.client(ns, "udhcpc", "udhcpc-wrong", timeout=8)
    assert dhcp_lab.lma_binding(mn) is None
    assert "status=171" in dhcp_lab.lma.log_text()
    assert "is not passed on" in dhcp_lab.mags["mag1"].log_text()


NAK_PROBE = """
import socket
from scapy.layers.dhcp import BOOTP, DHCP
mac = bytes.fromhex("{mac}")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 68))
s.settimeout(5)
req = BOOTP(chaddr=mac + bytes(10), xid=77, flags=0x8000) / DHCP(options=[
    ("message-type", "request"), ("requested_addr", "{ip}"), "end"])
s.sendto(bytes(req), ("255.255.255.255", 67))
while True:
    data, _ = s.recvfrom(2048)
    reply = BOOTP(data)
    if reply.xid == 77:
        print(dict(o for o in reply[DHCP].options if isinstance(o, tuple))["message-type"])
        break
"""


def test_request_for_another_address_gets_nak(dhcp_lab: DhcpLab) -> None:
    """RFC 2131 §4.3.2: a REQUEST (INIT-REBOOT) for an address that is not the MN's gets a
    NAK; the MN's own address gets an ACK."""
    mn = "lma@example.net"
    ns = dhcp_lab.attach_mn(mn)
    lease = dhcp_lab.client(ns, "udhcpc", "udhcpc-nak")
    mac = MNS[mn][0].replace(":", "")
    other = mn_python(dhcp_lab.lab, ns, NAK_PROBE.format(mac=mac, ip="10.10.0.250"))
    assert other.stdout.strip() == "6", other.stderr  # NAK
    own = mn_python(dhcp_lab.lab, ns, NAK_PROBE.format(mac=mac, ip=lease["ip"]))
    assert own.stdout.strip() == "5", own.stderr  # ACK


@pytest.mark.parametrize("mn", ["lma@example.net", "dhcp@example.net"])
def test_roaming_keeps_the_address(dhcp_lab: DhcpLab, mn: str) -> None:
    """Issue "Roaming": the MN moves to MAG2, whose PBA carries the same HoA; dhclient's
    INIT-REBOOT for that address is ACKed and the lease continues with no new address."""
    ns = dhcp_lab.attach_mn(mn, "mag1")
    first = dhcp_lab.client(ns, "dhclient", "roam1", state_name="roam")
    before = wait_for(lambda: dhcp_lab.lma_binding(mn), 5, what="binding at MAG1")
    dhcp_lab.move_mn(ns, mn, "mag1", "mag2")
    second = dhcp_lab.client(ns, "dhclient", "roam2", state_name="roam")
    assert second["ip"] == first["ip"]
    after = wait_for(
        lambda: (b := dhcp_lab.lma_binding(mn)) and b["mag"] != before["mag"] and b,
        10,
        what="binding moved to MAG2",
    )
    assert after["ipv4_hoa"] == first["ip"]
    events = (dhcp_lab.tmp / "roam2.events").read_text()
    assert "REBOOT" in events  # INIT-REBOOT answered with ACK, not a fresh DISCOVER
