"""Run the LMA benchmarks one after the other and summarise them.

Each benchmark runs in its own process (as it would standalone) and writes its own
``build/bench/<name>.json``; this script prints a one-screen summary from those files and
writes ``build/bench/summary.json`` (``*.quick.json`` with --quick). They run one after the
other, never in parallel: the machine has two cores, and every figure is compared with a
baseline measured in the same run.

    .venv/bin/python bench/run_all.py [--quick] [--only lma_engine,fuzz_codec] [--rev HEAD]
    .venv/bin/python bench/run_all.py --summary-only     # re-summarise existing results
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    OUT_DIR,
    ROOT,
    arg_parser,
    json_path,
    print_table,
    write_json,
)

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("lma_engine", "lma_memory", "fuzz_codec")


def summarise(name: str, data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, against) rows for one benchmark's JSON."""
    rows = []
    if name == "lma_engine":
        for phase, r in data["results"].items():
            rows.append(
                (
                    f"engine {phase} PBU/s ({data['mns']:,} MNs)",
                    f"{r['pbu_per_s']:,}",
                    f"codec {r['baseline_ops_per_s']:,}/s, ratio {r['ratio_engine_to_baseline']}"
                    f", goal {r['goal_pbu_per_s']:,}",
                )
            )
        top = data.get("profile", {}).get("top15_by_tottime", [])[:3]
        for t in top:
            rows.append(("  hot: " + t["function"], f"{t['tottime_pct']}%", "of profiled time"))
    elif name == "lma_memory":
        for r in data["runs"]:
            rows.append(
                (
                    f"bytes/binding {r['variant']} ({r['method']}, {r['bindings']:,})",
                    f"{r['per_binding_excl_profiles']:,.0f} / "
                    f"{r['per_binding_incl_profiles']:,.0f}",
                    f"excl / incl profiles; after a refresh round "
                    f"{r['per_binding_after_refresh_excl_profiles']:,.0f} / "
                    f"{r['per_binding_after_refresh_incl_profiles']:,.0f}; "
                    f"goal {data['goal_bytes_per_binding']}; built in {r['feed_wall_s']} s",
                )
            )
    elif name == "fuzz_codec":
        rate = data["per_s"]
        rows.append(
            (
                f"fuzz inputs ({data['inputs']:,}) findings",
                str(sum(data["findings"].values())),
                "goal 0",
            )
        )
        for path in ("decode", "receive_ipv6", "receive_udp"):
            rows.append(
                (
                    f"fuzz {path}/s",
                    f"{rate[path]:,}",
                    f"valid decodes {rate['valid_decode_baseline']:,}/s",
                )
            )
        rss = data["rss_bytes"]
        rows.append(
            (
                "fuzz RSS growth",
                f"{rss['growth_after_first_batch'] / 2**20:+.2f} MiB",
                f"after batch 1; {rss['growth_total'] / 2**20:+.1f} MiB incl. warm-up",
            )
        )
    return rows


def export_rev(rev: str) -> Path:
    """``git archive`` of pmip_agent/ at ``rev`` into build/bench/code-<commit>/."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = OUT_DIR / f"code-{commit}"
    if not (dest / "pmip_agent" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit, "pmip_agent"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    print(f"benchmarking pmip_agent at {rev} ({commit}), exported to {dest.relative_to(ROOT)}")
    return dest


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    parser.add_argument(
        "--rev",
        help="benchmark pmip_agent as committed at this git revision (exported to "
        "build/bench/code-<commit>/ and put first on PYTHONPATH) instead of the working "
        "tree, which may change while a long run goes on",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="run nothing: summarise the JSON files already in build/bench/",
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.rev and not args.summary_only:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(export_rev(args.rev)), env.get("PYTHONPATH")) if p
        )
        env["PMIP_BENCH_REV"] = args.rev
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results: dict[str, Any] = {}
    failed = []
    for name in names:
        path = json_path(name, args.quick, args.tag)
        if args.summary_only:
            if path.exists():
                data = json.loads(path.read_text())
                results[name] = {"returncode": 0, "seconds": data.get("wall_s"), "data": data}
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        cmd += (["--quick"] if args.quick else []) + (["--tag", args.tag] if args.tag else [])
        print(f"\n===== {name} {'(quick) ' if args.quick else ''}=====", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, env=env).returncode
        elapsed = time.perf_counter() - t
        if rc != 0 or not path.exists():
            failed.append(name)
            results[name] = {"returncode": rc, "seconds": round(elapsed, 1)}
            continue
        results[name] = {
            "returncode": rc,
            "seconds": round(elapsed, 1),
            "data": json.loads(path.read_text()),
        }

    print("\n===== summary =====")
    rows = []
    for name, res in results.items():
        if "data" in res:
            rows += summarise(name, res["data"])
        rows.append((f"{name} wall time", f"{res['seconds']} s", f"exit {res['returncode']}"))
    print_table(rows, ("figure", "value", "against"))
    # The code measured is what the benchmark processes imported (the working tree or the
    # --rev export), so the provenance comes from their JSON, not from this process.
    machines = {n: r["data"]["machine"] for n, r in results.items() if "data" in r}
    changed = [n for n, m in machines.items() if m.get("pmip_agent_changed_during_run")]
    if changed:
        print(f"WARNING: pmip_agent changed during the run of {', '.join(changed)}")
    write_json(
        "summary",
        {
            "quick": args.quick,
            "started": started,
            "pmip_agent_rev": sorted({m.get("pmip_agent_rev", "?") for m in machines.values()}),
            "pmip_agent_sha1": sorted({m.get("pmip_agent_sha1", "?") for m in machines.values()}),
            "pmip_agent_changed_during_run": changed,
            "machines": machines,
            "benchmarks": {
                n: {"seconds": r["seconds"], "returncode": r["returncode"]}
                for n, r in results.items()
            },
            "summary": [list(r) for r in rows],
        },
        quick=args.quick,
        tag=args.tag,
    )
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
