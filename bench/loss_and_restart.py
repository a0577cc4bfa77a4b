"""Signalling loss and LMA kill -9 under load, against the real daemons.

    sudo .venv/bin/python bench/loss_and_restart.py            # full run, about 4-6 min
    sudo .venv/bin/python bench/loss_and_restart.py --quick    # about 1 min
    sudo .venv/bin/python bench/loss_and_restart.py --phases kill --mns 2000 --kills 0.3,0.6

Two phases, each in namespaces of its own (this run's prefix, deleted and processes
killed by PID in a ``finally``; traffic stays between them):

* **loss** (``robust_lab.loss_run``): N MNs (100; quick 20), each on its own access link
  to the real MAG, attach at once while nftables drops 30 % of the signalling between MAG
  and LMA in each direction (``numgen random mod 10 < 3``, in the MAG's namespace, on the
  MH to and from the LMAA, or on UDP 5436 for IPv4 transport). MAG timers: initial
  BINDACK timeout 0.2 s, doubling up to 1.6 s, 20 transmissions, 1 s before starting
  again. Measured: time until every MN is registered, PBUs and PBAs seen and dropped
  (nftables counters), the MAG's retransmissions, and whether any HoA was given twice or
  any MN got two HoAs (pmipctl on both sides, and every HoA either daemon ever logged).
  Baseline, same run: the same N MNs with the same rules at 0 %.
* **kill** (``robust_lab.RegistrationLoad``): a generator in the MAG namespace registers
  N MNs (1000; quick 200) through 8 MAG addresses over raw IPv6, ``--window`` (64) PBUs
  outstanding, each retransmitted with a new sequence number and timestamp after 1 s.
  At each fraction of ``--kills`` (0.25,0.5,0.75; quick 0.5) of MNs acknowledged, right
  after a burst of PBUs (a window's worth outstanding), the LMA is killed with SIGKILL, at
  once, 5 ms or 20 ms later (in turn: as the burst arrives, or while it is handled); the
  generator keeps sending for 1 s (PBAs already in flight are counted, the PBUs go
  nowhere), then the LMA restarts on the same state directory.
  Measured per kill: PBUs in flight, bindings acknowledged before the restart, how many
  of them are missing or have another HoA after it (goal 0), the restart time. At the
  end: every MN registered, HoAs held twice (goal 0), pool accounting, HoAs any MN was
  ever logged with. Baseline, same run: the same registration without a kill.

Writes build/bench/loss_and_restart.json (``.quick.json`` with --quick). Needs root.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
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
from daemon_lab import LMAA  # noqa: E402
from netns import Lab  # noqa: E402
from robust_lab import (  # noqa: E402
    LOAD_MAGS,
    MhClient,
    RegistrationLoad,
    duplicated_hoas,
    lma_logged_hoas,
    load_topology,
    log_problems,
    loss_problems,
    loss_run,
    pool_accounting,
)

KILL_DELAYS_S = (0.0, 0.005, 0.02)  # per kill: wait after the last burst of PBUs


def loss_phase(transport: str, n: int, percent: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="loss-"))
    lab = Lab("ls")
    try:
        res = loss_run(lab, tmp, transport, n, percent, limit_s=600)
        c = res["counters"]
        problems = (
            loss_problems(res)
            if percent
            else [p for p in loss_problems(res) if not p.startswith("no loss")]
        )
        topo = res["topo"]
        return {
            "transport": transport,
            "mns": n,
            "loss_percent": percent,
            "registered": sum(
                1 for r in res["mag_rows"] if r["registered"] and r["mn_id"] in res["wanted"]
            ),
            "lma_active": sum(
                1 for r in res["lma_rows"] if r["state"] == "active" and r["mn_id"] in res["wanted"]
            ),
            "elapsed_s": round(res["elapsed_s"], 2),
            "pbus_seen": c.get("seen_out", 0),
            "pbus_dropped": c.get("dropped_out", 0),
            "pbas_seen": c.get("seen_in", 0),
            "pbas_dropped": c.get("dropped_in", 0),
            "measured_loss_out": round(c.get("dropped_out", 0) / max(1, c.get("seen_out", 0)), 3),
            "measured_loss_in": round(c.get("dropped_in", 0) / max(1, c.get("seen_in", 0)), 3),
            "mag_retransmissions": int(res["retransmissions"]),
            "hoas_given_twice": len(duplicated_hoas(res["lma_log_hoas"])),
            "mns_with_two_hoas": sum(1 for h in res["lma_log_hoas"].values() if len(h) > 1),
            "problems": problems,
            "log_exceptions": log_problems(topo.lma.log_text()) + log_problems(topo.mag.log_text()),
        }
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def kill_phase(n: int, kills: list[float], window: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="kill-"))
    lab = Lab("kl")
    try:
        topo, ids = load_topology(lab, tmp, n)
        topo.lma.start()
        client = MhClient(topo.ns_mag, LMAA)
        load = RegistrationLoad(client, ids, LOAD_MAGS, window=window, timeout_s=1.0)
        t0 = time.monotonic()
        rounds = []
        for fraction in kills:
            target = int(fraction * n)
            load.run(stop=lambda g, t=target: len(g.granted) >= t, limit_s=600)
            delay = KILL_DELAYS_S[len(rounds) % len(KILL_DELAYS_S)]
            time.sleep(delay)  # 0: as the burst arrives; later: while the LMA handles it
            in_flight = sum(1 for t in load.sent_at if t)
            granted_at_kill = len(load.granted)
            topo.lma.stop(signal.SIGKILL)
            t_kill = time.monotonic()
            load.run(limit_s=1.0)  # late PBAs of the dead LMA; new PBUs are lost
            acked = dict(load.granted)
            t_start = time.monotonic()
            topo.lma.start()
            restart_s = time.monotonic() - t_start
            rows = {r["mn_id"]: r for r in topo.lma_rows()}
            lost = [m.decode() for m in acked if m.decode() not in rows]
            changed = [
                m.decode()
                for m, g in acked.items()
                if m.decode() in rows and rows[m.decode()]["ipv4_hoa"] != str(g.hoa)
            ]
            inactive = [
                m.decode() for m in acked if rows.get(m.decode(), {}).get("state") != "active"
            ]
            restored_logged = [
                int(x) for x in re.findall(r"restored (\d+) bindings", topo.lma.log_text())
            ]
            rounds.append(
                {
                    "at_fraction": fraction,
                    "kill_delay_after_burst_ms": round(delay * 1000, 1),
                    "pbus_in_flight_at_kill": in_flight,
                    "acked_at_kill": granted_at_kill,
                    "acked_before_restart": len(acked),
                    "bindings_after_restart": len(rows),
                    "restored_logged": restored_logged[-1] if restored_logged else None,
                    "lost": len(lost),
                    "hoa_changed": len(changed),
                    "not_active": len(inactive),
                    "lost_examples": lost[:5],
                    "down_s": round(time.monotonic() - t_kill, 2),
                    "restart_to_status_s": round(restart_s, 2),
                }
            )
            print(
                f"  kill at {fraction:.0%}: {len(acked)} acked before restart, "
                f"{len(rows)} bindings after, lost {len(lost)}, HoA changed {len(changed)}",
                flush=True,
            )
        load.run(limit_s=600)
        elapsed = time.monotonic() - t0
        rows_final = topo.lma_rows()
        by_mn = {r["mn_id"]: r for r in rows_final}
        hoas = [r["ipv4_hoa"] for r in rows_final]
        held_twice = {h: c for h, c in Counter(hoas).items() if c > 1}
        mismatched = [
            m.decode()
            for m, g in load.granted.items()
            if by_mn.get(m.decode(), {}).get("ipv4_hoa") != str(g.hoa)
        ]
        logged = {m: h for m, h in lma_logged_hoas(topo.lma.log_text()).items() if m in set(ids)}
        client.close()
        return {
            "mns": n,
            "window": window,
            "kills": rounds,
            "registered": len(load.granted),
            "never_registered": len(load.pending),
            "elapsed_s": round(elapsed, 2),
            "pbus_sent": load.sent,
            "retransmissions": load.retransmissions,
            "pba_statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "bindings_final": len(rows_final),
            "hoas_held_twice": len(held_twice),
            "hoa_examples_held_twice": list(held_twice)[:5],
            "final_hoa_differs_from_pba": len(mismatched),
            "pool_problems": pool_accounting(rows_final, topo.lma.ctl_json("pools")),
            "mns_ever_logged_with_two_hoas": sum(1 for h in logged.values() if len(h) > 1),
            "hoas_ever_logged_for_two_mns": len(duplicated_hoas(logged)),
            "log_exceptions": log_problems(topo.lma.log_text())[:10],
        }
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--phases", default="loss,kill")
    parser.add_argument("--loss-mns", type=int, default=None, help="100; quick 20")
    parser.add_argument("--loss-percent", type=int, default=30, help="multiple of 10")
    parser.add_argument("--transports", default="ipv6,ipv4")
    parser.add_argument("--mns", type=int, default=None, help="kill phase: 1000; quick 200")
    parser.add_argument("--kills", default=None, help="fractions: 0.25,0.5,0.75; quick 0.5")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    phases = args.phases.split(",")
    info = machine_info()
    data: dict[str, Any] = {"loss": [], "kill": None, "kill_baseline": None}
    rows: list[tuple[str, str, str]] = []
    if "loss" in phases:
        n = args.loss_mns or (20 if args.quick else 100)
        for transport in args.transports.split(","):
            for percent in ([] if args.no_baseline else [0]) + [args.loss_percent]:
                print(f"loss: {n} MNs over {transport}, {percent} % dropped each way", flush=True)
                r = loss_phase(transport, n, percent)
                data["loss"].append(r)
                rows.append(
                    (
                        f"loss {percent}% {transport}: registered",
                        f"{r['registered']}/{n} in {r['elapsed_s']} s",
                        f"PBUs {r['pbus_dropped']}/{r['pbus_seen']} and PBAs "
                        f"{r['pbas_dropped']}/{r['pbas_seen']} dropped; "
                        f"{r['mag_retransmissions']} retransmissions",
                    )
                )
                rows.append(
                    (
                        f"loss {percent}% {transport}: HoA twice / MN two HoAs",
                        f"{r['hoas_given_twice']} / {r['mns_with_two_hoas']}",
                        f"problems {len(r['problems'])}, log exceptions {len(r['log_exceptions'])}",
                    )
                )
    if "kill" in phases:
        n = args.mns or (200 if args.quick else 1000)
        kills = [
            float(x) for x in (args.kills or ("0.5" if args.quick else "0.25,0.5,0.75")).split(",")
        ]
        if not args.no_baseline:
            print(f"kill baseline: {n} MNs, no kill", flush=True)
            b = kill_phase(n, [], args.window)
            data["kill_baseline"] = b
            rows.append(
                (
                    "no kill: registration",
                    f"{b['registered']}/{n} in {b['elapsed_s']} s",
                    f"{b['pbus_sent']} PBUs, {b['retransmissions']} retransmissions",
                )
            )
        print(f"kill: {n} MNs, SIGKILL at {kills}", flush=True)
        k = kill_phase(n, kills, args.window)
        data["kill"] = k
        for r in k["kills"]:
            rows.append(
                (
                    f"kill -9 at {r['at_fraction']:.0%}: lost / HoA changed",
                    f"{r['lost']} / {r['hoa_changed']}",
                    f"{r['acked_before_restart']} acked before restart, "
                    f"{r['bindings_after_restart']} bindings after; {r['pbus_in_flight_at_kill']} "
                    f"in flight; restart {r['restart_to_status_s']} s",
                )
            )
        rows.append(
            (
                "kill: registered at the end",
                f"{k['registered']}/{n} in {k['elapsed_s']} s",
                f"{k['pbus_sent']} PBUs, {k['retransmissions']} retransmissions, "
                f"statuses {k['pba_statuses']}",
            )
        )
        rows.append(
            (
                "kill: HoAs held twice",
                str(k["hoas_held_twice"]),
                f"ever logged for two MNs {k['hoas_ever_logged_for_two_mns']}, MNs with two "
                f"HoAs {k['mns_ever_logged_with_two_hoas']}, pool problems "
                f"{len(k['pool_problems'])}",
            )
        )
    data = {"machine": finish_machine_info(info), **data}
    write_json("loss_and_restart", data, args.quick, args.tag)
    print()
    print_table(rows, ("figure", "value", "note"), left=3)
    bad = [r for r in data["loss"] if r["problems"] or r["log_exceptions"]]
    k = data["kill"]
    if k is not None and (
        any(r["lost"] or r["hoa_changed"] for r in k["kills"])
        or k["hoas_held_twice"]
        or k["never_registered"]
        or k["pool_problems"]
    ):
        bad.append(k)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
