"""Seed Figure 3 with the relay hook's common messages relayed in the kernel
(mag.dhcp.kernel_relay, pmip_agent/dhcp/kernel_relay.py): real tc programs on MAG1's
links, real DHCP clients and Kea, and the daemon's own relay for everything else.

These tests need clang and the libbpf headers (`make deps` installs them); without them
the daemon relays in user space, and the tests say so and fail, rather than pass on the
user-space path."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from dhcp_lab import KEA, LMAA, MAG_COA, DhcpLab
from frame_capture import Seen, Sniffer, options_of
from netns import Lab, wait_for
from pcap import assert_tshark_decodes

from pmip_agent.control.pmipctl import request
from pmip_agent.dhcp import codec as dhcp
from pmip_agent.dhcp.kernel_relay import PRIO
from pmip_agent.wire.ipv6 import unwrap
from pmip_agent.wire.messages import mh_checksum

pytestmark = pytest.mark.netns

NEEDS = "the kernel relay needs clang and libbpf-dev (make deps installs them)"


@pytest.fixture
def kr_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DhcpLab]:
    assert shutil.which("clang") and Path("/usr/include/bpf/bpf_helpers.h").exists(), NEEDS
    lab = Lab("k" + request.node.name[-3:])
    try:
        env = DhcpLab(lab, tmp_path, kernel_relay=True).build()
        env.start()
        yield env
    finally:
        lab.close()


def kernel(env: DhcpLab, mag: str = "mag1") -> dict[str, Any]:
    status = env.mags[mag].ctl_json("status")["dhcp_kernel_relay"]
    assert status["active"], env.mags[mag].log_text()[-2000:]
    return status


def _filters(env: DhcpLab, mag: str, ifname: str, direction: str = "ingress") -> str:
    return subprocess.run(
        ["ip", "netns", "exec", env.ns_mag[mag], "tc", "filter", "show", "dev", ifname, direction],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def _lease_with_a_pause(
    env: DhcpLab,
    ns: str,
    kind: str,
    paused: subprocess.Popen[bytes],
    ifnames: tuple[str, ...],
    counter: str,
    what: str,
) -> tuple[dict[str, str], list[Seen]]:
    """A lease for the MN in ``ns`` with ``paused`` (Kea, the LMA) stopped until MAG1's
    kernel relay status counts ``counter``: so the test, not the scheduler, says what
    comes first. The frames seen on MAG1's ``ifnames`` meanwhile.

    The status is asked on the control socket from here, every 2 ms. Polled with a
    pmipctl process (30-110 ms each here, more under load) every 50 ms, the pause could
    outlast relay.c's ARMED_NS (100 ms): what was armed was then rightly left to the
    daemon, and a test counting the kernel's sends failed."""
    sniffer = Sniffer(env.ns_mag["mag1"], ifnames)
    leases: list[dict[str, str]] = []
    client = threading.Thread(target=lambda: leases.append(env.client(ns, kind, f"{kind}-p")))
    control = str(env.mags["mag1"].socket)

    def counted() -> bool:
        return request(control, {"cmd": "status"})["result"]["dhcp_kernel_relay"][counter] >= 1

    paused.send_signal(signal.SIGSTOP)
    try:
        client.start()
        wait_for(counted, 10, interval=0.002, what=what)
    finally:
        paused.send_signal(signal.SIGCONT)
    client.join(30)
    seen = sniffer.drain()
    sniffer.close()
    assert leases, f"no {kind} lease"
    return leases[0], seen


