"""Binding cache entries (LMA) and binding update list entries (MAG).

Entries are mutable, slotted records owned by one engine; the outside world sees them only
as immutable views (``BindingView``) carried by events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..wire.constants import WireProfile
from .events import BindingView, Encapsulation, Peer, Prefix6
from .templates import PbaTemplate

ACTIVE = "active"
DEREGISTERED = "deregistered"
# Value -> member without the Enum call (about a microsecond each, a million at a restart).
_ENCAPSULATIONS: dict[str, Encapsulation] = {e.value: e for e in Encapsulation}
_WIRE_PROFILES: dict[str, WireProfile] = {w.value: w for w in WireProfile}


@dataclass(slots=True, eq=False)
class BindingCacheEntry:
    """RFC 5213 §5.1 plus the IPv4 fields of seed §3.2 and §4.2."""

    mn_id: bytes
    mag: Peer
    encapsulation: Encapsulation
    nat: bool
    ipv4_hoa: IPv4Address | None
    ipv4_prefix_len: int
    ipv4_default_router: IPv4Address | None
    ipv4_source: str | None
    ipv4_pool: str | None
    hnps: tuple[Prefix6, ...]
    lifetime_s: int
    expires_at: float
    registered_at: float
    last_sequence: int
    last_timestamp: int  # raw 64-bit Timestamp option value, 0 when none was accepted
    wire_profile: WireProfile
    access_tech: int
    link_layer_id: bytes | None
    state: str = ACTIVE
    timer_generation: int = 0
    timer_at: float | None = None  # the deadline armed in the LMA's timer heap, if any
    # The shared PBA template that answered the last accepted PBU (templates.py), if it
    # can answer an unchanged re-registration too: the LMA's refresh fast path.
    refresh: PbaTemplate | None = None

    @property
    def mn_name(self) -> str:
        return self.mn_id.decode("utf-8", "backslashreplace")

    def view(self) -> BindingView:
        return BindingView(
            self.mn_id,
            self.mag,
            self.state,
            self.encapsulation,
            self.nat,
            self.ipv4_hoa,
            self.ipv4_prefix_len,
            self.ipv4_default_router,
            self.ipv4_source,
            self.ipv4_pool,
            self.hnps,
            self.lifetime_s,
            self.expires_at,
            self.registered_at,
            self.last_sequence,
            self.last_timestamp,
            str(self.wire_profile),
            self.access_tech,
            self.link_layer_id,
        )

    @classmethod
    def from_view(cls, v: BindingView, mag: Peer | None = None) -> BindingCacheEntry:
        """The entry a view describes; ``mag``, if given, stands for ``v.mag`` (an equal
        Peer the engine already holds)."""
        return cls(
            v.mn_id,
            v.mag if mag is None else mag,
            _ENCAPSULATIONS.get(v.encapsulation) or Encapsulation(v.encapsulation),
            v.nat,
            v.ipv4_hoa,
            v.ipv4_prefix_len,
            v.ipv4_default_router,
            v.ipv4_source,
            v.ipv4_pool,
            v.hnps,
            v.lifetime_s,
            v.expires_at,
            v.registered_at,
            v.last_sequence,
            v.last_timestamp,
            _WIRE_PROFILES.get(v.wire_profile) or WireProfile(v.wire_profile),
            v.access_tech,
            v.link_layer_id,
            v.state,
        )


@dataclass(slots=True, eq=False)
class BulEntry:
    """One MN on the MAG's binding update list (RFC 5213 §6.1)."""

    mn_id: bytes
    lma_name: str
    state: str
    requested_hoa: IPv4Address | None  # None: no IPv4 requested
    requested_prefix_len: int
    link_layer_id: bytes | None
    handoff: int
    hnps: tuple[Prefix6, ...] = ()
    hoa: IPv4Address | None = None
    hoa_prefix_len: int = 0
    default_router: IPv4Address | None = None
    lifetime_s: int = 0
    expires_at: float = 0.0
    nat: bool = False
    nat_refresh_s: int = 0
    encapsulation: Encapsulation | None = None
    outstanding: set[int] = field(default_factory=set)  # sequence numbers awaiting a PBA
    latest_sequence: int = -1  # the last PBU's: only its PBA may refuse the attempt
    latest_sent_at: float = 0.0
    transmissions: int = 0
    timeout_s: float = 0.0
    deadline: float = 0.0
    timer_generation: int = 0
    registered: bool = False
