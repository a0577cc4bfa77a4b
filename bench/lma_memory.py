"""Memory per LMA binding at 1M bindings (goal: <= 1 KB per binding).

Bindings are built the real way: encoded PBUs through ``LmaEngine.receive_ipv6``, with
``datagrams_to_send()`` and ``next_event()`` drained as we go, in chunks of 10k PBUs that
are encoded just before they are fed and dropped after (so PBU bytes are not counted).
Two variants: IPv4-only (rfc5844, LMA-allocated HoA) and dual-stack (plus a /64 HNP).
Pools: 10.0.0.0/11 + 10.64.0.0/12 and 2001:db8:1000::/40 carved into /64s.

Each variant runs in a fresh child process, so the baseline is a clean process state:

  baseline     after imports, gc.collect()
  profiles     + the MnProfile dict (configuration: reported separately)
  engine       + LmaEngine with its pools (allocation bytearrays: configuration)
  registered   + N registrations
  refreshed    + one refresh of every binding (steady state: whatever the engine keeps
               per binding after a re-registration is in)

Per binding = (bindings - engine) / N ("excluding profiles"), and that plus the profile
dict's share ("including profiles"). Two methods, each its own child per variant:
``tracemalloc`` (exact Python heap; slower; also the top allocation sites) and ``rss``
(VmRSS from /proc/self/status: what the OS sees, including allocator slack; no tracing
overhead, so its registration time is the realistic one).

    .venv/bin/python bench/lma_memory.py [--quick] [--n N] [--variant V] [--method M]
"""

from __future__ import annotations

import argparse
import json
import linecache
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import (
    MIXES,
    ROOT,
    T0,
    arg_parser,
    collect,
    finish_machine_info,
    machine_info,
    make_arrivals,
    make_engine,
    make_profiles,
    peak_rss_bytes,
    print_table,
    rss_bytes,
    write_json,
)

from pmip_agent.core.lma import LmaEngine

GOAL_BYTES = 1024
VARIANTS = ("ipv4-only", "dual-stack")
METHODS = ("rss", "tracemalloc")
CHUNK = 10_000
STEP_S = 20e-6
SITES_AT = 100_000
REFRESH_AFTER_S = 60.0


