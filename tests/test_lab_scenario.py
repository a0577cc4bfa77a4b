"""The logic of the lab's scenario (lab/figure1.py, lab/traffic.py), without the lab.

`make lab` takes minutes; these check in seconds what its verdicts rest on:

* the traffic tools between namespaces: the CN's echoes and its TCP report carry the
  source address it saw; behind a masquerading NAT that is the NAT's address, and the
  scenario's verdict `reached` turns false;
* a probe stream across an outage during which the MN's own sends are refused keeps
  going, and measures the gap;
* the report's verdicts (handover summary, scenario_ok) from observations, each of
  which can make them fail.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import Lab
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    MIP6MH_BU,
    ICMPv6MLReport2,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import ARP, Ether

ROOT = Path(__file__).resolve().parent.parent
TRAFFIC = str(ROOT / "lab" / "traffic.py")
CN = "192.0.2.100"
MN_ADDR, NAT_ADDR = "10.0.1.2", "10.0.2.1"


def _figure1() -> Any:
    spec = importlib.util.spec_from_file_location("_figure1_scenario", ROOT / "lab" / "figure1.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figure1 = _figure1()
spec = importlib.util.spec_from_file_location("_lab_traffic", TRAFFIC)
assert spec and spec.loader
traffic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(traffic)


@pytest.fixture
def path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Lab, str, str, str]]:
    """mn (10.0.1.2) -- r (forwards; NATs on demand) -- cn (192.0.2.100 on lo)."""
    lab = Lab("s" + re.sub(r"\W", "", request.node.name)[-5:])
    try:
        mn, r, cn = lab.ns("mn"), lab.ns("r"), lab.ns("cn")
        lab.link(mn, "eth0", r, "in0")
        lab.link(r, "out0", cn, "eth0")
        lab.addr(mn, "eth0", f"{MN_ADDR}/24")
        lab.addr(r, "in0", "10.0.1.1/24")
        lab.addr(r, "out0", f"{NAT_ADDR}/24")
        lab.addr(cn, "eth0", "10.0.2.2/24")
        lab.addr(cn, "lo", f"{CN}/32")
        lab.run(mn, "ip route add default via 10.0.1.1")
        lab.run(cn, "ip route add default via 10.0.2.1")
        lab.run(r, f"ip route add {CN}/32 via 10.0.2.2")
        lab.run(r, "sysctl -qw net.ipv4.ip_forward=1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", cn, sys.executable, TRAFFIC, "serve", "--v4", CN],
            stdout=subprocess.PIPE,
            text=True,
        )
        lab.procs.append(server)  # type: ignore[arg-type]
        assert server.stdout is not None and "listening" in server.stdout.readline()
        yield lab, mn, r, cn
    finally:
        lab.close()


def _tool(lab: Lab, ns: str, *args: str, timeout: float = 30) -> dict[str, Any]:
    out = lab.run(ns, f"{sys.executable} {TRAFFIC} {' '.join(args)}").stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_the_cn_reports_the_source_it_saw_and_a_nat_fails_the_check(path: Any) -> None:
    lab, mn, r, _ = path
    echo = _tool(lab, mn, "echo", "--to", CN, "--bind", MN_ADDR)
    assert echo["echoed"] == 3 and echo["cn_saw"] == [MN_ADDR]
    assert figure1.reached(True, echo, MN_ADDR)["reached"]
    tcp = _tool(lab, mn, "transfer", "--to", CN, "--bind", MN_ADDR, "--bytes", "300000")
    assert tcp["cn_bytes"] == 300000 and tcp["intact"] and tcp["cn_saw"] == MN_ADDR

    # The same traffic through a masquerading NAT: it still gets there, but the CN sees
    # the NAT's address, so the scenario does not count it as reaching the CN.
    nft = "add table ip n; add chain ip n p { type nat hook postrouting priority 100 ; }; "
    lab.run(r, f"nft '{nft}add rule ip n p oifname out0 masquerade'")
    echo = _tool(lab, mn, "echo", "--to", CN, "--bind", MN_ADDR)
    assert echo["echoed"] == 3 and echo["cn_saw"] == [NAT_ADDR]
    assert not figure1.reached(True, echo, MN_ADDR)["reached"]
    assert not figure1.reached(False, {"echoed": 0, "cn_saw": []}, MN_ADDR)["reached"]


def test_the_probe_stream_survives_refused_sends_and_measures_the_gap(path: Any) -> None:
    lab, mn, _, _ = path
    argv = f"ip netns exec {mn} {sys.executable} {TRAFFIC} probe --to {CN} --bind {MN_ADDR}"
    probe = subprocess.Popen(
        [*argv.split(), "--duration", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lab.procs.append(probe)  # type: ignore[arg-type]
    time.sleep(0.8)
    lab.run(mn, "ip route del default")  # sendto() now fails: "Network is unreachable"
    time.sleep(0.4)
    lab.run(mn, "ip route add default via 10.0.1.1")
    out, _ = probe.communicate(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sent"] >= 1500  # it kept sending through the outage
    assert 0 < result["echoed"] < result["sent"]
    assert result["cn_saw"] == [MN_ADDR]
    assert 350 <= result["max_gap_ms"] < 5000, result
    assert 0.3 <= result["gap_at_s"] <= 2.0, result


# --- the report's verdicts -----------------------------------------------------------------

HOA = "10.100.0.2"
BEFORE = {"mag": "2001:db8:1::2", "ipv4_hoa": HOA, "transport": "ipv6", "nat": False}
AFTER = {"mag": "2001:db8:2::2", "ipv4_hoa": HOA, "transport": "ipv4-udp", "nat": True}
LEASE = {"ip": HOA, "serverid": "10.100.0.1", "seconds": "0.1"}
STREAM = {"sent": 6000, "echoed": 5990, "lost": 10, "max_gap_ms": 40.0, "cn_saw": [HOA]}
TCP = {"bytes": 4000000, "cn_bytes": 4000000, "intact": True, "cn_saw": HOA}


def _handover(**changes: Any) -> dict[str, Any]:
    args = {"hoa": HOA, "before": BEFORE, "after": AFTER, "lease": LEASE}
    args |= {"stream": STREAM, "transfer": TCP} | changes
    return dict(figure1.summarize_handover(**args))


def test_the_handover_summary_comes_from_the_observations() -> None:
    ho = _handover()
    assert (ho["from"], ho["to"], ho["moved"], ho["same_hoa"]) == ("mag1", "mag2", True, True)
    assert ho["interruption_ms"] == 40.0
    assert ho["lma_sees"] == {"transport": "ipv4-udp", "nat": True}
    # Each observation can spoil it.
    assert not _handover(lease={**LEASE, "ip": "10.100.0.3"})["same_hoa"]
    assert not _handover(lease=None)["same_hoa"]
    assert not _handover(after={**AFTER, "ipv4_hoa": "10.100.0.3"})["same_hoa"]
    assert not _handover(stream={**STREAM, "cn_saw": ["198.18.2.2"]})["same_hoa"]
    stayed = _handover(after=BEFORE)
    assert not stayed["moved"] and stayed["interruption_ms"] is None
    silent = _handover(stream={"sent": 6000, "echoed": 0, "max_gap_ms": None, "cn_saw": []})
    assert silent["interruption_ms"] is None


def _report() -> dict[str, Any]:
    node = {"ipv4_hoa": HOA, "reached_cn": True, "handover": None, "wire_matches_transport": True}
    sas = {h: [f"peer/{h}-hosts"] for h in figure1.IPSEC_HOSTS}
    uplink = {"ipsec": True, "packets": {"esp": 20}, "as_expected": True}
    return {
        "mobile_nodes": [
            {**node, "handover": _handover()},
            {**node, "ipv4_hoa": "10.200.0.5", "reached_cn_v6": True},
            {**node, "ipv4_hoa": "10.150.0.100"},
        ],
        "ipsec": {"child_sas": sas, "uplinks": {"mag1": uplink, "mag2": dict(uplink)}},
        "kernel_relay": {"active": True, "to_server": 1, "to_mn": 2, "ack_up": 0},
    }


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: r["mobile_nodes"][2].update(reached_cn=False),
        lambda r: r["mobile_nodes"][1].update(ipv4_hoa=None),
        lambda r: r["mobile_nodes"][1].update(reached_cn_v6=False),
        lambda r: r["mobile_nodes"][2].update(wire_matches_transport=False),
        lambda r: r["mobile_nodes"][0]["handover"].update(same_hoa=False),
        lambda r: r["mobile_nodes"][0]["handover"].update(interruption_ms=None),
        lambda r: r["mobile_nodes"][0]["handover"]["tcp"].update(intact=False),
        lambda r: r["mobile_nodes"][0].update(handover=None),
        lambda r: r["mobile_nodes"].clear(),
        lambda r: r["ipsec"]["child_sas"].update(lma2=[]),
        lambda r: r["ipsec"]["uplinks"]["mag2"].update(as_expected=False),
        lambda r: r["ipsec"]["uplinks"].clear(),
        lambda r: r.pop("ipsec"),
        lambda r: r["kernel_relay"].update(active=False),
        lambda r: r["kernel_relay"].update(to_mn=0),
        lambda r: r.pop("kernel_relay"),
    ],
)
def test_the_scenario_fails_on_any_missing_observation(spoil: Any) -> None:
    report = _report()
    assert figure1.scenario_ok(report)
    spoiled = copy.deepcopy(report)
    spoil(spoiled)
    assert not figure1.scenario_ok(spoiled)


def test_the_wire_check_tells_the_encapsulations_apart() -> None:
    inner = IP(src="10.100.0.2", dst=CN) / ICMP()
    other = IP(src="10.100.0.9", dst=CN) / ICMP()
    hoa = bytes([10, 100, 0, 2])
    frames = {
        "ipv4-in-ipv6": Ether() / IPv6(src="2001:db8:1::2", dst="2001:db8:12::2") / inner,
        "ipv4-in-ipv4": Ether() / IP(src="10.2.0.2", dst="198.18.1.2") / inner,
        "ipv4-in-udp": Ether() / IP() / UDP(sport=5437, dport=5437) / inner,
    }
    for kind, frame in frames.items():
        assert traffic.encapsulation(bytes(frame), hoa) == kind
    assert traffic.encapsulation(bytes(Ether() / IPv6() / other), hoa) is None
    assert traffic.encapsulation(bytes(Ether() / IP() / UDP(dport=5436) / inner), hoa) is None
    assert traffic.encapsulation(bytes(Ether() / inner), hoa) is None  # not tunnelled
    ping_and_echoes = {"packets": {"ipv4-in-udp": 12}}
    assert figure1.wire_matches(ping_and_echoes, "ipv4-udp", protected=False)
    assert not figure1.wire_matches(ping_and_echoes, "ipv6", protected=False)
    mixed = {"packets": {"ipv4-in-udp": 12, "ipv4-in-ipv4": 1}}
    assert not figure1.wire_matches(mixed, "ipv4-udp", protected=False)
    assert not figure1.wire_matches({"packets": {}}, "ipv4-udp", protected=False)
    # Unrelated frames (ESP of other traffic, IKE) do not spoil an unprotected match.
    assert figure1.wire_matches({"packets": {"ipv4-in-udp": 12, "ike": 2}}, "ipv4-udp", False)


def test_the_wire_check_tells_protected_from_clear() -> None:
    """ESP (raw and in UDP 4500), IKE (UDP 500, 4500 with the zero marker, keepalives)
    and PMIPv6 signalling in the clear (the MH, UDP 5436) are told apart."""
    v6 = Ether() / IPv6(src="2001:db8:1::2", dst="2001:db8:12::2")
    v4 = Ether() / IP(src="10.2.0.2", dst="198.18.1.2")
    esp_in_udp = UDP(sport=4500, dport=4500) / (b"\x00\x00\x10\x01" + bytes(40))
    ike_in_4500 = UDP(sport=4500, dport=4500) / (bytes(4) + bytes(40))
    frames = {
        "esp": [v6 / esp_in_udp, v4 / esp_in_udp, v4 / ESP(spi=7, seq=1)],
        "ike": [v6 / UDP(sport=500, dport=500) / bytes(40), v4 / ike_in_4500],
        "signalling": [v6 / MIP6MH_BU(), v4 / UDP(sport=5436, dport=5436) / bytes(24)],
    }
    for kind, examples in frames.items():
        for frame in examples:
            assert traffic.protection(bytes(frame)) == kind, frame.summary()
    keepalive = v4 / UDP(sport=4500, dport=4500) / b"\xff"
    assert traffic.protection(bytes(keepalive)) == "ike"
    assert traffic.protection(bytes(v4 / UDP(sport=53, dport=53) / bytes(20))) == "other"
    assert traffic.protection(bytes(v6 / IP() / ICMP())) == "other"  # a clear tunnel packet
    assert traffic.protection(bytes(v6 / ICMPv6ND_NS())) == "icmpv6"
    mld = v6 / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2()
    assert traffic.protection(bytes(mld)) == "icmpv6"
    assert traffic.protection(bytes(Ether() / ARP())) is None
    # A protected uplink: the MN's traffic only inside ESP, no signalling in the clear.
    assert figure1.wire_matches({"packets": {"esp": 12}}, "ipv6", protected=True)
    assert not figure1.wire_matches({"packets": {"esp": 12, "ipv4-in-ipv6": 1}}, "ipv6", True)
    assert not figure1.wire_matches({"packets": {"esp": 12, "signalling": 1}}, "ipv6", True)
    assert not figure1.wire_matches({"packets": {"esp": 2}}, "ipv6", protected=True)
    assert not figure1.wire_matches({"packets": {"esp": 12, "other": 1}}, "ipv6", True)
    assert figure1.signalling_verdict("mag1", {"packets": {"esp": 4, "ike": 2}})
    assert not figure1.signalling_verdict("mag1", {"packets": {"esp": 4, "signalling": 2}})
    assert not figure1.signalling_verdict("mag1", {"packets": {}})
    assert not figure1.signalling_verdict("mag1", {"packets": {"esp": 4, "other": 1}})
    assert figure1.signalling_verdict("mag1", {"packets": {"esp": 4, "icmpv6": 3}})
    assert figure1.signalling_verdict("mag2", {"packets": {"signalling": 4}})
    assert not figure1.signalling_verdict("mag2", {"packets": {"esp": 4}})
