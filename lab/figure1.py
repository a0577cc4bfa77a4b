"""The lab: seed Figure 1 in network namespaces, deployed and exercised.

    LMA1 ── NAT1 ──┐                 ┌── LMA2          each LMA also has a home leg
                   ├──── net ────────┤                 to the CN ("cn")
    MAG1 ──────────┘                 └── NAT2 ── MAG2 ── Kea (relay path)
     │  (IPv6 transport)                    (IPv4 transport, behind NAT)
    MN1, MN2                                 MN3

MN1: IPv4-only, HoA from LMA1's pool. MN2: dual-stack, static HoA, anchored at LMA2.
MN3: IPv4-only, HoA from Kea through MAG2's relay hook, anchored at LMA1.

`up` builds what is missing (a second run changes nothing), starts the daemons, runs the
scenario and writes build/lab-report.json. `down` removes everything. Every figure in the
report is observed (pmipctl, DHCP client scripts, pings), never read from configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "lab"
VENV_BIN = Path(sys.executable).parent
PREFIX = "pl"  # every lab namespace is pl-<name>; `down` removes exactly those
NAMESPACES = [
    "net",
    "nat1",
    "lma1",
    "lma2",
    "nat2",
    "mag1",
    "mag2",
    "kea",
    "cn",
    "mn1",
    "mn2",
    "mn3",
]

CN_V4, CN_V6 = "192.0.2.100", "2001:db8:cc::100"
LMAA1, LMAA2 = "2001:db8:12::2", "2001:db8:3::2"
IPV4_LMAA1, IPV4_LMAA2 = "198.18.1.2", "198.18.3.2"  # LMA1's is NAT1's public address
MAG1_COA, MAG2_COA = "2001:db8:1::2", "2001:db8:2::2"
MAG2_PRIVATE = "10.2.0.2"
MNS = {
    "mn1": {"mn_id": "mn1@lab.example", "mac": "02:00:00:00:00:01", "mag": "mag1", "lma": "lma1"},
    "mn2": {"mn_id": "mn2@lab.example", "mac": "02:00:00:00:00:02", "mag": "mag1", "lma": "lma2"},
    "mn3": {"mn_id": "mn3@lab.example", "mac": "02:00:00:00:00:03", "mag": "mag2", "lma": "lma1"},
}


def ns(name: str) -> str:
    return f"{PREFIX}-{name}"


def sh(cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(cmd), check=check, capture_output=True, text=True, **kw)


def nsx(name: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh(f"ip netns exec {ns(name)} {cmd}", check=check)


def existing_namespaces() -> set[str]:
    out = sh("ip netns list", check=False).stdout.split()
    return {n for n in out if n.startswith(f"{PREFIX}-")}


# --- topology ---------------------------------------------------------------------------


def link(a: str, if_a: str, b: str, if_b: str) -> None:
    tmp_a, tmp_b = f"pl{if_a}{a}"[:15], f"pl{if_b}{b}"[:15]
    sh(f"ip link add {tmp_a} type veth peer name {tmp_b}")
    sh(f"ip link set {tmp_a} netns {ns(a)}")
    sh(f"ip link set {tmp_b} netns {ns(b)}")
    nsx(a, f"ip link set {tmp_a} name {if_a}")
    nsx(b, f"ip link set {tmp_b} name {if_b}")
    nsx(a, f"ip link set {if_a} up")
    nsx(b, f"ip link set {if_b} up")


def addr(name: str, ifname: str, cidr: str) -> None:
    nsx(name, f"ip addr add {cidr} dev {ifname}" + (" nodad" if ":" in cidr else ""))


def build_topology() -> None:
    for name in NAMESPACES:
        sh(f"ip netns add {ns(name)}")
        nsx(name, "ip link set lo up")
        for family in ("ipv4", "ipv6"):
            nsx(name, f"sysctl -qw net.{family}.conf.all.forwarding=1")
    # The transport network: "net" routes between everyone.
    link("net", "n-mag1", "mag1", "tr0")
    addr("net", "n-mag1", "2001:db8:1::1/64")
    addr("mag1", "tr0", f"{MAG1_COA}/64")
    link("net", "n-nat1", "nat1", "out0")
    addr("net", "n-nat1", "198.18.1.1/24")
    addr("nat1", "out0", f"{IPV4_LMAA1}/24")
    addr("net", "n-nat1", "2001:db8:11::1/64")
    addr("nat1", "out0", "2001:db8:11::2/64")
    link("nat1", "in0", "lma1", "tr0")
    addr("nat1", "in0", "10.1.0.1/24")
    addr("lma1", "tr0", "10.1.0.2/24")
    addr("nat1", "in0", "2001:db8:12::1/64")
    addr("lma1", "tr0", f"{LMAA1}/64")
    link("net", "n-lma2", "lma2", "tr0")
    addr("net", "n-lma2", "198.18.3.1/24")
    addr("lma2", "tr0", f"{IPV4_LMAA2}/24")
    addr("net", "n-lma2", "2001:db8:3::1/64")
    addr("lma2", "tr0", f"{LMAA2}/64")
    link("net", "n-nat2", "nat2", "out0")
    addr("net", "n-nat2", "198.18.2.1/24")
    addr("nat2", "out0", "198.18.2.2/24")
    link("nat2", "in0", "mag2", "tr0")
    addr("nat2", "in0", "10.2.0.1/24")
    addr("mag2", "tr0", f"{MAG2_PRIVATE}/24")
    addr("mag2", "lo", f"{MAG2_COA}/128")  # the inner IPv6 source of its PBUs
    # Routes.
    nsx("net", "ip -6 route add 2001:db8:12::/64 via 2001:db8:11::2")
    nsx("nat1", "ip -6 route add default via 2001:db8:11::1")
    nsx("nat1", "ip route add default via 198.18.1.1")
    for name, gw4, gw6 in (
        ("lma1", "10.1.0.1", "2001:db8:12::1"),
        ("lma2", "198.18.3.1", "2001:db8:3::1"),
    ):
        nsx(name, f"ip route add default via {gw4}")
        nsx(name, f"ip -6 route add default via {gw6}")
    nsx("mag1", "ip -6 route add default via 2001:db8:1::1")
    nsx("nat2", "ip route add default via 198.18.2.1")
    nsx("mag2", "ip route add default via 10.2.0.1")
    # NAT1 publishes LMA1 (signalling 5436, data 5437); NAT2 masquerades MAG2.
    nft(
        "nat1",
        "add table ip nat\n"
        "add chain ip nat pre { type nat hook prerouting priority -100 ; }\n"
        "add chain ip nat post { type nat hook postrouting priority 100 ; }\n"
        "add rule ip nat pre iifname out0 udp dport { 5436, 5437 } dnat to 10.1.0.2\n"
        "add rule ip nat post oifname out0 masquerade\n",
    )
    nft(
        "nat2",
        "add table ip nat\n"
        "add chain ip nat post { type nat hook postrouting priority 100 ; }\n"
        "add rule ip nat post oifname out0 masquerade\n",
    )
    # Kea on its own link to MAG2 (the relay path of Figure 3).
    link("mag2", "k0", "kea", "k0")
    addr("mag2", "k0", "192.0.2.65/26")
    addr("kea", "k0", "192.0.2.66/26")
    # The CN behind both LMAs' home legs.
    for i, lma in ((1, "lma1"), (2, "lma2")):
        link(lma, "home0", "cn", f"h{i}")
        addr(lma, "home0", f"172.16.{i}.1/24")
        addr("cn", f"h{i}", f"172.16.{i}.2/24")
        addr(lma, "home0", f"2001:db8:c{i}::1/64")
        addr("cn", f"h{i}", f"2001:db8:c{i}::2/64")
        nsx(lma, f"ip route add {CN_V4}/32 via 172.16.{i}.2")
        nsx(lma, f"ip -6 route add {CN_V6}/128 via 2001:db8:c{i}::2")
    addr("cn", "lo", f"{CN_V4}/32")
    addr("cn", "lo", f"{CN_V6}/128")
    for prefix, gw in (
        ("10.100.0.0/24", "172.16.1.1"),
        ("10.150.0.0/24", "172.16.1.1"),
        ("10.200.0.0/24", "172.16.2.1"),
    ):
        nsx("cn", f"ip route add {prefix} via {gw}")
    nsx("cn", "ip -6 route add 2001:db8:200::/48 via 2001:db8:c2::1")
    # Mobile nodes, each on its own access link (a point-to-point link per MN).
    for mn, spec in MNS.items():
        attach(mn, spec["mag"])


def nft(name: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns(name), "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


def attach(mn: str, mag: str) -> None:
    """Give ``mn`` an access link (its eth0) to ``mag``; any old one goes first."""
    nsx(mn, "ip link del eth0", check=False)
    link(mn, "eth0", mag, f"acc-{mn}")
    nsx(mn, f"ip link set eth0 address {MNS[mn]['mac']}")


# --- configuration and daemons ----------------------------------------------------------


def profiles(lma: str | None) -> list[dict[str, Any]]:
    out = []
    for mn, spec in MNS.items():
        if lma is not None and spec["lma"] != lma:
            continue
        if mn == "mn1":
            ipv4: dict[str, Any] = {"mode": "lma"}
            if lma:
                ipv4["pool"] = "home1"
        elif mn == "mn2":
            ipv4 = {"mode": "static", "address": "10.200.0.5/24", "default_router": "10.200.0.1"}
        else:
            ipv4 = {
                "mode": "dhcp-server",
                "prefix": "10.150.0.0/24",
                "default_router": "10.150.0.1",
            }
        entry: dict[str, Any] = {"mn_id": spec["mn_id"], "ipv6": mn == "mn2", "ipv4": ipv4}
        if lma is None:
            entry["lma"] = spec["lma"]
            entry["link_layer_ids"] = [spec["mac"]]
        out.append(entry)
    return out


def configs() -> dict[str, dict[str, Any]]:
    common = {"log": {"level": "info", "format": "text"}}
    lmas = [
        {"name": "lma1", "lmaa": LMAA1, "ipv4_lmaa": IPV4_LMAA1},
        {"name": "lma2", "lmaa": LMAA2, "ipv4_lmaa": IPV4_LMAA2},
    ]
    out: dict[str, dict[str, Any]] = {
        "lma1": {
            "role": "lma",
            "lma": {
                "lmaa": LMAA1,
                "ipv4_lmaa": IPV4_LMAA1,
                "allowed_mags": [MAG1_COA, MAG2_COA],
                "ipv4_pools": [{"name": "home1", "prefix": "10.100.0.0/24"}],
                "dhcp_server_pools": ["10.150.0.0/24"],
            },
            "mobile_nodes": profiles("lma1"),
        },
        "lma2": {
            "role": "lma",
            "lma": {
                "lmaa": LMAA2,
                "ipv4_lmaa": IPV4_LMAA2,
                "allowed_mags": [MAG1_COA, MAG2_COA],
                "ipv4_pools": [{"name": "home2", "prefix": "10.201.0.0/24"}],
                "hnp_pool": {"prefix": "2001:db8:200::/48", "length": 64},
            },
            "mobile_nodes": profiles("lma2"),
        },
        "mag1": {
            "role": "mag",
            "mag": {
                "proxy_coa": MAG1_COA,
                "lmas": [{**p, "transport": "ipv6"} for p in lmas],
                "access_interfaces": [
                    {"name": f"acc-{m}", "mn_id": s["mn_id"]} for m, s in MNS.items() if m != "mn3"
                ],
                "dhcp": {"mode": "server"},
            },
            "mobile_nodes": [p for p in profiles(None) if p["ipv4"]["mode"] != "dhcp-server"],
        },
        "mag2": {
            "role": "mag",
            "mag": {
                "proxy_coa": MAG2_COA,
                "ipv4_proxy_coa": MAG2_PRIVATE,
                "lmas": [{**p, "transport": "ipv4"} for p in lmas],
                "access_interfaces": [
                    {"name": f"acc-{m}", "mn_id": s["mn_id"]} for m, s in MNS.items()
                ],
                "dhcp": {"mode": "relay", "servers": ["192.0.2.66"], "relay_address": "192.0.2.65"},
            },
            "mobile_nodes": profiles(None),
        },
    }
    for i, (name, cfg) in enumerate(out.items()):
        cfg.update(
            common,
            node_name=name,
            state_dir=str(BUILD / "state" / name),
            control_socket=str(BUILD / f"{name}.sock"),
            metrics={"enabled": True, "address": "127.0.0.1", "port": 9436 + i},
        )
    return out


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_daemon(name: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
    """Start ``argv`` in namespace ``name`` unless it already runs. True if started."""
    pidfile = BUILD / f"{name}.pid"
    if pid_alive(pidfile):
        return False
    log = (BUILD / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns(name), *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    return True


def ctl(name: str, *args: str) -> Any:
    out = sh(
        f"{VENV_BIN}/pmipctl --socket {BUILD / (name + '.sock')} --json {' '.join(args)}",
        check=False,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def deploy() -> list[str]:
    """Write configs and start what is not running. Returns what changed."""
    changed = []
    BUILD.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs().items():
        path = BUILD / f"{name}.yaml"
        if write_if_changed(path, yaml.safe_dump(cfg, sort_keys=True)):
            changed.append(f"config {name}")
            if pid := pid_alive(BUILD / f"{name}.pid"):
                os.kill(pid, signal.SIGHUP)  # reload: bindings it still authorizes stay
        if start_daemon(name, [f"{VENV_BIN}/pmip-agent", "run", "--config", str(path)]):
            changed.append(f"started {name}")
    kea = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["k0"], "dhcp-socket-type": "udp"},
            "lease-database": {"type": "memfile", "persist": False},
            "valid-lifetime": 3600,
            "client-classes": [{"name": "mn-home-150", "test": "relay4[5].hex == 0x0a960000"}],
            "subnet4": [
                {
                    "id": 150,
                    "subnet": "10.150.0.0/24",
                    "pools": [
                        {"pool": "10.150.0.100 - 10.150.0.199", "client-class": "mn-home-150"}
                    ],
                    "option-data": [{"name": "routers", "data": "10.150.0.1"}],
                }
            ],
        }
    }
    kea_path = BUILD / "kea.json"
    if write_if_changed(kea_path, json.dumps(kea, indent=1)):
        changed.append("config kea")
    run_dir = BUILD / "kea-run"
    run_dir.mkdir(exist_ok=True)
    env = {**os.environ, "KEA_PIDFILE_DIR": str(run_dir), "KEA_LOCKFILE_DIR": str(run_dir)}
    if start_daemon("kea", ["kea-dhcp4", "-c", str(kea_path)], env):
        changed.append("started kea")
    for name in configs():
        wait(lambda n=name: ctl(n, "status"), 20, f"{name} control socket")
    return changed


# --- the scenario -----------------------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in bound|renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/$mask" dev "$interface"
  ip route replace default via "$router" dev "$interface"
  echo "bound ip=$ip router=$router mask=$mask lease=$lease" >> "{log}";;
esac
"""


