"""The agent's YAML configuration: its schema, its validation, and the engine values built
from it.

One file configures one node, either an LMA or a MAG (``role``). ``load_config`` reads and
validates it and returns an :class:`AgentConfig`; the methods of that object build the plain
values the sans-I/O engines run with (:mod:`pmip_agent.core.policy`,
:mod:`pmip_agent.core.pools`).

Validation is strict so that mistakes are caught before the agent starts:

* every mapping rejects unknown keys (``extra="forbid"``), so a typo is an error, with a
  "did you mean" hint;
* addresses, prefixes and MAC addresses are parsed, and checked for the role they play
  (a network with host bits set, a router outside its prefix, a non-loopback metrics
  address);
* cross references are resolved: pool and LMA names, the mobile node of an access
  interface, duplicate identifiers and addresses, LMA pools that overlap each other or the
  DHCP servers' prefixes (seed §6).

Every problem is reported, not only the first one, as ``<path>: <reason>`` with the YAML
line when it is known, for example::

    lma.ipv4_pools[1].prefix: 10.10.128.0/17 (pool corp) overlaps 10.10.0.0/16 (pool home) (line 51)

(Problems that depend on several sections are only looked for once each section is valid
on its own.)

YAML is read with YAML 1.2 scalars: only ``true``/``false`` are booleans and ``12:30`` is a
string, so ``mode: off`` means the string ``off`` and MAC addresses need no quotes.

Every field below carries a ``description``: it is the reference documentation of the file
format, next to the commented examples in ``examples/lma.yaml`` and ``examples/mag.yaml``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Network,
)
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .core.policy import (
    Ipv4Mode,
    LmaPeerSettings,
    LmaSettings,
    MagSettings,
    MnProfile,
)
from .core.pools import Ipv4Pool, PoolSet, PrefixPool
from .wire.constants import PMIP6_CNTL_PORT, PMIP6_DATA_PORT, WireProfile

__all__ = [
    "DEFAULT_METRICS_PORT",
    "DEFAULT_SOCKET_DIR",
    "DEFAULT_STATE_DIR",
    "AccessInterfaceConfig",
    "AgentConfig",
    "ConfigError",
    "DataplaneConfig",
    "DhcpConfig",
    "HnpPoolConfig",
    "Ipv4Config",
    "LmaConfig",
    "LmaPeerConfig",
    "LmaPoolConfig",
    "LogConfig",
    "MagConfig",
    "MetricsConfig",
    "MobileNodeConfig",
    "Problem",
    "TimersConfig",
    "load_config",
    "parse_config",
    "parse_yaml",
]

DEFAULT_STATE_DIR = Path("/var/lib/pmip")
DEFAULT_SOCKET_DIR = Path("/run/pmip")
DEFAULT_METRICS_PORT = 9436
MAX_LIFETIME_S = 0xFFFF * 4  # 16-bit lifetime field in 4 s units (RFC 6275 §6.1.7)
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux

Loc = tuple[str | int, ...]


# --- errors -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration.

    ``path`` is the dotted field path (``mobile_nodes[2].ipv4.address``), or the file name
    for problems with the file itself (missing, unreadable, not YAML). ``line`` is the
    1-based YAML line, when known; ``exact`` is False when the line is that of the
    enclosing block because the key itself is missing.
    """

    path: str
    reason: str
    line: int | None = None
    exact: bool = True

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        where = "line" if self.exact else "near line"
        return f"{self.path}: {self.reason} ({where} {self.line})"


class ConfigError(ValueError):
    """The configuration is invalid. ``str()`` lists every problem, one per line, as
    ``<path>: <reason>``; ``problems`` holds them as :class:`Problem` values and ``source``
    names the file (or ``<string>``)."""

    def __init__(self, problems: str | Sequence[Problem], source: str | None = None) -> None:
        if isinstance(problems, str):  # e.g. ConfigError("role: cannot change on reload")
            problems = [Problem(*_split_problem(line)) for line in problems.splitlines()]
        self.problems = tuple(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))


def _split_problem(line: str) -> tuple[str, str]:
    path, sep, reason = line.partition(": ")
    return (path, reason) if sep else ("(config)", line)


