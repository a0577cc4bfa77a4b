"""What names a MAG-LMA tunnel, and the narrow interface every data-plane backend offers.

RFC 5213 §5.6.1 and §6.10.4 (and seed §4.6 for IPv4 transport): the tunnel between a MAG
and an LMA is shared by all the mobile nodes registered through that pair, so it is named
by the pair and the encapsulation, never by a mobile node. The LMA and MAG data planes
count the bindings that use each tunnel and call the backend; the backend only moves
packets and installs routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

from ..core.events import Encapsulation

Network = IPv4Network | IPv6Network
# A prefix as (address, length): an IPv4 home address is (hoa, 32), a home network prefix
# is exactly what the engines' events carry. Cheaper than ipaddress networks, which an
# LMA restoring a million bindings would build by the million.
Prefix = tuple[IPv4Address | IPv6Address, int]


@dataclass(frozen=True, slots=True)
class TunnelKey:
    """One shared tunnel.

    ``remote`` is the peer's transport address: its IPv6 address (Proxy-CoA or LMAA) for
    the IPv6 encapsulation, its IPv4 address otherwise. For the LMA that is the address
    it observed the MAG's signalling from, which behind a NAT is the NAT's (seed §4.5:
    data must take the same way). ``peer`` is the peer's PMIPv6 identity, the IPv6
    address the binding cache knows it by; it tells apart MAGs that share one NAT.
    ``learn_port``: the peer's UDP data port is only known from what arrives (a NAT
    chose it), so nothing can be sent until the peer has sent first."""

    mode: Encapsulation
    remote: IPv4Address | IPv6Address
    peer: IPv6Address
    learn_port: bool = False
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Hashed on every event of every binding: computed once (ipaddress hashes are
        # not cheap).
        object.__setattr__(
            self, "_hash", hash((self.mode, self.remote, self.peer, self.learn_port))
        )

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.mode} {self.remote} ({self.peer})"


class TunnelBackend(Protocol):
    """Moves an inner packet into the right tunnel. Two ways in, one per role:

    * ``route_to`` (LMA): packets *to* ``prefix`` (an IPv4 home address, a home network
      prefix) go into ``tunnel``;
    * ``route_from`` (MAG): packets *from* ``prefix`` arriving on access interface
      ``iif`` go into ``tunnel`` (RFC 5213 §6.10.5: a MAG tunnels what its MNs send).

    Calling either again for the same prefix moves it to another tunnel in one step (the
    handover). Packets coming out of a tunnel are delivered to the kernel, which routes
    them by their inner destination. A kernel-tunnel backend (ip6tnl/ipip/fou devices)
    would implement the same five calls with one device per tunnel."""

    def add_tunnel(self, tunnel: TunnelKey) -> None: ...

    def remove_tunnel(self, tunnel: TunnelKey) -> None: ...

    def route_to(self, prefix: Prefix, tunnel: TunnelKey) -> None: ...

    def route_from(self, prefix: Prefix, iif: str, tunnel: TunnelKey) -> None: ...

    def unroute(self, prefix: Prefix, iif: str | None = None) -> None: ...

    def flush(self) -> bool:
        """Apply what the calls above queued (routes may be batched); True when some is
        still queued and another call should follow."""
        ...

    def flush_in_background(self) -> None:
        """Start applying what is queued without waiting for it (a restart, between two
        batches of restored bindings); the next ``flush`` or ``close`` waits for it. A
        backend that applies its calls at once does nothing here."""
        ...

    def close(self) -> None: ...
