"""Mobile node policy profiles and the per-role settings the engines run with.

These are plain values: the config layer validates user input and builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from ..wire.constants import AccessTechType, WireProfile


class Ipv4Mode(StrEnum):
    """Where the MN's IPv4 home address comes from (seed §3.1)."""

    NONE = "none"  # no IPv4 home address mobility service
    STATIC = "static"  # from the policy profile
    LMA = "lma"  # allocated by the LMA from its pool (Figure 2)
    DHCP_SERVER = "dhcp-server"  # assigned by an external DHCP server (Figure 3)


@dataclass(frozen=True, slots=True)
class MnProfile:
    """One mobile node's policy profile (RFC 5213 §6.2, seed §3.1)."""

    mn_id: bytes
    ipv4_mode: Ipv4Mode = Ipv4Mode.LMA
    ipv6: bool = True
    # static mode: the home address, its prefix length and default router
    ipv4_hoa: IPv4Address | None = None
    ipv4_prefix_len: int = 32
    ipv4_default_router: IPv4Address | None = None
    # lma mode: which LMA pool to allocate from (None: the LMA's first pool)
    ipv4_pool: str | None = None
    # dhcp-server mode: the prefix the MN is authorized for, and its router
    dhcp_prefix: IPv4Network | None = None
    # MAG side: which LMA anchors this MN, and how to recognise it on the access link
    lma: str | None = None
    link_layer_ids: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LmaSettings:
    lmaa: IPv6Address
    ipv4_lmaa: IPv4Address | None = None
    # Proxy-CoAs allowed to register (RFC 5213 §5.3.1); None admits any MAG.
    allowed_mags: frozenset[IPv6Address] | None = None
    timestamps: bool = True  # RFC 5213 §5.5: timestamp-based replay protection
    timestamp_window_s: float = 0.3  # TimestampValidityWindow
    max_lifetime_s: int = 3600
    min_delay_before_bce_delete_s: float = 10.0  # MinDelayBeforeBCEDelete
    nat_refresh_s: int = 110  # refresh time put in the NAT Detection option (NATKATIMEOUT)
    # RFC 5844 §5 AcceptForcedIPv4UDPEncapsulationRequest; on, since NAT traversal needs UDP.
    accept_forced_udp: bool = True
    default_wire_profile: WireProfile = WireProfile.RFC5844


@dataclass(frozen=True, slots=True)
class LmaPeerSettings:
    """How a MAG reaches one LMA."""

    name: str
    lmaa: IPv6Address
    ipv4_lmaa: IPv4Address | None = None
    transport: str = "ipv6"  # "ipv6" | "ipv4"
    force_udp: bool = False  # set the F flag: UDP encapsulation even without NAT

    @property
    def over_ipv4(self) -> bool:
        """Signalling goes over IPv4/UDP (RFC 5844 §4): IPv4 transport to a known IPv4 LMAA."""
        return self.transport == "ipv4" and self.ipv4_lmaa is not None


@dataclass(frozen=True, slots=True)
class MagSettings:
    proxy_coa: IPv6Address
    lmas: dict[str, LmaPeerSettings]
    ipv4_proxy_coa: IPv4Address | None = None
    wire_profile: WireProfile = WireProfile.RFC5844
    lifetime_s: int = 3600
    timestamps: bool = True
    access_tech: int = AccessTechType.IEEE_802_3
    initial_bindack_timeout_s: float = 1.0  # INITIAL_BINDACK_TIMEOUT (RFC 5213 §9)
    max_bindack_timeout_s: float = 32.0  # MAX_BINDACK_TIMEOUT
    max_transmissions: int = 6  # 1 + retransmissions: 1, 2, 4, 8, 16, 32 s apart
    retry_after_failure_s: float = 32.0  # wait before registering again after a failure
    # The domain's TimestampValidityWindow: a PBU refused for its timestamp (156) after
    # longer than this on its way was refused for its delay, and is sent again at once.
    timestamp_window_s: float = 0.3
    refresh_fraction: float = 0.8  # re-register at this fraction of the granted lifetime
    nat_keepalive_fraction: float = 0.9  # re-send the PBU at this fraction of refresh time
    profiles: dict[bytes, MnProfile] = field(default_factory=dict)
