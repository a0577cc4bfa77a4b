"""Fuzz the running LMA and MAG daemons: 1M malformed or mutated PBU, PBA and DHCP packets.

    sudo .venv/bin/python bench/fuzz_daemons.py            # 1M packets, about 4-6 min
    sudo .venv/bin/python bench/fuzz_daemons.py --quick    # 20k packets, under a minute
    sudo .venv/bin/python bench/fuzz_daemons.py --n 200000 --seed 3

The lab is ``tests/robust_lab.fuzz_topology``: MN1 attached to the real MAG on its own
access link and registered with the real LMA over IPv4/UDP; the MAG also listens on raw MH
and has a shared access link for DHCP; a namespace of its own (MAG2, an allowed MAG) sends
PBUs. Namespaces carry this run's prefix and are deleted, and the daemons killed by PID,
in a ``finally``; traffic stays between them.

What is sent (``robust_lab.DaemonFuzzer``):

* to the LMA: mutants of valid PBUs for 24 fuzz MNs in every IPv4 mode, both wire
  profiles (timestamps fresh: the seeds are rebuilt every 50 ms, so mutants reach the
  engine's deep paths), over raw IPv6 from MAG2 (5 % from an address not allowed), and in
  IPv4/UDP 5436 in the seed framing (IPv6 header + MH, checksum fixed or not, header
  sometimes damaged) and in RFC 5844's bare MH;
* to the MAG: mutants of PBAs for MN1 and the DHCP MNs, from the LMA's own addresses
  (raw MH from the LMAA, UDP from the IPv4-LMAA, both framings);
* to the MAG's access-link DHCP socket: client messages from the DHCP MNs' MACs and from
  random ones, then mutated (bit flips, option lengths, header fields, truncation, random).

Flow control: before sending to a daemon socket whose receive queue (read from
``/proc/PID/net``) holds more than 96 KiB, the sender waits, so the daemons process what
is sent. The kernel's drop counters of those sockets are reported.

Reported: crashes (goal 0: same PID, pmipctl still answers), whether the state changed
in ways bad packets must not cause (``robust_lab.fuzz_state_problems``: MN1 untouched
on both sides, only fuzz MNs elsewhere, pools matching bindings), exceptions in the logs,
the daemons' own counts (drops by reason, PBA statuses), and VmRSS of both daemons over
the run. Baseline, same run: the RSS of the same daemons after MN1 registered and before
the first fuzz packet; the first 100k packets are warm-up (caches and the allocator
grow), so growth is also given from there to the end.

Writes build/bench/fuzz_daemons.json (``.quick.json`` with --quick). Needs root.
"""

from __future__ import annotations

import shutil
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

from common import (  # noqa: E402
    arg_parser,
    finish_machine_info,
    machine_info,
    print_table,
    write_json,
)
from daemon_lab import LMAA, MN_ID  # noqa: E402
from netns import Lab  # noqa: E402
from robust_lab import (  # noqa: E402
    MAG2,
    DaemonFuzzer,
    FuzzStats,
    MhClient,
    daemon_drops,
    daemon_pid,
    fuzz_state,
    fuzz_state_problems,
    fuzz_topology,
    lma_pbu_outcomes,
    log_problems,
    make_pbu,
    socket_queues,
    vm_rss_kb,
    wait_rows,
)


def _active(rows: list[dict[str, Any]]) -> bool:
    return any(r["mn_id"] == MN_ID and r.get("state", "active") == "active" for r in rows)


def _registered(rows: list[dict[str, Any]]) -> bool:
    return any(r["mn_id"] == MN_ID and r["registered"] for r in rows)