@pytest.mark.parametrize("client", ["udhcpc", "dhclient", "dhcpcd"])
def test_flow3_relayed_in_the_kernel(kr_lab: DhcpLab, client: str) -> None:
    """Each client gets a lease from Kea's hint-guarded pool (so the kernel's option 82
    arrived intact), the LMA anchors it, and the kernel counted what it relayed. The
    safety rule holds there too: the MN's ACK leaves only after the PBA came back."""
    mn = "dhcp@example.net"
    assert kernel(kr_lab)["links"] == ["k0", "tr0"]  # to Kea, to the LMA; acc1 comes later
    ns = kr_lab.attach_mn(mn)
    status = wait_for(lambda: (k := kernel(kr_lab))["links"] == ["acc1", "k0", "tr0"] and k, 5)
    assert status["entries"] == 2, status  # the two dhcp-server MNs, on acc1
    assert f"pref {PRIO} bpf" in _filters(kr_lab, "mag1", "acc1")
    sniffer = Sniffer(kr_lab.ns_mag["mag1"], ("acc1", "tr0", "k0"))
    try:
        lease = kr_lab.client(ns, client, f"{client}-kr")
        seen = sniffer.drain()
    finally:
        sniffer.close()
    assert IPv4Address(lease["ip"]) in IPv4Network("10.50.0.0/24")
    assert lease["router"] == "10.50.0.1"
    binding = wait_for(lambda: kr_lab.lma_binding(mn), 5, what="binding")
    assert binding["ipv4_hoa"] == lease["ip"] and binding["ipv4_source"] == "dhcp-server"
    status = kernel(kr_lab)
    # The REQUEST (the first DISCOVER may find Kea's neighbour entry unresolved, and go
    # up to the daemon, which resolves it); the OFFER, and its copy for the PBU; the ACK,
    # passed on if the PBA came first, else held by the daemon until it did.
    assert status["to_server"] >= 1 and status["copies_read"] >= 1, status
    assert status["to_mn"] >= 1 and status["to_mn"] + status["ack_up"] >= 2, str(status)
    # The PBU, read on tr0 as it left, and its PBA, read there as it came in, granted the
    # address in the kernel.
    assert status["pba_grants"] == 1, str(status)
    pba = [s.ts for s in seen if (s.ifname, s.out, s.kind) == ("tr0", False, "PBA")]
    acks = [s.ts for s in seen if (s.ifname, s.out, s.kind) == ("acc1", True, "ACK")]
    assert pba and acks and acks[0] > pba[0], seen


def test_the_pbu_leaves_with_the_offer_from_the_kernel(kr_lab: DhcpLab) -> None:
    """The PBU armed at the DISCOVER leaves as the kernel passes Kea's OFFER on (relay.c,
    send_pbu): one PBU, from the kernel, reporting the offered address, with a right
    Mobility Header checksum, read by tshark as such a PBU; the LMA anchors that address
    and the MN gets its lease.

    The kernel can send only a PBU armed before the OFFER comes, and only to a resolved
    next hop. So the pings resolve the next hops toward Kea and the LMA, and Kea is
    stopped until the daemon has read the DISCOVER's copy (the status it answers comes
    after it armed the PBU): a first DISCOVER, read by a daemon that has just started,
    can otherwise lose that race, and the daemon then sends the PBU itself."""
    mn = "dhcp@example.net"
    ns_mag = kr_lab.ns_mag["mag1"]
    kr_lab.lab.run(ns_mag, f"ping -c1 -W1 {KEA['mag1']}", check=False)
    kr_lab.lab.run(ns_mag, f"ping -6 -c1 -W1 {LMAA}", check=False)
    ns = kr_lab.attach_mn(mn)
    wait_for(lambda: "acc1" in kernel(kr_lab)["links"], 5, what="acc1's filter")
    assert kr_lab.kea is not None
    lease, seen = _lease_with_a_pause(
        kr_lab, ns, "udhcpc", kr_lab.kea, ("tr0",), "copies_read", "the DISCOVER's copy"
    )
    status = kernel(kr_lab)
    assert status["pbus_sent"] == 1 and status["pba_grants"] == 1, status
    pbus = [s for s in seen if s.kind == "PBU" and s.out]
    assert len(pbus) == 1, seen
    packet = pbus[0].frame[14:]
    src, dst, mh = unwrap(packet)
    assert (str(src), str(dst)) == (MAG_COA["mag1"], LMAA)
    assert int.from_bytes(mh[4:6], "big") == mh_checksum(mh, src, dst)
    fields = {
        "mip6.mhtype": "5",
        "mip6.bu.seqnr": str(pbus[0].key),
        "mip6.mnid.identifier": mn,
        "mip6.ipv4ha.ha": lease["ip"],
    }
    assert_tshark_decodes([packet], [fields])
    binding = wait_for(lambda: kr_lab.lma_binding(mn), 5, what="binding")
    assert binding["ipv4_hoa"] == lease["ip"] and binding["ipv4_source"] == "dhcp-server"


