"""Handover interruption: how long an MN's traffic stops when it moves between MAGs.

    sudo .venv/bin/python bench/handover.py --quick    # nat only, 4 handovers, ~30 s
    sudo .venv/bin/python bench/handover.py            # ipv6, ipv4, nat; 10 handovers each

The lab of tests/dataplane_lab.py with real daemons: the MN's one interface sits on a
bridge whose port towards MAG1 or MAG2 is up. A handover is that switch (old port down,
new port up), so it includes everything after the radio: the old MAG sees the link go
(de-registration), the new MAG sees it come (attach, PBU, PBA, tunnel and routes), the
LMA moves the binding, and the new MAG delivers on its access link.

Measured while a paced TCP transfer (2 MB/s) and a 1 kHz UDP probe run, the probe echoed
by the CN: the interruption of a handover is the longest gap between two consecutive
echoes in the second after the switch began (so both directions count). The TCP
transfer must finish with its SHA-256 intact. Goal: at most 50 ms.
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for extra in (ROOT, ROOT / "tests", HERE):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from common import arg_parser, machine_info, print_table, write_json  # noqa: E402
from dataplane_lab import CN_V4, DataplaneLab  # noqa: E402
from netns import Lab, wait_for  # noqa: E402

GOAL_MS = 50.0


def run(transport: str, handovers: int, spacing: float, offload: tuple[str, ...]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"handover-{transport}-"))
    lab = Lab(f"ho{transport[:3]}")
    try:
        dp = DataplaneLab(lab, tmp, transport, offload=offload).build()
        dp.start()
        hoa = dp.register(0)["ipv4_hoa"]
        dp.configure_mn_ipv4(hoa)
        lab.run(dp.ns_mn, f"busybox ping -c 2 -W 2 {CN_V4}")
        duration = spacing * (handovers + 1)
        echo = dp.server(dp.ns_cn, "echo", "echo", "--bind", CN_V4, "--port", "9000")
        record = tmp / "echoes.json"
        probe = dp.tool(
            dp.ns_mn, "probe", "probe", "--to", CN_V4, "--port", "9000",
            "--duration", str(duration), "--record", str(record),
        )  # fmt: skip
        rate = 2 * 1024 * 1024
        sink = dp.server(dp.ns_cn, "sink", "sink", "--bind", CN_V4, "--port", "5004")
        source = dp.tool(
            dp.ns_mn, "source", "source", "--to", CN_V4, "--port", "5004",
            "--bytes", str(int(rate * (duration - 1))), "--rate", str(rate),
        )  # fmt: skip
        switches: list[tuple[float, float]] = []  # (link switch begun, done)
        time.sleep(spacing / 2)
        for k in range(handovers):
            target = (k + 1) % 2
            begun = time.monotonic()
            dp.attach(target)
            switches.append((begun, time.monotonic()))
            time.sleep(spacing)
            entry = dp.mag_entry(target)
            assert entry is not None and entry["ipv4_hoa"] == hoa, f"handover {k}: {entry}"
        sent, received = source.result(120), sink.result(30)
        summary = probe.result(60)
        uplink = echo.stop()
        echoes = sorted(json.loads(record.read_text()), key=lambda e: e[1])
        times = [t for _, t in echoes]
        gaps = []
        for start, _done in switches:
            window = [t for t in times if start - 0.05 <= t <= start + 1.0]
            before = [t for t in times if t < start - 0.05]
            points = ([before[-1]] if before else []) + window
            gap = max((b - a for a, b in itertools.pairwise(points)), default=None)
            gaps.append(round(1000 * gap, 2) if gap is not None else None)
        wait_for(lambda: dp.lma_binding() is not None, 5, what="the final binding")
        valid = [g for g in gaps if g is not None]
        return {
            "transport": transport,
            "handovers": handovers,
            "interruptions_ms": gaps,
            # Two `ip link set` in the switch namespace: the "radio" part, no PMIPv6 yet.
            "link_switch_ms": [round(1000 * (b - a), 2) for a, b in switches],
            "median_ms": statistics.median(valid) if valid else None,
            "max_ms": max(valid) if valid else None,
            "probe": summary,
            "probe_uplink": uplink,
            "tcp_intact": sent["sha256"] == received["sha256"]
            and received["bytes"] == sent["bytes"],
            "tcp_bytes": received["bytes"],
        }
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--transports", default="ipv6,ipv4,nat")
    parser.add_argument("--handovers", type=int, default=10)
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between moves")
    parser.add_argument(
        "--offload", default="tso,gso,gro", help="dataplane.offload, comma-separated ('' for none)"
    )
    args = parser.parse_args()
    transports = args.transports.split(",")
    if args.quick:
        transports, args.handovers = ["nat"], 4
    results = {"machine": machine_info(), "goal_ms": GOAL_MS, "offload": args.offload, "runs": []}
    rows = []
    for transport in transports:
        r = run(
            transport, args.handovers, args.spacing, tuple(filter(None, args.offload.split(",")))
        )
        results["runs"].append(r)
        rows.append(
            (
                transport,
                r["handovers"],
                f"{r['median_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                f"{statistics.median(r['link_switch_ms']):.1f}",
                r["probe"]["sent"] - r["probe"]["echoed"],
                "yes" if r["tcp_intact"] else "NO",
            )
        )
        print(transport, r["interruptions_ms"], flush=True)
    print(f"\n1 kHz probe MN -> CN -> MN; goal <= {GOAL_MS:g} ms")
    print_table(
        rows,
        (
            "transport",
            "handovers",
            "median ms",
            "max ms",
            "link switch ms",
            "probes lost",
            "TCP intact",
        ),
    )
    write_json("handover", results, args.quick, args.tag)


if __name__ == "__main__":
    main()
