"""The LMA and MAG daemons as real services in network namespaces (issue: daemon).

Each test builds MN — MAG — (NAT) — LMA, starts both daemons with real sockets, attaches the
MN by bringing its access link up, and checks what pmipctl, the metrics and the logs say.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_lab import LMA_V4, LMAA, MN_ID, MN_MAC, NAT_OUTSIDE, PROXY_COA, Topology
from netns import Lab, wait_for

from pmip_agent.store.pending import MAGIC

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab(request.node.name[-4:])
    try:
        yield lab
    finally:
        lab.close()


def _up(topo: Topology) -> None:
    topo.lma.start()
    topo.mag.start()
    topo.mn_link(True)


@pytest.mark.parametrize("transport", ["ipv6", "ipv4"])
def test_registration_over_transport(lab: Lab, tmp_path: Path, transport: str) -> None:
    """Seed §3.4/§3.5 over IPv6 and §4.4/§4.5 over IPv4/UDP: an attach registers the MN,
    the LMA allocates an IPv4 HoA and an HNP, and both sides report the same binding."""
    topo = Topology(lab, tmp_path, transport).build()
    _up(topo)
    binding = wait_for(topo.lma_binding, 10, what="LMA binding")
    entry = wait_for(topo.mag_entry, 10, what="MAG registration")
    assert binding["ipv4_hoa"].startswith("10.10.0.")
    assert binding["ipv6_hnps"] and binding["ipv6_hnps"][0].startswith("2001:db8:100:")
    assert entry["ipv4_hoa"] == binding["ipv4_hoa"]
    assert binding["transport"] == transport
    assert binding["nat"] is False
    assert binding["mag"] == PROXY_COA
    assert 0 < binding["lifetime_remaining_s"] <= 3600
    # Detach: the MAG de-registers; the LMA keeps the entry for MinDelayBeforeBCEDelete.
    topo.mn_link(False)
    wait_for(lambda: topo.lma_binding() is None, 10, what="de-registration at the LMA")
    rows = topo.lma.ctl_json("bindings")
    assert [r["state"] for r in rows if r["mn_id"] == MN_ID] == ["deregistered"]
    assert "deregistered: mn=mn1@example.net" in topo.mag.log_text()


def test_lma_settles_staged_rows_once_the_pba_is_out(lab: Lab, tmp_path: Path) -> None:
    """The LMA stages a new binding's row in its pending-rows file before the PBA (one
    write), and moves it into the journal SETTLE_S later: the file is back to its
    header, and the row survives a kill -9 from the journal alone."""
    topo = Topology(lab, tmp_path, "ipv6").build()
    _up(topo)
    wait_for(topo.lma_binding, 10, what="LMA binding")
    [pending] = tmp_path.rglob("*.lma.sqlite.pending")
    wait_for(lambda: pending.read_bytes() == MAGIC, 2, what="staged rows settled")
    topo.lma.stop(signal.SIGKILL)
    pending.unlink()  # whatever it held, the journal must hold now
    topo.lma.start()
    assert wait_for(topo.lma_binding, 10, what="restored binding")["ipv4_hoa"]


def test_nat_detected_and_keepalives(lab: Lab, tmp_path: Path) -> None:
    """Seed §4.3/§4.4: through an nftables masquerade the LMA sees the NAT's address, says
    so in the PBA (NAT Detection, refresh 2 s), and the MAG re-sends within it."""
    topo = Topology(lab, tmp_path, "nat").build(nat_refresh_s=2)
    _up(topo)
    binding = wait_for(topo.lma_binding, 10, what="LMA binding through NAT")
    assert binding["nat"] is True
    assert binding["transport"] == "ipv4-udp"
    assert binding["mag_ipv4"] == NAT_OUTSIDE  # the observed, translated source
    entry = wait_for(topo.mag_entry, 10, what="MAG registration")
    assert entry["nat"] is True
    first = topo.lma.metrics()['pmip_pbu_total{direction="received",status="0"}']
    time.sleep(4.5)  # about two keepalive periods of 0.9 * 2 s
    later = topo.lma.metrics()['pmip_pbu_total{direction="received",status="0"}']
    assert later - first >= 2, (first, later)


def test_lma_kill9_restart_keeps_bindings(lab: Lab, tmp_path: Path) -> None:
    """Nothing lost: after kill -9 the LMA restores every binding with its remaining
    lifetime and the same HoA, and the MAG's refreshes are accepted against it."""
    topo = Topology(lab, tmp_path, "ipv6").build()
    _up(topo)
    before = wait_for(topo.lma_binding, 10, what="LMA binding")
    topo.lma.stop(signal.SIGKILL)
    topo.lma.start()
    after = wait_for(topo.lma_binding, 10, what="restored binding")
    for key in ("ipv4_hoa", "ipv6_hnps", "mag", "transport"):
        assert after[key] == before[key], key
    assert 0 < after["lifetime_remaining_s"] <= before["lifetime_remaining_s"]
    assert "restored 1 bindings" in topo.lma.log_text()
    # A restored binding is not a PBU received: the counters start again from zero.
    counted = topo.lma.metrics().get('pmip_pbu_total{direction="received",status="0"}', 0)
    assert counted == 0
    pools = {p["name"]: p for p in topo.lma.ctl_json("pools")}
    assert pools["pool1"]["used"] == 1  # the restored HoA is taken, not free for another MN