def test_an_ack_before_its_pba_leaves_from_the_kernel_once(kr_lab: DhcpLab) -> None:
    """Kea's ACK comes in before the PBA: the LMA is stopped until the kernel has counted
    the ACK it cannot pass yet. The PBA then releases the copy the kernel kept (relay.c,
    release), and the daemon, which held its own copy, does not send it again: the MN
    sees one ACK, after the PBA, and the daemon still reads that PBA."""
    mn = "dhcp@example.net"
    ns = kr_lab.attach_mn(mn)
    wait_for(lambda: "acc1" in kernel(kr_lab)["links"], 5, what="acc1's filter")
    assert kr_lab.lma.proc is not None
    lease, seen = _lease_with_a_pause(
        kr_lab, ns, "dhclient", kr_lab.lma.proc, ("acc1", "tr0"), "ack_up", "Kea's ACK, held"
    )
    assert IPv4Address(lease["ip"]) in IPv4Network("10.50.0.0/24"), lease
    status = kernel(kr_lab)
    assert status["acks_released"] == 1 and status["pba_grants"] == 1, status
    acks = [s.ts for s in seen if (s.ifname, s.out, s.kind) == ("acc1", True, "ACK")]
    pba = [s.ts for s in seen if (s.ifname, s.out, s.kind) == ("tr0", False, "PBA")]
    assert len(acks) == 1 and pba and acks[0] > pba[0], seen
    binding = wait_for(lambda: kr_lab.lma_binding(mn), 5, what="binding")
    assert binding["ipv4_hoa"] == lease["ip"]
    # The daemon read the PBA's copy: the MAG's own entry is registered with the address.
    rows = kr_lab.mags["mag1"].ctl_json("bindings")
    assert any(r["mn_id"] == mn and r["registered"] and r["ipv4_hoa"] == lease["ip"]
               for r in rows), rows  # fmt: skip


def test_offer_and_ack_of_the_mags_own_server_leave_from_the_kernel(kr_lab: DhcpLab) -> None:
    """Seed Figure 2 (the MAG's own server, the address from the LMA's pool): the OFFER
    the daemon armed at the DISCOVER, before its PBU left, is completed from the PBA and
    sent by the kernel as the PBA passes (relay.c, send_offer); the MN's REQUEST for it
    is ACKed there too (send_ack). The LMA is stopped until the daemon has armed it, so
    the test, not the scheduler, says the PBA comes after.

    The MN sees one OFFER, after the PBA, and one ACK, each from the router's address,
    with right IPv4 and UDP checksums (tshark checks them), each the BOOTP message
    `codec.build_reply` makes for its request and that grant; the MN gets its lease, and
    the daemon, which read the PBA's and the REQUEST's copies, holds the binding."""
    mn = "lma@example.net"
    ns = kr_lab.attach_mn(mn, solicits=False)  # attached by its DISCOVER, not by an RS
    wait_for(lambda: "acc1" in kernel(kr_lab)["links"], 5, what="acc1's filter")
    assert kr_lab.lma.proc is not None
    lease, seen = _lease_with_a_pause(
        kr_lab, ns, "udhcpc", kr_lab.lma.proc, ("acc1", "tr0"), "offers_armed", "an armed OFFER"
    )
    status = kernel(kr_lab)
    assert status["offers_sent"] == 1 and status["acks_sent"] == 1, status
    assert status["copies_read"] >= 1, status  # the REQUEST's
    sent = {kind: [s for s in seen if (s.ifname, s.out, s.kind) == ("acc1", True, kind)]
            for kind in ("OFFER", "ACK")}  # fmt: skip
    asked = {kind: [s for s in seen if (s.ifname, s.out, s.kind) == ("acc1", False, kind)]
             for kind in ("DISCOVER", "REQUEST")}  # fmt: skip
    pbas = [s for s in seen if (s.ifname, s.out, s.kind) == ("tr0", False, "PBA")]
    assert len(sent["OFFER"]) == 1 and len(sent["ACK"]) == 1, seen
    assert pbas and pbas[0].ts < sent["OFFER"][0].ts < sent["ACK"][0].ts, seen
    mh = pbas[0].frame[54:]
    lease_s = min(600, int.from_bytes(mh[10:12], "big") * 4 - 1)  # never past the binding
    for reply, request_kind, kind in (
        ("OFFER", "DISCOVER", dhcp.OFFER),
        ("ACK", "REQUEST", dhcp.ACK),
    ):
        frame = sent[reply][0].frame
        assert frame[:6] == b"\xff" * 6, frame[:14].hex()
        bootp = frame[14 + 28 :]
        options = options_of(bootp)
        router, hoa = IPv4Address(options[3]), IPv4Address(bootp[16:20])
        assert (str(hoa), str(router)) == (lease["ip"], lease["router"]), lease
        fields = {
            "ip.src": str(router),
            "ip.dst": "255.255.255.255",
            "ip.checksum.status": "1",
            "udp.checksum.status": "1",
            "dhcp.option.dhcp": str(kind),
            "dhcp.ip.your": str(hoa),
            "dhcp.option.router": str(router),
            "dhcp.option.dhcp_server_id": str(router),
            "dhcp.option.ip_address_lease_time": str(lease_s),
            "dhcp.option.subnet_mask": "255.255.255.0",
        }
        assert_tshark_decodes([frame[14:]], [fields])
        asked_by = [s for s in asked[request_kind] if s.key == sent[reply][0].key]
        assert asked_by, seen
        request = dhcp.parse(asked_by[-1].frame[14 + 28 :])
        assert bootp == dhcp.build_reply(
            request, kind, router, hoa, lease_s=lease_s, prefix_len=24, router=router
        )
    assert IPv4Address(lease["ip"]) in IPv4Network("10.10.0.0/24")
    rows = kr_lab.mags["mag1"].ctl_json("bindings")
    assert any(r["mn_id"] == mn and r["registered"] and r["ipv4_hoa"] == lease["ip"]
               for r in rows), rows  # fmt: skip


