"""PBU -> PBA throughput of the LMA engine alone: one core, no sockets.

100k distinct MNs (a profile each; half IPv4-only rfc5844, a quarter dual-stack rfc5844, a
quarter dual-stack with the draft's IPv4 Home Address option), all PBUs pre-encoded. Each
PBU goes through ``LmaEngine.receive_ipv6(mh, src, now)``, then ``datagrams_to_send()``
and ``next_event()`` are drained, as an adapter would.

  (a) first registrations of all MNs, (b) refreshes of the same MNs, timestamps increasing
      and 1 ms before the ``now`` passed in (inside the 300 ms window).

Both phases mostly take the engine's fast paths (pmip_agent/core/templates.py): the first
MN of each PBU shape and profile kind goes through the full decode and processing and
teaches a shared PBA template; the others are answered from it.

Baseline, in the same run: bare ``decode(pbu_bytes)`` + ``encode(pba)`` for the same
messages (the PBAs an untimed preparation pass produced, decoded back to dataclasses).
Each phase is timed in chunks of 5k PBUs, every engine chunk followed by the baseline over
the same chunk, so both see the same machine conditions; rounds use a fresh engine. Goal
from the issue: >= 50k PBU/s on one core. A cProfile pass (separate, not part of the
timings) shows where the time goes.

    .venv/bin/python bench/lma_engine.py [--quick] [--mns N] [--repeats R]
"""

from __future__ import annotations

import gc
import sys
import time
import timeit
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from common import (
    LMAA,
    MAGS,
    MIXES,
    T0,
    Arrival,
    arg_parser,
    collect,
    finish_machine_info,
    machine_info,
    make_arrivals,
    make_engine,
    make_profiles,
    median,
    print_profile,
    print_table,
    profile_top,
    write_json,
)

from pmip_agent.core import lma as lma_module
from pmip_agent.core.bindings import BindingCacheEntry
from pmip_agent.core.events import BindingUp, Encapsulation, Peer, Transmit
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.templates import PbaTemplate
from pmip_agent.wire import (
    BaFlags,
    BindingAck,
    BuFlags,
    HomeNetworkPrefix,
    Timestamp,
    WireProfile,
    decode,
    encode,
)

GOAL_PBU_PER_S = 50_000
STEP_S = 20e-6  # arrival spacing in the simulated clock (50k PBU/s of offered load)
REFRESH_AFTER_S = 60.0  # the refresh round starts this long after the first one
CHUNK = 5_000  # PBUs per engine/baseline alternation