def test_mag_backs_off_then_recovers_when_lma_returns(lab: Lab, tmp_path: Path) -> None:
    """RFC 5213 §6.9.4: with the LMA down the MAG retransmits with back-off, gives up,
    and registers once the LMA is back."""
    topo = Topology(lab, tmp_path, "ipv6").build()
    topo.mag.start()
    topo.mn_link(True)
    wait_for(
        lambda: topo.mag.metrics().get("pmip_pbu_retransmissions_total", 0) >= 2,
        10,
        what="retransmissions while the LMA is down",
    )
    assert topo.mag_entry() is None
    topo.lma.start()
    entry = wait_for(topo.mag_entry, 15, what="registration after the LMA returned")
    assert entry["ipv4_hoa"].startswith("10.10.0.")


def test_malformed_packets_are_counted_and_harmless(lab: Lab, tmp_path: Path) -> None:
    """Bad bytes at both daemons are dropped, counted, logged at a limited rate, and the
    daemons keep serving."""
    topo = Topology(lab, tmp_path, "ipv4").build()
    _up(topo)
    wait_for(topo.lma_binding, 10, what="LMA binding")
    script = (
        "import socket\n"
        "r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 135)\n"
        "r.setsockopt(socket.IPPROTO_IPV6, 7, 4)\n"  # valid checksums: the kernel would drop others
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for i in range(500):\n"
        f"    r.sendto(bytes([59, i % 7, 5, 0]) + bytes(4 + i % 40), ('{LMAA}', 0))\n"
        f"    u.sendto(bytes([0x3b, 9]) + bytes(i % 30), ('{LMA_V4}', 5436))\n"
    )
    topo.lab.run(topo.ns_mag, f'python3 -c "{script}"')
    samples = wait_for(
        lambda: (
            (m := topo.lma.metrics())
            and sum(v for k, v in m.items() if k.startswith("pmip_messages_dropped_total")) >= 900
            and m
        ),
        10,
        what="drops counted at the LMA",
    )
    assert any("bad-header-length" in k for k in samples)
    log = topo.lma.log_text()
    assert 0 < log.count("dropped message") <= 40  # rate-limited: not one line per packet
    assert topo.lma.ctl("status").returncode == 0
    assert topo.lma_binding() is not None
    # And at the MAG: junk to its UDP port from the LMA's side.
    topo.lab.run(
        topo.ns_lma,
        'python3 -c "import socket;u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);'
        "[u.sendto(b'\\x60'+bytes(i),('192.0.2.2',5436)) for i in range(300)]\"",
    )
    wait_for(
        lambda: sum(v for k, v in topo.mag.metrics().items() if "dropped" in k) >= 300,
        10,
        what="drops counted at the MAG",
    )
    assert topo.mag_entry() is not None


def test_pmipctl_output(lab: Lab, tmp_path: Path) -> None:
    """pmipctl prints readable tables and, with --json, the documented binding fields."""
    topo = Topology(lab, tmp_path, "ipv6").build()
    _up(topo)
    binding = wait_for(topo.lma_binding, 10, what="LMA binding")
    for key in (
        "mn_id",
        "ipv4_hoa",
        "ipv6_hnps",
        "mag",
        "transport",
        "nat",
        "lifetime_remaining_s",
        "state",
    ):
        assert key in binding, key
    table = topo.lma.ctl("bindings").stdout.splitlines()
    assert table[0].split()[:3] == ["MN_ID", "STATE", "IPV4_HOA"]
    assert MN_ID in table[1] and binding["ipv4_hoa"] in table[1]
    show = topo.lma.ctl("show", MN_ID)
    assert show.returncode == 0 and binding["ipv4_hoa"] in show.stdout
    missing = topo.lma.ctl("show", "nobody@example.net")
    assert missing.returncode == 1 and "no binding" in missing.stderr
    status = topo.lma.ctl_json("status")
    assert status["role"] == "lma" and status["bindings"] == 1
    pools = topo.lma.ctl("pools").stdout
    assert "pool1" in pools and "10.10.0.0/24" in pools
    assert topo.mag.ctl("pools").returncode == 1  # the MAG has no pools, and says so
    assert socket.AF_UNIX  # the socket is unix and root-only:
    assert oct(topo.lma.socket.stat().st_mode & 0o777) == "0o600"