def test_refused_mn_gets_no_ack_from_the_kernel(kr_lab: DhcpLab) -> None:
    """The LMA refuses what Kea offers this MN (outside its authorized prefix): the
    kernel never holds a grant for it, so Kea's ACK goes up to the daemon, which does not
    pass it on; after the refusal the MN's requests are the daemon's alone."""
    mn = "wrongprefix@example.net"
    ns = kr_lab.attach_mn(mn)
    with pytest.raises(AssertionError, match="udhcpc lease"):
        kr_lab.client(ns, "udhcpc", "udhcpc-kr-wrong", timeout=8)
    assert kr_lab.lma_binding(mn) is None
    status = kernel(kr_lab)
    assert status["entries"] == 1, status  # only dhcp@example.net is left to the kernel
    assert status["pba_grants"] == 0, status  # the refusing PBA granted nothing
    assert "is not passed on" in kr_lab.mags["mag1"].log_text()


def test_roaming_and_a_recreated_access_link(kr_lab: DhcpLab) -> None:
    """dhclient's INIT-REBOOT at MAG2 is the daemon's (the kernel leaves it), and the
    lease continues. Back at MAG1, whose acc1 was deleted and made again, the program is
    attached to the new link and relays there."""
    mn = "dhcp@example.net"
    ns = kr_lab.attach_mn(mn, "mag1")
    first = kr_lab.client(ns, "dhclient", "kr-roam1", state_name="kr-roam")
    kr_lab.move_mn(ns, mn, "mag1", "mag2")
    second = kr_lab.client(ns, "dhclient", "kr-roam2", state_name="kr-roam")
    assert second["ip"] == first["ip"]
    assert "REBOOT" in (kr_lab.tmp / "kr-roam2.events").read_text()
    moved = wait_for(
        lambda: (b := kr_lab.lma_binding(mn)) and b["mag"] == "2001:db8:f::3" and b,
        10,
        what="binding at MAG2",
    )
    assert moved["ipv4_hoa"] == first["ip"]
    before = kernel(kr_lab)["to_server"]
    kr_lab.move_mn(ns, mn, "mag2", "mag1")
    wait_for(lambda: f"pref {PRIO} bpf" in _filters(kr_lab, "mag1", "acc1"), 5, what="filter")
    third = kr_lab.client(ns, "udhcpc", "kr-back")
    assert third["ip"] == first["ip"] or IPv4Address(third["ip"]) in IPv4Network("10.50.0.0/24")
    assert kernel(kr_lab)["to_server"] > before


def test_stop_removes_only_its_filters(kr_lab: DhcpLab) -> None:
    """A clean stop takes the kernel relay's filters off; the clsact qdisc and any other
    filter on the link stay."""
    ns_mag = kr_lab.ns_mag["mag1"]
    kr_lab.attach_mn("dhcp@example.net")  # acc1
    wait_for(lambda: f"pref {PRIO} bpf" in _filters(kr_lab, "mag1", "acc1"), 5, what="filter")
    # Another user's filter: classic BPF, "return 0" (TC_ACT_OK) in direct-action mode.
    kr_lab.lab.run(ns_mag, "tc filter add dev acc1 ingress pref 7 bpf da bytecode '1,6 0 0 0,'")
    assert f"pref {PRIO} bpf" in _filters(kr_lab, "mag1", "tr0", "egress")  # the PBUs' reader
    kr_lab.mags["mag1"].stop()
    left = _filters(kr_lab, "mag1", "acc1")
    assert f"pref {PRIO}" not in left and "pref 7 bpf" in left
    assert f"pref {PRIO}" not in _filters(kr_lab, "mag1", "k0")
    assert f"pref {PRIO}" not in _filters(kr_lab, "mag1", "tr0", "egress")


