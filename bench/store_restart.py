"""An LMA restart with N bindings, step by step: time, CPU and RSS of each step.

    .venv/bin/python bench/store_restart.py [--n 1000000] [--quick] [--dir /tmp/x]

No root and no sockets: the steps the daemon's start-up takes (``LmaService.start``), in
a fresh child process so that RSS starts from an empty interpreter:

1. the config: a YAML with a ``mobile_nodes_file`` (CSV) listing the N MNs;
2. the engine with its profiles and pools;
3. the store read 50k rows at a time (``LmaStore.load_batches``), each batch restored into
   the engine (``LmaEngine.restore``) and its events drained, as the daemon does. The
   data plane is left out (it needs root and a TUN device; ``lma_daemon_load.py`` has
   the daemon with it).

Baseline, same run: a bare ``SELECT`` of every row with no decoding, i.e. SQLite's own
share of step 3. Every 4th MN is IPv4-only, the rest also have a /64; one MAG in ten is
behind a NAT (IPv4/UDP transport). Writes build/bench/store_restart.json.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import arg_parser, machine_info, print_table, write_json  # noqa: E402

from pmip_agent.core.events import BindingUp, BindingView, Encapsulation, Peer  # noqa: E402
from pmip_agent.store import LmaStore  # noqa: E402

NOW = time.time()
POOL4 = IPv4Network("10.0.0.0/8")
POOL6 = IPv6Network("2001:db8::/40")


def mn_name(i: int) -> str:
    return f"mn{i:07d}@example.net"


def make_views(n: int, mags: int = 200, start: int = 0) -> list[BindingView]:
    peers = []
    for m in range(mags):
        v6 = IPv6Address(0x2001_0DB8_FF00 << 80 | m + 1)
        peers.append(
            Peer(v6, IPv4Address(0xCB007100 + m % 250), 40000 + m) if m % 10 == 0 else Peer(v6)
        )
    base4 = int(POOL4.network_address) + 2  # .1 is the pool's router
    base6 = int(POOL6.network_address) >> 64
    router = IPv4Address(base4 - 1)
    views = []
    for i in range(start, start + n):
        mag = peers[i % mags]
        dual = i % 4 != 0
        views.append(
            BindingView(
                mn_id=mn_name(i).encode(),
                mag=mag,
                state="active",
                encapsulation=Encapsulation.IPV4_UDP if mag.v4 else Encapsulation.IPV6,
                nat=mag.v4 is not None,
                ipv4_hoa=IPv4Address(base4 + i),
                ipv4_prefix_len=8,
                ipv4_default_router=router,
                ipv4_source="lma",
                ipv4_pool="p",
                hnps=((IPv6Address((base6 + i) << 64), 64),) if dual else (),
                lifetime_s=3600,
                expires_at=NOW + 3600 - i % 3000,
                registered_at=NOW - i % 3000,
                last_sequence=i & 0xFFFF,
                last_timestamp=int((NOW - i % 3000) * 65536),
                wire_profile="rfc5844",
                access_tech=3,
                link_layer_id=i.to_bytes(6, "big"),
            )
        )
    return views


def prepare(workdir: Path, n: int) -> dict[str, Any]:
    """The config, the CSV and the store of N bindings in ``workdir``."""
    out: dict[str, Any] = {}
    t = time.perf_counter()
    with (workdir / "mns.csv").open("w") as f:
        f.write("mn_id,ipv6,ipv4.mode,ipv4.pool\n")
        for i in range(n):
            f.write(f"{mn_name(i)},{'true' if i % 4 else 'false'},lma,p\n")
    (workdir / "lma.yaml").write_text(
        "role: lma\nnode_name: lma1\n"
        f"state_dir: {workdir}\n"
        "lma:\n  lmaa: 2001:db8::1\n  ipv4_lmaa: 192.0.2.1\n"
        f"  ipv4_pools: [{{name: p, prefix: {POOL4}}}]\n"
        f"  hnp_pool: {{prefix: {POOL6}, length: 64}}\n"
        "mobile_nodes_file: mns.csv\n"
    )
    store = LmaStore(workdir / "lma1.lma.sqlite")
    for start in range(0, n, 50_000):
        views = make_views(min(50_000, n - start), start=start)
        store.apply(BindingUp(v, "created") for v in views)
    store.close()
    out["prepare_s"] = round(time.perf_counter() - t, 1)
    db = workdir / "lma1.lma.sqlite"
    out["db_bytes"] = db.stat().st_size
    out["csv_bytes"] = (workdir / "mns.csv").stat().st_size
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(workdir: Path) -> dict[str, Any]:
    """The start-up steps, measured. Runs in a fresh interpreter."""
    from pmip_agent.config import load_config
    from pmip_agent.core import events as ev
    from pmip_agent.core.lma import LmaEngine

    steps: list[dict[str, Any]] = []
    mark = {"t": time.perf_counter(), "cpu": _cpu(), "rss": _rss()}
    base_rss = mark["rss"]

    def step(name: str, **extra: Any) -> None:
        now = {"t": time.perf_counter(), "cpu": _cpu(), "rss": _rss()}
        steps.append(
            {
                "step": name,
                "wall_s": round(now["t"] - mark["t"], 2),
                "cpu_s": round(now["cpu"] - mark["cpu"], 2),
                "rss_delta_bytes": now["rss"] - mark["rss"],
                **extra,
            }
        )
        mark.update(now)

    config = load_config(workdir / "lma.yaml")
    step("config (YAML + mobile_nodes_file)")
    engine = LmaEngine(config.lma_settings(), config.profiles(), config.pools(), config.hnp_pool())
    step("engine, profiles and pools")
    store = LmaStore(workdir / "lma1.lma.sqlite")
    load_s = restore_s = 0.0
    restored = other = 0
    gc.disable()  # as LmaService._restore
    batches = store.load_batches()
    while True:
        t = time.perf_counter()
        views = next(batches, None)
        t1 = time.perf_counter()
        load_s += t1 - t
        if views is None:
            break
        engine.restore(views, time.time())
        del views
        while (event := engine.next_event()) is not None:
            if type(event) is ev.BindingUp and event.change == "restored":
                restored += 1
            else:
                other += 1
        restore_s += time.perf_counter() - t1
    gc.enable()
    gc.freeze()
    step(
        "store load + engine restore",
        load_s=round(load_s, 2),
        restore_s=round(restore_s, 2),
        restored=restored,
        other_events=other,
    )
    store.close()
    t = time.perf_counter()
    with sqlite3.connect(workdir / "lma1.lma.sqlite") as db:
        rows = sum(1 for _ in db.execute("SELECT * FROM bindings"))
    bare = time.perf_counter() - t
    return {
        "base_rss_bytes": base_rss,
        "steps": steps,
        "total_rss_bytes": _rss(),
        "bindings": len(engine),
        "baseline_bare_select_s": round(bare, 2),
        "baseline_rows": rows,
    }


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--n", type=int, default=None, help="bindings (1,000,000; quick 20,000)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (kept)")
    ap.add_argument("--child", type=Path, help=argparse_suppress())
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    n = args.n or (20_000 if args.quick else 1_000_000)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="pmip-store-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"machine": machine_info(), "n": n}
    try:
        print(f"writing {n:,} bindings and their profiles...", flush=True)
        data["prepare"] = prepare(workdir, n)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(workdir)],
            capture_output=True,
            text=True,
            check=True,
        )
        data["restart"] = r = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    data["machine"]["loadavg_at_end"] = os.getloadavg()
    rows = [
        (
            s["step"],
            f"{s['wall_s']:.2f}",
            f"{s['cpu_s']:.2f}",
            f"{s['rss_delta_bytes'] / 2**20:,.0f}",
            (
                f"load {s['load_s']} s, restore {s['restore_s']} s, {s['restored']:,} restored"
                if "load_s" in s
                else ""
            ),
        )
        for s in r["steps"]
    ]
    rows.append(
        ("baseline: bare SELECT of every row", f"{r['baseline_bare_select_s']:.2f}", "", "", "")
    )
    rows.append(
        (
            "total RSS (interpreter included)",
            "",
            "",
            f"{r['total_rss_bytes'] / 2**20:,.0f}",
            f"empty interpreter {r['base_rss_bytes'] / 2**20:,.0f} MiB",
        )
    )
    p = data["prepare"]
    print(
        f"\n{n:,} bindings: store {p['db_bytes'] / 1e6:,.0f} MB, CSV {p['csv_bytes'] / 1e6:,.0f} "
        f"MB; load average {data['machine']['loadavg_at_start'][0]:.2f} -> "
        f"{data['machine']['loadavg_at_end'][0]:.2f}"
    )
    print_table(rows, ("step", "wall s", "CPU s", "RSS +MiB", "note"))
    write_json("store_restart", data, args.quick, args.tag)


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