class _Problems(ValueError):
    """Raised inside validators: problems at paths relative to the model being validated.
    ``load_config`` joins them with the model's own location. A reason may refer to other
    places (``_ref(0)``, ``_ref(1)``...) given as relative paths in ``refs``; they are
    rendered as full paths, with their lines, once the model's location is known."""

    def __init__(self, problems: list[tuple[Loc, str, tuple[Loc, ...]]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_format_loc(loc)}: {msg}" for loc, msg, _ in problems))


def _ref(i: int) -> str:
    """Placeholder for the i-th reference in a reason (NUL cannot come from user text: names
    and identifiers with control characters are rejected)."""
    return f"\0ref{i}\0"


class _Found:
    """Collects the problems one validator finds, at paths relative to its model."""

    def __init__(self) -> None:
        self.items: list[tuple[Loc, str, tuple[Loc, ...]]] = []

    def add(self, loc: Loc | str, reason: str, *refs: Loc) -> None:
        self.items.append(((loc,) if isinstance(loc, str) else loc, reason, refs))

    def duplicates(self, items: list[tuple[Loc, object]], what: str) -> None:
        """Report every item whose value was already seen, pointing at the first one."""
        first: dict[object, Loc] = {}
        for loc, value in items:
            if value in first:
                shown = value.hex(":") if isinstance(value, bytes) else str(value)
                self.add(loc, f"duplicate {what} {shown!r} (also at {_ref(0)})", first[value])
            else:
                first[value] = loc

    def raise_any(self) -> None:
        if self.items:
            raise _Problems(self.items)


def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _show(value: object) -> str:
    """A short rendering of a user value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- value types --------------------------------------------------------------------------
# Each parser takes what YAML produced and returns the final value, or raises ValueError
# with a message meant for the operator. They are attached with PlainValidator, so pydantic
# does no coercion of its own on these fields.


def _need_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what} as a string, got {_show(value)}")
    return value.strip()


def _parse_ipv6(value: object) -> IPv6Address:
    if isinstance(value, IPv6Address):
        return value
    text = _need_str(value, "an IPv6 address")
    try:
        return IPv6Address(text)
    except ValueError:
        raise ValueError(f"not a valid IPv6 address: {_show(value)}") from None


def _parse_ipv4(value: object) -> IPv4Address:
    if isinstance(value, IPv4Address):
        return value
    text = _need_str(value, "an IPv4 address")
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"not a valid IPv4 address: {_show(value)}") from None


def _parse_ipv6_node(value: object) -> IPv6Address:
    addr = _parse_ipv6(value)
    if addr.is_unspecified or addr.is_multicast:
        raise ValueError(f"{addr} cannot be a node address (unspecified or multicast)")
    return addr


def _parse_ipv4_node(value: object) -> IPv4Address:
    addr = _parse_ipv4(value)
    if addr.is_unspecified or addr.is_multicast or addr == IPv4Address("255.255.255.255"):
        raise ValueError(f"{addr} cannot be a node address (unspecified, multicast or broadcast)")
    return addr


def _parse_ip_any(value: object) -> IPv4Address | IPv6Address:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    text = _need_str(value, "an IPv4 or IPv6 address")
    for cls in (IPv4Address, IPv6Address):
        try:
            return cls(text)
        except ValueError:
            pass
    raise ValueError(f"not a valid IPv4 or IPv6 address: {_show(value)}")


def _network_parser(
    cls: type[IPv4Network] | type[IPv6Network], family: str
) -> Callable[[object], IPv4Network | IPv6Network]:
    def parse(value: object) -> IPv4Network | IPv6Network:
        if isinstance(value, cls):
            return value
        text = _need_str(value, f"an {family} prefix such as {_EXAMPLE_NET[family]}")
        if "/" not in text:
            raise ValueError(f"{_show(value)} needs a prefix length, as in {text}/24")
        try:
            return cls(text)
        except ValueError:
            pass
        try:
            loose = cls(text, strict=False)
        except ValueError:
            raise ValueError(f"not a valid {family} prefix: {_show(value)}") from None
        raise ValueError(f"{text} has host bits set; did you mean {loose}?")

    return parse


_EXAMPLE_NET = {"IPv4": "10.0.0.0/24", "IPv6": "2001:db8::/48"}


def _parse_ipv4_interface(value: object) -> IPv4Interface:
    if isinstance(value, IPv4Interface):
        return value
    text = _need_str(value, "an IPv4 address with prefix length, such as 10.9.0.5/24")
    if "/" not in text:
        raise ValueError(
            f"{_show(value)} needs its prefix length (interface notation, e.g. {text}/24)"
        )
    try:
        iface = IPv4Interface(text)
    except ValueError:
        raise ValueError(f"not a valid IPv4 address/prefix: {_show(value)}") from None
    if iface.network.prefixlen == 0:
        raise ValueError(f"{text}: prefix length 0 is not a home network prefix")
    return iface


_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")


def _parse_mac(value: object) -> bytes:
    if isinstance(value, bytes) and len(value) == 6:
        raw = value
    else:
        text = _need_str(value, "a MAC address such as 02:00:00:00:00:01").lower()
        if not _MAC_RE.match(text):
            raise ValueError(
                f"not a MAC address: {_show(value)} (expected six hex octets separated by "
                "':' or '-', e.g. 02:00:00:00:00:01)"
            )
        raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if raw == bytes(6):
        raise ValueError("00:00:00:00:00:00 is not a usable link-layer identifier")
    if raw[0] & 1:
        raise ValueError(f"{raw.hex(':')} is a multicast address; a mobile node's is unicast")
    return raw


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _parse_name(value: object) -> str:
    text = _need_str(value, "a name")
    if not _NAME_RE.match(text):
        raise ValueError(
            f"invalid name {_show(value)}: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return text


def _parse_ifname(value: object) -> str:
    text = _need_str(value, "an interface name")
    if not 1 <= len(text.encode()) <= 15 or text in (".", ".."):
        raise ValueError(f"invalid interface name {_show(value)}: Linux allows 1 to 15 bytes")
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"invalid interface name {_show(value)}: no '/', ':' or whitespace")
    return text


def _parse_nai(value: object) -> str:
    """A mobile node identifier (RFC 4283 NAI): 1 to 254 bytes of UTF-8, since the option's
    8-bit length also counts the subtype byte."""
    if not isinstance(value, str):
        raise ValueError(f"expected the identifier as a string, got {_show(value)} (quote it)")
    size = len(value.encode("utf-8"))
    if not 1 <= size <= 254:
        raise ValueError(f"must be 1 to 254 bytes of UTF-8, got {size}")
    for ch in value:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
            raise ValueError(f"{_show(value)} contains whitespace or a control character")
    return value


def _parse_file_path(value: object) -> Path:
    path = value if isinstance(value, Path) else Path(_need_str(value, "a path"))
    if not str(path) or str(path) == ".":
        raise ValueError("must name a file")
    return path


def _parse_abs_path(value: object) -> Path:
    path = value if isinstance(value, Path) else Path(_need_str(value, "a path"))
    if not path.is_absolute():
        raise ValueError(f"{str(path)!r} must be an absolute path")
    return path


Ipv6Addr = Annotated[IPv6Address, PlainValidator(_parse_ipv6)]
Ipv4Addr = Annotated[IPv4Address, PlainValidator(_parse_ipv4)]
Ipv6Node = Annotated[IPv6Address, PlainValidator(_parse_ipv6_node)]
Ipv4Node = Annotated[IPv4Address, PlainValidator(_parse_ipv4_node)]
IpAny = Annotated[IPv4Address | IPv6Address, PlainValidator(_parse_ip_any)]
Ipv4Net = Annotated[IPv4Network, PlainValidator(_network_parser(IPv4Network, "IPv4"))]
Ipv6Net = Annotated[IPv6Network, PlainValidator(_network_parser(IPv6Network, "IPv6"))]
Ipv4Iface = Annotated[IPv4Interface, PlainValidator(_parse_ipv4_interface)]
MacAddr = Annotated[bytes, PlainValidator(_parse_mac)]
Name = Annotated[str, PlainValidator(_parse_name)]
IfName = Annotated[str, PlainValidator(_parse_ifname)]
Nai = Annotated[str, PlainValidator(_parse_nai)]
AbsPath = Annotated[Path, PlainValidator(_parse_abs_path)]
FilePath = Annotated[Path, PlainValidator(_parse_file_path)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _is_host(addr: IPv4Address, net: IPv4Network) -> bool:
    """``addr`` is a usable host address of ``net``: inside it, and not its network or
    broadcast address (those exist only for prefixes up to /30)."""
    if addr not in net:
        return False
    if net.prefixlen <= 30:
        return addr not in (net.network_address, net.broadcast_address)
    return True


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- common sections ----------------------------------------------------------------------


class LogConfig(_Model):
    """Logging to stderr (journald picks it up under systemd)."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level logged; debug logs every PBU and PBA."
    )
    format: Literal["text", "json"] = Field(
        "text", description="text: one human-readable line per record; json: one JSON object."
    )


