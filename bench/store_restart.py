"""How long an LMA restart takes with N bindings in the store, and how big the file is.

    .venv/bin/python bench/store_restart.py [--n 1000000] [--dir /tmp/x] [--restore]

Writes N bindings with LmaStore.apply (batches of --batch events, one commit each), closes,
reopens, times load() and optionally LmaEngine.restore(). Every 4th MN is IPv4-only, the
rest also have a /64; one MAG in ten is behind a NAT (IPv4/UDP transport).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pmip_agent.core.events import BindingUp, BindingView, Encapsulation, Peer
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.policy import LmaSettings
from pmip_agent.core.pools import Ipv4Pool, PoolSet, PrefixPool
from pmip_agent.store import LmaStore

NOW = 1.7e9
POOL4 = IPv4Network("10.0.0.0/8")
POOL6 = IPv6Network("2001:db8::/40")


def make_views(n: int, mags: int = 200) -> list[BindingView]:
    peers = []
    for m in range(mags):
        v6 = IPv6Address(0x2001_0DB8_FF00 << 80 | m + 1)
        peers.append(
            Peer(v6, IPv4Address(0xCB007100 + m % 250), 40000 + m) if m % 10 == 0 else Peer(v6)
        )
    base4 = int(POOL4.network_address) + 2  # .1 is the pool's router
    base6 = int(POOL6.network_address) >> 64
    views = []
    for i in range(n):
        mag = peers[i % mags]
        v6only = i % 4 != 0
        views.append(
            BindingView(
                mn_id=f"mn{i:07d}@example.net".encode(),
                mag=mag,
                state="active",
                encapsulation=Encapsulation.IPV4_UDP if mag.v4 else Encapsulation.IPV6,
                nat=mag.v4 is not None,
                ipv4_hoa=IPv4Address(base4 + i),
                ipv4_prefix_len=8,
                ipv4_default_router=IPv4Address(base4 - 1),
                ipv4_source="lma",
                ipv4_pool="p",
                hnps=((IPv6Address((base6 + i) << 64), 64),) if v6only else (),
                lifetime_s=3600,
                expires_at=NOW + 3600 - i % 3600,
                registered_at=NOW - i % 3600,
                last_sequence=i & 0xFFFF,
                last_timestamp=int((NOW - i % 3600) * 65536),
                wire_profile="rfc5844",
                access_tech=3,
                link_layer_id=i.to_bytes(6, "big"),
            )
        )
    return views


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--restore", action="store_true", help="also time LmaEngine.restore")
    args = ap.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="pmip-store-bench-"))
    path = workdir / "lma.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    t = time.perf_counter()
    views = make_views(args.n)
    print(f"built {len(views)} views in {time.perf_counter() - t:.1f} s")

    store = LmaStore(path)
    t = time.perf_counter()
    for i in range(0, len(views), args.batch):
        store.apply(BindingUp(v, "created") for v in views[i : i + args.batch])
    print(f"apply: {time.perf_counter() - t:.1f} s in batches of {args.batch}")
    store.close()
    size = os.path.getsize(path)
    print(f"file: {size / 1e6:.1f} MB ({size / args.n:.0f} B/binding)")

    del views
    gc.collect()
    t = time.perf_counter()
    store = LmaStore(path)
    loaded = store.load()
    elapsed = time.perf_counter() - t
    print(f"open + load: {elapsed:.2f} s for {len(loaded)} bindings")
    store.close()

    if args.restore:
        engine = LmaEngine(
            LmaSettings(lmaa=IPv6Address("2001:db8::1")),
            {},
            PoolSet([Ipv4Pool("p", POOL4)]),
            PrefixPool(POOL6),
        )
        t = time.perf_counter()
        engine.restore(loaded, NOW)
        restored = 0
        while (event := engine.next_event()) is not None:
            restored += isinstance(event, BindingUp)
        print(f"restore: {time.perf_counter() - t:.2f} s, {restored} BindingUp('restored')")


if __name__ == "__main__":
    main()
