"""Small immutable values shared by the engines and their adapters.

Engines append events; adapters (data plane, store, metrics, logs) consume them. An event
carries everything its consumer needs, so no adapter reaches back into an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple


class Encapsulation(StrEnum):
    """How the MAG-LMA data tunnel is framed (seed §4.3, §4.5)."""

    IPV6 = "ipv6"  # IPv4 or IPv6 in IPv6: IPv6 transport
    IPV4 = "ipv4"  # IPv4 or IPv6 in IPv4: IPv4 transport, no NAT
    IPV4_UDP = "ipv4-udp"  # in IPv4/UDP: NAT detected or UDP forced


@dataclass(frozen=True, slots=True)
class Peer:
    """A signalling peer as seen on the wire.

    ``v6`` is the IPv6 address in the (inner) IPv6 header: the Proxy-CoA or the LMAA.
    ``v4``/``port`` are the outer IPv4 source address and UDP port actually observed when
    the message came over IPv4/UDP (behind a NAT, those of the NAT), else None/0.
    """

    v6: IPv6Address
    v4: IPv4Address | None = None
    port: int = 0

    @property
    def transport(self) -> str:
        return "ipv6" if self.v4 is None else "ipv4"

    def __str__(self) -> str:
        return str(self.v6) if self.v4 is None else f"{self.v6} via {self.v4}:{self.port}"


Prefix6 = tuple[IPv6Address, int]


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes to send to ``peer``. For an IPv6 peer, ``data`` is a Mobility Header for a raw
    socket of protocol 135 whose IPV6_CHECKSUM option fills in the checksum. For an IPv4
    peer, ``data`` is the UDP payload: an IPv6 header and a checksummed Mobility Header."""

    data: bytes
    peer: Peer


class BindingView(NamedTuple):
    """A snapshot of one LMA binding cache entry. A NamedTuple rather than a frozen
    dataclass: one is built per accepted PBU, and this is four times cheaper to build."""

    mn_id: bytes
    mag: Peer
    state: str  # "active" | "deregistered"
    encapsulation: Encapsulation
    nat: bool
    ipv4_hoa: IPv4Address | None
    ipv4_prefix_len: int
    ipv4_default_router: IPv4Address | None
    ipv4_source: str | None  # "static" | "lma" | "dhcp-server"
    ipv4_pool: str | None
    hnps: tuple[Prefix6, ...]
    lifetime_s: int
    expires_at: float
    registered_at: float
    last_sequence: int
    last_timestamp: int
    wire_profile: str
    access_tech: int
    link_layer_id: bytes | None

    @property
    def mn_name(self) -> str:
        return self.mn_id.decode("utf-8", "backslashreplace")


# --- LMA events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindingUp:
    """A binding was accepted. ``change`` is "created", "moved" (handover: route it via the
    new MAG in one step), "updated" (anything else about the binding changed),
    "refreshed" (only its lifetime, expiry and replay state: the last sequence number and
    timestamp) or "restored" (reloaded from the store after a restart)."""

    binding: BindingView
    change: str
    previous_mag: Peer | None = None


@dataclass(frozen=True, slots=True)
class BindingDown:
    """Forwarding for a binding must stop. ``reason`` is "deregistered", "expired" or
    "policy-changed". A deregistered entry keeps its addresses until BindingPurged."""

    binding: BindingView
    reason: str


@dataclass(frozen=True, slots=True)
class BindingPurged:
    """The entry is gone and its addresses are back in their pools."""

    mn_id: bytes
    ipv4_hoa: IPv4Address | None


@dataclass(frozen=True, slots=True)
class PbuRejected:
    mn_id: bytes | None
    peer: Peer
    status: int
    ipv4_status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """Input that was not processed: malformed bytes, an unexpected message, an unknown
    peer. ``reason`` is a short stable label."""

    peer: Peer
    reason: str
    detail: str = ""


# --- MAG events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ipv4Granted:
    mn_id: bytes
    hoa: IPv4Address
    prefix_len: int
    default_router: IPv4Address | None
    lifetime_s: int


@dataclass(frozen=True, slots=True)
class Ipv4Denied:
    """The LMA refused the MN's IPv4 home address: its IPv4 traffic must not be routed
    (seed §3.4)."""

    mn_id: bytes
    status: int


@dataclass(frozen=True, slots=True)
class TunnelNeeded:
    """The MN is registered: route its traffic through a tunnel to ``lma``."""

    mn_id: bytes
    lma: Peer
    encapsulation: Encapsulation
    nat: bool
    ipv4_hoa: IPv4Address | None
    hnps: tuple[Prefix6, ...]
    lifetime_s: int


@dataclass(frozen=True, slots=True)
class RegistrationRejected:
    mn_id: bytes
    status: int


@dataclass(frozen=True, slots=True)
class BindingLost:
    """The MN's registration failed or lapsed: stop forwarding for it. Registration is
    tried again later while the MN stays attached."""

    mn_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Deregistered:
    """The MN detached and its binding was removed."""

    mn_id: bytes


Event = (
    BindingUp
    | BindingDown
    | BindingPurged
    | PbuRejected
    | MessageDropped
    | Ipv4Granted
    | Ipv4Denied
    | TunnelNeeded
    | RegistrationRejected
    | BindingLost
    | Deregistered
)