class GcTimer:
    """Time spent in the cyclic garbage collector while installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self.active = True  # False: collections are not charged (outside the timed code)
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        elif self.active:
            self.seconds += time.perf_counter() - self._t
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def drive(eng: LmaEngine, arrivals: list[Arrival], out: list[Transmit]) -> dict[str, int]:
    """The measured loop: one PBU in, everything out. Returns event counts by class."""
    receive = eng.receive_ipv6
    datagrams = eng.datagrams_to_send
    next_event = eng.next_event
    extend = out.extend
    counts: dict[type, int] = {}
    for a in arrivals:
        receive(a.data, a.src, a.now)
        extend(datagrams())
        while (ev := next_event()) is not None:
            kind = type(ev)
            counts[kind] = counts.get(kind, 0) + 1
    return {k.__name__: v for k, v in counts.items()}


def codec_baseline(pairs: list[tuple[bytes, BindingAck]]) -> float:
    t = time.perf_counter()
    for data, pba in pairs:
        decode(data)
        encode(pba)
    return time.perf_counter() - t


def decode_only(pairs: list[tuple[bytes, BindingAck]]) -> float:
    t = time.perf_counter()
    for data, _ in pairs:
        decode(data)
    return time.perf_counter() - t


def encode_only(pairs: list[tuple[bytes, BindingAck]]) -> float:
    t = time.perf_counter()
    for _, pba in pairs:
        encode(pba)
    return time.perf_counter() - t


def check_phase(name: str, n: int, out: list[Transmit], events: dict[str, int]) -> list[BindingAck]:
    """Every PBU must have been accepted: one PBA with status 0 and one BindingUp each."""
    pbas = [decode(t.data) for t in out]
    accepted = sum(1 for p in pbas if isinstance(p, BindingAck) and p.status == 0)
    if accepted != n or events.get("BindingUp", 0) != n or len(events) != 1:
        raise SystemExit(
            f"phase {name}: {accepted}/{n} accepted PBAs, events {events}: the benchmark "
            "no longer exercises the success path"
        )
    return pbas  # type: ignore[return-value]


# (label, owner, attribute): what the attribution pass times. ``owner`` is the lma module
# for names it calls as globals, or the class whose method it is.
ATTRIBUTED = (
    ("LmaEngine._fast_register  [first-registration fast path]", LmaEngine, "_fast_register"),
    ("LmaEngine._fast_refresh  [refresh fast path]", LmaEngine, "_fast_refresh"),
    ("PbaTemplate.build  [PBA from a shared template]", PbaTemplate, "build"),
    ("LmaEngine._capture  [learn shape and template]", LmaEngine, "_capture"),
    ("decode (inside the engine)", lma_module, "decode"),
    ("encode (inside the engine)", lma_module, "encode"),
    ("_Pbu(...)  [option sorting]", lma_module, "_Pbu"),
    ("LmaEngine._process  [all PBU logic]", LmaEngine, "_process"),
    ("LmaEngine._register", LmaEngine, "_register"),
    ("LmaEngine._grant_hnps", LmaEngine, "_grant_hnps"),
    ("LmaEngine._grant_ipv4", LmaEngine, "_grant_ipv4"),
    ("LmaEngine._schedule  [timer heap]", LmaEngine, "_schedule"),
    ("LmaEngine._reply_accept  [incl. encode]", LmaEngine, "_reply_accept"),
    ("BindingCacheEntry.view  [event snapshot]", BindingCacheEntry, "view"),
    ("BindingUp(...)  [event]", lma_module, "BindingUp"),
)


def attribute(
    profiles: dict, phases: dict[str, list[Arrival]], n: int
) -> tuple[list[dict[str, Any]], float]:
    """Unprofiled attribution: the engine runs both phases with a perf_counter wrapper
    around a few functions (monkeypatched in this process only). Inclusive times; each
    wrapper adds about 0.3 us per call, also to the wrappers around it."""
    seconds = {label: 0.0 for label, _, _ in ATTRIBUTED}
    calls = dict.fromkeys(seconds, 0)
    originals = []
    clock = time.perf_counter

    def wrap(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += clock() - t
                calls[label] += 1

        return timed_call

    present = [
        (label, owner, name)
        for label, owner, name in ATTRIBUTED
        if (owner is lma_module and hasattr(owner, name)) or name in vars(owner)
    ]  # the engine is being reworked: time what exists
    for label, owner, name in present:
        original = getattr(owner, name) if owner is lma_module else owner.__dict__[name]
        originals.append((owner, name, original))
        setattr(owner, name, wrap(label, original))
    try:
        eng = make_engine(profiles, n)
        collect()
        t = clock()
        for arrivals in phases.values():
            drive(eng, arrivals, [])
        total = clock() - t
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    pbus = sum(len(a) for a in phases.values())
    rows = [
        {
            "function": label,
            "calls_per_pbu": round(calls[label] / pbus, 2),
            "us_per_pbu": round(1e6 * seconds[label] / pbus, 2),
            "pct": round(100 * seconds[label] / total, 1),
        }
        for label, _, _ in present
    ]
    codec = seconds["decode (inside the engine)"] + seconds["encode (inside the engine)"]
    rows.append(
        {
            "function": "everything but decode/encode",
            "calls_per_pbu": 1.0,
            "us_per_pbu": round(1e6 * (total - codec) / pbus, 2),
            "pct": round(100 * (total - codec) / total, 1),
        }
    )
    return rows, 1e6 * total / pbus


def micro_costs(number: int, repeat: int) -> list[dict[str, Any]]:
    """Unprofiled cost of single constructs that appear on the PBU path (timeit, best of
    ``repeat`` runs of ``number`` calls)."""
    v6 = IPv6Address("2001:db8::5")
    v4 = IPv4Address("10.0.0.5")
    peer = Peer(MAGS[0])
    entry = BindingCacheEntry(
        b"mn0000001@bench.example.net", peer, Encapsulation.IPV6, False, v4, 12, v4, "lma",
        "p0", ((v6, 64),), 400, T0 + 400, T0, 1, 1, WireProfile.RFC5844, 3, None,
    )  # fmt: skip
    view = entry.view()
    flags = BuFlags.A | BuFlags.P
    cases: list[tuple[str, Callable[[], object]]] = [
        ("BuFlags(0x8200)  [IntFlag from int]", lambda: BuFlags(0x8200)),
        ("BaFlags(0x20)  [IntFlag from int]", lambda: BaFlags(0x20)),
        ("int(BaFlags.P)", lambda: int(BaFlags.P)),
        ("IPv4Address(4 bytes)", lambda: IPv4Address(b"\n\0\0\5")),
        ("IPv6Address(16 bytes)", lambda: IPv6Address(b"\x20\x01" + bytes(14))),
        ("IPv4Address == IPv4Address", lambda: v4 == v4),
        ("Timestamp(1)  [frozen slots dataclass __init__]", lambda: Timestamp(1)),
        ("HomeNetworkPrefix(v6, 64)  [frozen dataclass]", lambda: HomeNetworkPrefix(v6, 64)),
        ("entry.view()  [BindingView, 19 fields]", entry.view),
        ("BindingUp(view, 'created', None)", lambda: BindingUp(view, "created", None)),
        ("flags & BuFlags.P  [IntFlag __and__]", lambda: flags & BuFlags.P),
        ("isinstance(x, BindingUpdate)-style check", lambda: isinstance(v4, IPv6Address)),
    ]
    rows = []
    for label, fn in cases:
        best = min(timeit.Timer(fn).repeat(repeat, number)) / number
        rows.append({"construct": label, "us": round(best * 1e6, 3)})
    return rows


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--mns", type=int, help="number of MNs (default 100000, quick 5000)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 1)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    args = parser.parse_args()
    n = args.mns or (5_000 if args.quick else 100_000)
    repeats = args.repeats or (1 if args.quick else 3)
    mix = MIXES["mix"]
    machine = machine_info()
    wall = time.perf_counter()

    print(f"LMA engine throughput: {n:,} MNs, mix {'/'.join(mix)}, {repeats} round(s)")
    t = time.perf_counter()
    profiles = make_profiles(n, mix)
    register = make_arrivals(range(n), mix, 1, T0, STEP_S)
    refresh = make_arrivals(range(n), mix, 2, T0 + REFRESH_AFTER_S, STEP_S)
    print(f"setup: {n:,} profiles and {2 * n:,} PBUs encoded in {time.perf_counter() - t:.1f} s")

    phases = {"register": register, "refresh": refresh}

    # Preparation (untimed): a scratch engine answers every PBU once, so the baseline has
    # the very PBAs to encode, and the success path is checked.
    pairs: dict[str, list[tuple[bytes, BindingAck]]] = {}
    events: dict[str, dict[str, int]] = {}
    scratch = make_engine(profiles, n)
    for name, arrivals in phases.items():
        out: list[Transmit] = []
        events[name] = drive(scratch, arrivals, out)
        pbas = check_phase(name, n, out, events[name])
        pairs[name] = [(a.data, p) for a, p in zip(arrivals, pbas, strict=True)]
    del scratch, out, pbas

    # Timed rounds. Each phase is cut into chunks, and every engine chunk is followed by
    # the codec baseline over the same chunk: both see the same machine conditions.
    engine_s: dict[str, list[float]] = {p: [] for p in phases}
    base_s: dict[str, list[float]] = {p: [] for p in phases}
    dec_s: dict[str, list[float]] = {p: [] for p in phases}
    enc_s: dict[str, list[float]] = {p: [] for p in phases}
    gc_s: dict[str, list[float]] = {p: [] for p in phases}
    gc_counts: dict[str, list[list[int]]] = {p: [] for p in phases}
    chunk_ratios: dict[str, list[float]] = {p: [] for p in phases}
    for r in range(repeats):
        collect()
        eng = make_engine(profiles, n)
        for name, arrivals in phases.items():
            e_total = b_total = d_total = c_total = 0.0
            with GcTimer() as gct:
                for lo in range(0, n, CHUNK):
                    sink: list[Transmit] = []
                    chunk = arrivals[lo : lo + CHUNK]
                    gct.active = True
                    t = time.perf_counter()
                    drive(eng, chunk, sink)
                    e = time.perf_counter() - t
                    gct.active = False
                    del sink
                    b = codec_baseline(pairs[name][lo : lo + CHUNK])
                    e_total += e
                    b_total += b
                    chunk_ratios[name].append(b / e)
                    d_total += decode_only(pairs[name][lo : lo + CHUNK])
                    c_total += encode_only(pairs[name][lo : lo + CHUNK])
            engine_s[name].append(e_total)
            base_s[name].append(b_total)
            dec_s[name].append(d_total)
            enc_s[name].append(c_total)
            gc_s[name].append(gct.seconds)
            gc_counts[name].append(gct.collections)
        del eng
        print(
            f"round {r + 1}/{repeats}: "
            + ", ".join(
                f"{p} {n / engine_s[p][-1]:,.0f} PBU/s (codec {n / base_s[p][-1]:,.0f}/s)"
                for p in phases
            ),
            flush=True,
        )

    results: dict[str, Any] = {}
    rows = []
    for name in phases:
        eng_rate = n / median(engine_s[name])
        base_rate = n / median(base_s[name])
        results[name] = {
            "pbu_per_s": round(eng_rate),
            "pbu_per_s_best": round(n / min(engine_s[name])),
            "us_per_pbu": round(1e6 / eng_rate, 2),
            "baseline_ops_per_s": round(base_rate),
            "baseline_ops_per_s_best": round(n / min(base_s[name])),
            "baseline_us_per_op": round(1e6 / base_rate, 2),
            "decode_only_us": round(1e6 * median(dec_s[name]) / n, 2),
            "encode_only_us": round(1e6 * median(enc_s[name]) / n, 2),
            "ratio_engine_to_baseline": round(eng_rate / base_rate, 3),
            "ratio_median_of_chunks": round(median(chunk_ratios[name]), 3),
            "chunk_pbus": CHUNK,
            "engine_overhead_us_per_pbu": round(1e6 / eng_rate - 1e6 / base_rate, 2),
            "gc_pause_s": [round(x, 3) for x in gc_s[name]],
            "gc_collections_by_generation": gc_counts[name],
            "engine_s": [round(x, 3) for x in engine_s[name]],
            "baseline_s": [round(x, 3) for x in base_s[name]],
            "events": events[name],
            "goal_pbu_per_s": GOAL_PBU_PER_S,
            "meets_goal": eng_rate >= GOAL_PBU_PER_S,
        }
        res = results[name]
        rows.append(
            (
                name,
                f"{res['pbu_per_s']:,}",
                f"{res['us_per_pbu']:.1f}",
                f"{res['baseline_ops_per_s']:,}",
                f"{res['baseline_us_per_op']:.1f}",
                f"{res['decode_only_us']:.1f} + {res['encode_only_us']:.1f}",
                f"{res['ratio_engine_to_baseline']:.2f} ({res['ratio_median_of_chunks']:.2f})",
                f"{median(gc_s[name]) / median(engine_s[name]) * 100:.1f}%",
                f"{eng_rate / GOAL_PBU_PER_S:.2f}",
            )
        )

    print(f"\nResults (median of {repeats} round(s); {n:,} PBUs per phase; gc enabled):")
    print_table(
        rows,
        (
            "phase",
            "engine PBU/s",
            "us/PBU",
            "codec ops/s",
            "us/op",
            "decode+encode us",
            "ratio (chunks)",
            "gc share",
            "x goal",
        ),
    )
    print(
        "(ratio = engine PBU/s / codec-only ops/s; in brackets the median over the "
        f"{CHUNK:,}-PBU chunk pairs; goal {GOAL_PBU_PER_S:,} PBU/s)"
    )

    micro = micro_costs(10_000 if args.quick else 100_000, 3 if args.quick else 5)
    print("\nSingle constructs on the PBU path (timeit, unprofiled):")
    print_table([(m["construct"], f"{m['us']:.3f}") for m in micro], ("construct", "us"))

    attribution, attributed_us = attribute(profiles, phases, n)
    print(
        f"\nWhere the time goes, unprofiled ({2 * n:,} PBUs, {attributed_us:.1f} us/PBU with "
        "the timing wrappers; inclusive times):"
    )
    print_table(
        [
            (r["function"], f"{r['calls_per_pbu']:g}", f"{r['us_per_pbu']:.2f}", f"{r['pct']:.1f}")
            for r in attribution
        ],
        ("function", "calls/PBU", "us/PBU", "%"),
    )

    profile: dict[str, Any] = {}
    if not args.no_profile:
        eng = make_engine(profiles, n)
        collect()

        def both_phases() -> None:
            for arrivals in phases.values():
                drive(eng, arrivals, [])

        top, cum, total = profile_top(both_phases, 15, per=2 * n)
        print_profile(top, cum, total, 2 * n, "PBUs")
        profile = {
            "what": "register + refresh of all MNs on a fresh engine, under cProfile",
            "pbus": 2 * n,
            "profiled_total_s": round(total, 3),
            "top15_by_tottime": top,
            "top15_project_by_cumtime": cum,
        }
        del eng

    elapsed = time.perf_counter() - wall
    write_json(
        "lma_engine",
        {
            "benchmark": "lma_engine",
            "quick": args.quick,
            "mns": n,
            "mix": list(mix),
            "repeats": repeats,
            "lmaa": str(LMAA),
            "mags": len(MAGS),
            "arrival_step_s": STEP_S,
            "gc_enabled": gc.isenabled(),
            "machine": finish_machine_info(machine),
            "results": results,
            "micro_us": micro,
            "attribution": {
                "what": "inclusive perf_counter wrappers, both phases, fresh engine",
                "us_per_pbu_with_wrappers": round(attributed_us, 2),
                "rows": attribution,
            },
            "profile": profile,
            "wall_s": round(elapsed, 1),
        },
        quick=args.quick,
        tag=args.tag,
    )
    print(f"total {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
