"""IPsec-protected signalling (RFC 5213 §4, seed §6) with real strongSwan daemons.

Namespaces (this run's prefix, removed even on failure): an LMA, a MAG with an IKEv2 SA
to it (charon in both, configured by roles/strongswan's lab mode: kernel-libipsec, tunnel
mode, ESP in UDP 4500), an MN, and a rogue namespace on another link of the LMA that runs
two MAG daemons without any SA: one from its own address, one claiming the real MAG's
address. Both agents run with ``require_ipsec: true``.

Checked: the capture on the MAG-LMA link shows only ESP in UDP 4500 while PBU/PBA
succeed; every rogue PBU seen on the rogue link is dropped, counted and logged, never
processed; IKE terminated, and charon killed, mid-run lose no binding, and signalling
resumes when the SA returns. The figures (latency with and without IPsec, resume times,
rogue counts) are printed and written to build/ipsec_figures.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_lab import Daemon
from ipsec_lab import Charon, require_strongswan, sa_pair
from netns import Lab, wait_for
from pcap import tshark_binary
from robust_lab import MhClient, make_pbu

LMAA = "2001:db8:f::1"
MAG = "2001:db8:f::2"
LMA_ROGUE_SIDE = "2001:db8:e::1"
ROGUE = "2001:db8:e::66"
LMA_V4, MAG_V4 = "192.0.2.1", "192.0.2.2"
LMA_ROGUE_SIDE_V4, ROGUE_V4 = "198.51.100.1", "198.51.100.66"
POOL = "10.30.0.0/24"
MNS = ["mn1@example.net", "mn2@example.net"]
ROGUE_MNS = ["rogue1@example.net", "rogue2@example.net"]
LATENCY_MNS = [f"lat{i}@example.net" for i in range(20)]
ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "build" / "ipsec_figures.json"

# MAG timers: a refresh every 5 s (lifetime 20 s, refresh at 25%), so one comes due while
# IKE is down, and the LMA's bindings (20 s) outlive an 8 s outage.
MAG_TIMERS = {
    "initial_bindack_timeout_s": 0.3,
    "max_bindack_timeout_s": 1.0,
    "max_transmissions": 3,
    "retry_after_failure_s": 1.0,
    "lifetime_s": 20,
    "refresh_fraction": 0.25,
}


def lma_config(tmp: Path, name: str, ipsec: dict[str, Any] | None, port: int) -> dict[str, Any]:
    nodes = [
        {"mn_id": mn, "ipv6": False, "ipv4": {"mode": "lma", "pool": "p"}}
        for mn in MNS + ROGUE_MNS + LATENCY_MNS
    ]
    config: dict[str, Any] = {
        "role": "lma",
        "node_name": name,
        "state_dir": str(tmp / f"{name}-state"),
        "control_socket": str(tmp / f"{name}.sock"),
        "log": {"level": "info", "format": "text"},
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": port},
        "dataplane": {"enabled": False},
        "lma": {
            "lmaa": LMAA,
            # The rogues are on the list: their PBUs would be accepted if processed.
            "allowed_mags": [MAG, ROGUE, MAG_V4, ROGUE_V4],
            "ipv4_lmaa": LMA_V4,
            "ipv4_pools": [{"name": "p", "prefix": POOL}],
        },
        "mobile_nodes": nodes,
    }
    if ipsec is not None:
        config.update(require_ipsec=True, ipsec=ipsec)
    return config


def mag_config(
    tmp: Path,
    name: str,
    coa: str,
    mns: list[str],
    ipsec: dict[str, Any] | None,
    port: int,
    coa4: str | None = None,
) -> dict[str, Any]:
    lma: dict[str, Any] = {"name": "lma1", "lmaa": LMAA, "transport": "ipv6"}
    if coa4 is not None:  # signalling over IPv4/UDP 5436 (RFC 5844)
        lma.update(ipv4_lmaa=LMA_V4, transport="ipv4")
    config: dict[str, Any] = {
        "role": "mag",
        "node_name": name,
        "state_dir": str(tmp / f"{name}-state"),
        "control_socket": str(tmp / f"{name}.sock"),
        "log": {"level": "info", "format": "text"},
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": port},
        "dataplane": {"enabled": False},
        "timers": MAG_TIMERS,
        "mag": {
            "proxy_coa": coa,
            "ipv4_proxy_coa": coa4,
            "lmas": [lma],
            "access_interfaces": [{"name": f"acc{i + 1}", "mn_id": mn} for i, mn in enumerate(mns)],
        },
        "mobile_nodes": [
            {"mn_id": mn, "lma": "lma1", "ipv6": False, "ipv4": {"mode": "lma"}} for mn in mns
        ],
    }
    if ipsec is not None:
        config.update(require_ipsec=True, ipsec=ipsec)
    return config


def daemon(lab: Lab, ns: str, tmp: Path, config: dict[str, Any]) -> Daemon:
    name = config["node_name"]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return Daemon(
        lab, ns, path, tmp / f"{name}.sock", tmp / f"{name}.log", config["metrics"]["port"]
    )


def lma_rows(lma: Daemon) -> dict[str, dict[str, Any]]:
    return {r["mn_id"]: r for r in lma.ctl_json("bindings") if r["state"] == "active"}


def mag_registered(mag: Daemon) -> set[str]:
    return {r["mn_id"] for r in mag.ctl_json("bindings") if r["registered"]}


def unprotected(lma: Daemon) -> float:
    return lma.metrics().get('pmip_messages_dropped_total{reason="ipsec-unprotected"}', 0.0)


def pbus_received(lma: Daemon) -> float:
    return sum(v for k, v in lma.metrics().items() if k.startswith("pmip_pbu_total{"))


class Capture:
    """tshark writing a pcapng of one interface of a namespace."""

    def __init__(self, lab: Lab, ns: str, ifname: str, path: Path) -> None:
        self.path = path
        self.proc = lab.spawn(
            ns, [tshark_binary(), "-q", "-i", ifname, "-w", str(path)], path.with_suffix(".log")
        )
        self.lab = lab
        wait_for(lambda: path.exists() and path.stat().st_size > 0, 15, what=f"capture {path}")

    def stop(self) -> None:
        time.sleep(0.3)  # let the last packets reach the file
        self.lab.kill(self.proc)

    def frames(self) -> list[tuple[str, str, str]]:
        """(protocol stack, UDP ports, ICMPv6 type) of every frame."""
        fields = ["frame.protocols", "udp.port", "icmpv6.type"]
        out = subprocess.run(
            [tshark_binary(), "-r", str(self.path), "-T", "fields"]
            + [arg for f in fields for arg in ("-e", f)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [[*line.split("\t"), "", ""] for line in out.splitlines()]
        return [(r[0], r[1], r[2]) for r in rows]

    def count(self, display_filter: str) -> int:
        out = subprocess.run(
            [tshark_binary(), "-r", str(self.path), "-Y", display_filter],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return len(out.splitlines())


def rtts(client: MhClient, src: str, n: int) -> list[float]:
    """n PBU→PBA round trips, one at a time, over the latency MNs (refreshes after the
    first pass)."""
    out = []
    for i in range(n):
        pbu = make_pbu(LATENCY_MNS[i % len(LATENCY_MNS)], i + 1)
        t0 = time.perf_counter()
        pba = client.exchange(pbu, src, timeout=3.0)
        out.append(time.perf_counter() - t0)
        assert pba.status == 0, pba
    return out


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "median_ms": round(statistics.median(xs) * 1000, 3),
        "p95_ms": round(xs[int(0.95 * (len(xs) - 1))] * 1000, 3),
    }


@pytest.fixture
def lab():
    require_strongswan()
    lab = Lab("ips")
    yield lab
    lab.close()


def mag_and_rogue_links(lab: Lab, ns_lma: str, ns_mag: str, ns_rog: str) -> None:
    """The MAG on the LMA's tr0 (the MAG-LMA link), a rogue namespace on its tr1, routed
    to the MAG-LMA prefix."""
    lab.link(ns_mag, "tr0", ns_lma, "tr0")
    lab.addr(ns_lma, "tr0", f"{LMAA}/64")
    lab.addr(ns_mag, "tr0", f"{MAG}/64")
    lab.link(ns_rog, "tr0", ns_lma, "tr1")
    lab.addr(ns_lma, "tr1", f"{LMA_ROGUE_SIDE}/64")
    lab.addr(ns_rog, "tr0", f"{ROGUE}/64")
    lab.run(ns_rog, f"ip -6 route add 2001:db8:f::/64 via {LMA_ROGUE_SIDE}")


def test_signalling_only_under_ipsec(lab: Lab, tmp_path: Path) -> None:
    figures: dict[str, Any] = {"loadavg_before": os.getloadavg()}
    ns_lma, ns_mag, ns_mn, ns_rog = lab.ns("lma"), lab.ns("mag"), lab.ns("mn"), lab.ns("rog")
    mag_and_rogue_links(lab, ns_lma, ns_mag, ns_rog)
    # The second rogue claims the real MAG's address; it reaches the LMA over its own link.
    lab.addr(ns_rog, "lo", f"{MAG}/128")
    for i in (1, 2):
        lab.link(ns_mn, f"eth{i}", ns_mag, f"acc{i}")
        lab.run(ns_mn, f"ip link set eth{i} down")
        lab.link(ns_rog, f"acc{i}", ns_rog, f"rmn{i}")

    lma_ike, mag_ike = sa_pair(lab, ns_lma, ns_mag, tmp_path, LMAA, MAG)

    def ipsec(charon: Charon) -> dict[str, Any]:
        return {
            "vici_socket": str(charon.vici),
            "ingress_interface": "ipsec0",
            "poll_interval_s": 0.2,
        }

    lma = daemon(lab, ns_lma, tmp_path, lma_config(tmp_path, "lma1", ipsec(lma_ike), 9561))
    mag = daemon(
        lab, ns_mag, tmp_path, mag_config(tmp_path, "mag1", MAG, MNS, ipsec(mag_ike), 9562)
    )
    rogues = [
        daemon(lab, ns_rog, tmp_path, mag_config(tmp_path, f"rogue{i + 1}", coa, [mn], None, port))
        for i, (coa, mn, port) in enumerate(
            [(ROGUE, ROGUE_MNS[0], 9563), (MAG, ROGUE_MNS[1], 9564)]
        )
    ]
    link = Capture(lab, ns_lma, "tr0", tmp_path / "mag-lma.pcapng")
    rogue_link = Capture(lab, ns_lma, "tr1", tmp_path / "rogue-lma.pcapng")
    lma.start()
    mag.start()

    # 1. A PBU/PBA exchange through the SA: the MN registers.
    lab.run(ns_mn, "ip link set eth1 up")
    wait_for(lambda: MNS[0] in lma_rows(lma), 10, what="mn1 bound at the LMA")
    wait_for(lambda: MNS[0] in mag_registered(mag), 10, what="mn1 registered at the MAG")

    # 2. The rogues: valid PBUs from an allowed MAG address, without an SA.
    for r in rogues:
        r.start()
    for i in (1, 2):
        lab.run(ns_rog, f"ip link set rmn{i} up")
    wait_for(lambda: unprotected(lma) >= 6, 15, what="rogue PBUs counted as unprotected")
    time.sleep(1.0)
    for r in rogues:
        r.stop()
    time.sleep(0.5)
    rogue_link.stop()
    rogue_pbus = rogue_link.count("mip6.mhtype == 5")
    dropped = unprotected(lma)
    rows = lma_rows(lma)
    assert not set(ROGUE_MNS) & set(rows), f"a rogue MN got a binding: {rows}"
    assert rogue_pbus > 0 and dropped == rogue_pbus, (dropped, rogue_pbus)
    assert rogue_link.count(f"mip6.mhtype == 5 and ipv6.src == {MAG}") > 0, "no spoofed PBU"
    assert rogue_link.count("mip6.mhtype == 6") == 0, "a PBA went to a rogue"
    for r in rogues:
        assert "registered:" not in r.log_text()
    logged = lma.log_text().count("not protected by an IPsec SA")
    assert 0 < logged <= dropped
    figures["rogue"] = {"pbus_on_wire": rogue_pbus, "dropped_counted": dropped, "logged": logged}

    # 3. PBU/PBA latency through ESP (the baseline without IPsec is measured below).
    client = MhClient(ns_mag, LMAA)
    try:
        figures["latency_ipsec"] = summary(rtts(client, MAG, 300))
    finally:
        client.close()

    link.stop()
    frames = link.frames()
    assert frames, "nothing captured on the MAG-LMA link"
    kinds: dict[str, int] = {}
    for stack, ports, icmp in frames:
        layers = stack.split(":")
        if "esp" in layers and "4500" in ports.split(","):
            kind = "esp-in-udp-4500"
        elif "isakmp" in layers and ports == "4500,4500":
            kind = "ike-udp-4500"  # IKE's own (encrypted) informational exchanges
        elif layers[-1] == "udp" and ports == "4500,4500":
            kind = "nat-t-keepalive"
        elif icmp in ("133", "134", "135", "136", "143"):
            kind = "nd-mld"  # neighbour discovery and MLD on the link
        else:
            kind = f"OTHER {stack} {ports}"
        kinds[kind] = kinds.get(kind, 0) + 1
    assert not [k for k in kinds if k.startswith("OTHER")], f"not ESP on the link: {kinds}"
    assert kinds.get("esp-in-udp-4500", 0) >= 2 * 300, kinds  # the PBUs and PBAs
    assert link.count("mipv6 or ipv6.nxt == 135") == 0 and link.count("udp.port == 5436") == 0
    figures["capture"] = kinds

    # 4. IKE terminated mid-run: signalling waits, no binding is lost, then resumes.
    pbus_before = pbus_received(lma)
    mag_ike.swanctl("--terminate", "--ike", "lma1")
    wait_for(lambda: "signalling waits" in mag.log_text(), 5, what="the MAG holding")
    lab.run(ns_mn, "ip link set eth2 up")  # an attach during the outage: parked
    time.sleep(8)  # longer than the refresh interval (5 s), shorter than the lifetime
    assert MNS[1] not in lma_rows(lma)
    assert pbus_received(lma) == pbus_before, "a PBU reached the LMA without an SA"
    assert MNS[0] in lma_rows(lma), "the LMA lost mn1 while IKE was down"
    assert mag_registered(mag) == {MNS[0]}, "the MAG dropped mn1 while IKE was down"
    t0 = time.monotonic()
    mag_ike.swanctl("--initiate", "--child", "lma1-hosts")
    sa_back = time.monotonic()
    wait_for(lambda: MNS[1] in lma_rows(lma), 10, 0.02, what="mn2 bound after IKE returned")
    resumed = time.monotonic()
    wait_for(
        lambda: lma_rows(lma)[MNS[0]]["lifetime_remaining_s"] > 16,
        10,
        what="mn1 refreshed after IKE returned",
    )
    figures["terminate"] = {
        "ike_up_s": round(sa_back - t0, 3),
        "signalling_resumed_after_sa_s": round(resumed - sa_back, 3),
    }

    # 5. charon killed (no IKE delete): the MAG holds; a new charon brings it back.
    bound = set(lma_rows(lma))
    pbus_before, dropped_before = pbus_received(lma), unprotected(lma)
    mag_ike.kill()
    wait_for(lambda: mag.log_text().count("signalling waits") >= 2, 5, what="hold on kill")
    time.sleep(6)  # a refresh comes due meanwhile
    assert set(lma_rows(lma)) == bound and mag_registered(mag) == set(MNS)
    assert (pbus_received(lma), unprotected(lma)) == (pbus_before, dropped_before), "not held"
    t0 = time.monotonic()
    mag_ike.start()
    mag_ike.wait_installed()
    sa_back = time.monotonic()
    wait_for(lambda: mag.log_text().count("signalling resumes") >= 3, 10, 0.02, what="resume")
    wait_for(
        lambda: all(r["lifetime_remaining_s"] > 16 for r in lma_rows(lma).values()),
        10,
        0.02,
        what="both MNs refreshed through the new SA",
    )
    resumed = time.monotonic()
    figures["kill"] = {
        "charon_restart_to_sa_s": round(sa_back - t0, 3),
        "refreshes_done_after_sa_s": round(resumed - sa_back, 3),
    }
    assert set(lma_rows(lma)) == bound and mag_registered(mag) == set(MNS)

    # 5b. The LMA's charon killed, between two refreshes: the LMA trusts nothing while
    # vici is gone, and its new charon initiates the SA again (the MAG's charon cannot
    # tell the old SA died; it takes the new one in its place).
    wait_for(
        lambda: all(r["lifetime_remaining_s"] > 18 for r in lma_rows(lma).values()),
        10,
        0.05,
        what="both MNs just refreshed",
    )
    empty = "IPsec child SAs installed: none"
    seen = lma.log_text().count(empty)
    t0 = time.monotonic()
    lma_ike.kill()
    wait_for(lambda: lma.log_text().count(empty) > seen, 5, 0.02, what="LMA table empty")
    lma_ike.start()
    lma_ike.swanctl("--initiate", "--child", "mag1-hosts")
    sa_back = time.monotonic()
    accepted = pbus_received(lma)
    wait_for(
        lambda: (
            pbus_received(lma) >= accepted + 2
            and all(r["lifetime_remaining_s"] > 18 for r in lma_rows(lma).values())
        ),
        15,
        0.05,
        what="both MNs' next refreshes through the LMA's new SA",
    )
    figures["lma_kill"] = {
        "outage_s": round(sa_back - t0, 3),
        "next_refreshes_after_sa_s": round(time.monotonic() - sa_back, 3),
    }
    assert set(lma_rows(lma)) == bound and mag_registered(mag) == set(MNS)
    for text in (lma.log_text(), mag.log_text()):
        assert "binding lost" not in text and "binding down" not in text
        assert "Traceback" not in text

    # 6. Baseline: the same PBUs without IPsec, on a plain link to a plain LMA.
    ns_plma, ns_pcli = lab.ns("plma"), lab.ns("pcli")
    lab.link(ns_pcli, "tr0", ns_plma, "tr0")
    lab.addr(ns_plma, "tr0", f"{LMAA}/64")
    lab.addr(ns_pcli, "tr0", f"{MAG}/64")
    plain = daemon(lab, ns_plma, tmp_path, lma_config(tmp_path, "plain", None, 9565))
    plain.start()
    client = MhClient(ns_pcli, LMAA)
    try:
        figures["latency_plain"] = summary(rtts(client, MAG, 300))
    finally:
        client.close()
    figures["latency_ratio_median"] = round(
        figures["latency_ipsec"]["median_ms"] / figures["latency_plain"]["median_ms"], 2
    )
    figures["loadavg_after"] = os.getloadavg()
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


def test_agent_refuses_nothing_but_holds_without_charon(lab: Lab, tmp_path: Path) -> None:
    """require_ipsec with no charon at all: the MAG starts, logs that it cannot read the
    SAs, and sends no PBU (the LMA's link stays silent) while keeping its MN attached."""
    ns_mag, ns_mn, ns_lma = lab.ns("mag"), lab.ns("mn"), lab.ns("lma")
    lab.link(ns_mag, "tr0", ns_lma, "tr0")
    lab.addr(ns_lma, "tr0", f"{LMAA}/64")
    lab.addr(ns_mag, "tr0", f"{MAG}/64")
    lab.link(ns_mn, "eth1", ns_mag, "acc1")
    cap = Capture(lab, ns_lma, "tr0", tmp_path / "silent.pcapng")
    ipsec = {"vici_socket": str(tmp_path / "absent.vici"), "poll_interval_s": 0.2}
    mag = daemon(lab, ns_mag, tmp_path, mag_config(tmp_path, "mag1", MAG, MNS[:1], ipsec, 9566))
    mag.start()
    time.sleep(3)
    cap.stop()
    assert cap.count("mipv6 or ipv6.nxt == 135") == 0
    rows = mag.ctl_json("bindings")
    assert [r["mn_id"] for r in rows] == [MNS[0]] and not rows[0]["registered"]
    text = mag.log_text()
    assert "cannot read IPsec SAs" in text and "signalling waits" in text
    # Turning require_ipsec off is not a reload: the sockets were opened for it.
    mag.config_path.write_text(
        yaml.safe_dump(mag_config(tmp_path, "mag1", MAG, MNS[:1], None, 9566))
    )
    out = mag.ctl("reload")
    assert out.returncode != 0 and "only a restart applies" in out.stdout + out.stderr
    assert mag.ctl_json("bindings")[0]["mn_id"] == MNS[0]


def test_ipv4_udp_signalling_under_ipsec(lab: Lab, tmp_path: Path) -> None:
    """RFC 5844 signalling (UDP 5436 over IPv4) with an IPv4 IKE SA: only ESP on the link,
    the MN registers; a rogue claiming the MAG's IPv4 address from another link is
    dropped, counted and logged (IP_PKTINFO shows it did not come from ipsec0)."""
    ns_lma, ns_mag, ns_mn, ns_rog = lab.ns("lma"), lab.ns("mag"), lab.ns("mn"), lab.ns("rog")
    lab.link(ns_mag, "tr0", ns_lma, "tr0")
    for ns, v6, v4 in ((ns_lma, LMAA, LMA_V4), (ns_mag, MAG, MAG_V4)):
        lab.addr(ns, "tr0", f"{v6}/64")
        lab.addr(ns, "tr0", f"{v4}/24")
    lab.link(ns_rog, "tr0", ns_lma, "tr1")
    lab.addr(ns_lma, "tr1", f"{LMA_ROGUE_SIDE_V4}/24")
    lab.addr(ns_rog, "tr0", f"{ROGUE_V4}/24")
    lab.addr(ns_rog, "lo", f"{MAG_V4}/32")
    lab.addr(ns_rog, "lo", f"{MAG}/128")
    lab.run(ns_rog, f"ip route add 192.0.2.0/24 via {LMA_ROGUE_SIDE_V4}")
    lab.link(ns_mn, "eth1", ns_mag, "acc1")
    lab.link(ns_rog, "acc1", ns_rog, "rmn1")
    lab.run(ns_rog, "ip link set rmn1 down")
    lma_ike, mag_ike = sa_pair(lab, ns_lma, ns_mag, tmp_path, LMA_V4, MAG_V4)

    def ipsec(charon: Charon) -> dict[str, Any]:
        return {"vici_socket": str(charon.vici), "ingress_interface": "ipsec0"}

    lma = daemon(lab, ns_lma, tmp_path, lma_config(tmp_path, "lma1", ipsec(lma_ike), 9571))
    mag = daemon(
        lab,
        ns_mag,
        tmp_path,
        mag_config(tmp_path, "mag1", MAG, MNS[:1], ipsec(mag_ike), 9572, coa4=MAG_V4),
    )
    rogue = daemon(
        lab,
        ns_rog,
        tmp_path,
        mag_config(tmp_path, "rogue1", MAG, ROGUE_MNS[:1], None, 9573, coa4=MAG_V4),
    )
    link = Capture(lab, ns_lma, "tr0", tmp_path / "mag-lma.pcapng")
    lma.start()
    mag.start()
    wait_for(lambda: MNS[0] in lma_rows(lma), 10, what="mn1 bound over IPv4/UDP")
    assert lma_rows(lma)[MNS[0]]["mag_ipv4"] == MAG_V4
    rogue.start()
    lab.run(ns_rog, "ip link set rmn1 up")
    wait_for(lambda: unprotected(lma) >= 3, 15, what="spoofed IPv4 PBUs counted")
    rogue.stop()
    assert ROGUE_MNS[0] not in lma_rows(lma)
    assert "not protected by an IPsec SA" in lma.log_text()
    link.stop()
    assert link.count("udp.port == 5436 or mipv6") == 0
    assert link.count("esp") >= 2
    nd = "(icmpv6.type >= 133 and icmpv6.type <= 143)"
    assert link.count(f"not (esp or isakmp or arp or udp.port == 4500 or {nd})") == 0


def test_exempt_peers_signal_without_an_sa(lab: Lab, tmp_path: Path) -> None:
    """ipsec.exempt_peers: with require_ipsec on and no SA at all (no charon), a MAG that
    names its LMA as exempt signals to it at once, and the LMA processes the PBUs from
    that MAG's address; a MAG from any other address is still dropped and counted."""
    ns_lma, ns_mag, ns_mn, ns_rog = lab.ns("lma"), lab.ns("mag"), lab.ns("mn"), lab.ns("rog")
    mag_and_rogue_links(lab, ns_lma, ns_mag, ns_rog)
    lab.link(ns_mn, "eth1", ns_mag, "acc1")
    lab.link(ns_rog, "acc1", ns_rog, "rmn1")
    absent = str(tmp_path / "absent.vici")
    lma = daemon(
        lab,
        ns_lma,
        tmp_path,
        lma_config(tmp_path, "lma1", {"vici_socket": absent, "exempt_peers": [MAG]}, 9581),
    )
    mag_ipsec = {"vici_socket": absent, "exempt_peers": [LMAA], "poll_interval_s": 0.2}
    mag = daemon(lab, ns_mag, tmp_path, mag_config(tmp_path, "mag1", MAG, MNS[:1], mag_ipsec, 9582))
    rogue = daemon(
        lab, ns_rog, tmp_path, mag_config(tmp_path, "rogue1", ROGUE, ROGUE_MNS[:1], None, 9583)
    )
    lma.start()
    mag.start()
    rogue.start()
    wait_for(lambda: MNS[0] in lma_rows(lma), 10, what="mn1 bound through an exempt MAG")
    wait_for(lambda: MNS[0] in mag_registered(mag), 10, what="mn1 registered at the MAG")
    wait_for(lambda: unprotected(lma) >= 2, 15, what="the rogue's PBUs counted as unprotected")
    assert ROGUE_MNS[0] not in lma_rows(lma)
    assert f"signalling with {MAG} is exempt" in lma.log_text()
    assert f"signalling with {LMAA} is exempt" in mag.log_text()
    assert "registered:" not in rogue.log_text()
    # The exemptions are reloaded in place: now the rogue's address is exempt, the MAG's
    # is not (its MN stays bound until its lifetime runs out; its PBUs are dropped).
    config = lma_config(tmp_path, "lma1", {"vici_socket": absent, "exempt_peers": [ROGUE]}, 9581)
    lma.config_path.write_text(yaml.safe_dump(config))
    assert lma.ctl("reload").returncode == 0
    wait_for(lambda: ROGUE_MNS[0] in lma_rows(lma), 10, what="the newly exempt MAG's MN bound")
    assert MNS[0] in lma_rows(lma)
    assert f"IPsec: exempt peers now {ROGUE}" in lma.log_text()
    # Any other ipsec setting is a restart's.
    config["ipsec"]["poll_interval_s"] = 2.0
    lma.config_path.write_text(yaml.safe_dump(config))
    out = lma.ctl("reload")
    assert out.returncode != 0 and "only a restart applies" in out.stdout + out.stderr
