"""A lab for the seed's three IPv4 home address flows with real DHCP software.

    MN ── acc1 ─ MAG1 ─┬─ LMA          MAG1/MAG2 reach the LMA over IPv6 and a Kea
    (moves to MAG2)    │               DHCP server over IPv4 (the relay path of Figure 3).
            MAG2 ──────┘   Kea ─ MAG1, MAG2

The MN is found by its MAC on a shared access link; its profile picks the flow. DHCP
clients run with private scripts, lease files and /run, so the host is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon_lab import Daemon, configured_daemon
from netns import Lab, wait_for

LMAA = "2001:db8:f::1"
MAG_COA = {"mag1": "2001:db8:f::2", "mag2": "2001:db8:f::3"}
RELAY = {"mag1": "198.51.100.1", "mag2": "198.51.101.1"}
KEA = {"mag1": "198.51.100.2", "mag2": "198.51.101.2"}

# mn_id -> (MAC, profile ipv4 section). One MN of each flow.
MNS: dict[str, tuple[str, dict[str, Any]]] = {
    "lma@example.net": ("02:00:00:00:01:01", {"mode": "lma", "pool": "pool1"}),
    "static@example.net": (
        "02:00:00:00:01:02",
        {"mode": "static", "address": "10.9.0.5/24", "default_router": "10.9.0.1"},
    ),
    "dhcp@example.net": (
        "02:00:00:00:01:03",
        {"mode": "dhcp-server", "prefix": "10.50.0.0/24", "default_router": "10.50.0.1"},
    ),
    # Authorized for a prefix the DHCP server does not hand out: the LMA must refuse.
    "wrongprefix@example.net": (
        "02:00:00:00:01:04",
        {"mode": "dhcp-server", "prefix": "10.60.0.0/24", "default_router": "10.60.0.1"},
    ),
}

UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 ip=$ip router=$router subnet=$subnet lease=$lease serverid=$serverid" >> "{log}"
"""
# dhclient and dhcpcd hand their scripts the same variable names.
DHCLIENT_SCRIPT = DHCPCD_SCRIPT = """#!/bin/sh
echo "$reason ip=$new_ip_address router=$new_routers subnet=$new_subnet_mask \
lease=$new_dhcp_lease_time" >> "{log}"
"""


