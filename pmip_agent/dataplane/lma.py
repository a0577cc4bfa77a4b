"""The LMA's data plane: binding events in, tunnels and routes out.

Seed §3.5 and §4.5, RFC 5844 §3.1.3 and §4.1.4: once a binding is accepted, packets for
the MN's IPv4 home address and home network prefixes go through the tunnel to its MAG,
and what comes out of that tunnel is routed on by its inner destination. Tunnels are
shared per MAG and encapsulation and counted by bindings (RFC 5213 §5.6.1): the first
binding creates one, the last one gone removes it. The LMA's pools are made unreachable
as a whole, so a home address without a binding is answered with ICMP unreachable
instead of leaking out of the default route.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from ..config import AgentConfig
from ..core import events as ev
from ..core.events import Encapsulation, Prefix6
from .netlink import (
    RTN_UNREACHABLE,
    IPRouteThread,
    Ownership,
    RouteBatch,
    remove_leftovers,
    sysctl,
)
from .tunnel import Network, Prefix, TunnelBackend, TunnelKey
from .userspace import UserspaceBackend, settings_from

log = logging.getLogger("pmip.dataplane")


# Per binding: its tunnel, IPv4 home address and home network prefixes. The address
# objects are the engine's own (shared, not copied): a million bindings must stay cheap.
_Binding = tuple[TunnelKey, IPv4Address | None, tuple[Prefix6, ...]]


def tunnel_for(binding: ev.BindingView) -> TunnelKey:
    """The shared tunnel that serves ``binding``: its MAG and encapsulation. Over IPv4
    the far end is the address the signalling came from (the NAT's, if any)."""
    mag = binding.mag
    if binding.encapsulation is Encapsulation.IPV6 or mag.v4 is None:
        return TunnelKey(Encapsulation.IPV6, mag.v6, mag.v6)
    nat_udp = binding.encapsulation is Encapsulation.IPV4_UDP and binding.nat
    return TunnelKey(binding.encapsulation, mag.v4, mag.v6, learn_port=nat_udp)


def prefixes_of(binding: ev.BindingView) -> frozenset[Prefix]:
    return _prefixes(binding.ipv4_hoa, binding.hnps)


def _prefixes(hoa: IPv4Address | None, hnps: tuple[Prefix6, ...]) -> frozenset[Prefix]:
    if hoa is None:
        return frozenset(hnps)
    return frozenset(((hoa, 32), *hnps))


class LmaDataPlane:
    """An observer of the LMA engine's events. ``defer(callback)`` runs ``callback`` soon
    on the daemon's loop: route changes of one batch of events go out together."""

    def __init__(
        self,
        config: AgentConfig,
        defer: Callable[[Callable[[], None]], Any],
        backend: TunnelBackend | None = None,
    ) -> None:
        assert config.lma is not None
        self.config = config
        self.defer = defer
        self.backend = backend
        self.bindings: dict[bytes, _Binding] = {}
        self.refs: Counter[TunnelKey] = Counter()
        self._keys: dict[TunnelKey, TunnelKey] = {}
        self._tunnel_memo: dict[tuple[int, Encapsulation, bool], tuple[ev.Peer, TunnelKey]] = {}
        self._flush_pending = False
        self.homes: list[Network] = [p.prefix for p in config.lma.ipv4_pools]
        self.homes += config.lma.dhcp_server_pools
        if config.lma.hnp_pool is not None:
            self.homes.append(config.lma.hnp_pool.prefix)
        self._aggregates: RouteBatch | None = None

    def start(self) -> None:
        """Set up the kernel side: forwarding, the TUN backend, the pools' routes."""
        lma = self.config.lma
        assert lma is not None
        ipr = IPRouteThread()
        try:
            owned = Ownership(destinations=frozenset(self.homes))
            if removed := remove_leftovers(ipr, owned):
                log.info("removed %d routes and rules left by a previous run", removed)
        finally:
            ipr.close()
        sysctl("net/ipv4/conf/all/forwarding", 1)
        sysctl("net/ipv6/conf/all/forwarding", 1)
        if self.backend is None:
            self.backend = UserspaceBackend(
                "lma",
                settings_from(self.config.dataplane),
                own_id=lma.lmaa,
                local6=lma.lmaa,
                local4=lma.ipv4_lmaa,
            )
        self._aggregates = RouteBatch()
        for net in self.homes:
            home = (net.network_address, net.prefixlen)
            self._aggregates.replace(home, None, kind=RTN_UNREACHABLE)
        self._aggregates.flush()

    def observe(self, event: ev.Event) -> None:
        kind = type(event)
        try:
            if kind is ev.BindingUp:
                up: ev.BindingUp = event  # type: ignore[assignment]
                # "refreshed": same MAG, addresses and encapsulation (the engine says so).
                if up.change != "refreshed" or up.binding.mn_id not in self.bindings:
                    self._up(up.binding)
            elif kind is ev.BindingDown:
                self._down(event.binding.mn_id)  # type: ignore[union-attr]
        except Exception:  # the signalling goes on; this binding has no data path
            log.exception("data plane: cannot apply %s", kind.__name__)

    @property
    def _backend(self) -> TunnelBackend:
        assert self.backend is not None, "start() first"
        return self.backend

    def _tunnel_of(self, binding: ev.BindingView) -> TunnelKey:
        """``tunnel_for(binding)``, as the one key object of that tunnel. The engine shares
        one Peer per MAG, so the answer is remembered per Peer object: a restart feeds a
        million bindings through here."""
        mag = binding.mag
        memo = (id(mag), binding.encapsulation, binding.nat)
        hit = self._tunnel_memo.get(memo)
        if hit is not None and hit[0] is mag:  # the Peer is held by the memo: same id, same object
            return hit[1]
        tunnel = tunnel_for(binding)
        tunnel = self._keys.setdefault(tunnel, tunnel)  # one key object per tunnel
        if len(self._tunnel_memo) >= 4096:
            self._tunnel_memo.clear()
        self._tunnel_memo[memo] = (mag, tunnel)
        return tunnel

    def _up(self, binding: ev.BindingView) -> None:
        tunnel = self._tunnel_of(binding)
        old = self.bindings.get(binding.mn_id)
        hoa, hnps = binding.ipv4_hoa, binding.hnps
        backend = self._backend
        if old is None:  # new (or restored): no set arithmetic
            self._hold(tunnel)
            if hoa is not None:
                backend.route_to((hoa, 32), tunnel)
            for prefix in hnps:
                backend.route_to(prefix, tunnel)
            self.bindings[binding.mn_id] = (tunnel, hoa, hnps)
            self._flush_soon()
            return
        if old == (tunnel, hoa, hnps):
            return  # nothing moved
        self._hold(tunnel)
        prefixes = _prefixes(hoa, hnps)
        # A handover re-points each prefix at the new MAG's tunnel: one assignment each.
        for prefix in prefixes:
            backend.route_to(prefix, tunnel)
        for prefix in _prefixes(old[1], old[2]) - prefixes:
            backend.unroute(prefix)
        self._release(old[0])
        self.bindings[binding.mn_id] = (tunnel, hoa, hnps)
        self._flush_soon()

    def _down(self, mn_id: bytes) -> None:
        old = self.bindings.pop(mn_id, None)
        if old is None:
            return
        for prefix in _prefixes(old[1], old[2]):
            self._backend.unroute(prefix)
        self._release(old[0])
        self._flush_soon()

    def _hold(self, tunnel: TunnelKey) -> None:
        if not self.refs[tunnel]:
            self._backend.add_tunnel(tunnel)
        self.refs[tunnel] += 1

    def _release(self, tunnel: TunnelKey) -> None:
        self.refs[tunnel] -= 1
        if self.refs[tunnel] <= 0:
            del self.refs[tunnel]
            del self._keys[tunnel]
            self._tunnel_memo.clear()  # it may name this key
            self._backend.remove_tunnel(tunnel)

    def push(self) -> None:
        """Start sending the queued route changes without waiting for them (a restart,
        between two batches of restored bindings)."""
        self._backend.flush_in_background()

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.defer(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._backend.flush():  # more queued than one round sends: yield, then go on
            self._flush_soon()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        if self._aggregates is not None:
            for net in self.homes:
                self._aggregates.delete((net.network_address, net.prefixlen), None)
            self._aggregates.flush()
            self._aggregates.close()
