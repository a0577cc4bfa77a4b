"""Binding views to and from compact database rows, and to JSON for operators.

Rows are plain tuples in the column order of ``BINDING_COLUMNS`` / ``BUL_COLUMNS``:
addresses are packed bytes (4 or 16), home network prefixes one text "prefix/len,...",
booleans 0/1. ``*_from_row`` ignores columns past the ones it knows, so a row written by a
later version with more columns still loads. The round trip is exact: ``from_row(to_row(v))
== v`` for every view the engines can produce (and more: an IPv6 address with a scope id is
kept, as text).
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ..core.events import BindingView, Encapsulation, Peer, Prefix6
from ..core.mag import BulView

__all__ = [
    "BINDING_COLUMNS",
    "BUL_COLUMNS",
    "REFRESH_COLUMNS",
    "binding_from_row",
    "binding_refresh_row",
    "binding_to_json",
    "binding_to_row",
    "bul_from_row",
    "bul_to_json",
    "bul_to_row",
    "hnps_from_text",
    "hnps_to_text",
]

BINDING_COLUMNS: tuple[str, ...] = (
    "mn_id",
    "mag6",
    "mag4",
    "mag_port",
    "state",
    "encapsulation",
    "nat",
    "ipv4_hoa",
    "ipv4_prefix_len",
    "ipv4_default_router",
    "ipv4_source",
    "ipv4_pool",
    "hnps",
    "lifetime_s",
    "expires_at",
    "registered_at",
    "last_sequence",
    "last_timestamp",
    "wire_profile",
    "access_tech",
    "link_layer_id",
)

# What a refresh changes (BindingUp "refreshed"): the store journals only these.
REFRESH_COLUMNS: tuple[str, ...] = (
    "mn_id",
    "lifetime_s",
    "expires_at",
    "last_sequence",
    "last_timestamp",
)

BUL_COLUMNS: tuple[str, ...] = (
    "mn_id",
    "lma",
    "state",
    "registered",
    "ipv4_hoa",
    "ipv4_prefix_len",
    "ipv4_default_router",
    "hnps",
    "encapsulation",
    "nat",
    "lifetime_s",
    "expires_at",
    "link_layer_id",
)

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_FOREVER = 0xFFFF_FFFF  # lifetime_remaining_s of an entry that never expires
_ENCAPSULATIONS = {e.value: e for e in Encapsulation}
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_intern = sys.intern  # one copy of each repeated label in a million-row load
_AF_INET6 = socket.AF_INET6


# --- field codecs ---------------------------------------------------------------------


def _v4_out(addr: IPv4Address | None) -> bytes | None:
    return None if addr is None else addr.packed


def _v4_in(raw: bytes | None) -> IPv4Address | None:
    return None if raw is None else IPv4Address(raw)


def _v6_out(addr: IPv6Address) -> bytes | str:
    # A scope id ("fe80::1%eth0") does not fit in 16 bytes: keep such an address as text.
    return addr.packed if addr.scope_id is None else str(addr)


def _v6_in(raw: bytes | str) -> IPv6Address:
    return IPv6Address(raw)


def _u64_out(value: int) -> int:
    """SQLite integers are signed 64-bit: store an unsigned 64-bit value two's complement."""
    return value - _U64 if value > _I64_MAX else value


def hnps_to_text(hnps: tuple[Prefix6, ...]) -> str:
    """``((2001:db8::, 64), ...)`` -> ``"2001:db8::/64,..."``; ``()`` -> ``""``. The C
    formatter: ``str(IPv6Address)`` is pure Python, and this runs for every new binding
    before its PBA leaves (the row took 38 us instead of 48-67 us at the median, caches
    evicted before each call, as after the LMA sat idle)."""
    return ",".join(f"{_inet_ntop(_AF_INET6, prefix.packed)}/{plen}" for prefix, plen in hnps)


def _parse_v6(text: str) -> IPv6Address:
    try:
        return IPv6Address(_inet_pton(_AF_INET6, text))  # C parser: several times faster
    except OSError:
        return IPv6Address(text)  # e.g. a scope id


def hnps_from_text(text: str) -> tuple[Prefix6, ...]:
    """The inverse of ``hnps_to_text``."""
    if not text:
        return ()
    if "," not in text:  # the usual single prefix: skip the list
        prefix, _, plen = text.rpartition("/")
        return ((_parse_v6(prefix), int(plen)),)
    out: list[Prefix6] = []
    for item in text.split(","):
        prefix, _, plen = item.rpartition("/")
        out.append((_parse_v6(prefix), int(plen)))
    return tuple(out)


# --- LMA binding cache entries ----------------------------------------------------------


def binding_refresh_row(view: BindingView) -> tuple[Any, ...]:
    """The REFRESH_COLUMNS of ``view``, as ``binding_to_row`` has them."""
    return (
        view.mn_id,
        view.lifetime_s,
        view.expires_at,
        view.last_sequence,
        _u64_out(view.last_timestamp),
    )


def binding_to_row(view: BindingView) -> tuple[Any, ...]:
    mag = view.mag
    return (
        view.mn_id,
        _v6_out(mag.v6),
        _v4_out(mag.v4),
        mag.port,
        view.state,
        str(view.encapsulation),
        int(view.nat),
        _v4_out(view.ipv4_hoa),
        view.ipv4_prefix_len,
        _v4_out(view.ipv4_default_router),
        view.ipv4_source,
        view.ipv4_pool,
        hnps_to_text(view.hnps),
        view.lifetime_s,
        view.expires_at,
        view.registered_at,
        view.last_sequence,
        _u64_out(view.last_timestamp),
        view.wire_profile,
        view.access_tech,
        view.link_layer_id,
    )


