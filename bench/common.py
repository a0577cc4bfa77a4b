"""Shared helpers for the benchmarks: the MN fleet, PBU bytes, RSS, cProfile tables, JSON.

Every benchmark measures its figure and a baseline in the same run (the machines are
noisy), prints a small table and writes ``build/bench/<name>.json``. Nothing here touches
the network: the engines are driven directly (sans-I/O), with pre-encoded bytes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.policy import Ipv4Mode, LmaSettings, MnProfile
from pmip_agent.core.pools import Ipv4Pool, PoolSet, PrefixPool
from pmip_agent.wire import (
    AccessTechTypeOption,
    BindingUpdate,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    Option,
    Timestamp,
    encode,
)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "build" / "bench"


def children_import_this_package() -> None:
    """The daemons a benchmark starts (the venv's `pmip-agent` script) import the
    package the venv was installed from, which need not be the one this process
    imported (another checkout sharing the venv, say): PYTHONPATH puts that one first,
    so the figures are of the code `machine_info` names."""
    import pmip_agent

    here = str(Path(pmip_agent.__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *paths])


children_import_this_package()

LMAA = IPv6Address("2001:db8::1")
ZERO4 = IPv4Address(0)
ZERO6 = IPv6Address(0)
T0 = 1_700_000_000.0  # the benchmarks' UNIX "now" at the start of a run
N_MAGS = 64
MAGS = tuple(IPv6Address(f"2001:db8:a:{i:x}::1") for i in range(N_MAGS))
LIFETIME_UNITS = 100  # 400 s: nothing expires during a run

# One kind per MN. "v4": IPv4-only, LMA-allocated HoA, rfc5844 options (IPv4 HoA Request).
# "ds": dual-stack, rfc5844 (HNP ::/0 + IPv4 HoA Request). "ds-draft": dual-stack with the
# seed draft's IPv4 Home Address option (the LMA answers in the draft profile).
KINDS = ("v4", "ds", "ds-draft")
MIXES: dict[str, tuple[str, ...]] = {
    "mix": ("v4", "v4", "ds", "ds-draft"),  # half IPv4-only, half dual-stack
    "ipv4-only": ("v4",),
    "dual-stack": ("ds",),
}


def mn_id(i: int) -> bytes:
    return b"mn%07d@bench.example.net" % i


def kind_of(i: int, mix: Sequence[str]) -> str:
    return mix[i % len(mix)]


def make_profiles(n: int, mix: Sequence[str]) -> dict[bytes, MnProfile]:
    """Profiles for MNs 0..n-1: all LMA-mode IPv4; dual-stack kinds also get IPv6."""
    return {
        mn_id(i): MnProfile(mn_id(i), Ipv4Mode.LMA, ipv6=kind_of(i, mix) != "v4") for i in range(n)
    }


def make_engine(
    profiles: dict[bytes, MnProfile], n: int, settings: LmaSettings | None = None
) -> LmaEngine:
    """An LMA whose pools hold at least ``n`` IPv4 home addresses and ``n`` /64 prefixes."""
    if n <= 200_000:
        pools = [Ipv4Pool("p0", IPv4Network("10.0.0.0/12"))]
    else:  # 10.0.0.0/11 plus a /12: 3 M addresses, 3 MiB of allocation bytes
        pools = [
            Ipv4Pool("p0", IPv4Network("10.0.0.0/11")),
            Ipv4Pool("p1", IPv4Network("10.64.0.0/12")),
        ]
    # /44 carved into /64s: 2**20 prefixes (a bytearray of 1 MiB); /40 for more than that.
    hnp_net = "2001:db8:100::/44" if n <= 1 << 20 else "2001:db8:1000::/40"
    return LmaEngine(
        settings or LmaSettings(lmaa=LMAA),
        profiles,
        PoolSet(pools),
        PrefixPool(IPv6Network(hnp_net)),
    )


def pbu_options(i: int, kind: str, ts: float | None) -> tuple[Option, ...]:
    opts: list[Option] = [
        MnIdentifier(mn_id(i)),
        HandoffIndicatorOption(1),
        AccessTechTypeOption(3),
    ]
    if ts is not None:
        opts.append(Timestamp.from_seconds(ts))
    if kind != "v4":
        opts.append(HomeNetworkPrefix(ZERO6, 0))
    opts.append(Ipv4HomeAddress(ZERO4) if kind == "ds-draft" else Ipv4HoaRequest(ZERO4))
    return tuple(opts)


def pbu_bytes(i: int, kind: str, seq: int, ts: float | None) -> bytes:
    """A Proxy Binding Update for MN ``i`` (A and P flags), checksum left zero as from a
    raw socket."""
    return encode(BindingUpdate(seq & 0xFFFF, LIFETIME_UNITS, options=pbu_options(i, kind, ts)))


@dataclass(frozen=True, slots=True)
class Arrival:
    """One PBU as the engine gets it: bytes, source (the MAG) and the ``now`` to pass."""

    data: bytes
    src: IPv6Address
    now: float


def make_arrivals(
    indices: Iterable[int], mix: Sequence[str], seq: int, t_start: float, step: float
) -> list[Arrival]:
    """PBUs for ``indices`` arriving ``step`` seconds apart from ``t_start``. Each carries a
    timestamp 1 ms before its arrival time: inside the 300 ms window, and increasing."""
    out = []
    for k, i in enumerate(indices):
        now = t_start + k * step
        out.append(
            Arrival(pbu_bytes(i, kind_of(i, mix), seq + i, now - 0.001), MAGS[i % N_MAGS], now)
        )
    return out


# --- measurement helpers ---------------------------------------------------------------


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def collect() -> None:
    """A full collection, so garbage from the setup is not charged to what follows."""
    gc.collect()
    gc.collect()


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no samples)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _func_label(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":  # built-ins
        return name
    path = Path(filename)
    marker = "/pmip_agent/"  # also inside a frozen copy (run_all.py --rev)
    if marker in filename:
        shown = "pmip_agent/" + filename.rsplit(marker, 1)[1]
    else:
        try:
            shown = str(path.resolve().relative_to(ROOT))
        except ValueError:
            shown = path.name
    return f"{shown}:{line}({name})"


def _profile_row(key: tuple[str, int, str], value: tuple, total: float, per: int) -> dict:
    cc, nc, tt, ct, _callers = value
    return {
        "function": _func_label(key),
        "ncalls": nc,
        "primitive_calls": cc,
        "tottime_s": round(tt, 4),
        "cumtime_s": round(ct, 4),
        "tottime_pct": round(100 * tt / total, 1) if total else 0.0,
        "cumtime_pct": round(100 * ct / total, 1) if total else 0.0,
        "tottime_us_per_op": round(1e6 * tt / per, 3),
        "cumtime_us_per_op": round(1e6 * ct / per, 3),
        "calls_per_op": round(nc / per, 2),
    }


def profile_top(
    fn: Callable[[], Any], top: int = 15, per: int = 1, package: str = "pmip_agent"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Run ``fn`` under cProfile. Returns the ``top`` functions by own time (tottime), the
    ``top`` functions of ``package`` by cumulative time (the call tree's big branches), and
    the profiled total. Times per unit of work (``per`` operations) are in microseconds."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    items = stats.stats.items()  # type: ignore[attr-defined]
    by_tt = sorted(items, key=lambda kv: kv[1][2], reverse=True)[:top]
    ours = [kv for kv in items if f"/{package}/" in kv[0][0]]
    by_ct = sorted(ours, key=lambda kv: kv[1][3], reverse=True)[:top]
    cum_rows = [_profile_row(k, v, total, per) for k, v in by_ct]
    top_ct = by_ct[0][1][3] if by_ct else 0.0
    for row, (_k, v) in zip(cum_rows, by_ct, strict=True):
        # share of the outermost project function (the entry point): 100% at the top
        row["cumtime_pct_of_entry"] = round(100 * v[3] / top_ct, 1) if top_ct else 0.0
    return [_profile_row(k, v, total, per) for k, v in by_tt], cum_rows, total


def print_profile(
    rows: list[dict[str, Any]], cum_rows: list[dict[str, Any]], total: float, per: int, what: str
) -> None:
    unit = what.rstrip("s")
    print(
        f"\ncProfile, top {len(rows)} by tottime ({per:,} {what}, profiled total {total:.2f} s "
        f"= {1e6 * total / per:.1f} us/{unit} under the profiler):"
    )
    print_table(
        [
            (
                r["function"],
                f"{r['ncalls']:,}",
                f"{r['calls_per_op']:g}",
                f"{r['tottime_s']:.3f}",
                f"{r['tottime_pct']:.1f}",
                f"{r['tottime_us_per_op']:.2f}",
                f"{r['cumtime_s']:.3f}",
            )
            for r in rows
        ],
        ("function", "ncalls", f"per {unit}", "tottime s", "%", f"us/{unit}", "cumtime s"),
    )
    print(
        f"\nSame profile, project functions by cumulative time (% of the entry point's, "
        f"i.e. of the whole {unit} cost):"
    )
    print_table(
        [
            (
                r["function"],
                f"{r['calls_per_op']:g}",
                f"{r['cumtime_pct_of_entry']:.1f}",
                f"{r['cumtime_us_per_op']:.2f}",
                f"{r['tottime_us_per_op']:.2f}",
            )
            for r in cum_rows
        ],
        ("function", f"per {unit}", "cum %", f"cum us/{unit}", f"own us/{unit}"),
    )


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], left: int = 1) -> None:
    """A plain text table: the first ``left`` columns left-aligned (labels), the rest
    right-aligned (numbers)."""
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if k < left else c.rjust(w)
            for k, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))


def source_fingerprint() -> str:
    """SHA-1 over the sources of the pmip_agent modules this process has imported (the
    code under test): tells whether they changed while a benchmark ran, since the package
    is worked on in parallel. Changes to modules the benchmark never loads do not count."""
    digest = hashlib.sha1()
    files = sorted(
        {
            Path(mod.__file__)
            for name, mod in list(sys.modules.items())
            if name.split(".")[0] == "pmip_agent" and getattr(mod, "__file__", None)
        }
    )
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.exists() else b"(deleted)")
    return digest.hexdigest()


def finish_machine_info(info: dict[str, Any]) -> dict[str, Any]:
    """``machine_info()`` taken at the start, completed at the end of a run."""
    info["loadavg_at_end"] = os.getloadavg()
    info["pmip_agent_changed_during_run"] = source_fingerprint() != info["pmip_agent_sha1"]
    if info["pmip_agent_changed_during_run"]:
        print("WARNING: pmip_agent/ changed during the run; the figures may mix two versions")
    return info


def machine_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import pmip_agent

    return {
        # the package measured: the working tree, or a frozen copy (run_all.py --rev)
        "pmip_agent_path": str(Path(pmip_agent.__file__).resolve().parent),
        "pmip_agent_rev": os.environ.get("PMIP_BENCH_REV", "working tree"),
        "pmip_agent_sha1": source_fingerprint(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "pmip_agent_dirty": bool(git("status", "--porcelain", "--", "pmip_agent")),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def json_path(name: str, quick: bool = False, tag: str | None = None) -> Path:
    """Where a benchmark's results go: ``build/bench/<name>.json``; ``<name>.quick.json``
    for a --quick smoke run (so it never overwrites a full run); with a tag (--tag T),
    ``<name>.T.json`` (or ``<name>.T.quick.json``), to keep a run apart from others."""
    parts = [name, *([tag] if tag else []), *(["quick"] if quick else []), "json"]
    return OUT_DIR / ".".join(parts)


def write_json(
    name: str, data: dict[str, Any], quick: bool = False, tag: str | None = None
) -> Path:
    path = json_path(name, quick, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(doc or "").strip().split("\n\n")[0] if doc else None,  # 1st paragraph
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (seconds, not minutes)"
    )
    parser.add_argument(
        "--tag",
        help="write build/bench/<name>.<TAG>.json instead of <name>.json (keeps this run "
        "from being overwritten by the next one)",
    )
    return parser