def dhcp_lease(mn: str) -> dict[str, str] | None:
    """Run busybox udhcpc on the MN's eth0; it configures the lease and reports it."""
    log = BUILD / f"{mn}.dhcp"
    log.unlink(missing_ok=True)
    script = BUILD / f"{mn}-udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT.format(log=log))
    script.chmod(0o755)
    nsx(mn, f"busybox udhcpc -i eth0 -f -q -n -t 8 -T 1 -A 1 -s {script}", check=False)
    if not log.exists():
        return None
    fields = log.read_text().split()[1:]
    return dict(f.split("=", 1) for f in fields)


def reaches_cn(mn: str, v6: bool = False) -> bool:
    target = CN_V6 if v6 else CN_V4
    return (
        nsx(mn, f"ping -{'6' if v6 else '4'} -c 3 -i 0.2 -W 1 {target}", check=False).returncode
        == 0
    )


def binding(lma: str, mn_id: str) -> dict[str, Any] | None:
    rows = ctl(lma, "bindings") or []
    return next((r for r in rows if r["mn_id"] == mn_id and r["state"] == "active"), None)


def handover(mn: str, old: str, new: str) -> dict[str, Any]:
    """Move ``mn`` during a 1 kHz UDP probe stream to the CN, and measure the gap."""
    probe = BUILD / f"{mn}-probe.txt"
    probe_cmd = (
        f'{sys.executable} -c "import socket,time\n'
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "end=time.time()+6\n"
        "while time.time()<end:\n"
        f"    s.sendto(str(time.time()).encode(),('{CN_V4}',9))\n"
        '    time.sleep(0.001)"'
    )
    sink = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns("cn"),
            sys.executable,
            "-c",
            "import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',9));s.settimeout(3)\n"
            f"out=open('{probe}','w')\n"
            "try:\n"
            "    while True:\n"
            "        d,_=s.recvfrom(64);out.write(f'{time.time()}\\n')\n"
            "except OSError: pass\n",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    sender = subprocess.Popen(
        ["ip", "netns", "exec", ns(mn), "sh", "-c", probe_cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    attach(mn, new)
    lease = dhcp_lease(mn)  # the MN's INIT-REBOOT/REQUEST on its new link
    sender.wait(timeout=30)
    sink.wait(timeout=30)
    arrivals = [float(x) for x in probe.read_text().split()] if probe.exists() else []
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return {
        "from": old,
        "to": new,
        "lease_after": lease,
        "probes_received": len(arrivals),
        "interruption_ms": round(max(gaps) * 1000, 1) if gaps else None,
    }


def scenario() -> dict[str, Any]:
    report: dict[str, Any] = {"mobile_nodes": [], "started": time.time()}
    flows = {"mn1": "lma", "mn2": "static", "mn3": "dhcp-server"}
    for mn, spec in MNS.items():
        attach(mn, spec["mag"])  # a re-run starts from the same place
    time.sleep(0.5)
    for mn, spec in MNS.items():
        lease = dhcp_lease(mn)
        b = (
            wait(lambda s=spec: binding(s["lma"], s["mn_id"]), 15, f"{mn} binding")
            if lease
            else None
        )
        entry: dict[str, Any] = {
            "mn_id": spec["mn_id"],
            "flow": flows[mn],
            "ipv4_hoa": lease["ip"] if lease else None,
            "lma_ipv4_hoa": b["ipv4_hoa"] if b else None,
            "mag": spec["mag"],
            "transport": b["transport"] if b else None,
            "nat": b["nat"] if b else None,
            "reached_cn": bool(lease) and reaches_cn(mn),
            "handover": None,
        }
        report["mobile_nodes"].append(entry)
    mn1 = report["mobile_nodes"][0]
    before = mn1["ipv4_hoa"]
    ho = handover("mn1", "mag1", "mag2")
    after = binding("lma1", MNS["mn1"]["mn_id"])
    ho["same_hoa"] = (
        bool(before) and ho["lease_after"] is not None and ho["lease_after"]["ip"] == before
    )
    ho["lma_sees"] = {"transport": after["transport"], "nat": after["nat"]} if after else None
    ho.pop("lease_after")
    mn1["handover"] = ho
    attach("mn1", "mag1")  # back home, so the next run starts from the same place
    dhcp_lease("mn1")
    report["finished"] = time.time()
    return report


def print_report(report: dict[str, Any]) -> None:
    cols = ["mn_id", "flow", "ipv4_hoa", "transport", "nat", "reached_cn"]
    rows = [[str(m.get(c)) for c in cols] for m in report["mobile_nodes"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for m in report["mobile_nodes"]:
        if m["handover"]:
            h = m["handover"]
            print(
                f"handover {m['mn_id']}: {h['from']} -> {h['to']}, same HoA: {h['same_hoa']}, "
                f"interruption: {h['interruption_ms']} ms, probes received: {h['probes_received']}"
            )


def up() -> int:
    t0 = time.monotonic()
    have = existing_namespaces()
    if not have:
        build_topology()
        built = True
    elif have != {ns(n) for n in NAMESPACES}:
        print(f"a partial lab exists ({sorted(have)}); run `make lab-down` first", file=sys.stderr)
        return 1
    else:
        built = False
    changed = deploy()
    print("lab:", "built" if built else "already built", "; changes:", ", ".join(changed) or "none")
    report = scenario()
    report["changes"] = changed
    report["built"] = built
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "lab-report.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"report: build/lab-report.json ({report['elapsed_s']} s)")
    return 0


def down() -> int:
    for pidfile in BUILD.glob("*.pid"):
        if pid := pid_alive(pidfile):
            os.killpg(pid, signal.SIGTERM)
        pidfile.unlink(missing_ok=True)
    for name in sorted(existing_namespaces()):
        for pid in sh(f"ip netns pids {name}", check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh(f"ip netns del {name}", check=False)
    for path in BUILD.glob("*"):
        if path.is_file():
            path.unlink()
    print("lab removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
