"""The data-plane lab: MN - switch - MAG1/MAG2 - (NAT) - LMA - CN, each in a namespace.

    MN eth0 --- sw (bridge) --p1--- acc1 MAG1 tr0 ---+
                            \\-p2--- acc1 MAG2 tr0 ---+--- [NAT] --- tr0 LMA cn0 --- eth0 CN

The MN has one interface on a small bridge ("sw"); the bridge port towards one MAG is up
at a time, so moving the MN is two link changes in sw: the old MAG's access link loses
carrier (detach) and the new one's gains it (attach), while the MN's own interface and
addresses stay as they are. Both MAGs use the same MAC on their access links (RFC 5213
§6.9.3), so the MN keeps its default router's ARP entry and IPv6 link-local router.

Transports: "ipv6" (IPv6 in IPv6), "ipv4" (IPv4 transport, no NAT), "nat" (both MAGs on
a private network behind one nftables masquerade: IPv4-UDP, and two MAGs behind the same
public address).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon_lab import AGENT, FAST_TIMERS, Daemon, configured_daemon
from netns import Lab, wait_for

TOOLS = str(Path(__file__).with_name("dp_tools.py"))
PY = sys.executable

LMAA = "2001:db8:f::1"
COAS = ("2001:db8:f::2", "2001:db8:f::3")
LMA_V4 = "192.0.2.1"
MAG_V4_DIRECT = ("192.0.2.2", "192.0.2.3")
MAG_V4_PRIVATE = ("10.0.0.2", "10.0.0.3")
NAT_INSIDE = "10.0.0.1"
NAT_OUTSIDE = "192.0.2.254"
CN_V4 = "198.51.100.2"
CN_V6 = "2001:db8:c::2"
POOL = "10.10.0.0/24"
ROUTER_V4 = "10.10.0.1"
HNP_POOL = "2001:db8:100::/48"
MN_ID = "mn1@example.net"
MN_MAC = "02:00:00:00:00:01"
MAG_ACCESS_MAC = "02:00:00:00:aa:01"  # the same on every MAG (RFC 5213 §6.9.3)
TUN_MTU = 1460


@dataclass
class DataplaneLab:
    lab: Lab
    tmp: Path
    transport: str  # "ipv6" | "ipv4" | "nat"
    dual_stack: bool = False
    ipv4_authorized: bool = True
    offload: tuple[str, ...] = ("tso", "gso", "gro")
    ra_interval_s: float = 5.0
    mags: list[Daemon] = field(default_factory=list)
    ns_mags: list[str] = field(default_factory=list)

    def build(self) -> DataplaneLab:
        lab = self.lab
        self.ns_mn, self.ns_sw = lab.ns("mn"), lab.ns("sw")
        self.ns_mags = [lab.ns("mag1"), lab.ns("mag2")]
        self.ns_lma, self.ns_cn = lab.ns("lma"), lab.ns("cn")
        # Access: MN - bridge - MAG1/MAG2, the MAG ports down until attach().
        lab.run(self.ns_sw, "ip link add br0 type bridge")
        lab.run(self.ns_sw, "ip link set br0 up")
        lab.link(self.ns_mn, "eth0", self.ns_sw, "p0")
        lab.run(self.ns_mn, f"ip link set eth0 address {MN_MAC}")
        # The MN's own DAD and RS delay only slow the tests down (seconds per address).
        lab.run(self.ns_mn, "sysctl -qw net.ipv6.conf.eth0.accept_dad=0")
        lab.run(self.ns_mn, "sysctl -qw net.ipv6.conf.eth0.router_solicitation_delay=0")
        lab.run(self.ns_sw, "ip link set p0 master br0")
        for i, ns in enumerate(self.ns_mags):
            lab.link(ns, "acc1", self.ns_sw, f"p{i + 1}")
            lab.run(ns, "ip link set acc1 down")
            lab.run(ns, f"ip link set acc1 address {MAG_ACCESS_MAC}")
            lab.run(ns, "ip link set acc1 up")
            lab.run(self.ns_sw, f"ip link set p{i + 1} master br0")
            lab.run(self.ns_sw, f"ip link set p{i + 1} down")
        # Transport.
        if self.transport == "nat":
            self.ns_nat = lab.ns("nat")
            lab.run(self.ns_nat, "ip link add br0 type bridge")
            lab.run(self.ns_nat, "ip link set br0 up")
            lab.addr(self.ns_nat, "br0", f"{NAT_INSIDE}/24")
            for i, ns in enumerate(self.ns_mags):
                lab.link(ns, "tr0", self.ns_nat, f"m{i + 1}")
                lab.run(self.ns_nat, f"ip link set m{i + 1} master br0")
                lab.addr(ns, "tr0", f"{MAG_V4_PRIVATE[i]}/24")
                lab.run(ns, f"ip route add default via {NAT_INSIDE}")
                lab.addr(ns, "lo", f"{COAS[i]}/128")
            lab.link(self.ns_nat, "out0", self.ns_lma, "tr0")
            lab.addr(self.ns_nat, "out0", f"{NAT_OUTSIDE}/24")
            lab.addr(self.ns_lma, "tr0", f"{LMA_V4}/24")
            lab.addr(self.ns_lma, "lo", f"{LMAA}/128")
            lab.run(self.ns_nat, "sysctl -qw net.ipv4.ip_forward=1")
            nft = (
                "add table ip nat\n"
                "add chain ip nat post { type nat hook postrouting priority 100 ; }\n"
                "add rule ip nat post oifname out0 masquerade\n"
                "add table ip count\n"
                "add chain ip count forwarded { type filter hook forward priority 0 ; }\n"
                "add rule ip count forwarded udp dport 5437 counter\n"
            )
            subprocess.run(
                ["ip", "netns", "exec", self.ns_nat, "nft", "-f", "-"],
                input=nft,
                text=True,
                check=True,
            )
        else:
            lab.run(self.ns_lma, "ip link add br0 type bridge")
            lab.run(self.ns_lma, "ip link set br0 up")
            lab.addr(self.ns_lma, "br0", f"{LMAA}/64")
            lab.addr(self.ns_lma, "br0", f"{LMA_V4}/24")
            for i, ns in enumerate(self.ns_mags):
                lab.link(ns, "tr0", self.ns_lma, f"m{i + 1}")
                lab.run(self.ns_lma, f"ip link set m{i + 1} master br0")
                lab.addr(ns, "tr0", f"{COAS[i]}/64")
                lab.addr(ns, "tr0", f"{MAG_V4_DIRECT[i]}/24")
        # LMA - CN.
        lab.link(self.ns_lma, "cn0", self.ns_cn, "eth0")
        lab.addr(self.ns_lma, "cn0", "198.51.100.1/24")
        lab.addr(self.ns_lma, "cn0", "2001:db8:c::1/64")
        lab.addr(self.ns_cn, "eth0", f"{CN_V4}/24")
        lab.addr(self.ns_cn, "eth0", f"{CN_V6}/64")
        lab.run(self.ns_cn, "ip route add default via 198.51.100.1")
        lab.run(self.ns_cn, "ip -6 route add default via 2001:db8:c::1")
        self.lma = self._daemon(self.ns_lma, "lma1", 9441, self._lma_config())
        self.mags = [
            self._daemon(ns, f"mag{i + 1}", 9442 + i, self._mag_config(i))
            for i, ns in enumerate(self.ns_mags)
        ]
        return self

    # --- configuration ---------------------------------------------------------------

    def _daemon(self, ns: str, name: str, port: int, config: dict[str, Any]) -> Daemon:
        return configured_daemon(self.lab, self.tmp, ns, name, port, config)

    def _lma_config(self) -> dict[str, Any]:
        node: dict[str, Any] = {"mn_id": MN_ID, "ipv6": True}
        if self.ipv4_authorized:
            node["ipv4"] = {"mode": "lma", "pool": "pool1"}
        return {
            "role": "lma",
            "dataplane": {"offload": list(self.offload)},
            "lma": {
                "lmaa": LMAA,
                "ipv4_lmaa": LMA_V4,
                # Over IPv4 the LMA checks the address the PBU came from too: the MAG's,
                # or its NAT's.
                "allowed_mags": [*COAS, *MAG_V4_DIRECT, NAT_OUTSIDE],
                "ipv4_pools": [{"name": "pool1", "prefix": POOL}],
                "hnp_pool": {"prefix": HNP_POOL, "length": 64},
            },
            "mobile_nodes": [node],
        }

    def _mag_config(self, i: int) -> dict[str, Any]:
        v4 = MAG_V4_PRIVATE[i] if self.transport == "nat" else MAG_V4_DIRECT[i]
        transport = "ipv6" if self.transport == "ipv6" else "ipv4"
        return {
            "role": "mag",
            "timers": dict(FAST_TIMERS),
            "dataplane": {"offload": list(self.offload), "ra_interval_s": self.ra_interval_s},
            "mag": {
                "proxy_coa": COAS[i],
                "ipv4_proxy_coa": v4,
                "lmas": [
                    {"name": "lma1", "lmaa": LMAA, "ipv4_lmaa": LMA_V4, "transport": transport}
                ],
                "access_interfaces": [{"name": "acc1", "mn_id": MN_ID}],
                "dhcp": {"mode": "off"},
            },
            "mobile_nodes": [
                {
                    "mn_id": MN_ID,
                    "lma": "lma1",
                    "ipv6": self.dual_stack,
                    "ipv4": {"mode": "lma"},
                    "link_layer_ids": [MN_MAC],
                }
            ],
        }

    # --- operations ------------------------------------------------------------------

    def start(self) -> None:
        """Start the LMA and both MAGs side by side (each takes a second to import)."""
        daemons = [self.lma, *self.mags]
        for d in daemons:
            d.proc = self.lab.spawn(d.ns, [AGENT, "run", "--config", str(d.config_path)], d.log)
        for d in daemons:
            wait_for(d.socket.exists, 15, what=f"control socket {d.socket}")
            wait_for(lambda d=d: d.ctl("status").returncode == 0, 10, what="pmipctl status")

    def attach(self, index: int) -> None:
        """Put the MN on MAG ``index``'s link (and off the other's) in the switch."""
        other = 1 - index
        self.lab.run(self.ns_sw, f"ip link set p{other + 1} down")
        self.lab.run(self.ns_sw, f"ip link set p{index + 1} up")

    def mag_entry(self, index: int) -> dict[str, Any] | None:
        rows = self.mags[index].ctl_json("bindings")
        return next((r for r in rows if r["mn_id"] == MN_ID and r["registered"]), None)

    def lma_binding(self) -> dict[str, Any] | None:
        rows = self.lma.ctl_json("bindings")
        return next((r for r in rows if r["mn_id"] == MN_ID and r["state"] == "active"), None)

    def register(self, index: int = 0) -> dict[str, Any]:
        """Attach the MN to MAG ``index`` and wait for both ends of its registration."""
        self.attach(index)
        entry = wait_for(lambda: self.mag_entry(index), 10, what=f"registration at MAG{index + 1}")
        wait_for(
            lambda: (b := self.lma_binding()) is not None and b["mag"] == COAS[index],
            10,
            what="the LMA's binding",
        )
        return entry

    def configure_mn_ipv4(self, hoa: str) -> None:
        """What DHCP would do (seed §3.1): the HoA on the MN's interface, default route
        via the router address the LMA handed out."""
        self.lab.run(self.ns_mn, f"ip addr add {hoa}/24 dev eth0")
        self.lab.run(self.ns_mn, f"ip route add default via {ROUTER_V4}")

    def mn_global_ipv6(self) -> str | None:
        out = self.lab.run(self.ns_mn, "ip -6 -j addr show dev eth0 scope global").stdout
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                if not a.get("tentative") and a["local"].startswith("2001:db8:100:"):
                    return str(a["local"])
        return None

    def link_packets(self, ns: str, ifname: str) -> tuple[int, int]:
        """(rx, tx) packets of an interface, from the kernel's counters."""
        out = json.loads(self.lab.run(ns, f"ip -s -j link show {ifname}").stdout)[0]
        stats = out["stats64"]
        return stats["rx"]["packets"], stats["tx"]["packets"]

    def link_stats(self, ns: str, ifname: str) -> dict[str, Any]:
        """The link's counters: ``["rx"|"tx"]["bytes"|"packets"|...]``."""
        out = json.loads(self.lab.run(ns, f"ip -s -j link show {ifname}").stdout)[0]
        return dict(out["stats64"])

    def nat_data_bytes(self) -> int:
        out = self.lab.run(self.ns_nat, "nft -j list table ip count").stdout
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule:
                for expr in rule["expr"]:
                    if "counter" in expr:
                        return int(expr["counter"]["bytes"])
        return 0

    # --- traffic tools -----------------------------------------------------------------

    def tool(self, ns: str, name: str, *args: str) -> Tool:
        log = self.tmp / f"{name}-{len(list(self.tmp.glob(name + '-*')))}.out"
        proc = self.lab.spawn(ns, [PY, TOOLS, *args], log)
        return Tool(proc, log)

    def server(self, ns: str, name: str, *args: str) -> Tool:
        tool = self.tool(ns, name, *args)
        wait_for(lambda: "listening" in tool.log.read_text(), 10, what=f"{name} listening")
        return tool


@dataclass
class Tool:
    proc: subprocess.Popen[bytes]
    log: Path

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.log.name} did not finish in {timeout} s") from None
        lines = [ln for ln in self.log.read_text().splitlines() if ln.startswith("{")]
        assert lines, f"{self.log.name} printed nothing: {self.log.read_text()[-2000:]}"
        return dict(json.loads(lines[-1]))

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        return self.result(10)


def transfer(
    dp: DataplaneLab, dst: str, nbytes: int, port: int = 5001, rate: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TCP transfer MN -> CN of ``nbytes``; returns (source, sink) reports."""
    sink = dp.server(dp.ns_cn, "sink", "sink", "--bind", dst, "--port", str(port))
    source = dp.tool(
        dp.ns_mn,
        "source",
        "source",
        "--to",
        dst,
        "--port",
        str(port),
        "--bytes",
        str(nbytes),
        "--rate",
        str(rate),
    )
    return source.result(120), sink.result(30)


def settle(seconds: float) -> None:
    time.sleep(seconds)