class Meter:
    def __init__(self, method: str) -> None:
        self.method = method
        if method == "tracemalloc":
            tracemalloc.start(1)

    def read(self) -> dict[str, int]:
        collect()
        state = {"rss": rss_bytes()}
        if self.method == "tracemalloc":
            state["traced"] = tracemalloc.get_traced_memory()[0]
            state["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
        return state

    def heap(self, state: dict[str, int]) -> int:
        """Bytes attributable to the program: traced heap, or RSS."""
        return state["traced"] if self.method == "tracemalloc" else state["rss"]


def feed(
    eng: LmaEngine,
    n: int,
    mix: tuple[str, ...],
    meter: Meter,
    snap_at: int = 0,
    seq: int = 1,
    t_start: float = T0,
) -> tuple[dict[str, Any], tracemalloc.Snapshot | None]:
    """PBUs for MNs 0..n-1 in chunks (first registrations, or with a later ``t_start``
    refreshes); progress every ~10%. With ``snap_at``, also take a tracemalloc snapshot
    once that many PBUs went in."""
    receive = eng.receive_ipv6
    datagrams = eng.datagrams_to_send
    next_event = eng.next_event
    accepted = 0
    engine_s = 0.0
    started = time.perf_counter()
    report_every = max(CHUNK, (n // 10) // CHUNK * CHUNK)
    snap = None
    for start in range(0, n, CHUNK):
        arrivals = make_arrivals(
            range(start, min(n, start + CHUNK)), mix, seq, t_start + start * STEP_S, STEP_S
        )
        t = time.perf_counter()
        for a in arrivals:
            receive(a.data, a.src, a.now)
            accepted += len(datagrams())
            while next_event() is not None:
                pass
        engine_s += time.perf_counter() - t
        del arrivals
        done = min(n, start + CHUNK)
        if snap_at and done == snap_at:
            pause = time.perf_counter()
            collect()
            snap = tracemalloc.take_snapshot()
            started += time.perf_counter() - pause  # not charged to the build time
        if done % report_every == 0 or done == n:
            wall = time.perf_counter() - started
            mem = ""
            if meter.method == "tracemalloc":
                mem = f", traced {tracemalloc.get_traced_memory()[0] / 2**20:,.0f} MiB"
            print(
                f"  {done:>9,} bindings  {wall:6.1f} s  engine {done / engine_s:,.0f} PBU/s"
                f"  rss {rss_bytes() / 2**20:,.0f} MiB{mem}",
                flush=True,
            )
    fed = {
        "pbas": accepted,
        "feed_wall_s": round(time.perf_counter() - started, 1),
        "engine_s": round(engine_s, 1),
        "engine_pbu_per_s": round(n / engine_s),
    }
    return fed, snap


def top_sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> list[dict]:
    rows = []
    for stat in after.compare_to(before, "lineno")[:12]:
        frame = stat.traceback[0]
        if "/pmip_agent/" in frame.filename:  # also inside a frozen copy (run_all --rev)
            where = "pmip_agent/" + frame.filename.rsplit("/pmip_agent/", 1)[1]
        else:
            try:
                where = str(Path(frame.filename).resolve().relative_to(ROOT))
            except ValueError:
                where = Path(frame.filename).name
        rows.append(
            {
                "site": f"{where}:{frame.lineno}",
                "code": linecache.getline(frame.filename, frame.lineno).strip(),
                "bytes": stat.size_diff,
                "blocks": stat.count_diff,
                "bytes_per_binding": round(stat.size_diff / n, 1),
                "blocks_per_binding": round(stat.count_diff / n, 2),
            }
        )
    return rows


def child(variant: str, method: str, n: int) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    mix = MIXES[variant]
    meter = Meter(method)
    base = meter.read()
    t = time.perf_counter()
    profiles = make_profiles(n, mix)
    after_profiles = meter.read()
    print(f"  {n:,} profiles built in {time.perf_counter() - t:.1f} s", flush=True)
    eng = make_engine(profiles, n)
    after_engine = meter.read()
    # Allocation sites come from snapshots around the first SITES_AT bindings: a snapshot
    # of every trace at 1M bindings would take minutes and gigabytes, and the per-binding
    # sites do not change with the count (the totals below are measured at N).
    sites_at = min(n, SITES_AT) if method == "tracemalloc" else 0
    snap0 = tracemalloc.take_snapshot() if sites_at else None
    fed, snap1 = feed(eng, n, mix, meter, sites_at)
    after = meter.read()
    if len(eng) != n or fed["pbas"] != n:
        raise SystemExit(f"{len(eng)} bindings, {fed['pbas']} PBAs for {n} PBUs")
    # Steady state: every MN has re-registered once (what an LMA holds after a lifetime).
    print("  refresh round:", flush=True)
    refreshed, _ = feed(eng, n, mix, meter, seq=2, t_start=T0 + REFRESH_AFTER_S)
    after_refresh = meter.read()
    if len(eng) != n or refreshed["pbas"] != n:
        raise SystemExit(f"refresh: {len(eng)} bindings, {refreshed['pbas']} PBAs")
    hoas = sum(1 for v in eng.bindings() if v.ipv4_hoa is not None)
    hnps = sum(len(v.hnps) for v in eng.bindings())

    h = meter.heap
    profiles_b = h(after_profiles) - h(base)
    engine_b = h(after_engine) - h(after_profiles)
    bindings_b = h(after) - h(after_engine)
    result: dict[str, Any] = {
        "variant": variant,
        "method": method,
        "bindings": n,
        "with_ipv4_hoa": hoas,
        "hnps": hnps,
        "profiles_bytes": profiles_b,
        "engine_and_pools_bytes": engine_b,
        "bindings_bytes": bindings_b,
        "per_binding_excl_profiles": round(bindings_b / n, 1),
        "per_binding_incl_profiles": round((bindings_b + profiles_b) / n, 1),
        "per_binding_incl_profiles_and_pools": round((bindings_b + profiles_b + engine_b) / n, 1),
        "per_binding_after_refresh_excl_profiles": round(
            (h(after_refresh) - h(after_engine)) / n, 1
        ),
        "per_binding_after_refresh_incl_profiles": round(
            (h(after_refresh) - h(after_engine) + profiles_b) / n, 1
        ),
        "refresh_round": refreshed,
        "states": {
            "base": base,
            "profiles": after_profiles,
            "engine": after_engine,
            "registered": after,
            "refreshed": after_refresh,
        },
        "peak_rss_bytes": peak_rss_bytes(),
        **fed,
    }
    if method == "tracemalloc":
        t = time.perf_counter()
        result["top_sites"] = top_sites(snap0, snap1, sites_at)  # type: ignore[arg-type]
        result["top_sites_at_bindings"] = sites_at
        print(f"  snapshots compared in {time.perf_counter() - t:.1f} s", flush=True)
    return result


def run_child(variant: str, method: str, n: int) -> dict[str, Any]:
    print(f"\n[{variant}, {method}] {n:,} bindings in a fresh process", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--variant",
                variant,
                "--method",
                method,
                "--n",
                str(n),
                "--result",
                tmp.name,
            ],
            check=True,
        )
        result = json.loads(Path(tmp.name).read_text())
    result["child_wall_s"] = round(time.perf_counter() - t, 1)
    return result


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--n", type=int, help="bindings (default 1000000, quick 20000)")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="default: both")
    parser.add_argument("--method", choices=METHODS, action="append", help="default: both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 1_000_000)
    if args.child:
        result = child(args.variant[0], args.method[0], n)
        Path(args.result).write_text(json.dumps(result))
        return 0

    machine = machine_info()
    wall = time.perf_counter()
    variants = args.variant or list(VARIANTS)
    methods = args.method or list(METHODS)
    print(f"LMA memory per binding: {n:,} bindings, variants {variants}, methods {methods}")
    runs = [run_child(v, m, n) for v in variants for m in methods]

    rows = []
    for r in runs:
        rows.append(
            (
                r["variant"],
                r["method"],
                f"{r['bindings']:,}",
                f"{r['per_binding_excl_profiles']:,.0f}",
                f"{r['per_binding_incl_profiles']:,.0f}",
                f"{r['per_binding_after_refresh_excl_profiles']:,.0f}",
                f"{r['per_binding_after_refresh_incl_profiles']:,.0f}",
                f"{r['profiles_bytes'] / r['bindings']:,.0f}",
                f"{r['engine_and_pools_bytes'] / 2**20:,.1f}",
                f"{r['peak_rss_bytes'] / 2**20:,.0f}",
                f"{r['feed_wall_s']:.0f}",
                f"{r['engine_pbu_per_s']:,}",
                f"{r['refresh_round']['engine_pbu_per_s']:,}",
            )
        )
    print(f"\nResults (goal <= {GOAL_BYTES} bytes per binding):")
    print_table(
        rows,
        (
            "variant",
            "method",
            "bindings",
            "B/binding excl",
            "incl profiles",
            "refreshed: excl",
            "incl profiles",
            "profile B/MN",
            "engine+pools MiB",
            "peak RSS MiB",
            "build s",
            "reg PBU/s",
            "refresh PBU/s",
        ),
    )
    print(
        "(B/binding excl = growth from the engine's baseline to N bindings, / N; incl adds "
        "the profile dict's share;\n refreshed = the same after every MN re-registered once "
        "(steady state);\n build s = wall time to encode and register N PBUs, including the "
        "tracing overhead for tracemalloc)"
    )
    for r in runs:
        if "top_sites" in r:
            print(
                f"\nTop allocation sites, {r['variant']} (tracemalloc, growth over the first "
                f"{r['top_sites_at_bindings']:,} bindings):"
            )
            print_table(
                [
                    (
                        s["site"],
                        s["code"][:60],
                        f"{s['bytes_per_binding']:.1f}",
                        f"{s['blocks_per_binding']:.2f}",
                        f"{s['bytes'] / 2**20:,.1f}",
                    )
                    for s in r["top_sites"]
                ],
                ("site", "code", "B/binding", "blocks/binding", "MiB"),
                left=2,
            )

    elapsed = time.perf_counter() - wall
    write_json(
        "lma_memory",
        {
            "benchmark": "lma_memory",
            "quick": args.quick,
            "bindings": n,
            "goal_bytes_per_binding": GOAL_BYTES,
            "machine": finish_machine_info(machine),
            "runs": runs,
            "meets_goal": all(
                max(r["per_binding_incl_profiles"], r["per_binding_after_refresh_incl_profiles"])
                <= GOAL_BYTES
                for r in runs
            ),
            "wall_s": round(elapsed, 1),
        },
        quick=args.quick,
        tag=args.tag,
    )
    print(f"total {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