@dataclass
class DhcpLab:
    lab: Lab
    tmp: Path
    log_format: str = "text"  # the daemons' logs: "json" timestamps them to the microsecond
    kernel_relay: bool = False  # the MAGs' mag.dhcp.kernel_relay
    kea: subprocess.Popen[bytes] | None = None  # set by start_kea

    def build(self, kea_pools: dict[str, str] | None = None) -> DhcpLab:
        lab = self.lab
        self.ns_lma, self.ns_kea = lab.ns("lma"), lab.ns("kea")
        self.ns_mag = {name: lab.ns(name) for name in ("mag1", "mag2")}
        lab.addr(self.ns_lma, "lo", f"{LMAA}/128")
        for i, (name, ns) in enumerate(self.ns_mag.items()):
            lab.addr(ns, "lo", f"{MAG_COA[name]}/128")
            self.link_transport(name)
            lab.link(ns, "k0", self.ns_kea, f"k{i}")
            lab.addr(ns, "k0", f"{RELAY[name]}/24")
            lab.addr(self.ns_kea, f"k{i}", f"{KEA[name]}/24")
        self.lma = self._daemon(self.ns_lma, "lma1", 9451, self._lma_config())
        self.mags = {
            name: self._daemon(ns, name, 9452 + i, self._mag_config(name))
            for i, (name, ns) in enumerate(self.ns_mag.items())
        }
        self.kea_pools = kea_pools or {"10.50.0.0/24": "10.50.0.100 - 10.50.0.199"}
        return self

    def link_transport(self, mag: str) -> None:
        """``mag``'s IPv6 link to the LMA (tr0), its addresses and the routes between the
        MAG's proxy CoA and the LMAA. Called again after ``ip link del tr0``, it makes a
        new link, whose link-local addresses are tentative (DAD) for a second or two."""
        i = list(self.ns_mag).index(mag)
        ns, lab = self.ns_mag[mag], self.lab
        lab.link(ns, "tr0", self.ns_lma, f"tr{i}")
        lab.addr(ns, "tr0", f"2001:db8:{i + 10}::2/64")
        lab.addr(self.ns_lma, f"tr{i}", f"2001:db8:{i + 10}::1/64")
        lab.run(ns, f"ip -6 route add {LMAA} via 2001:db8:{i + 10}::1")
        lab.run(self.ns_lma, f"ip -6 route add {MAG_COA[mag]} via 2001:db8:{i + 10}::2")

    # --- daemons ----------------------------------------------------------------------

    def _daemon(self, ns: str, name: str, port: int, config: dict[str, Any]) -> Daemon:
        return configured_daemon(self.lab, self.tmp, ns, name, port, config, self.log_format)

    def _lma_config(self) -> dict[str, Any]:
        return {
            "role": "lma",
            "lma": {
                "lmaa": LMAA,
                "ipv4_pools": [{"name": "pool1", "prefix": "10.10.0.0/24"}],
                "dhcp_server_pools": ["10.50.0.0/24", "10.60.0.0/24"],
            },
            "mobile_nodes": [
                {"mn_id": mn, "ipv6": False, "ipv4": ipv4} for mn, (_mac, ipv4) in MNS.items()
            ],
        }

    def _mag_config(self, name: str) -> dict[str, Any]:
        mns = []
        for mn, (mac, ipv4) in MNS.items():
            mag_ipv4 = {k: v for k, v in ipv4.items() if k != "pool"}
            if mn == "wrongprefix@example.net":
                # The MAG hints the prefix the server does serve; the LMA has not
                # authorized this MN for it, and must refuse what the server offers.
                mag_ipv4.update(prefix="10.50.0.0/24", default_router="10.50.0.1")
            mns.append({"mn_id": mn, "ipv6": False, "ipv4": mag_ipv4, "link_layer_ids": [mac]})
        return {
            "role": "mag",
            "timers": {"initial_bindack_timeout_s": 0.3, "retry_after_failure_s": 2.0},
            "mag": {
                "proxy_coa": MAG_COA[name],
                "lmas": [{"name": "lma1", "lmaa": LMAA, "transport": "ipv6"}],
                "access_interfaces": [{"name": "acc1"}],
                "dhcp": {
                    "mode": "relay",
                    "servers": [KEA[name]],
                    "relay_address": RELAY[name],
                    "lease_s": 600,
                    "kernel_relay": self.kernel_relay,
                },
            },
            "mobile_nodes": mns,
        }

    def start(self) -> None:
        self.start_kea()
        self.lma.start()
        for mag in self.mags.values():
            mag.start()

    def start_kea(self) -> None:
        subnets = []
        for i, (subnet, pool) in enumerate(self.kea_pools.items(), start=1):
            subnets.append(
                {
                    "id": i,
                    "subnet": subnet,
                    # Every pool is guarded by the MAG's link-selection hint (RFC 3527).
                    "pools": [{"pool": pool, "client-class": f"hint{i}"}],
                    "option-data": [{"name": "routers", "data": subnet.replace(".0/24", ".1")}],
                }
            )
        classes = [
            {"name": f"hint{i}", "test": f"relay4[5].hex == {hint_of(s)}"}
            for i, s in enumerate(self.kea_pools, start=1)
        ]
        config = {
            "Dhcp4": {
                "interfaces-config": {"interfaces": ["k0", "k1"], "dhcp-socket-type": "udp"},
                "lease-database": {"type": "memfile", "persist": False},
                "valid-lifetime": 600,
                "client-classes": classes,
                "subnet4": subnets,
                "loggers": [
                    {
                        "name": "kea-dhcp4",
                        "severity": "INFO",
                        "output_options": [{"output": str(self.tmp / "kea.log")}],
                    }
                ],
            }
        }
        path = self.tmp / "kea.json"
        path.write_text(json.dumps(config))
        run_dir = self.tmp / "kea-run"
        run_dir.mkdir(exist_ok=True)
        env = {**os.environ, "KEA_PIDFILE_DIR": str(run_dir), "KEA_LOCKFILE_DIR": str(run_dir)}
        out = (self.tmp / "kea.out").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_kea, "kea-dhcp4", "-c", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.lab.procs.append(proc)
        self.kea = proc
        wait_for(
            lambda: (
                "DHCP4_STARTED" in (self.tmp / "kea.log").read_text(errors="replace")
                if (self.tmp / "kea.log").exists()
                else False
            ),
            15,
            what="Kea started",
        )

    # --- the mobile node --------------------------------------------------------------

    def attach_mn(self, mn_id: str, mag: str = "mag1", solicits: bool = True) -> str:
        """A fresh MN namespace whose eth0 is a link to ``mag``'s acc1. ``solicits=False``:
        its kernel sends no IPv6 Router Solicitation, which would attach the MN to the MAG
        before its DHCP client starts."""
        ns = self.lab.ns(f"mn{len(self.lab.namespaces)}")
        if not solicits:  # before eth0 exists: it takes the namespace's defaults
            self.lab.run(ns, "sysctl -qw net.ipv6.conf.default.router_solicitations=0")
        self.lab.link(ns, "eth0", self.ns_mag[mag], "acc1")
        self.lab.run(ns, f"ip link set eth0 address {MNS[mn_id][0]}")
        return ns

    def move_mn(self, ns: str, mn_id: str, old: str, new: str) -> None:
        """The MN leaves ``old`` and attaches to ``new`` with the same interface name."""
        self.lab.run(self.ns_mag[old], "ip link del acc1")
        self.lab.link(ns, "eth0", self.ns_mag[new], "acc1")
        self.lab.run(ns, f"ip link set eth0 address {MNS[mn_id][0]}")

    def client(
        self, ns: str, kind: str, name: str, timeout: float = 20, state_name: str | None = None
    ) -> dict[str, str]:
        """Run one real DHCP client until it has a lease (or gives up); return the last
        lease its script reported: ip, router, subnet, lease. Runs sharing ``state_name``
        share the client's lease file, as one MN's successive attachments do."""
        log = self.tmp / f"{name}.events"
        script = self.tmp / f"{name}.sh"
        template = {"udhcpc": UDHCPC_SCRIPT, "dhclient": DHCLIENT_SCRIPT, "dhcpcd": DHCPCD_SCRIPT}
        script.write_text(template[kind].format(log=log))
        script.chmod(0o755)
        state = self.tmp / f"{state_name or name}-state"
        state.mkdir(exist_ok=True)
        if kind == "udhcpc":
            cmd = f"busybox udhcpc -i eth0 -f -q -n -t 6 -T 1 -A 1 -s {script}"
        elif kind == "dhclient":
            cmd = (
                f"dhclient -4 -1 -d -v -sf {script} -lf {state}/dhclient.leases "
                f"-pf {state}/dhclient.pid eth0"
            )
        else:
            run, lib = state / "run", state / "lib"
            run.mkdir(exist_ok=True)
            lib.mkdir(exist_ok=True)
            cmd = (
                f"unshare -m sh -c 'mount --bind {run} /run && mount --bind {lib} /var/lib/dhcpcd"
                f" && exec dhcpcd -4 -1 -B -t 15 --nohook resolv.conf --script {script} eth0'"
            )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "sh", "-c", cmd],
            stdout=(self.tmp / f"{name}.out").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.lab.procs.append(proc)
        bound = ("bound", "renew", "BOUND", "REBOOT", "RENEW", "REBIND")

        def lease() -> dict[str, str] | None:
            if not log.exists():
                return None
            for line in reversed(log.read_text().splitlines()):
                event, *fields = line.split()
                if event in bound:
                    values = dict(f.split("=", 1) for f in fields if "=" in f)
                    if values.get("ip"):
                        return values
            return None

        try:
            return wait_for(lease, timeout, what=f"{kind} lease")
        finally:
            if kind == "dhclient":
                self.lab.kill(proc)  # -d keeps it in the foreground; the lease file stays

    def lma_binding(self, mn_id: str) -> dict[str, Any] | None:
        rows = self.lma.ctl_json("bindings")
        return next((r for r in rows if r["mn_id"] == mn_id and r["state"] == "active"), None)


def hint_of(subnet: str) -> str:
    return "0x" + bytes(int(x) for x in subnet.split("/")[0].split(".")).hex()


def mn_python(lab: Lab, ns: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
    )