def test_reload_keeps_untouched_bindings_and_refuses_bad_config(lab: Lab, tmp_path: Path) -> None:
    """Reload applies a new pool without dropping the binding it does not touch; an invalid
    file is refused and the running configuration kept."""
    topo = Topology(lab, tmp_path, "ipv6").build()
    _up(topo)
    before = wait_for(topo.lma_binding, 10, what="LMA binding")
    text = topo.lma.config_path.read_text()
    topo.lma.config_path.write_text(
        text.replace("ipv4_pools:", "ipv4_pools:\n  - {name: pool2, prefix: 10.20.0.0/24}")
    )
    assert topo.lma.ctl("reload").returncode == 0
    assert {p["name"] for p in topo.lma.ctl_json("pools")} >= {"pool1", "pool2"}
    assert topo.lma_binding()["ipv4_hoa"] == before["ipv4_hoa"]  # type: ignore[index]
    topo.lma.config_path.write_text(text.replace(LMAA, "not-an-address"))
    bad = topo.lma.ctl("reload")
    assert bad.returncode == 1 and "lmaa" in bad.stderr
    assert "reload refused" in topo.lma.log_text()
    assert topo.lma_binding()["ipv4_hoa"] == before["ipv4_hoa"]  # type: ignore[index]


MN_SCRIPT = """
import socket, sys, time
from scapy.layers.dhcp import BOOTP, DHCP
mac = bytes.fromhex(sys.argv[2].replace(":", ""))
kind = sys.argv[1]
if kind == "rs":
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    for _ in range(50):  # until duplicate address detection frees the link-local address
        try:
            s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0, 1, 1]) + mac,
                     ("ff02::2", 0, 0, socket.if_nametoindex("eth0")))
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("no usable link-local address")
else:
    if kind == "junk":
        payload = b"\\x01\\x01\\x06" + bytes(20)
    else:
        payload = bytes(BOOTP(chaddr=mac + bytes(10), xid=7, flags=0x8000)
                        / DHCP(options=[("message-type", kind), "end"]))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.bind(("0.0.0.0", 68))
    s.sendto(payload, ("255.255.255.255", 67))
"""


def test_attach_on_router_solicitation_and_dhcp(lab: Lab, tmp_path: Path) -> None:
    """On a shared access link the MAG finds the MN by its link-layer address: a Router
    Solicitation or its first DHCP message attaches it, DHCP RELEASE detaches it, and an
    MN without a policy profile gets no service."""
    topo = Topology(lab, tmp_path, "ipv6", shared_access=True).build()
    topo.lma.start()
    topo.mag.start()
    script = tmp_path / "mn.py"
    script.write_text(MN_SCRIPT)

    def mn(kind: str, mac: str = MN_MAC) -> None:
        topo.lab.run(topo.ns_mn, f"{sys.executable} {script} {kind} {mac}")

    time.sleep(0.5)
    assert topo.mag.ctl_json("bindings") == []  # link up alone says nothing on a shared link
    mn("rs")
    wait_for(topo.lma_binding, 10, what="registration after a router solicitation")
    assert "attach: mn=mn1@example.net on acc1 (router solicitation)" in topo.mag.log_text()
    mn("release")
    wait_for(lambda: topo.lma_binding() is None, 10, what="detach after DHCP RELEASE")
    mn("discover")
    wait_for(topo.lma_binding, 10, what="registration after DHCP DISCOVER")
    assert "(DHCP DISCOVER)" in topo.mag.log_text()
    mn("rs", "02:00:00:00:00:99")
    wait_for(
        lambda: "02:00:00:00:00:99) has no policy profile: no service" in topo.mag.log_text(),
        5,
        what="the unknown MN logged",
    )
    mn("junk")
    wait_for(
        lambda: topo.mag.metrics().get('pmip_messages_dropped_total{reason="dhcp-short"}', 0) >= 1,
        5,
        what="malformed DHCP counted",
    )
    assert len(topo.mag.ctl_json("bindings")) == 1


def test_mag_restart_reregisters_same_hoa_with_json_logs(lab: Lab, tmp_path: Path) -> None:
    """The MAG keeps its binding update list: after kill -9 it re-registers its MN asking
    for the same HoA, which the LMA grants. Its JSON-lines log names the MN on each line
    about a binding."""
    topo = Topology(lab, tmp_path, "ipv4").build()
    text = topo.mag.config_path.read_text().replace("format: text", "format: json")
    topo.mag.config_path.write_text(text)
    _up(topo)
    before = wait_for(topo.mag_entry, 10, what="MAG registration")
    topo.mag.stop(signal.SIGKILL)
    topo.mag.start()
    wait_for(
        lambda: (
            "re-registering mn1@example.net with hoa " + before["ipv4_hoa"] in topo.mag.log_text()
        ),
        10,
        what="re-registration after restart",
    )
    after = wait_for(topo.mag_entry, 10, what="registration after restart")
    assert after["ipv4_hoa"] == before["ipv4_hoa"]
    assert topo.lma_binding()["ipv4_hoa"] == before["ipv4_hoa"]  # type: ignore[index]
    records = [
        json.loads(line) for line in topo.mag.log_text().splitlines() if line.startswith("{")
    ]
    registered = [r for r in records if r["msg"].startswith("registered:")]
    assert len(registered) >= 2 and all(r["mn_id"] == MN_ID for r in registered)
    assert {"ts", "level", "logger", "msg"} <= set(registered[0])
