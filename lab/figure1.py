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
scenario (see scenario()) and writes build/lab-report.json; it exits non-zero when a
check fails. `down` removes everything. Every figure in the report is observed (the
LMAs' bindings through pmipctl, the DHCP clients' leases, pings, and what the CN says
it received through lab/traffic.py), never read from configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
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
# The MAGs whose links to the LMAs carry only ESP (inventories/lab: the ipsec group; MAG2
# is behind NAT2, see group_vars/ipsec/strongswan.yml), and the charons of that group.
IPSEC_MAGS = {"mag1"}
IPSEC_HOSTS = ["lma1", "lma2", "mag1"]


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
    """Give ``mn`` a new access link (its eth0) to ``mag``, without an address: a fresh
    attachment each run. Any old link goes first, wherever its MAG end is."""
    nsx(mn, "ip link del eth0", check=False)
    for other in ("mag1", "mag2"):  # a moved MAG end left behind by an interrupted run
        nsx(other, f"ip link del acc-{mn}", check=False)
    link(mn, "eth0", mag, f"acc-{mn}")
    nsx(mn, f"ip link set eth0 address {MNS[mn]['mac']}")
    # The MN is a host, though every lab namespace forwards: take RAs all the same.
    nsx(mn, "sysctl -qw net.ipv6.conf.eth0.accept_ra=2")


def move(mn: str, old: str, new: str) -> None:
    """The handover at layer 2: the MAG end of the MN's link moves from ``old`` to
    ``new``. The MN's eth0, its address and its sockets stay; it sees its carrier drop and
    come back. ``old`` sees its access link go away, ``new`` sees one appear."""
    nsx(old, f"ip link set acc-{mn} netns {ns(new)}")
    nsx(new, f"ip link set acc-{mn} up")


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

TRAFFIC = Path(__file__).with_name("traffic.py")
MAG_NAMES = {MAG1_COA: "mag1", MAG2_COA: "mag2"}  # a binding's Proxy-CoA -> its MAG
DUAL_STACK = {"mn2"}
HANDOVER_PROBE_S = 6.0  # the UDP probe stream (1 kHz) around MN1's handover
HANDOVER_AT_S = 2.0  # when, in that stream, MN1 moves
HANDOVER_TCP_BYTES, HANDOVER_TCP_RATE = 4_000_000, 1_000_000.0  # 4 s of TCP across it

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc's hook: configure the lease and log it for the report. An address that
# is already there stays: after a handover the HoA, and the sockets bound to it, live on.
case "$1" in bound|renew)
  if ! ip -4 addr show dev "$interface" | grep -q " $ip/$mask "; then
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
  fi
  ip route replace default via "$router" dev "$interface"
  echo "bound ip=$ip router=$router mask=$mask serverid=$serverid lease=$lease" >> "{log}";;
esac
"""


def dhcp_lease(mn: str) -> dict[str, str] | None:
    """Run busybox udhcpc on the MN's eth0; it configures the lease and reports it."""
    log = BUILD / f"{mn}.dhcp"
    log.unlink(missing_ok=True)
    script = BUILD / f"{mn}-udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT.format(log=log))
    script.chmod(0o755)
    t0 = time.monotonic()
    nsx(mn, f"busybox udhcpc -i eth0 -f -q -n -t 8 -T 1 -A 1 -s {script}", check=False)
    if not log.exists():
        return None
    fields = log.read_text().split()[1:]
    lease = dict(f.split("=", 1) for f in fields)
    lease["seconds"] = f"{time.monotonic() - t0:.2f}"
    return lease