def binding_from_row(row: Sequence[Any], cache: dict[Any, Any] | None = None) -> BindingView:
    """The view of a row from ``binding_to_row`` (extra trailing columns are ignored).

    ``cache``, one dict kept across the rows of a load, makes the bindings of a MAG share
    one Peer, those of a pool one default router, and equal lifetimes and sequence
    numbers one int: less memory and a faster load."""
    (
        mn_id,
        mag6,
        mag4,
        mag_port,
        state,
        encapsulation,
        nat,
        hoa,
        plen,
        router,
        source,
        pool,
        hnps,
        lifetime_s,
        expires_at,
        registered_at,
        last_sequence,
        last_timestamp,
        wire_profile,
        access_tech,
        link_layer_id,
    ) = row[:21]
    if cache is None:
        cache = {}
    # SQLite makes a new int object per value above 256: the few values of these columns
    # (a sequence number is 16 bits) are shared instead, 28 bytes a binding each.
    share = cache.setdefault
    lifetime_s, last_sequence, plen = (
        share(lifetime_s, lifetime_s),
        share(last_sequence, last_sequence),
        share(plen, plen),
    )
    key = (mag6, mag4, mag_port)
    mag = cache.get(key)
    if mag is None:
        mag = cache[key] = Peer(_v6_in(mag6), _v4_in(mag4), mag_port)
    if router is not None:
        addr = cache.get(router)  # 4 bytes: no clash with the tuple keys
        if addr is None:
            addr = cache[router] = IPv4Address(router)
        router = addr
    return BindingView(
        mn_id,
        mag,
        _intern(state),
        _ENCAPSULATIONS.get(encapsulation) or Encapsulation(encapsulation),
        bool(nat),
        None if hoa is None else IPv4Address(hoa),
        plen,
        router,
        None if source is None else _intern(source),
        None if pool is None else _intern(pool),
        hnps_from_text(hnps),
        lifetime_s,
        expires_at,
        registered_at,
        last_sequence,
        last_timestamp + _U64 if last_timestamp < 0 else last_timestamp,  # see _u64_out
        _intern(wire_profile),
        access_tech,
        link_layer_id,
    )


def _remaining(expires_at: float, now: float) -> int:
    """Whole seconds left, rounded up (0 means lapsed, not "under a second left")."""
    left = expires_at - now
    if not left > 0:  # also NaN
        return 0
    return math.ceil(left) if math.isfinite(left) else _FOREVER


def binding_to_json(view: BindingView, now: float) -> dict[str, Any]:
    """A JSON-ready dict of one binding for operators (pmipctl, the control socket)."""
    mag = view.mag
    return {
        "mn_id": view.mn_name,
        "ipv4_hoa": None if view.ipv4_hoa is None else str(view.ipv4_hoa),
        "ipv4_prefix_len": view.ipv4_prefix_len,
        "ipv4_default_router": (
            None if view.ipv4_default_router is None else str(view.ipv4_default_router)
        ),
        "ipv4_source": view.ipv4_source,
        "ipv6_hnps": [f"{prefix}/{plen}" for prefix, plen in view.hnps],
        "mag": str(mag.v6),
        "mag_ipv4": None if mag.v4 is None else str(mag.v4),
        "mag_port": mag.port,
        "transport": str(view.encapsulation),
        "nat": bool(view.nat),
        "lifetime_s": view.lifetime_s,
        "lifetime_remaining_s": _remaining(view.expires_at, now),
        "state": view.state,
        "registered_at": view.registered_at,
        "wire_profile": view.wire_profile,
        "access_tech": view.access_tech,
    }


# --- MAG binding update list ------------------------------------------------------------


def bul_to_row(view: BulView) -> tuple[Any, ...]:
    return (
        view.mn_id,
        view.lma,
        view.state,
        int(view.registered),
        _v4_out(view.ipv4_hoa),
        view.ipv4_prefix_len,
        _v4_out(view.ipv4_default_router),
        hnps_to_text(view.hnps),
        view.encapsulation,
        int(view.nat),
        view.lifetime_s,
        view.expires_at,
        view.link_layer_id,
    )


def bul_from_row(row: Sequence[Any]) -> BulView:
    """The view of a row from ``bul_to_row`` (extra trailing columns are ignored)."""
    (
        mn_id,
        lma,
        state,
        registered,
        hoa,
        plen,
        router,
        hnps,
        encapsulation,
        nat,
        lifetime_s,
        expires_at,
        link_layer_id,
    ) = row[:13]
    return BulView(
        mn_id,
        lma,
        state,
        bool(registered),
        _v4_in(hoa),
        plen,
        _v4_in(router),
        hnps_from_text(hnps),
        encapsulation,
        bool(nat),
        lifetime_s,
        expires_at,
        link_layer_id,
    )


def bul_to_json(view: BulView, now: float) -> dict[str, Any]:
    return {
        "mn_id": view.mn_id.decode("utf-8", "backslashreplace"),
        "lma": view.lma,
        "state": view.state,
        "registered": bool(view.registered),
        "ipv4_hoa": None if view.ipv4_hoa is None else str(view.ipv4_hoa),
        "ipv6_hnps": [f"{prefix}/{plen}" for prefix, plen in view.hnps],
        "transport": view.encapsulation,
        "nat": bool(view.nat),
        "lifetime_remaining_s": _remaining(view.expires_at, now) if view.registered else 0,
    }
