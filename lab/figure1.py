"""The lab: seed Figure 1 in network namespaces, deployed by Ansible and exercised.

    LMA1 ── NAT1 ──┐                 ┌── LMA2          each LMA also has a home leg
                   ├──── net ────────┤                 to the CN ("cn")
    MAG1 ──────────┘                 └── NAT2 ── MAG2 ── Kea (relay path)
     │  (IPv6 transport)                    (IPv4 transport, behind NAT)
    MN1, MN2                                 MN3

MN1: IPv4-only, HoA from LMA1's pool. MN2: dual-stack, static HoA, anchored at LMA2.
MN3: IPv4-only, HoA from Kea through MAG2's relay hook, anchored at LMA1.

`up` runs `ansible-playbook -i inventories/lab playbooks/lab.yml`: the lab_topology role
builds (or repairs) the namespaces and links, then the nat, kea, strongswan, pmip_lma
and pmip_mag roles deploy into them (a second run changes nothing). Then it runs the
scenario and writes build/lab-report.json. `down` removes everything. Every figure in
the report is observed (pmipctl, DHCP client scripts, pings), never read from
configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "lab"
HOSTS = BUILD / "hosts"  # each namespace host's files (inventories/lab: lab_host_root)
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

# The same addresses as roles/lab_topology/defaults/main.yml, which the inventory and the
# roles read (tests/test_ansible_lab.py checks that they agree).
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
AGENTS = ["lma1", "lma2", "mag1", "mag2"]


def ns(name: str) -> str:
    return f"{PREFIX}-{name}"


def sh(cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(cmd), check=check, capture_output=True, text=True, **kw)


def nsx(name: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh(f"ip netns exec {ns(name)} {cmd}", check=check)


def existing_namespaces() -> set[str]:
    out = sh("ip netns list", check=False).stdout.split()
    return {n for n in out if n.startswith(f"{PREFIX}-")}


# --- the mobile nodes' access links (the scenario moves them) --------------------------


def link(a: str, if_a: str, b: str, if_b: str) -> None:
    tmp_a, tmp_b = f"pl{if_a}{a}"[:15], f"pl{if_b}{b}"[:15]
    sh(f"ip link add {tmp_a} type veth peer name {tmp_b}")
    sh(f"ip link set {tmp_a} netns {ns(a)}")
    sh(f"ip link set {tmp_b} netns {ns(b)}")
    nsx(a, f"ip link set {tmp_a} name {if_a}")
    nsx(b, f"ip link set {tmp_b} name {if_b}")
    nsx(a, f"ip link set {if_a} up")
    nsx(b, f"ip link set {if_b} up")


def attach(mn: str, mag: str) -> None:
    """Give ``mn`` an access link (its eth0) to ``mag``; any old one goes first."""
    nsx(mn, "ip link del eth0", check=False)
    link(mn, "eth0", mag, f"acc-{mn}")
    nsx(mn, f"ip link set eth0 address {MNS[mn]['mac']}")


# --- deployment: Ansible ---------------------------------------------------------------

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def ensure_ansible() -> None:
    """Ansible comes from requirements-ansible.txt (`make ansible-venv`)."""
    subprocess.run(["make", "-s", "-C", str(ROOT), "ansible-venv"], check=True)


def deploy() -> list[str]:
    """Converge the lab with ansible-playbook. Returns what changed, per host."""
    BUILD.mkdir(parents=True, exist_ok=True)
    log = BUILD / "ansible.log"
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        str(ROOT / "inventories" / "lab"),
        str(ROOT / "playbooks" / "lab.yml"),
        "--vault-password-file",
        str(ROOT / "inventories" / "lab" / "vault-password.txt"),
        "-e",
        f"lab_topology_prefix={PREFIX}",
    ]
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text()
    recap = [m.groups() for line in text.splitlines() if (m := RECAP.match(line))]
    print(f"ansible-playbook: {time.monotonic() - t0:.1f} s (log: {log.relative_to(ROOT)})")
    for host, ok, changed, unreachable, failed in recap:
        print(
            f"  {host:10} ok={ok:3} changed={changed:3} unreachable={unreachable} failed={failed}"
        )
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-40:])
        raise RuntimeError(f"ansible-playbook failed (exit {proc.returncode}):\n{tail}")
    for name in AGENTS:
        wait(lambda n=name: ctl(n, "status"), 20, f"{name} control socket")
    return [f"{host}: {changed} changed" for host, _, changed, _, _ in recap if changed != "0"]


def ctl(name: str, *args: str) -> Any:
    sock = HOSTS / name / "run" / "pmip" / f"{name}.sock"
    out = sh(f"{VENV_BIN}/pmipctl --socket {sock} --json {' '.join(args)}", check=False)
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
    built = not existing_namespaces()
    ensure_ansible()
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
    for name in sorted(existing_namespaces()):
        for pid in sh(f"ip netns pids {name}", check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh(f"ip netns del {name}", check=False)
    for path in BUILD.glob("*"):
        if path.is_file():
            path.unlink()
    # The hosts' runtime directories (pid files, sockets) go with their processes.
    for run in HOSTS.glob("*/run"):
        shutil.rmtree(run, ignore_errors=True)
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