def traffic(name: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run lab/traffic.py in namespace ``name``; its JSON report."""
    return finish(start_traffic(name, *args), timeout)


def start_traffic(name: str, *args: str) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", ns(name), sys.executable, str(TRAFFIC), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"no answer in {timeout} s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": err.strip()[-500:] or "no report"}


@contextlib.contextmanager
def cn_service() -> Any:
    """The CN's UDP echo and TCP sink (lab/traffic.py serve) for the scenario's length."""
    proc = start_traffic("cn", "serve", "--v4", CN_V4, "--v6", CN_V6)
    try:
        assert proc.stdout is not None
        if "listening" not in proc.stdout.readline():
            raise RuntimeError(f"the CN's traffic service did not start: {proc.stderr}")
        yield
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def reach(mn: str, src: str, dst: str, patience_s: float = 5.0) -> dict[str, Any]:
    """Does ``mn`` reach ``dst`` from ``src``? A ping from that source, then UDP round
    trips whose echoes carry the source address the CN saw; retried for a few seconds
    (the MAG's routes may trail the DHCP answer, an IPv6 address its RA)."""
    family = "-6" if ":" in dst else "-4"
    deadline = time.monotonic() + patience_s
    while True:
        ping = nsx(mn, f"ping {family} -c 3 -i 0.2 -W 1 -I {src} {dst}", check=False)
        echo = traffic(mn, "echo", "--to", dst, "--bind", src, timeout=15)
        result = reached(ping.returncode == 0, echo, src)
        if result["reached"] or time.monotonic() > deadline:
            return result


def reached(ping_ok: bool, echo: dict[str, Any], src: str) -> dict[str, Any]:
    """The verdict: the ping came back, and the CN echoed probes that it saw coming from
    ``src`` (the home address: not the MAG's, not a NAT's) and from nothing else."""
    cn_saw = echo.get("cn_saw") or []
    ok = ping_ok and bool(echo.get("echoed")) and cn_saw == [src]
    return {"reached": ok, "ping": ping_ok, "rtt_ms": echo.get("rtt_ms"), "cn_saw": cn_saw}


# How each transport of a binding carries an IPv4 home address on the MAG's uplink.
WIRE_FORM = {"ipv6": "ipv4-in-ipv6", "ipv4": "ipv4-in-ipv4", "ipv4-udp": "ipv4-in-udp"}


def watch_wire(mag: str, hoa: str) -> subprocess.Popen[str]:
    """Count the tunnel packets carrying ``hoa`` on ``mag``'s transport link (tr0)."""
    proc = start_traffic(mag, "wire", "--iface", "tr0", "--inner", hoa)
    assert proc.stdout is not None
    if "listening" not in proc.stdout.readline():
        raise RuntimeError(f"no capture on {mag}'s tr0")
    return proc


# All an IPsec-protected uplink may carry (lab/traffic.py protection()): ESP, IKE and
# neighbour discovery; the MN's tunnel packets and the signalling only inside ESP.
PROTECTED_UPLINK = {"esp", "ike", "icmpv6"}


def wire_matches(wire: dict[str, Any], transport: str | None, protected: bool) -> bool:
    """The MN's traffic crossed the MAG's uplink in the binding's encapsulation (both
    ways: a ping and the echoes are at least 4 packets), and in no other; on an
    IPsec-protected uplink, only inside ESP (no tunnel packet of the MN in the clear)."""
    packets = wire.get("packets") or {}
    clear = {k for k in packets if k in WIRE_FORM.values()}
    if protected:
        return packets.get("esp", 0) >= 4 and set(packets) <= PROTECTED_UPLINK
    form = WIRE_FORM.get(transport or "")
    return form is not None and packets.get(form, 0) >= 4 and clear == {form}


def signalling_verdict(mag: str, wire: dict[str, Any]) -> bool:
    """What the MAG's uplink showed while its MNs attached (PBUs and PBAs): on an
    IPsec MAG, ESP and nothing else but IKE and ICMPv6 (neighbour discovery); on the
    others, the clear signalling (which shows the capture can see it)."""
    packets = wire.get("packets") or {}
    if mag in IPSEC_MAGS:
        return packets.get("esp", 0) >= 2 and set(packets) <= PROTECTED_UPLINK
    return packets.get("signalling", 0) >= 2


def installed_child_sas(host: str) -> list[str]:
    """The INSTALLED child SAs of ``host``'s charon ("ike/child"), read through its vici
    socket and listed as the agents list them (pmip_agent.net.ipsec)."""
    import vici

    from pmip_agent.net.ipsec import table_from_sas

    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    try:
        sock.connect(str(HOSTS / host / "run" / "charon" / "charon.vici"))
        sas = list(vici.Session(sock).list_sas())
    except OSError:
        return []
    finally:
        sock.close()
    return list(table_from_sas(sas, None, False).peers)


def global_ipv6(mn: str) -> str | None:
    """The MN's global IPv6 address, once autoconfigured from its MAG's RA (and past DAD)."""
    out = nsx(mn, "ip -6 -j addr show dev eth0 scope global", check=False).stdout
    for dev in json.loads(out or "[]"):
        for a in dev.get("addr_info", []):
            if not a.get("tentative"):
                return str(a["local"])
    return None


def binding(lma: str, mn_id: str) -> dict[str, Any] | None:
    rows = ctl(lma, "bindings") or []
    return next((r for r in rows if r["mn_id"] == mn_id and r["state"] == "active"), None)


def observe_attach(mn: str) -> dict[str, Any]:
    """``mn`` asks for its address by DHCP; what its LMA then holds, and whether it
    reaches the CN from that address."""
    spec = MNS[mn]
    lease = dhcp_lease(mn)
    hoa = lease["ip"] if lease else None
    b = None
    if hoa:  # the binding as the LMA holds it, once it carries this address
        b = wait(
            lambda: (r := binding(spec["lma"], spec["mn_id"])) and r["ipv4_hoa"] == hoa and r,
            15,
            f"{mn}'s binding at {spec['lma']}",
        )
    entry: dict[str, Any] = {
        "mn_id": spec["mn_id"],
        "flow": b["ipv4_source"] if b else None,  # where the LMA says the HoA came from
        "ipv4_hoa": hoa,
        "dhcp": {"server_id": lease["serverid"], "seconds": float(lease["seconds"])}
        if lease
        else None,
        "lma": spec["lma"],
        "mag": MAG_NAMES.get(b["mag"], b["mag"]) if b else None,
        "transport": b["transport"] if b else None,
        "nat": b["nat"] if b else None,
        "reached_cn": False,
        "cn_saw": None,
        "handover": None,
    }
    if hoa:
        capture = watch_wire(entry["mag"], hoa) if entry["mag"] in MAG_NAMES.values() else None
        r = reach(mn, hoa, CN_V4)
        entry.update(reached_cn=r["reached"], cn_saw=r["cn_saw"], rtt_ms=r["rtt_ms"])
        if capture is not None:
            capture.terminate()
            entry["wire"] = finish(capture, 10)
            entry["wire_matches_transport"] = wire_matches(
                entry["wire"], entry["transport"], entry["mag"] in IPSEC_MAGS
            )
    if mn in DUAL_STACK:
        v6 = None
        with contextlib.suppress(RuntimeError):
            v6 = wait(lambda: global_ipv6(mn), 10, f"{mn}'s IPv6 address")
        entry["ipv6_hnps"] = b["ipv6_hnps"] if b else None
        entry["ipv6_address"] = v6
        entry["reached_cn_v6"] = bool(v6) and reach(mn, v6, CN_V6)["reached"]
    return entry


def handover(mn: str, old: str, new: str, hoa: str) -> dict[str, Any]:
    """Move ``mn`` from ``old`` to ``new`` while it sends a TCP transfer and a 1 kHz UDP
    probe stream to the CN from its home address; the DHCP client asks again on the new
    link. The interruption is the longest gap between two echoes of the stream."""
    spec = MNS[mn]
    before = binding(spec["lma"], spec["mn_id"])
    probe = start_traffic(
        mn, "probe", "--to", CN_V4, "--bind", hoa, "--duration", str(HANDOVER_PROBE_S)
    )
    tcp = start_traffic(
        mn, "transfer", "--to", CN_V4, "--bind", hoa,
        "--bytes", str(HANDOVER_TCP_BYTES), "--rate", str(HANDOVER_TCP_RATE),
    )  # fmt: skip
    time.sleep(HANDOVER_AT_S)
    move(mn, old, new)
    lease = dhcp_lease(mn)  # the MN's DHCP client on its new link
    stream, transfer = finish(probe, 60), finish(tcp, 120)
    after = None
    with contextlib.suppress(RuntimeError):
        after = wait(
            lambda: (r := binding(spec["lma"], spec["mn_id"])) and r["mag"] != before["mag"] and r,
            10,
            f"{mn}'s binding to move",
        )
    return summarize_handover(hoa, before, after, lease, stream, transfer)


def summarize_handover(
    hoa: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    lease: dict[str, str] | None,
    stream: dict[str, Any],
    transfer: dict[str, Any],
) -> dict[str, Any]:
    """The handover's entry of the report, from what was observed: the LMA's binding
    before and after, the DHCP lease on the new link, the probe stream's echoes and the
    CN's account of the TCP transfer."""
    same_hoa = (
        lease is not None
        and lease["ip"] == hoa
        and after is not None
        and after["ipv4_hoa"] == hoa
        and stream.get("cn_saw") == [hoa]
    )
    moved = before is not None and after is not None and before["mag"] != after["mag"]
    # A gap only means something with echoes on both sides of it.
    echoed_through = bool(stream.get("echoed")) and stream.get("max_gap_ms") is not None
    return {
        "from": MAG_NAMES.get(before["mag"], before["mag"]) if before else None,
        "to": MAG_NAMES.get(after["mag"], after["mag"]) if after else None,
        "moved": moved,
        "same_hoa": same_hoa,
        "interruption_ms": stream.get("max_gap_ms") if moved and echoed_through else None,
        "probes": {k: stream.get(k) for k in ("sent", "echoed", "lost", "gap_at_s", "cn_saw")},
        "tcp": transfer,
        "lma_sees": {"transport": after["transport"], "nat": after["nat"]} if after else None,
    }


def scenario() -> dict[str, Any]:
    """Each MN attaches afresh, gets its HoA by DHCP and reaches the CN from it; then MN1
    hands over from MAG1 to MAG2 under traffic, and goes back for the next run."""
    report: dict[str, Any] = {"mobile_nodes": [], "started": time.time()}
    report["ipsec"] = {"child_sas": {}, "uplinks": {}}
    for host in IPSEC_HOSTS:  # the SAs come up as charon starts (MAG1 initiates)
        with contextlib.suppress(RuntimeError):
            wait(lambda h=host: installed_child_sas(h), 20, f"{host}'s child SAs")
        report["ipsec"]["child_sas"][host] = installed_child_sas(host)
    # The MAGs' uplinks while every MN attaches: PBUs, PBAs, DHCP-triggered traffic.
    uplinks = {mag: watch_wire(mag, "0.0.0.0") for mag in ("mag1", "mag2")}
    for mn, spec in MNS.items():
        attach(mn, spec["mag"])  # a fresh attachment each run
    with cn_service():
        for mn in MNS:
            report["mobile_nodes"].append(observe_attach(mn))
        # MAG2 relays MN3's DHCP in the kernel (mag.dhcp.kernel_relay): what it passed on.
        report["kernel_relay"] = (ctl("mag2", "status") or {}).get("dhcp_kernel_relay")
        for mag, capture in uplinks.items():
            capture.terminate()
            wire = finish(capture, 10)
            report["ipsec"]["uplinks"][mag] = {
                "ipsec": mag in IPSEC_MAGS,
                "packets": wire.get("packets"),
                "as_expected": signalling_verdict(mag, wire),
            }
        mn1 = report["mobile_nodes"][0]
        if mn1["ipv4_hoa"]:
            mn1["handover"] = handover("mn1", "mag1", "mag2", mn1["ipv4_hoa"])
            move("mn1", "mag2", "mag1")  # back home, so the next run starts from the same place
            dhcp_lease("mn1")
    report["finished"] = time.time()
    report["ok"] = scenario_ok(report)
    return report


def scenario_ok(report: dict[str, Any]) -> bool:
    """Every MN got a HoA and reached the CN from it (the dual-stack one over IPv6 too)
    through the tunnel its binding names, MAG2's kernel relay passed messages on, and the
    handover kept the HoA with a measured interruption and an intact transfer."""
    nodes = report["mobile_nodes"]
    kernel = report.get("kernel_relay") or {}
    ho = nodes[0]["handover"] if nodes else None
    ipsec = report.get("ipsec") or {}
    uplinks = ipsec.get("uplinks") or {}
    return (
        bool(nodes)
        and all(ipsec.get("child_sas", {}).get(h) for h in IPSEC_HOSTS)
        and bool(uplinks)
        and all(u["as_expected"] for u in uplinks.values())
        and all(m["ipv4_hoa"] and m["reached_cn"] for m in nodes)
        and all(m.get("wire_matches_transport") for m in nodes)
        and all(m.get("reached_cn_v6", True) for m in nodes)
        and bool(kernel.get("active"))
        and kernel.get("to_mn", 0) >= 1
        and ho is not None
        and ho["same_hoa"]
        and ho["interruption_ms"] is not None
        and bool(ho["tcp"].get("intact"))
    )


def print_report(report: dict[str, Any]) -> None:
    cols = ["mn_id", "flow", "ipv4_hoa", "mag", "transport", "nat", "reached_cn", "cn_saw"]
    rows = [[str(m.get(c)) for c in cols] for m in report["mobile_nodes"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    ipsec = report.get("ipsec") or {}
    for host, sas in (ipsec.get("child_sas") or {}).items():
        print(f"IPsec {host}: installed child SAs {', '.join(sas) or 'none'}")
    for mag, u in (ipsec.get("uplinks") or {}).items():
        kind = "IPsec" if u["ipsec"] else "no IPsec"
        print(
            f"{mag}'s uplink during the attaches ({kind}): {u['packets']}, ok: {u['as_expected']}"
        )
    for m in report["mobile_nodes"]:
        if "wire" in m:
            print(f"{m['mn_id']} on {m['mag']}'s uplink: {m['wire'].get('packets')}")
        if "reached_cn_v6" in m:
            print(f"{m['mn_id']} IPv6: {m['ipv6_address']}, reached the CN: {m['reached_cn_v6']}")
        if h := m["handover"]:
            p, t = h["probes"], h["tcp"]
            print(
                f"handover {m['mn_id']}: {h['from']} -> {h['to']}, same HoA: {h['same_hoa']}, "
                f"interruption: {h['interruption_ms']} ms (probes sent {p['sent']}, echoed "
                f"{p['echoed']}, lost {p['lost']}); TCP {t.get('bytes')} bytes, "
                f"intact: {t.get('intact')}, CN saw {t.get('cn_saw')}"
            )
    kernel = report.get("kernel_relay")
    if kernel is not None:
        print(
            f"MAG2's DHCP kernel relay: active {kernel['active']}, to the server "
            f"{kernel.get('to_server')}, to MNs {kernel.get('to_mn')}, ACKs left to the daemon "
            f"{kernel.get('ack_up')}, copies read {kernel.get('copies_read')}"
        )
    print("scenario:", "passed" if report["ok"] else "FAILED")


def up() -> int:
    t0 = time.monotonic()
    built = not existing_namespaces()
    ensure_ansible()
    changed = deploy()
    print("lab:", "built" if built else "already built", "; changes:", ", ".join(changed) or "none")
    t1 = time.monotonic()
    report = scenario()
    report["scenario_s"] = round(time.monotonic() - t1, 1)
    report["ansible_s"] = round(t1 - t0, 1)
    report["changes"] = changed
    report["built"] = built
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "lab-report.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"report: build/lab-report.json ({report['elapsed_s']} s)")
    return 0 if report["ok"] else 1


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