class MetricsConfig(_Model):
    """The Prometheus endpoint. It has no authentication, so it only listens on loopback;
    expose it further through a reverse proxy or node exporter if needed."""

    enabled: bool = Field(False, description="Serve Prometheus metrics over HTTP.")
    address: IpAny = Field(
        IPv4Address("127.0.0.1"),
        description="Listening address: a loopback address (127.0.0.0/8 or ::1) only.",
    )
    port: Port = Field(DEFAULT_METRICS_PORT, description="Listening TCP port.")

    @field_validator("address")
    @classmethod
    def _loopback_only(cls, addr: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
        if not addr.is_loopback:
            raise ValueError(
                f"{addr} is not a loopback address: the metrics endpoint has no "
                "authentication, so it may only listen on 127.0.0.0/8 or ::1"
            )
        return addr


class TimersConfig(_Model):
    """Protocol timers and constants (RFC 5213 §9 defaults). MAG-side values are ignored by
    an LMA and vice versa."""

    initial_bindack_timeout_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="MAG: wait for a PBA before the first retransmission "
        "(INITIAL_BINDACK_TIMEOUT); doubled after each one.",
    )
    max_bindack_timeout_s: float = Field(
        32.0,
        gt=0,
        le=3600,
        description="MAG: upper bound of the doubling retransmission timeout "
        "(MAX_BINDACK_TIMEOUT); at least initial_bindack_timeout_s.",
    )
    max_transmissions: int = Field(
        6,
        ge=1,
        le=32,
        description="MAG: PBUs sent for one registration before giving up, the first one included.",
    )
    retry_after_failure_s: float = Field(
        32.0,
        gt=0,
        le=86400,
        description="MAG: wait after a failed or rejected registration before trying again.",
    )
    refresh_fraction: float = Field(
        0.8,
        ge=0.1,
        le=0.95,
        description="MAG: re-register when this fraction of the granted lifetime has passed.",
    )
    nat_keepalive_fraction: float = Field(
        0.9,
        ge=0.1,
        le=0.95,
        description="MAG: behind a NAT, re-send the PBU when this fraction of the LMA's NAT "
        "refresh time has passed, to keep the NAT binding open.",
    )
    min_delay_before_bce_delete_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="LMA: keep a deregistered binding this long before deleting it "
        "(MinDelayBeforeBCEDelete), so a handoff to another MAG finds it.",
    )
    timestamp_window_ms: int = Field(
        300,
        ge=1,
        le=60000,
        description="LMA: accepted clock difference of a PBU timestamp "
        "(TimestampValidityWindow, RFC 5213 §5.5). Needs NTP on every node. MAG: a PBU "
        "refused for its timestamp (156) after longer than this on its way is sent again "
        "at once with a fresh one, instead of backing off.",
    )
    max_lifetime_s: int = Field(
        3600,
        ge=4,
        le=MAX_LIFETIME_S,
        description="LMA: longest binding lifetime granted; a PBU asking for more gets this.",
    )
    lifetime_s: int = Field(
        3600,
        ge=4,
        le=MAX_LIFETIME_S,
        description="MAG: binding lifetime asked for in PBUs (sent in 4 s units, rounded down).",
    )
    nat_refresh_s: int = Field(
        110,
        ge=1,
        le=86400,
        description="LMA: refresh time put in the NAT Detection option when a NAT is "
        "detected; the MAG re-sends its PBU within it.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        if self.initial_bindack_timeout_s > self.max_bindack_timeout_s:
            bad.add(
                "max_bindack_timeout_s",
                f"{self.max_bindack_timeout_s} is less than initial_bindack_timeout_s "
                f"({self.initial_bindack_timeout_s})",
            )
        bad.raise_any()
        return self


# --- LMA section --------------------------------------------------------------------------


class LmaPoolConfig(_Model):
    """A pool the LMA allocates IPv4 home addresses from (seed §3.1, Figure 2)."""

    name: Name = Field(description="Pool name, referenced by mobile_nodes[].ipv4.pool.")
    prefix: Ipv4Net = Field(
        description="The IPv4 home network prefix, /8 to /30. The network and broadcast "
        "addresses and the default router are never allocated."
    )
    default_router: Ipv4Addr | None = Field(
        None,
        description="The MN's IPv4 default router (IPv4 Default-Router option), a host "
        "address inside prefix. Default: the first host address of prefix.",
    )
    exclude: list[Ipv4Addr] = Field(
        default_factory=list,
        description="Addresses inside prefix that are never allocated (servers, routers).",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        net = self.prefix
        if not 8 <= net.prefixlen <= 30:
            bad.add("prefix", f"{net}: a pool must be between /8 and /30")
        if self.default_router is not None and not _is_host(self.default_router, net):
            bad.add("default_router", f"{self.default_router} is not a host address of {net}")
        for i, addr in enumerate(self.exclude):
            if addr not in net:
                bad.add(("exclude", i), f"{addr} is outside the pool's prefix {net}")
        bad.raise_any()
        return self


class HnpPoolConfig(_Model):
    """Where the LMA carves IPv6 home network prefixes from (RFC 5213 §5.3.2)."""

    prefix: Ipv6Net = Field(description="The aggregate, e.g. 2001:db8:100::/48.")
    length: int = Field(
        64, ge=1, le=128, description="Length of each prefix handed to a mobile node."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        plen = self.prefix.prefixlen
        if self.length < plen:
            bad.add("length", f"/{self.length} is shorter than the aggregate {self.prefix}")
        elif self.length - plen > 24:
            bad.add(
                "length",
                f"/{self.length} out of {self.prefix} makes 2**{self.length - plen} prefixes; "
                "at most 24 bits of difference are supported",
            )
        bad.raise_any()
        return self


class LmaConfig(_Model):
    """Settings of a local mobility anchor (role: lma)."""

    lmaa: Ipv6Node = Field(description="The LMA address (LMAA) that MAGs send PBUs to.")
    ipv4_lmaa: Ipv4Node | None = Field(
        None,
        description="The LMA's IPv4 address (IPv4-LMAA) for MAGs on an IPv4 transport "
        "network (seed §4); the agent listens on UDP udp_port there. Omit for IPv6 only.",
    )
    udp_port: Port = Field(
        PMIP6_CNTL_PORT,
        description="UDP port of IPv4-transported signalling (5436, IANA pmip6-cntl).",
    )
    allowed_mags: list[IpAny] | None = Field(
        None,
        description="Proxy-CoAs allowed to register (RFC 5213 §5.3.1). An IPv4 entry "
        "a.b.c.d stands for the IPv4-mapped IPv6 address ::ffff:a.b.c.d. Omit the key to "
        "admit any MAG; an empty list admits none.",
    )
    accept_forced_udp: bool = Field(
        True,
        description="Honour the F flag: UDP-encapsulate the data tunnel even without a NAT "
        "(RFC 5844 §5 AcceptForcedIPv4UDPEncapsulationRequest).",
    )
    ipv4_pools: list[LmaPoolConfig] = Field(
        default_factory=list,
        description="Pools for mobile nodes in ipv4 mode lma; the first is the default. "
        "They must not overlap each other or dhcp_server_pools.",
    )
    hnp_pool: HnpPoolConfig | None = Field(
        None,
        description="IPv6 home network prefixes; needed when any mobile node has ipv6: true.",
    )
    dhcp_server_pools: list[Ipv4Net] = Field(
        default_factory=list,
        description="Prefixes external DHCP servers hand out (seed Figure 3). The LMA owns "
        "and routes them (seed §6); mobile nodes in dhcp-server mode must use a prefix "
        "inside one of them, and ipv4_pools must not overlap them.",
    )

    @field_validator("allowed_mags", mode="before")
    @classmethod
    def _no_null_allowed_mags(cls, value: object) -> object:
        # `allowed_mags:` with every entry commented out must not silently admit any MAG.
        if value is None:
            raise ValueError(
                "empty value: omit the key to admit any MAG, or write [] to admit none"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        pools = self.ipv4_pools
        bad.duplicates([(("ipv4_pools", i, "name"), p.name) for i, p in enumerate(pools)], "name")
        for i, pool in enumerate(pools):
            for earlier in pools[:i]:
                if pool.prefix.overlaps(earlier.prefix):
                    bad.add(
                        ("ipv4_pools", i, "prefix"),
                        f"{pool.prefix} (pool {pool.name}) overlaps {earlier.prefix} "
                        f"(pool {earlier.name})",
                    )
        for k, dnet in enumerate(self.dhcp_server_pools):
            for pool in pools:
                if dnet.overlaps(pool.prefix):
                    bad.add(
                        ("dhcp_server_pools", k),
                        f"DHCP server prefix {dnet} overlaps {pool.prefix} of LMA pool "
                        f"{pool.name}: the LMA and the DHCP server must hand out different "
                        "addresses (seed §6)",
                    )
        bad.raise_any()
        return self

    def allowed_mags_v6(self) -> frozenset[IPv6Address] | None:
        """allowed_mags as IPv6 addresses, IPv4 entries IPv4-mapped; None admits any MAG."""
        if self.allowed_mags is None:
            return None
        return frozenset(
            IPv6Address(f"::ffff:{a}") if isinstance(a, IPv4Address) else a
            for a in self.allowed_mags
        )


# --- MAG section --------------------------------------------------------------------------


class LmaPeerConfig(_Model):
    """One LMA a MAG registers mobile nodes with."""

    name: Name = Field(description="Name, referenced by mobile_nodes[].lma.")
    lmaa: Ipv6Node = Field(description="The LMA's IPv6 address (LMAA).")
    ipv4_lmaa: Ipv4Node | None = Field(
        None,
        description="The LMA's IPv4 address (IPv4-LMAA), or the public address of the NAT "
        "in front of it. Needed for IPv4 transport.",
    )
    transport: Literal["ipv6", "ipv4", "auto"] = Field(
        "auto",
        description="How PBUs reach this LMA. ipv6: native IPv6 (MH over IPv6). ipv4: "
        "IPv4/UDP to ipv4_lmaa port 5436 carrying IPv6/MH (seed Figure 6); needs ipv4_lmaa "
        "and mag.ipv4_proxy_coa. auto: ipv4 when ipv4_lmaa is set, ipv6 otherwise.",
    )
    force_udp: bool = Field(
        False,
        description="Set the F flag: ask for UDP encapsulation of the data tunnel even "
        "when no NAT is detected (RFC 5555 §4.1). Only with IPv4 transport.",
    )

    @property
    def resolved_transport(self) -> Literal["ipv6", "ipv4"]:
        """The transport after resolving ``auto``."""
        if self.transport == "auto":
            return "ipv4" if self.ipv4_lmaa is not None else "ipv6"
        return self.transport

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        if self.transport == "ipv4" and self.ipv4_lmaa is None:
            bad.add("ipv4_lmaa", "required when transport is ipv4")
        elif self.force_udp and self.resolved_transport != "ipv4":
            bad.add(
                "force_udp",
                "UDP encapsulation needs IPv4 transport (set ipv4_lmaa, and transport ipv4 "
                "or auto)",
            )
        bad.raise_any()
        return self


class AccessInterfaceConfig(_Model):
    """An access link where mobile nodes attach."""

    name: IfName = Field(description="Network interface name, e.g. eth1 or veth-mn1.")
    mn_id: Nai | None = Field(
        None,
        description="For a point-to-point link dedicated to one mobile node: its mn_id "
        "(must be in mobile_nodes). Omit on a shared link, where mobile nodes are told "
        "apart by their link_layer_ids.",
    )


class DhcpConfig(_Model):
    """IPv4 address configuration of mobile nodes on the access links."""

    mode: Literal["server", "relay", "off"] = Field(
        "server",
        description="server: the MAG answers DHCP itself with the address from the "
        "profile or the LMA (seed Figure 2). relay: as server, but DHCP of mobile nodes in "
        "dhcp-server mode is relayed to `servers` (seed Figure 3); needed when any mobile "
        "node uses dhcp-server mode. off: no DHCP on the access links.",
    )
    servers: list[Ipv4Node] = Field(
        default_factory=list,
        description="DHCP servers to relay to; required for, and only allowed with, relay.",
    )
    lease_s: int = Field(
        3600,
        ge=60,
        le=0xFFFFFFFE,
        description="Lease time the MAG hands out as a DHCP server.",
    )
    relay_address: Ipv4Node | None = Field(
        None,
        description="The MAG's own IPv4 address that relayed messages carry as giaddr and "
        "that the DHCP servers answer to; it must be reachable from them. Defaults to "
        "mag.ipv4_proxy_coa.",
    )
    kernel_relay: bool = Field(
        False,
        description="Relay the common messages in the kernel (relay mode, one server): tc "
        "programs on the access links and on the link toward the server pass a known MN's "
        "DISCOVER and SELECTING REQUEST to the server, and the server's OFFER and an ACK of "
        "the address the LMA granted back to the MN, with the same giaddr, hops and option "
        "82, so that no process wakes up for them; the PBU reporting the offered address "
        "leaves with the OFFER. For MNs the MAG's own server answers (ipv4 mode lma), the "
        "OFFER leaves with the PBA granting the address, and the ACK with the MN's REQUEST. "
        "Both steps that wait on the LMA (that PBU, and that OFFER) run in the kernel only "
        "with an LMA reached over IPv6 and without require_ipsec (tc would bypass the SA). "
        "The daemon gets a marked copy of what it must learn from. Everything else takes "
        "the daemon's own path. Needs clang and the libbpf headers (Debian: clang "
        "libbpf-dev) to build the programs at start; if they cannot be built or loaded "
        "the daemon logs why and relays in user space.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        if self.mode == "relay" and not self.servers:
            bad.add("servers", "relay mode needs at least one DHCP server")
        if self.mode != "relay" and self.servers:
            bad.add("servers", f"only used in relay mode (mode is {self.mode})")
        if self.kernel_relay and (self.mode != "relay" or len(self.servers) != 1):
            bad.add(
                "kernel_relay",
                "needs relay mode and exactly one server (the kernel's copy of a request "
                "goes to one)",
            )
        bad.raise_any()
        return self


class MagConfig(_Model):
    """Settings of a mobile access gateway (role: mag)."""

    proxy_coa: Ipv6Node = Field(
        description="The MAG's IPv6 address (Proxy-CoA): the source of PBUs and the "
        "binding's care-of address."
    )
    ipv4_proxy_coa: Ipv4Node | None = Field(
        None,
        description="The MAG's IPv4 address (IPv4-Proxy-CoA), sent in the IPv4 Care-of "
        "Address option so the LMA can detect a NAT (seed §4.3). Needed when any LMA is "
        "reached over IPv4.",
    )
    udp_port: Port = Field(
        PMIP6_CNTL_PORT, description="Local UDP port of IPv4-transported signalling."
    )
    access_tech: int = Field(
        3,
        ge=1,
        le=255,
        description="Access Technology Type option value (RFC 5213 §8.5): 1 virtual, "
        "2 PPP, 3 IEEE 802.3, 4 IEEE 802.11a/b/g, 5 IEEE 802.16e.",
    )
    lmas: list[LmaPeerConfig] = Field(
        min_length=1,
        description="LMAs this MAG registers with; the first one serves mobile nodes "
        "without an lma.",
    )
    access_interfaces: list[AccessInterfaceConfig] = Field(
        default_factory=list, description="Access links where mobile nodes attach."
    )
    dhcp: DhcpConfig = Field(default_factory=DhcpConfig, description="DHCP on the access links.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        bad.duplicates([(("lmas", i, "name"), p.name) for i, p in enumerate(self.lmas)], "name")
        ifaces = self.access_interfaces
        bad.duplicates(
            [(("access_interfaces", i, "name"), a.name) for i, a in enumerate(ifaces)],
            "interface",
        )
        bad.duplicates(
            [
                (("access_interfaces", i, "mn_id"), a.mn_id)
                for i, a in enumerate(ifaces)
                if a.mn_id is not None
            ],
            "dedicated mobile node",
        )
        over_ipv4 = [p for p in self.lmas if p.resolved_transport == "ipv4"]
        if self.ipv4_proxy_coa is None and over_ipv4:
            bad.add(
                "ipv4_proxy_coa",
                f"required: LMA {over_ipv4[0].name} is reached over IPv4 transport",
            )
        if (
            self.dhcp.mode == "relay"
            and self.dhcp.relay_address is None
            and not self.ipv4_proxy_coa
        ):
            bad.add(
                "dhcp.relay_address",
                "required in relay mode when there is no ipv4_proxy_coa to default to",
            )
        bad.raise_any()
        return self

    @property
    def relay_address(self) -> IPv4Address | None:
        """giaddr for relayed DHCP: dhcp.relay_address, else the IPv4-Proxy-CoA."""
        return self.dhcp.relay_address or self.ipv4_proxy_coa


# --- mobile nodes -------------------------------------------------------------------------


class Ipv4Config(_Model):
    """IPv4 home address service of one mobile node (seed §3.1)."""

    mode: Ipv4Mode = Field(
        Ipv4Mode.NONE,
        description="none: no IPv4 home address service (the default). static: the "
        "address in the profile. lma: allocated by the LMA from a pool (Figure 2). "
        "dhcp-server: assigned by an external DHCP server through the MAG's relay "
        "(Figure 3).",
    )
    address: Ipv4Iface | None = Field(
        None,
        description="static mode: home address with its prefix length, e.g. 10.9.0.5/24 "
        "(required).",
    )
    default_router: Ipv4Addr | None = Field(
        None,
        description="static and dhcp-server modes: the MN's default router, a host address "
        "inside the home prefix (sent in the IPv4 Default-Router option). In lma mode the "
        "pool's router is used.",
    )
    pool: Name | None = Field(
        None,
        description="lma mode: name of the LMA pool to allocate from. Default: the LMA's "
        "first pool.",
    )
    prefix: Ipv4Net | None = Field(
        None,
        description="dhcp-server mode: the home network prefix the DHCP server assigns "
        "from, also the relay's prefix hint (required). The LMA accepts only addresses "
        "inside it.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        mode = self.mode
        bad = _Found()
        used_by = {
            "address": (Ipv4Mode.STATIC,),
            "default_router": (Ipv4Mode.STATIC, Ipv4Mode.DHCP_SERVER),
            "pool": (Ipv4Mode.LMA,),
            "prefix": (Ipv4Mode.DHCP_SERVER,),
        }
        for key, modes in used_by.items():
            if getattr(self, key) is not None and mode not in modes:
                names = " or ".join(m.value for m in modes)
                bad.add(key, f"only used when mode is {names} (mode is {mode.value})")
        router = self.default_router
        if mode is Ipv4Mode.STATIC:
            if self.address is None:
                bad.add("address", "required when mode is static")
            else:
                net, ip = self.address.network, self.address.ip
                if not _is_host(ip, net):
                    bad.add("address", f"{ip} is the network or broadcast address of {net}")
                if router is not None and (router == ip or not _is_host(router, net)):
                    bad.add(
                        "default_router",
                        f"{router} is not another host address of {net}, the prefix of "
                        f"address {self.address}",
                    )
        elif mode is Ipv4Mode.DHCP_SERVER:
            if self.prefix is None:
                bad.add("prefix", "required when mode is dhcp-server")
            elif router is not None and not _is_host(router, self.prefix):
                bad.add("default_router", f"{router} is not a host address of {self.prefix}")
        bad.raise_any()
        return self


class MobileNodeConfig(_Model):
    """One mobile node's policy profile (RFC 5213 §6.2). The same list can be shared by an
    LMA and its MAGs: role-specific keys (lma on a MAG, pool on an LMA) are checked only
    where they are used."""

    mn_id: Nai = Field(
        description="Mobile node identifier, an NAI such as mn1@example.net (1 to 254 "
        "bytes of UTF-8), sent in the MN Identifier option."
    )
    lma: Name | None = Field(
        None,
        description="MAG: name of the entry in mag.lmas that anchors this node. Default: "
        "the first one.",
    )
    ipv6: bool = Field(
        True,
        description="IPv6 home network prefix service (needs lma.hnp_pool on the LMA). "
        "False with ipv4.mode none leaves nothing to provide and is an error.",
    )
    link_layer_ids: list[MacAddr] = Field(
        default_factory=list,
        description="MAC addresses that identify the node on a shared access link, e.g. "
        "02:00:00:00:00:01 (sent in the MN Link-layer Identifier option).",
    )
    ipv4: Ipv4Config = Field(
        default_factory=Ipv4Config,
        description="IPv4 home address service; omitted: none.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        if not self.ipv6 and self.ipv4.mode is Ipv4Mode.NONE:
            bad.add(
                "ipv6",
                "false while ipv4.mode is none: this mobile node would get no mobility "
                "service at all",
            )
        bad.raise_any()
        return self

    def profile(self) -> MnProfile:
        """The engine's policy profile for this node."""
        v4 = self.ipv4
        mode = v4.mode
        return MnProfile(
            mn_id=self.mn_id.encode("utf-8"),
            ipv4_mode=mode,
            ipv6=self.ipv6,
            ipv4_hoa=v4.address.ip if mode is Ipv4Mode.STATIC and v4.address else None,
            ipv4_prefix_len=(
                v4.address.network.prefixlen if mode is Ipv4Mode.STATIC and v4.address else 32
            ),
            ipv4_default_router=v4.default_router,
            ipv4_pool=v4.pool,
            dhcp_prefix=v4.prefix,
            lma=self.lma,
            link_layer_ids=tuple(self.link_layer_ids),
        )


# --- the whole file -----------------------------------------------------------------------


# --- data plane ---------------------------------------------------------------------------


class DataplaneConfig(_Model):
    """The tunnels that carry the mobile nodes' traffic between MAG and LMA (RFC 5213
    §5.6, §6.10; RFC 5844 §3.1.3, §4; seed §3.4, §3.5, §4.4-§4.6): a user-space forwarder
    over a TUN device, so no kernel tunnel driver is needed. Needs CAP_NET_ADMIN and
    CAP_NET_RAW; it enables IP forwarding."""

    enabled: bool = Field(
        True,
        description="Run the data plane. Off: signalling only (routes are someone else's job).",
    )
    tun_name: IfName = Field("pmip0", description="Name of the TUN device the agent creates.")
    underlay_mtu: int = Field(
        1500,
        ge=1280,
        le=65535,
        description="MTU of the transport network between MAG and LMA.",
    )
    mtu: int | None = Field(
        None,
        ge=1280,
        le=65535,
        description="MTU of the TUN device, and of the MNs' links as the MAG advertises "
        "it. Default: underlay_mtu minus 40, the largest tunnel overhead (an IPv6 "
        "header), so MAG and LMA agree whatever the encapsulation.",
    )
    data_port: Port = Field(
        PMIP6_DATA_PORT,
        description="UDP port of the IPv4-UDP tunnel (5437, IANA pmip6-data; RFC 5844 "
        "§4 keeps it apart from signalling's 5436).",
    )
    offload: list[Literal["tso", "gso", "gro"]] = Field(
        default_factory=lambda: ["tso", "gso", "gro"],
        description="Batching offloads. tso: the TUN device hands over 64 KB TCP "
        "super-packets (and leaves checksums to finish), cut into wire segments here, a "
        "whole burst per numpy call. gso: on the IPv4-UDP tunnel, runs of equal-sized "
        "packets (a cut super-packet's segments) leave in one UDP_SEGMENT send. tso and "
        "gso together, on Linux 6.17 or later: an IPv4-UDP tunnel's super-packet is not "
        "cut here but written whole to a TAP device, <tun_name>-gso, with UDP tunnel "
        "GSO, and the kernel cuts it (see pmip-agent --help, DATA PLANE). gro: "
        "UDP_GRO receive, a flow's run of segments written to the TUN device as one "
        "packet for the kernel to cut. []: one packet per read, send and write.",
    )
    table: int = Field(
        5437,
        ge=1,
        le=0xFFFFFFFF,
        description="MAG: routing table of the per-MN policy rules (default route into "
        "the TUN device). Not 253-255 (default, main, local).",
    )
    rule_priority: int = Field(
        5437,
        ge=1,
        le=32765,
        description="MAG: priority of the per-MN rules; the rule that drops everything "
        "else from the access links (seed §3.4: no service without a binding) gets the "
        "next one.",
    )
    nat_keepalive_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="MAG, IPv4-UDP tunnels: interval of the keepalive on the data port, "
        "which keeps the NAT's mapping open and tells the LMA its port. Below the NAT's "
        "UDP timeout (often 30 s).",
    )
    ra_interval_s: float = Field(
        30.0,
        ge=1,
        le=1800,
        description="MAG: interval of the periodic Router Advertisements carrying an MN's "
        "home network prefixes (RFC 5213 §6.7); solicited ones go at once.",
    )

    @field_validator("offload")
    @classmethod
    def _offloads(cls, offload: list[str]) -> list[str]:
        return sorted(set(offload), key=offload.index)

    @field_validator("table")
    @classmethod
    def _not_reserved(cls, table: int) -> int:
        if table in (253, 254, 255):
            raise ValueError(f"table {table} is reserved (default, main or local)")
        return table


class IpsecConfig(_Model):
    """How the agent learns which peers its signalling is IPsec-protected with (RFC 5213
    §4, seed §6), when ``require_ipsec`` is on: strongSwan's vici interface, polled. The
    SAs themselves are strongSwan's (see roles/strongswan)."""

    vici_socket: AbsPath = Field(
        Path("/var/run/charon.vici"),
        description="charon's vici Unix socket (strongSwan's charon.plugins.vici.socket).",
    )
    poll_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often the SA table is read from vici. Bounds how long signalling "
        "waits after an SA comes up, and how long the LMA accepts a peer after its SA goes.",
    )
    ingress_interface: IfName | None = Field(
        None,
        description="Where protected signalling must come in. With strongSwan's user-space "
        "ESP (kernel-libipsec, tunnel mode) set it to its TUN device (ipsec0): decrypted "
        "packets come from there, and a peer's plaintext comes from the wire, whatever its "
        "source address says. Unset with kernel ESP, where the kernel's IPsec policy drops "
        "unprotected packets of the protected traffic itself.",
    )
    exempt_peers: list[IpAny] = Field(
        default_factory=list,
        description="Peers whose signalling goes without IPsec although require_ipsec is "
        "on: LMA, the source addresses of MAGs (as seen, i.e. a NAT's public address) "
        "whose PBUs are processed unprotected; MAG, LMAs (LMAA or IPv4-LMAA) it signals "
        "without waiting for an SA. For peers that cannot have one, such as a MAG behind "
        "a NAT where only tunnel-mode user-space ESP is available (its inner addresses "
        "are not translated). Anyone who can send from such an address is trusted like "
        "that peer: the start-up log names every exemption.",
    )


class AgentConfig(_Model):
    """The whole configuration file of one node."""

    role: Literal["lma", "mag"] = Field(
        description="lma: local mobility anchor (needs the lma section); mag: mobile "
        "access gateway (needs the mag section)."
    )
    node_name: Name = Field(
        description="This node's name, used in logs, metrics and the default control socket path."
    )
    state_dir: AbsPath = Field(
        DEFAULT_STATE_DIR,
        description="Directory for persistent state (binding cache, sequence numbers), so "
        "a restart keeps bindings.",
    )
    control_socket: AbsPath | None = Field(
        None,
        description="Unix socket pmipctl talks to. Default: /run/pmip/<node_name>.sock "
        "(filled in by validation, never None afterwards).",
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus metrics endpoint."
    )
    timers: TimersConfig = Field(
        default_factory=TimersConfig, description="Protocol timers and constants."
    )
    wire_profile: WireProfile = Field(
        WireProfile.RFC5844,
        description="IPv4 option codepoints. rfc5844: IPv4 Home Address Request/Reply "
        "(36/37) and DHCP Support Mode (39). draft: the seed draft's DSMIPv6 options "
        "(29/30). A MAG sends this profile; an LMA answers in the profile of each PBU and "
        "uses this one otherwise.",
    )
    timestamps: bool = Field(
        True,
        description="Timestamp option for replay protection (RFC 5213 §5.5) instead of "
        "sequence numbers. Needs synchronised clocks (NTP).",
    )
    dataplane: DataplaneConfig = Field(
        default_factory=DataplaneConfig,
        description="The MAG-LMA tunnels and the routes into them.",
    )
    require_ipsec: bool = Field(
        False,
        description="Signalling only under IPsec (RFC 5213 §4). LMA: a PBU is processed "
        "only if an INSTALLED child SA covers its source address (and, with "
        "ipsec.ingress_interface, it came in through that device); others are dropped, "
        'counted (pmip_messages_dropped_total{reason="ipsec-unprotected"}) and logged. '
        "MAG: PBUs go to an LMA only while an SA covers its address; meanwhile they wait, "
        "and registered MNs are kept.",
    )
    ipsec: IpsecConfig = Field(
        default_factory=IpsecConfig,
        description="Where the IPsec SA state comes from (used with require_ipsec).",
    )
    lma: LmaConfig | None = Field(None, description="LMA settings; required iff role is lma.")
    mag: MagConfig | None = Field(None, description="MAG settings; required iff role is mag.")
    mobile_nodes: list[MobileNodeConfig] = Field(
        default_factory=list,
        description="Policy profiles of the mobile nodes this node serves. An unlisted "
        "node gets no service.",
    )
    mobile_nodes_file: FilePath | None = Field(
        None,
        description="More policy profiles, from a CSV file with one line per mobile node: "
        "for fleets too large for mobile_nodes (a million nodes load in seconds). A header "
        "line names the columns, as the keys of mobile_nodes[]: mn_id (required), ipv6, "
        "ipv4.mode, ipv4.address, ipv4.default_router, ipv4.pool, ipv4.prefix, lma, "
        "link_layer_ids (separated by spaces); an empty cell takes the default. The same "
        "rules apply as in mobile_nodes, and an identifier, static address or MAC may not "
        "appear in both. A relative path is relative to this file's directory. Reread on "
        "reload.",
    )
    _file_profiles: dict[bytes, MnProfile] = PrivateAttr(default_factory=dict)

    @field_validator("mobile_nodes")
    @classmethod
    def _unique_nodes(cls, nodes: list[MobileNodeConfig]) -> list[MobileNodeConfig]:
        bad = _Found()
        bad.duplicates([((i, "mn_id"), n.mn_id) for i, n in enumerate(nodes)], "mn_id")
        bad.duplicates(
            [
                ((i, "ipv4", "address"), n.ipv4.address.ip)
                for i, n in enumerate(nodes)
                if n.ipv4.mode is Ipv4Mode.STATIC and n.ipv4.address is not None
            ],
            "static address",
        )
        bad.duplicates(
            [
                ((i, "link_layer_ids", j), mac)
                for i, n in enumerate(nodes)
                for j, mac in enumerate(n.link_layer_ids)
            ],
            "link-layer id",
        )
        bad.raise_any()
        return nodes

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = _Found()
        for section in ("lma", "mag"):
            present = getattr(self, section) is not None
            if self.role == section and not present:
                bad.add(section, f"required when role is {section}")
            elif self.role != section and present:
                bad.add(section, f"only allowed when role is {section}")
        if self.control_socket is None:
            self.control_socket = DEFAULT_SOCKET_DIR / f"{self.node_name}.sock"
        if len(os.fsencode(self.control_socket)) > _SUN_PATH_MAX:
            bad.add(
                "control_socket",
                f"longer than the {_SUN_PATH_MAX} bytes a Unix socket path may have",
            )
        if self.lma is not None and self.role == "lma":
            self._check_lma_nodes(self.lma, bad)
        if self.mag is not None and self.role == "mag":
            self._check_mag_nodes(self.mag, bad)
        bad.raise_any()
        return self

    def _check_lma_nodes(self, lma: LmaConfig, bad: _Found) -> None:
        for i, node in enumerate(self.mobile_nodes):
            self.check_node(
                node, lambda loc, reason, i=i: bad.add(("mobile_nodes", i, *loc), reason)
            )

    def _check_mag_nodes(self, mag: MagConfig, bad: _Found) -> None:
        for i, node in enumerate(self.mobile_nodes):
            self.check_node(
                node, lambda loc, reason, i=i: bad.add(("mobile_nodes", i, *loc), reason)
            )
        if self.mobile_nodes_file is None:  # else checked once the file is read
            self._check_access_mn_ids(bad.add)

    def _check_access_mn_ids(self, report: Callable[..., None]) -> None:
        if self.mag is None:
            return
        listed = {n.mn_id for n in self.mobile_nodes}
        for j, iface in enumerate(self.mag.access_interfaces):
            mn_id = iface.mn_id
            if (
                mn_id is not None
                and mn_id not in listed
                and mn_id.encode() not in self._file_profiles
            ):
                report(
                    ("mag", "access_interfaces", j, "mn_id"),
                    f"{iface.mn_id!r} is not in mobile_nodes"
                    + (" or mobile_nodes_file" if self.mobile_nodes_file else ""),
                )

    def check_node(self, node: MobileNodeConfig, report: Callable[[Loc, str], None]) -> None:
        """The checks of one mobile node against the rest of the file (its role's section),
        each problem given to ``report`` at a path relative to the node."""
        if self.role == "lma" and self.lma is not None:
            self._check_lma_node(self.lma, node, report)
        elif self.role == "mag" and self.mag is not None:
            self._check_mag_node(self.mag, node, report)

    @staticmethod
    def _check_lma_node(
        lma: LmaConfig, node: MobileNodeConfig, report: Callable[[Loc, str], None]
    ) -> None:
        v4 = node.ipv4
        if node.ipv6 and lma.hnp_pool is None:
            report(
                ("ipv6",),
                "true, but lma.hnp_pool is not configured (set ipv6: false for an IPv4-only node)",
            )
        pools = [p.name for p in lma.ipv4_pools]
        if v4.mode is Ipv4Mode.LMA and not pools:
            report(("ipv4", "mode"), "lma, but lma.ipv4_pools is empty")
        elif v4.mode is Ipv4Mode.LMA and v4.pool is not None and v4.pool not in pools:
            report(
                ("ipv4", "pool"),
                f"no pool named {v4.pool!r} in lma.ipv4_pools (known: {', '.join(pools)})",
            )
        elif v4.mode is Ipv4Mode.STATIC and v4.address is not None:
            for pool in lma.ipv4_pools:
                if v4.address.ip in pool.prefix:
                    report(
                        ("ipv4", "address"),
                        f"{v4.address.ip} is inside {pool.prefix} of LMA pool {pool.name}, "
                        "which may allocate it to another node",
                    )
        elif (
            v4.mode is Ipv4Mode.DHCP_SERVER
            and v4.prefix is not None
            and not any(v4.prefix.subnet_of(d) for d in lma.dhcp_server_pools)
        ):
            known = ", ".join(str(d) for d in lma.dhcp_server_pools) or "none"
            report(
                ("ipv4", "prefix"),
                f"{v4.prefix} is not inside any of lma.dhcp_server_pools ({known}): the "
                "LMA must own the prefixes DHCP servers hand out (seed §6)",
            )

    @staticmethod
    def _check_mag_node(
        mag: MagConfig, node: MobileNodeConfig, report: Callable[[Loc, str], None]
    ) -> None:
        lma_names = [p.name for p in mag.lmas]
        if node.lma is not None and node.lma not in lma_names:
            report(
                ("lma",),
                f"no LMA named {node.lma!r} in mag.lmas (known: {', '.join(lma_names)})",
            )
        if node.ipv4.mode is Ipv4Mode.DHCP_SERVER and mag.dhcp.mode != "relay":
            report(
                ("ipv4", "mode"),
                f"dhcp-server needs mag.dhcp.mode relay (it is {mag.dhcp.mode}): the MAG "
                "relays DHCP to the server (seed Figure 3)",
            )

    def load_mobile_nodes_file(self, base_dir: Path | None) -> list[Problem]:
        """Read ``mobile_nodes_file`` (relative to ``base_dir``, the config file's
        directory) and keep its profiles; the problems found (none: all is well)."""
        from .mobile_nodes_file import read_mobile_nodes_file

        self._file_profiles = {}
        if self.mobile_nodes_file is None:
            return []
        path = self.mobile_nodes_file
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        taken: dict[str, set[Any]] = {
            "mn_id": {n.mn_id for n in self.mobile_nodes},
            "static address": {
                n.ipv4.address.ip
                for n in self.mobile_nodes
                if n.ipv4.mode is Ipv4Mode.STATIC and n.ipv4.address is not None
            },
            "link-layer id": {mac for n in self.mobile_nodes for mac in n.link_layer_ids},
        }
        profiles, problems = read_mobile_nodes_file(path, self, self.check_node, _parse_nai, taken)
        self._file_profiles = profiles
        if not problems:
            self._check_access_mn_ids(
                lambda loc, reason: problems.append(Problem(_format_loc(loc), reason))
            )
        return problems

    # --- engine values --------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """The control socket path (control_socket with its default applied)."""
        return self.control_socket or DEFAULT_SOCKET_DIR / f"{self.node_name}.sock"

    def summary(self) -> str:
        """One line for logs and ``pmip-agent check``: role, name, mobile node count."""
        count = len(self.mobile_nodes) + len(self._file_profiles)
        return f"{self.role} {self.node_name}, {count} mobile node{'' if count == 1 else 's'}"

    def profiles(self) -> dict[bytes, MnProfile]:
        """Policy profiles keyed by the MN identifier's UTF-8 bytes: mobile_nodes_file's,
        then mobile_nodes in file order. Read-only: without a mobile_nodes list this is
        the file's own dict (a copy of a million entries would cost 40 MB for nothing)."""
        if not self.mobile_nodes:
            return self._file_profiles
        profiles = dict(self._file_profiles)
        profiles.update((p.mn_id, p) for p in (n.profile() for n in self.mobile_nodes))
        return profiles

    def lma_settings(self) -> LmaSettings:
        """The LMA engine's settings. Raises RuntimeError unless role is lma."""
        lma = self._need_lma()
        t = self.timers
        return LmaSettings(
            lmaa=lma.lmaa,
            ipv4_lmaa=lma.ipv4_lmaa,
            allowed_mags=lma.allowed_mags_v6(),
            timestamps=self.timestamps,
            timestamp_window_s=t.timestamp_window_ms / 1000.0,
            max_lifetime_s=t.max_lifetime_s,
            min_delay_before_bce_delete_s=t.min_delay_before_bce_delete_s,
            nat_refresh_s=t.nat_refresh_s,
            accept_forced_udp=lma.accept_forced_udp,
            default_wire_profile=self.wire_profile,
        )

    def pools(self) -> PoolSet:
        """Fresh (empty) IPv4 pools of the LMA; the first is the default. Each call builds
        new allocation state. Raises RuntimeError unless role is lma."""
        lma = self._need_lma()
        return PoolSet(
            [Ipv4Pool(p.name, p.prefix, p.default_router, tuple(p.exclude)) for p in lma.ipv4_pools]
        )

    def hnp_pool(self) -> PrefixPool | None:
        """A fresh IPv6 home network prefix pool, or None if not configured. Raises
        RuntimeError unless role is lma."""
        hnp = self._need_lma().hnp_pool
        return None if hnp is None else PrefixPool(hnp.prefix, hnp.length)

    def mag_settings(self) -> MagSettings:
        """The MAG engine's settings, profiles included. Raises RuntimeError unless role
        is mag."""
        mag = self._need_mag()
        t = self.timers
        return MagSettings(
            proxy_coa=mag.proxy_coa,
            lmas={
                p.name: LmaPeerSettings(
                    name=p.name,
                    lmaa=p.lmaa,
                    ipv4_lmaa=p.ipv4_lmaa,
                    transport=p.resolved_transport,
                    force_udp=p.force_udp,
                )
                for p in mag.lmas
            },
            ipv4_proxy_coa=mag.ipv4_proxy_coa,
            wire_profile=self.wire_profile,
            lifetime_s=t.lifetime_s,
            timestamps=self.timestamps,
            access_tech=mag.access_tech,
            initial_bindack_timeout_s=t.initial_bindack_timeout_s,
            max_bindack_timeout_s=t.max_bindack_timeout_s,
            max_transmissions=t.max_transmissions,
            retry_after_failure_s=t.retry_after_failure_s,
            timestamp_window_s=t.timestamp_window_ms / 1000.0,
            refresh_fraction=t.refresh_fraction,
            nat_keepalive_fraction=t.nat_keepalive_fraction,
            profiles=self.profiles(),
        )

    def _need_lma(self) -> LmaConfig:
        if self.role != "lma" or self.lma is None:
            raise RuntimeError(f"{self.node_name} is not an LMA (role is {self.role})")
        return self.lma

    def _need_mag(self) -> MagConfig:
        if self.role != "mag" or self.mag is None:
            raise RuntimeError(f"{self.node_name} is not a MAG (role is {self.role})")
        return self.mag


# --- loading ------------------------------------------------------------------------------


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    # libyaml's parser when present: four times faster on a large mobile_nodes list,
    # and it still gives every node its line for error messages.
    """SafeLoader with YAML 1.2 core-schema scalars and duplicate-key detection.

    PyYAML implements YAML 1.1, where ``off``/``no``/``yes`` are booleans and ``12:30:00``
    is a base-60 integer; both would silently corrupt values like ``mode: off`` or a MAC
    address. Here only true/false (any case style) are booleans and integers are decimal
    or 0x-hexadecimal.
    """


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[object, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: the base constructor reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)  # type: ignore[arg-type]


def _record_lines(node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> None:
    """Map each path of the document to the 1-based line where it starts."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                lines.setdefault(child, key_node.start_mark.line + 1)
                _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*path, i), lines)


def _yaml_problem(exc: yaml.YAMLError, source: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    reason = f"YAML syntax error: {problem}"
    if context and isinstance(exc, yaml.constructor.ConstructorError):
        reason = f"YAML error {context}: {problem}"
    if mark is None:
        return Problem(source, reason)
    return Problem(source, f"{reason} at line {mark.line + 1}, column {mark.column + 1}")


def parse_yaml(
    text: str, source: str = "<string>", base_dir: str | os.PathLike[str] | None = None
) -> AgentConfig:
    """Validate a configuration given as YAML text. Raises ConfigError. A relative
    mobile_nodes_file is read from ``base_dir`` (default: the current directory)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, source)], source) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return parse_config(data, source=source, lines=lines, base_dir=base_dir)


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate a configuration file. Raises ConfigError (a ValueError) listing
    every problem, one per line, as ``<path>: <reason>``; a missing or unreadable file and
    YAML syntax errors (with line and column) are reported the same way."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(
            [Problem(source, f"cannot read: {exc.strerror or exc}")], source
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(source, f"not UTF-8 text: {exc.reason}")], source) from None
    return parse_yaml(text, source, base_dir=Path(source).parent)


def parse_config(
    data: object,
    *,
    source: str = "<data>",
    lines: Mapping[Loc, int] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> AgentConfig:
    """Validate already-parsed data (the mapping YAML gives), then read its
    mobile_nodes_file (relative to ``base_dir``) if it names one. Raises ConfigError.
    ``lines`` maps paths to YAML line numbers for the messages."""
    if data is None:
        raise ConfigError(
            [Problem(source, "is empty; expected at least role and node_name")], source
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            [
                Problem(
                    source, f"the top level must be a mapping of keys, got {type(data).__name__}"
                )
            ],
            source,
        )
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_convert(exc, lines or {}), source) from None
    problems = config.load_mobile_nodes_file(None if base_dir is None else Path(base_dir))
    if problems:
        raise ConfigError(problems, source)
    return config


def _convert(exc: ValidationError, lines: Mapping[Loc, int]) -> list[Problem]:
    found: list[tuple[Loc, str]] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        kind = err["type"]
        if isinstance(cause, _Problems):
            for rel, reason, refs in cause.problems:
                for i, ref in enumerate(refs):
                    reason = reason.replace(_ref(i), _describe((*loc, *ref), lines))
                found.append(((*loc, *rel), reason))
            continue
        if kind == "missing":
            reason = "required"
        elif kind == "extra_forbidden":
            reason = _unknown_key(loc)
        elif kind in ("value_error", "assertion_error") and cause is not None:
            reason = str(cause)
        else:
            reason = err["msg"]
            value = err.get("input")
            if not isinstance(value, dict | list):
                reason += f", got {_show(value)}"
        found.append((loc, reason))
    problems = []
    for loc, reason in found:
        line, exact = _line_of(loc, lines)
        problems.append(Problem(_format_loc(loc), reason, line, exact))
    return problems


def _describe(loc: Loc, lines: Mapping[Loc, int]) -> str:
    line, exact = _line_of(loc, lines)
    return _format_loc(loc) if line is None or not exact else f"{_format_loc(loc)}, line {line}"


def _line_of(loc: Loc, lines: Mapping[Loc, int]) -> tuple[int | None, bool]:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]], n == len(loc)
    return None, False


def _unknown_key(loc: Loc) -> str:
    key = loc[-1]
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown key {key!r}"
    allowed = list(model.model_fields)
    guess = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {guess[0]!r}?" if guess else f"; allowed keys: {', '.join(allowed)}"
    return f"unknown key {key!r}{hint}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc``."""
    current: Any = AgentConfig
    for part in loc:
        current = _unwrap(current, want_list=isinstance(part, int))
        if isinstance(part, int):
            args = typing.get_args(current)
            if typing.get_origin(current) is not list or not args:
                return None
            current = args[0]
        else:
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                return None
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
    current = _unwrap(current, want_list=False)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any, want_list: bool) -> Any:
    """Strip Annotated and Optional to the model or list type inside."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            arg = _unwrap(arg, want_list)
            if want_list and typing.get_origin(arg) is list:
                return arg
            if not want_list and isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return tp