def run(n: int, seed: int, keep: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz_daemons-"))
    lab = Lab("fz")
    try:
        topo = fuzz_topology(lab, tmp)
        topo.lma.start()
        topo.mag.start()
        topo.mn_link(True)
        wait_rows(topo.lma_rows, _active, 20, "MN1 bound")
        wait_rows(topo.mag_rows, _registered, 20, "MN1 registered at the MAG")
        before = fuzz_state(topo)
        pids = {"lma": daemon_pid(topo.lma), "mag": daemon_pid(topo.mag)}
        queues_before = {k: socket_queues(p) for k, p in pids.items()}
        fuzzer = DaemonFuzzer(topo, seed=seed)
        t0 = time.monotonic()

        def progress(stats: FuzzStats) -> None:
            sent, lma_kb, mag_kb = stats.rss_kb[-1]
            rate = sent / (time.monotonic() - t0)
            print(
                f"  {sent:>9,} sent  {rate:>7,.0f}/s  RSS LMA {lma_kb / 1024:6.1f} MiB  "
                f"MAG {mag_kb / 1024:6.1f} MiB",
                flush=True,
            )

        try:
            stats = fuzzer.run(n, progress, every=max(10_000, n // 20))
        finally:
            fuzzer.close()
        alive = {
            "lma": topo.lma.proc is not None and topo.lma.proc.poll() is None,
            "mag": topo.mag.proc is not None and topo.mag.proc.poll() is None,
        }
        same_pid = {k: alive[k] and daemon_pid(getattr(topo, k)) == pid for k, pid in pids.items()}
        answers = {
            "lma": topo.lma.ctl("status").returncode == 0,
            "mag": topo.mag.ctl("status").returncode == 0,
        }
        after = fuzz_state(topo)
        problems = fuzz_state_problems(before, after)
        # Still serving after it all: a valid PBU from MAG2 gets its PBA (once any fuzzed
        # timestamp accepted up to 300 ms ahead of the clock has passed).
        time.sleep(0.5)
        client = MhClient(topo.ns_mag2, LMAA)
        try:
            client.recv_all()
            client.send(make_pbu("fz04@example.net", 4242, hnp=True, hoa=None), MAG2)
            pba = client.wait_pba("fz04@example.net", 4242, 10.0)
        finally:
            client.close()
        lma_m, mag_m = topo.lma.metrics(), topo.mag.metrics()
        queues_after = {k: socket_queues(p) for k, p in pids.items() if alive[k]}
        kernel_drops = {
            k: {
                sock: d - queues_before[k].get(sock, (0, 0))[1]
                for sock, (_rx, d) in queues_after.get(k, {}).items()
                if d - queues_before[k].get(sock, (0, 0))[1]
            }
            for k in pids
        }
        lma_log, mag_log = topo.lma.log_text(), topo.mag.log_text()
        log_lines = {
            name: {
                "bytes": len(text.encode()),
                "lines": text.count("\n"),
                "pbu_rejected": text.count("PBU rejected"),
                "dropped_message": text.count("dropped "),
                "suppressed_notes": text.count("suppressed"),
            }
            for name, text in (("lma", lma_log), ("mag", mag_log))
        }
        rss = stats.rss_kb
        warm = next((r for r in rss if r[0] >= min(100_000, n // 10)), rss[0])
        out = {
            "packets": stats.total,
            "seed": seed,
            "elapsed_s": round(stats.elapsed_s, 1),
            "per_s": round(stats.total / stats.elapsed_s) if stats.elapsed_s else 0,
            "sent_by_target": dict(stats.sent),
            "mutations": dict(stats.mutations),
            "replies_seen_by_fuzzer": dict(sorted(stats.replies.items())),
            "sender_waits_for_queues": stats.waits,
            "send_errors": dict(stats.send_errors),
            "crashes": sum(1 for k in pids if not same_pid[k]),
            "alive_same_pid": same_pid,
            "pmipctl_answers": answers,
            "valid_pbu_after_fuzz": None if pba is None else pba.status,
            "state_problems": problems,
            "log_exceptions": {
                "lma": log_problems(lma_log)[:20],
                "mag": log_problems(mag_log)[:20],
            },
            "log_volume": log_lines,
            "bindings_before": {"lma": len(before["lma"]), "mag": len(before["mag"])},
            "bindings_after": {"lma": len(after["lma"]), "mag": len(after["mag"])},
            "fuzz_mn_bindings_after": sorted(
                (r["mn_id"], r["ipv4_hoa"], r["state"]) for r in after["lma"] if r["mn_id"] != MN_ID
            ),
            "lma_pbu_statuses": {k: int(v) for k, v in sorted(lma_pbu_outcomes(lma_m).items())},
            "lma_drops": {k: int(v) for k, v in sorted(daemon_drops(lma_m).items())},
            "mag_drops": {k: int(v) for k, v in sorted(daemon_drops(mag_m).items())},
            "mag_retransmissions": mag_m.get("pmip_pbu_retransmissions_total", 0.0),
            "kernel_socket_drops": kernel_drops,
            "rss_kb_samples": rss,
            "rss_kb": {
                "lma_start": rss[0][1],
                "mag_start": rss[0][2],
                "lma_end": rss[-1][1],
                "mag_end": rss[-1][2],
                "warm_at_packets": warm[0],
                "lma_growth_total": rss[-1][1] - rss[0][1],
                "mag_growth_total": rss[-1][2] - rss[0][2],
                "lma_growth_after_warmup": rss[-1][1] - warm[1],
                "mag_growth_after_warmup": rss[-1][2] - warm[2],
            },
            "rss_kb_now": {k: vm_rss_kb(p) for k, p in pids.items() if alive[k]},
        }
        if keep:
            out["work_dir"] = str(tmp)
        return out
    finally:
        lab.close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--n", type=int, default=None, help="packets (default 1M; quick 20k)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 1_000_000)
    info = machine_info()
    print(f"fuzzing the running LMA and MAG daemons with {n:,} packets (seed {args.seed})")
    result = run(n, args.seed, args.keep)
    data = {"machine": finish_machine_info(info), **result}
    write_json("fuzz_daemons", data, args.quick, args.tag)
    r = result
    rss = r["rss_kb"]
    drops = r["kernel_socket_drops"]
    rows = [
        ("packets sent", f"{r['packets']:,}", f"{r['per_s']:,}/s over {r['elapsed_s']} s"),
        *[(f"  to {k}", f"{v:,}", "") for k, v in sorted(r["sent_by_target"].items())],
        ("crashes (goal 0)", r["crashes"], f"same PID and alive: {r['alive_same_pid']}"),
        ("pmipctl answers", all(r["pmipctl_answers"].values()), str(r["pmipctl_answers"])),
        ("state problems (goal 0)", len(r["state_problems"]), "; ".join(r["state_problems"])[:80]),
        (
            "exceptions in logs (goal 0)",
            sum(len(v) for v in r["log_exceptions"].values()),
            "",
        ),
        ("valid PBU after fuzzing", r["valid_pbu_after_fuzz"], "PBA status (0 = accepted)"),
        (
            "LMA: PBUs answered / dropped",
            f"{sum(r['lma_pbu_statuses'].values()):,} / {sum(r['lma_drops'].values()):,}",
            f"statuses {r['lma_pbu_statuses']}"[:80],
        ),
        ("MAG: messages dropped", f"{sum(r['mag_drops'].values()):,}", ""),
        ("kernel socket drops", sum(sum(v.values()) for v in drops.values()), str(drops)[:80]),
        (
            "LMA VmRSS start -> end",
            f"{rss['lma_start'] / 1024:.1f} -> {rss['lma_end'] / 1024:.1f} MiB",
            f"growth {rss['lma_growth_total'] / 1024:+.1f} MiB, after "
            f"{rss['warm_at_packets']:,} pkts {rss['lma_growth_after_warmup'] / 1024:+.1f} MiB",
        ),
        (
            "MAG VmRSS start -> end",
            f"{rss['mag_start'] / 1024:.1f} -> {rss['mag_end'] / 1024:.1f} MiB",
            f"growth {rss['mag_growth_total'] / 1024:+.1f} MiB, after "
            f"{rss['warm_at_packets']:,} pkts {rss['mag_growth_after_warmup'] / 1024:+.1f} MiB",
        ),
        (
            "LMA log: bytes / lines",
            f"{r['log_volume']['lma']['bytes']:,} / {r['log_volume']['lma']['lines']:,}",
            f"{r['log_volume']['lma']['pbu_rejected']:,} 'PBU rejected' lines (one per "
            f"reject), {r['log_volume']['lma']['dropped_message']:,} drop lines",
        ),
        (
            "MAG log: bytes / lines",
            f"{r['log_volume']['mag']['bytes']:,} / {r['log_volume']['mag']['lines']:,}",
            f"{r['log_volume']['mag']['dropped_message']:,} drop lines",
        ),
        (
            "bindings LMA / MAG after",
            f"{r['bindings_after']['lma']} / {r['bindings_after']['mag']}",
            f"before {r['bindings_before']['lma']} / {r['bindings_before']['mag']}; the rest "
            "are fuzz MNs",
        ),
    ]
    print()
    print_table(rows, ("figure", "value", "note"), left=3)
    failed = r["crashes"] or r["state_problems"] or any(r["log_exceptions"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