def test_a_reload_takes_a_removed_profile_out_of_the_kernel(kr_lab: DhcpLab) -> None:
    """`pmipctl reload` without dhcp@example.net's profile: its entry leaves the kernel,
    so its DISCOVER goes up to the daemon, which gives it no service; the other MN
    stays."""
    mag = kr_lab.mags["mag1"]
    ns = kr_lab.attach_mn("dhcp@example.net")
    wait_for(lambda: kernel(kr_lab)["entries"] == 2, 5, what="both MNs in the kernel")
    config = yaml.safe_load(mag.config_path.read_text())
    config["mobile_nodes"] = [m for m in config["mobile_nodes"] if m["mn_id"] != "dhcp@example.net"]
    mag.config_path.write_text(yaml.safe_dump(config))
    assert mag.ctl("reload").returncode == 0
    assert kernel(kr_lab)["entries"] == 1
    before = kernel(kr_lab)
    with pytest.raises(AssertionError, match="udhcpc lease"):
        kr_lab.client(ns, "udhcpc", "udhcpc-gone", timeout=4)
    after = kernel(kr_lab)
    assert after["to_server"] == before["to_server"] and after["to_mn"] == before["to_mn"]
    assert "has no policy profile" in mag.log_text()


def test_filters_a_killed_daemon_left_are_replaced_or_removed(kr_lab: DhcpLab) -> None:
    """kill -9 leaves the filters (no clean stop took them off). Started again with the
    kernel relay, the daemon replaces them; started without it, it removes them, and
    its own relay serves the MN."""
    mag = kr_lab.mags["mag1"]
    ns = kr_lab.attach_mn("dhcp@example.net")
    wait_for(lambda: f"pref {PRIO} bpf" in _filters(kr_lab, "mag1", "acc1"), 5, what="filter")
    old = _filters(kr_lab, "mag1", "acc1")
    mag.stop(signal.SIGKILL)
    assert _filters(kr_lab, "mag1", "acc1") == old  # still there, still relaying
    mag.start()
    wait_for(lambda: kernel(kr_lab)["links"] == ["acc1", "k0", "tr0"], 5, what="attached again")
    new = _filters(kr_lab, "mag1", "acc1")
    assert new.count(f"pref {PRIO} bpf") == 2 and new != old  # one filter, a new program
    mag.stop(signal.SIGKILL)
    config = yaml.safe_load(mag.config_path.read_text())
    config["mag"]["dhcp"]["kernel_relay"] = False
    mag.config_path.write_text(yaml.safe_dump(config))
    mag.start()
    assert "dhcp_kernel_relay" not in mag.ctl_json("status")
    assert f"pref {PRIO}" not in _filters(kr_lab, "mag1", "acc1")
    assert f"pref {PRIO}" not in _filters(kr_lab, "mag1", "k0")
    assert "removed its filters from acc1, k0, tr0" in mag.log_text()
    assert f"pref {PRIO}" not in _filters(kr_lab, "mag1", "tr0")
    assert f"pref {PRIO}" not in _filters(kr_lab, "mag1", "tr0", "egress")
    lease = kr_lab.client(ns, "udhcpc", "udhcpc-after-kill")
    assert IPv4Address(lease["ip"]) in IPv4Network("10.50.0.0/24")


def test_without_clang_the_daemon_relays_in_user_space(tmp_path: Path) -> None:
    """No compiler on PATH (and none built before): the daemon says why and relays in
    user space; the MN still gets its lease."""
    lab = Lab("knoc")
    try:
        env = DhcpLab(lab, tmp_path, kernel_relay=True).build()
        bare = tmp_path / "bin"
        bare.mkdir()
        for tool in ("ip", "tc"):
            found = shutil.which(tool)
            assert found is not None
            (bare / tool).symlink_to(found)
        env.mags["mag1"].env = {"PATH": str(bare)}
        env.start()
        status = env.mags["mag1"].ctl_json("status")["dhcp_kernel_relay"]
        assert status["active"] is False
        assert "DHCP kernel relay off, relaying in user space: clang" in env.mags["mag1"].log_text()
        ns = env.attach_mn("dhcp@example.net")
        lease = env.client(ns, "udhcpc", "udhcpc-noclang")
        assert IPv4Address(lease["ip"]) in IPv4Network("10.50.0.0/24")
    finally:
        lab.close()
