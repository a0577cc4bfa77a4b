"""A small lab for daemon tests: MN — MAG — (NAT) — LMA, each in its own namespace.

The MAG's access link to the MN is a veth pair dedicated to that MN: bringing the MN's end
up is an attach, down a detach (seed §1: a point-to-point link per MN).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from netns import Lab, wait_for

VENV_BIN = Path(sys.executable).parent
AGENT = str(VENV_BIN / "pmip-agent")
PMIPCTL = str(VENV_BIN / "pmipctl")

LMAA = "2001:db8:f::1"
PROXY_COA = "2001:db8:f::2"
LMA_V4 = "192.0.2.1"
MAG_V4_DIRECT = "192.0.2.2"
MAG_V4_PRIVATE = "10.0.0.2"
NAT_INSIDE = "10.0.0.1"
NAT_OUTSIDE = "192.0.2.254"
MN_ID = "mn1@example.net"
MN_MAC = "02:00:00:00:00:01"

FAST_TIMERS = {
    "initial_bindack_timeout_s": 0.2,
    "max_bindack_timeout_s": 0.8,
    "max_transmissions": 3,
    "retry_after_failure_s": 1.0,
}


@dataclass
class Daemon:
    lab: Lab
    ns: str
    config_path: Path
    socket: Path
    log: Path
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None  # the daemon's environment, if not ours

    def start(self) -> None:
        self.proc = self.lab.spawn(
            self.ns, [AGENT, "run", "--config", str(self.config_path)], self.log, self.env
        )
        wait_for(self.socket.exists, 10, what=f"control socket {self.socket}")
        wait_for(lambda: self.ctl("status").returncode == 0, 10, what="pmipctl status")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.lab.kill(self.proc, sig)
        self.proc = None

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PMIPCTL, "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=15,
        )

    def ctl_json(self, *args: str) -> Any:
        out = self.ctl("--json", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples, read from inside the daemon's namespace."""
        text = self.lab.run(
            self.ns,
            f'{sys.executable} -c "import urllib.request;print(urllib.request.urlopen('
            f"'http://127.0.0.1:{self.metrics_port}/metrics', timeout=5).read().decode())\"",
        ).stdout
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Topology:
    lab: Lab
    tmp: Path
    transport: str  # "ipv6" | "ipv4" | "nat"
    lma: Daemon = field(init=False)
    mag: Daemon = field(init=False)
    ns_lma: str = ""
    ns_mag: str = ""
    ns_mn: str = ""
    ns_nat: str = ""

    shared_access: bool = False  # MNs told apart by link-layer address, not by link

    def build(
        self,
        lma_extra: dict[str, Any] | None = None,
        mag_timers: dict[str, Any] | None = None,
        nat_refresh_s: int = 110,
    ) -> Topology:
        lab = self.lab
        self.ns_lma, self.ns_mag, self.ns_mn = lab.ns("lma"), lab.ns("mag"), lab.ns("mn")
        if self.transport == "nat":
            self.ns_nat = lab.ns("nat")
            lab.link(self.ns_mag, "tr0", self.ns_nat, "in0")
            lab.link(self.ns_nat, "out0", self.ns_lma, "tr0")
            lab.addr(self.ns_mag, "tr0", f"{MAG_V4_PRIVATE}/24")
            lab.addr(self.ns_nat, "in0", f"{NAT_INSIDE}/24")
            lab.addr(self.ns_nat, "out0", f"{NAT_OUTSIDE}/24")
            lab.addr(self.ns_lma, "tr0", f"{LMA_V4}/24")
            lab.run(self.ns_mag, f"ip route add default via {NAT_INSIDE}")
            lab.run(self.ns_nat, "sysctl -qw net.ipv4.ip_forward=1")
            nft = (
                "add table ip nat\n"
                "add chain ip nat post { type nat hook postrouting priority 100 ; }\n"
                "add rule ip nat post oifname out0 masquerade\n"
            )
            subprocess.run(
                ["ip", "netns", "exec", self.ns_nat, "nft", "-f", "-"],
                input=nft,
                text=True,
                check=True,
            )
            lab.addr(self.ns_lma, "lo", f"{LMAA}/128")
            lab.addr(self.ns_mag, "lo", f"{PROXY_COA}/128")
            mag_v4 = MAG_V4_PRIVATE
        else:
            lab.link(self.ns_mag, "tr0", self.ns_lma, "tr0")
            lab.addr(self.ns_lma, "tr0", f"{LMAA}/64")
            lab.addr(self.ns_mag, "tr0", f"{PROXY_COA}/64")
            lab.addr(self.ns_lma, "tr0", f"{LMA_V4}/24")
            lab.addr(self.ns_mag, "tr0", f"{MAG_V4_DIRECT}/24")
            mag_v4 = MAG_V4_DIRECT
        # The MN's kernel would send Router Solicitations of its own as soon as eth0 is
        # up; tests that attach by RS or DHCP must decide when the MAG hears from it.
        for scope in ("all", "default"):
            lab.run(self.ns_mn, f"sysctl -qw net.ipv6.conf.{scope}.router_solicitations=0")
        lab.link(self.ns_mn, "eth0", self.ns_mag, "acc1")
        lab.run(self.ns_mn, f"ip link set eth0 address {MN_MAC}")
        self.lma = self._daemon(
            self.ns_lma, "lma1", 9441, self._lma_config(lma_extra or {}, nat_refresh_s)
        )
        self.mag = self._daemon(
            self.ns_mag, "mag1", 9442, self._mag_config(mag_v4, mag_timers or {})
        )
        return self

    def _daemon(self, ns: str, name: str, port: int, config: dict[str, Any]) -> Daemon:
        return configured_daemon(self.lab, self.tmp, ns, name, port, config)

    def _lma_config(self, extra: dict[str, Any], nat_refresh_s: int) -> dict[str, Any]:
        lma: dict[str, Any] = {
            "lmaa": LMAA,
            "ipv4_lmaa": LMA_V4,
            # Over UDP the LMA also checks the real IPv4 source: the MAG's, or its NAT's.
            "allowed_mags": [PROXY_COA, MAG_V4_DIRECT, NAT_OUTSIDE],
            "ipv4_pools": [{"name": "pool1", "prefix": "10.10.0.0/24"}],
            "hnp_pool": {"prefix": "2001:db8:100::/48", "length": 64},
        }
        lma.update(extra)
        return {
            "role": "lma",
            "timers": {"nat_refresh_s": nat_refresh_s},
            "lma": lma,
            "mobile_nodes": [
                {"mn_id": MN_ID, "ipv6": True, "ipv4": {"mode": "lma", "pool": "pool1"}}
            ],
        }

    def _mag_config(self, mag_v4: str, timers: dict[str, Any]) -> dict[str, Any]:
        transport = "ipv6" if self.transport == "ipv6" else "ipv4"
        return {
            "role": "mag",
            "timers": {**FAST_TIMERS, **timers},
            "mag": {
                "proxy_coa": PROXY_COA,
                "ipv4_proxy_coa": mag_v4,
                "lmas": [
                    {"name": "lma1", "lmaa": LMAA, "ipv4_lmaa": LMA_V4, "transport": transport}
                ],
                "access_interfaces": [
                    {"name": "acc1"} if self.shared_access else {"name": "acc1", "mn_id": MN_ID}
                ],
            },
            "mobile_nodes": [
                {
                    "mn_id": MN_ID,
                    "lma": "lma1",
                    "ipv6": True,
                    "ipv4": {"mode": "lma"},
                    "link_layer_ids": [MN_MAC],
                }
            ],
        }

    def mn_link(self, up: bool) -> None:
        self.lab.run(self.ns_mn, f"ip link set eth0 {'up' if up else 'down'}")

    def lma_binding(self) -> dict[str, Any] | None:
        rows = self.lma.ctl_json("bindings")
        return next((r for r in rows if r["mn_id"] == MN_ID and r["state"] == "active"), None)

    def mag_entry(self) -> dict[str, Any] | None:
        rows = self.mag.ctl_json("bindings")
        return next((r for r in rows if r["mn_id"] == MN_ID and r["registered"]), None)


def configured_daemon(
    lab: Lab,
    tmp: Path,
    ns: str,
    name: str,
    port: int,
    config: dict[str, Any],
    log_format: str = "text",
) -> Daemon:
    """A daemon (not started) for ``config`` plus the node's paths under ``tmp``, debug
    logs (text, or JSON lines) and metrics on ``port``."""
    config.update(
        node_name=name,
        state_dir=str(tmp / f"{name}-state"),
        control_socket=str(tmp / f"{name}.sock"),
        log={"level": "debug", "format": log_format},
        metrics={"enabled": True, "address": "127.0.0.1", "port": port},
    )
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return Daemon(lab, ns, path, tmp / f"{name}.sock", tmp / f"{name}.log", port)
