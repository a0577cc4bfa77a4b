"""Data-plane throughput: MN -> CN through the MAG-LMA tunnel, against the same topology
routed without a tunnel, in the same run.

    sudo .venv/bin/python bench/dataplane_throughput.py --quick   # one transport, ~1 min
    sudo .venv/bin/python bench/dataplane_throughput.py           # all, every variant

The lab of tests/dataplane_lab.py (MN - MAG1 - (NAT) - LMA - CN, veth between network
namespaces). For each transport (ipv6, ipv4, nat = IPv4-UDP behind a masquerade):

1. Baseline: the same namespaces and links, plain kernel routing (MN's gateway on MAG1,
   MAG1 -> LMA -> CN; through the NAT for "nat"), no daemons.
2. Tunnel: the LMA and MAG daemons with the data plane, once per offload variant:
   ``naive`` (offload: [], one packet per read/send/write), ``tso`` (TUN super-packets
   segmented in user space), ``tso+gso`` (plus UDP_SEGMENT sends), ``full`` (plus UDP_GRO
   and merged TUN writes; the default).

Each measures iperf3 TCP throughput (one stream) and 64-byte UDP packets/s delivered to
the CN (sender unlimited). The CPU seconds the MAG and LMA daemons spent are read from
/proc for the TCP run. Ratios are tunnel / routed from the same run; the machine's core
count is in the JSON (build/bench/dataplane_throughput.json) and the table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for extra in (ROOT, ROOT / "tests", HERE):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from common import arg_parser, machine_info, print_table, write_json  # noqa: E402
from dataplane_lab import CN_V4, ROUTER_V4, DataplaneLab  # noqa: E402
from netns import Lab  # noqa: E402

VARIANTS: dict[str, tuple[str, ...]] = {
    "naive": (),
    "gso": ("gso",),
    "gso+gro": ("gso", "gro"),  # the default
    "tso": ("tso",),
    "tso+gso+gro": ("tso", "gso", "gro"),
}
GOAL = 0.20


def iperf(dp: DataplaneLab, seconds: float, udp: bool) -> dict[str, float]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", dp.ns_cn, "iperf3", "-s", "-1", "-p", "5201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dp.lab.procs.append(server)  # killed with the lab if anything goes wrong
    time.sleep(0.3)
    args = ["iperf3", "-c", CN_V4, "-p", "5201", "-t", str(seconds), "-J"]
    if udp:
        args += ["-u", "-l", "64", "-b", "0"]
    out = dp.lab.run(dp.ns_mn, " ".join(args), check=False).stdout
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
    result = json.loads(out or '{"error": "no output"}')
    if "error" in result:
        raise RuntimeError(f"iperf3: {result['error']}")
    end = result["end"]
    if udp:
        s = end["sum"]
        delivered = s["packets"] - s["lost_packets"]
        return {"pps": delivered / s["seconds"], "loss_pct": s["lost_percent"]}
    return {"gbps": end["sum_received"]["bits_per_second"] / 1e9}


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process and its threads (clock ticks -> s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(daemon: Any) -> int:
    """The agent's process: ``ip netns exec`` execs it in place."""
    assert daemon.proc is not None
    return int(daemon.proc.pid)


def routed(dp: DataplaneLab, seconds: float) -> dict[str, Any]:
    """Plain kernel routing over the same links: MAG1 is the MN's gateway."""
    lab, mag, lma = dp.lab, dp.ns_mags[0], dp.ns_lma
    dp.attach(0)
    lab.run(mag, f"ip addr add {ROUTER_V4}/24 dev acc1")
    lab.run(mag, "sysctl -qw net.ipv4.ip_forward=1")
    lab.run(lma, "sysctl -qw net.ipv4.ip_forward=1")
    if dp.transport == "nat":  # MAG1 already routes via the NAT; the NAT needs the way back
        lab.run(dp.ns_nat, "ip route add 10.10.0.0/24 via 10.0.0.2")
        lab.run(dp.ns_nat, "ip route add default via 192.0.2.1")
        undo = [
            (dp.ns_nat, "ip route del 10.10.0.0/24 via 10.0.0.2"),
            (dp.ns_nat, "ip route del default via 192.0.2.1"),
        ]
    else:
        lab.run(mag, "ip route add default via 192.0.2.1")
        lab.run(lma, "ip route add 10.10.0.0/24 via 192.0.2.2")
        undo = [(mag, "ip route del default via 192.0.2.1"), (lma, "ip route del 10.10.0.0/24")]
    lab.run(dp.ns_mn, "ip addr add 10.10.0.2/24 dev eth0")
    lab.run(dp.ns_mn, f"ip route add default via {ROUTER_V4}")
    try:
        return {"tcp": iperf(dp, seconds, False), "udp64": iperf(dp, seconds, True)}
    finally:
        for ns, cmd in undo:
            lab.run(ns, cmd, check=False)
        lab.run(mag, f"ip addr del {ROUTER_V4}/24 dev acc1", check=False)
        lab.run(dp.ns_mn, "ip addr flush dev eth0 scope global", check=False)
        lab.run(dp.ns_mn, "ip neigh flush dev eth0", check=False)


def tunnel(dp: DataplaneLab, variant: str, seconds: float) -> dict[str, Any]:
    dp.offload = VARIANTS[variant]
    for name in ("lma1", "mag1", "mag2"):
        shutil.rmtree(dp.tmp / f"{name}-state", ignore_errors=True)
    dp.lma = dp._daemon(dp.ns_lma, "lma1", 9441, dp._lma_config())
    dp.mags = [dp._daemon(dp.ns_mags[0], "mag1", 9442, dp._mag_config(0))]
    dp.lma.start()
    dp.mags[0].start()
    try:
        hoa = dp.register(0)["ipv4_hoa"]
        dp.configure_mn_ipv4(hoa)
        dp.lab.run(dp.ns_mn, f"busybox ping -c 2 -W 2 {CN_V4}")
        pids = [daemon_pid(d) for d in (dp.mags[0], dp.lma)]
        before = [cpu_seconds(p) for p in pids]
        t0 = time.monotonic()
        tcp = iperf(dp, seconds, False)
        wall = time.monotonic() - t0
        cpu = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
        udp = iperf(dp, seconds, True)
        tcp["mag_cpu_pct"] = round(100 * cpu[0] / wall, 1)
        tcp["lma_cpu_pct"] = round(100 * cpu[1] / wall, 1)
        return {"tcp": tcp, "udp64": udp}
    finally:
        dp.lma.stop()
        dp.mags[0].stop()
        for d in (dp.mags[0], dp.lma):
            lines = [ln for ln in d.log.read_text().splitlines() if "data plane stopped" in ln]
            print(f"  {variant} {d.log.stem}: {lines[-1].split('stopped: ')[-1] if lines else '?'}")
        dp.lab.run(dp.ns_mn, "ip addr flush dev eth0 scope global", check=False)
        dp.lab.run(dp.ns_mn, "ip route flush default", check=False)
        dp.attach(1)  # MAG1's link down: the next variant attaches afresh
        dp.lab.run(dp.ns_sw, "ip link set p2 down")


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--transports", default="ipv6,ipv4,nat")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="routed then every variant, this many times; each ratio is against the "
        "routed run of its own round (the load of a shared machine drifts), and the "
        "table shows medians",
    )
    args = parser.parse_args()
    transports = args.transports.split(",")
    variants = args.variants.split(",")
    if args.quick:
        transports, variants, args.seconds, args.rounds = ["nat"], ["naive", "tso+gso+gro"], 3.0, 1
    results: dict[str, Any] = {"machine": machine_info(), "seconds": args.seconds, "runs": {}}
    rows = []
    for transport in transports:
        tmp = Path(tempfile.mkdtemp(prefix=f"dpbench-{transport}-"))
        lab = Lab(f"bt{transport[:3]}")
        rounds: list[dict[str, Any]] = []
        try:
            dp = DataplaneLab(lab, tmp, transport).build()
            for r in range(args.rounds):
                load = os.getloadavg()
                run: dict[str, Any] = {"loadavg": load, "routed": routed(dp, args.seconds)}
                base = run["routed"]
                print(f"{transport} round {r + 1}: routed {base}, load {run['loadavg']}")
                for variant in variants:
                    run[variant] = res = tunnel(dp, variant, args.seconds)
                    res["tcp_ratio"] = res["tcp"]["gbps"] / base["tcp"]["gbps"]
                    res["pps_ratio"] = res["udp64"]["pps"] / base["udp64"]["pps"]
                    print(f"  {variant}: {res}", flush=True)
                rounds.append(run)
        finally:
            lab.close()
            shutil.rmtree(tmp, ignore_errors=True)
        results["runs"][transport] = rounds
        routed_tcp = median(r["routed"]["tcp"]["gbps"] for r in rounds)
        routed_pps = median(r["routed"]["udp64"]["pps"] for r in rounds)
        for variant in variants:
            runs = [r[variant] for r in rounds]
            rows.append(
                (
                    f"{transport} {variant}",
                    f"{median(x['tcp']['gbps'] for x in runs):.2f}",
                    f"{routed_tcp:.2f}",
                    f"{100 * median(x['tcp_ratio'] for x in runs):.1f}%",
                    f"{median(x['udp64']['pps'] for x in runs) / 1e3:.0f}k",
                    f"{routed_pps / 1e3:.0f}k",
                    f"{100 * median(x['pps_ratio'] for x in runs):.1f}%",
                    f"{median(x['tcp']['mag_cpu_pct'] for x in runs):.0f}/"
                    f"{median(x['tcp']['lma_cpu_pct'] for x in runs):.0f}",
                )
            )
    cpus = os.cpu_count()
    load = os.getloadavg()
    print(
        f"\nMN -> CN, {args.seconds:g} s per iperf3 run, medians of {args.rounds} rounds, "
        f"{cpus} cores, load average {results['machine']['loadavg_at_start'][0]:.2f} at start, "
        f"{load[0]:.2f} at end; goal >= 20% of routed"
    )
    print_table(
        rows,
        (
            "transport variant",
            "tunnel Gbit/s",
            "routed Gbit/s",
            "TCP ratio",
            "tunnel pps",
            "routed pps",
            "pps ratio",
            "CPU% MAG/LMA",
        ),
    )
    results["loadavg_at_end"] = load
    results["goal_ratio"] = GOAL
    write_json("dataplane_throughput", results, args.quick, args.tag)


if __name__ == "__main__":
    main()
