"""The MAG's data plane: the MAG engine's events in, per-MN policy routing out.

Seed §3.4 and §4.4, RFC 5213 §6.10.5, RFC 5844 §3.2.4 and §4.2.2.2:

* nothing an MN sends is routed before its registration: a rule per access link drops
  (blackhole) everything that arrives on it, IPv4 and IPv6;
* once registered, a rule per home address/prefix of the MN takes its traffic, from
  that access link and that source only, into the tunnel to its LMA (policy routing:
  the MAG's own routes never see it, RFC 5213 §6.10.5 "MUST be forwarded to the local
  mobility anchor");
* what comes out of the tunnel for the MN is delivered on its access link: a host route
  to the IPv4 home address and an on-link route to each home network prefix there;
* an IPv4 refusal (Ipv4Denied, seed §3.4: "MUST not enable IPv4 routing") installs no
  IPv4 rule, so the drop rule keeps the MN's IPv4 traffic off the network;
* the MN resolves its IPv4 default router (the address the LMA gave, RFC 5844 §3.3.3)
  because the MAG holds that address as a /32 on the access link: every MAG of the
  domain answers for it, as RFC 5213 §6.9.3 asks of the IPv6 default router, and
  nothing else on the MAG is routed by it (no prefix route). Proxy ARP (RFC 5844
  §3.2.4) answers for the other addresses of the home subnet;
* Router Advertisements give a dual-stack MN its home network prefixes (:mod:`.ra`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ..config import AgentConfig
from ..core import events as ev
from ..core.events import Encapsulation, Peer
from .arp import announce
from .netlink import PROTO, IPRouteThread, Ownership, RouteBatch, remove_leftovers, sysctl
from .ra import RouterAdvertiser
from .tunnel import Prefix, TunnelBackend, TunnelKey
from .userspace import UserspaceBackend, settings_from, tunnel_mtu

log = logging.getLogger("pmip.dataplane")


@dataclass(frozen=True, slots=True)
class _Served:
    iface: str
    tunnel: TunnelKey
    hoa: Prefix | None
    router: IPv4Address | None
    hnps: frozenset[Prefix]


def tunnel_to(lma: Peer, encapsulation: Encapsulation) -> TunnelKey:
    """The shared tunnel to ``lma`` with ``encapsulation`` (RFC 5213 §6.10.4)."""
    if encapsulation is Encapsulation.IPV6 or lma.v4 is None:
        return TunnelKey(Encapsulation.IPV6, lma.v6, lma.v6)
    return TunnelKey(encapsulation, lma.v4, lma.v6)


class MagDataPlane:
    """An observer of the MAG engine's events. ``schedule(delay, callback)`` arms a timer
    on the daemon's loop (periodic Router Advertisements)."""

    # Set by start(): the kernel side.
    ipr: IPRouteThread
    routes: RouteBatch
    ra: RouterAdvertiser

    def __init__(
        self,
        config: AgentConfig,
        schedule: Callable[[float, Callable[[], None]], Any],
        backend: TunnelBackend | None = None,
    ) -> None:
        mag = config.mag
        assert mag is not None
        self.config = config
        self.schedule = schedule
        self.backend = backend
        self.priority = config.dataplane.rule_priority
        self.access = [i.name for i in mag.access_interfaces]
        # Which MN is on which link: dedicated links from the configuration, shared
        # links from the MN's Router Solicitation (see on_solicit).
        self.iface_of: dict[bytes, str] = {
            i.mn_id.encode(): i.name for i in mag.access_interfaces if i.mn_id
        }
        # profiles(): the mobile_nodes list and the mobile_nodes_file alike.
        self.by_mac = {mac: p.mn_id for p in config.profiles().values() for mac in p.link_layer_ids}
        self.served: dict[bytes, _Served] = {}
        self.routers: dict[bytes, IPv4Address | None] = {}
        self.pending: dict[bytes, ev.TunnelNeeded] = {}
        self.refs: Counter[TunnelKey] = Counter()
        self.router_refs: Counter[tuple[str, IPv4Address]] = Counter()
        # Access links whose per-link settings are in place. A deleted (or moved) link
        # loses them with its sysctls and addresses: link_gone() forgets it, so a link
        # that comes back is prepared again.
        self._links_ready: set[str] = set()

    def start(self) -> None:
        """Set up the kernel side: forwarding, the drop rules of the access links, the
        TUN backend, the Router Advertisement socket."""
        mag = self.config.mag
        assert mag is not None
        dp = self.config.dataplane
        self.ipr = IPRouteThread()
        owned = Ownership(
            rule_priorities=frozenset((self.priority, self.priority + 1)),
            tables=frozenset((dp.table,)),
            interfaces=frozenset(self.access),
        )
        if removed := remove_leftovers(self.ipr, owned):
            log.info("removed %d routes, rules and addresses left by a previous run", removed)
        sysctl("net/ipv4/conf/all/forwarding", 1)
        sysctl("net/ipv6/conf/all/forwarding", 1)
        for name in self.access:
            self._prepare_link(name)
        uses_ipv6 = any(p.resolved_transport == "ipv6" for p in mag.lmas)
        try:
            if self.backend is None:
                self.backend = UserspaceBackend(
                    "mag",
                    settings_from(dp),
                    own_id=mag.proxy_coa,
                    local6=mag.proxy_coa if uses_ipv6 else None,
                    local4=mag.ipv4_proxy_coa,
                )
            self.routes = RouteBatch()
            self.ra = RouterAdvertiser(tunnel_mtu(dp), dp.ra_interval_s, self.schedule)
        except BaseException:
            self.close()
            raise

    # --- access links ----------------------------------------------------------------

    def _prepare_link(self, name: str) -> None:
        """Drop everything from the link until an MN on it is registered, and set what
        the home-link emulation needs. Repeated for a link that appears later."""
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                self._blackhole("add", name, family)  # matches the name: absent is fine
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST
                    raise
        try:
            socket.if_nametoindex(name)
        except OSError:
            log.info(
                "access link %s is not there yet: its sysctls are set when an MN on it registers",
                name,
            )
            return
        ok = sysctl(f"net/ipv4/conf/{name}/proxy_arp", 1)
        ok = sysctl(f"net/ipv4/neigh/{name}/proxy_delay", 0) and ok  # answer at once
        # RFC 5213 §6.9.3: the same link-local address on every MAG; it must not go
        # tentative (unusable as an RA source) each time an MN's link comes up.
        ok = sysctl(f"net/ipv6/conf/{name}/accept_dad", 0) and ok
        if ok:
            self._links_ready.add(name)

    def _drop_rules(self) -> None:
        for name in self.access:
            for family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(NetlinkError):
                    self._blackhole("del", name, family)

    def _blackhole(self, op: str, name: str, family: int) -> None:
        """Add or delete the rule that drops whatever comes in on access link ``name``."""
        self.ipr.rule(
            op,
            family=family,
            priority=self.priority + 1,
            iifname=name,
            action="FR_ACT_BLACKHOLE",
            protocol=PROTO,
        )

    def link_gone(self, ifname: str) -> None:
        """Access link ``ifname`` went down or away: what was set on it may be gone."""
        self._links_ready.discard(ifname)

    def on_solicit(self, ifname: str, mac: bytes | None) -> None:
        """A Router Solicitation on ``ifname``: locate its MN, and answer it."""
        mn_id = self.by_mac.get(mac) if mac else None
        if mn_id is not None:
            self.locate(mn_id, ifname)
        self.ra.solicited(ifname)

    def locate(self, mn_id: bytes, ifname: str) -> None:
        """``mn_id`` is on access link ``ifname`` (needed on shared links, where the
        configuration cannot say). A registration that was waiting for it goes on."""
        if self.iface_of.get(mn_id) != ifname:
            self.iface_of[mn_id] = ifname
            waiting = self.pending.pop(mn_id, None)
            if waiting is not None:
                self._serve(waiting)

    # --- events ----------------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        kind = type(event)
        try:
            if kind is ev.Ipv4Granted:
                self.routers[event.mn_id] = event.default_router  # type: ignore[union-attr]
            elif kind is ev.TunnelNeeded:
                self._serve(event)  # type: ignore[arg-type]
            elif kind is ev.Ipv4Denied:
                self._deny_ipv4(event.mn_id)  # type: ignore[union-attr]
            elif kind is ev.BindingLost or kind is ev.Deregistered:
                self._forget(event.mn_id)  # type: ignore[union-attr]
        except Exception:  # the signalling goes on; this MN has no data path
            log.exception("data plane: cannot apply %s", kind.__name__)

    @property
    def _backend(self) -> TunnelBackend:
        assert self.backend is not None, "start() first"
        return self.backend

    def _serve(self, need: ev.TunnelNeeded) -> None:
        mn_id = need.mn_id
        iface = self.iface_of.get(mn_id)
        if iface is None:
            log.warning(
                "registered %s, but its access link is not known yet: waiting for its "
                "router solicitation",
                mn_id.decode("utf-8", "backslashreplace"),
            )
            self.pending[mn_id] = need
            return
        if iface not in self._links_ready:
            self._prepare_link(iface)
        hoa: Prefix | None = (need.ipv4_hoa, 32) if need.ipv4_hoa is not None else None
        new = _Served(
            iface,
            tunnel_to(need.lma, need.encapsulation),
            hoa,
            self.routers.get(mn_id) if hoa is not None else None,
            frozenset(need.hnps),
        )
        old = self.served.get(mn_id)
        self._hold(new.tunnel)
        index = socket.if_nametoindex(iface)
        # Delivery first, then the rule that lets the MN's traffic in: replies never
        # come back to a link without a route.
        if hoa is not None:
            self.routes.replace(hoa, index)
        for hnp in new.hnps:
            self.routes.replace(hnp, index)
        self.routes.flush()
        if hoa is not None:
            self._backend.route_from(hoa, iface, new.tunnel)
            if new.router is not None:
                self._hold_router(iface, new.router)
        for hnp in new.hnps:
            self._backend.route_from(hnp, iface, new.tunnel)
        if old is not None:
            self._undo(old, keep=new)
        self.served[mn_id] = new
        self._backend.flush()
        if new.router is not None:  # the MN may have asked for it already: tell it now
            announce(iface, new.router)
        self.ra.advertise(iface, mn_id, need.hnps, need.lifetime_s)

    def _deny_ipv4(self, mn_id: bytes) -> None:
        """Seed §3.4: no IPv4 routing for an MN whose IPv4 home address was refused."""
        old = self.served.get(mn_id)
        self.routers.pop(mn_id, None)
        if old is None or old.hoa is None:
            return
        new = _Served(old.iface, old.tunnel, None, None, old.hnps)
        self._hold(old.tunnel)
        self._undo(old, keep=new)
        self.served[mn_id] = new
        self._backend.flush()

    def _forget(self, mn_id: bytes) -> None:
        self.pending.pop(mn_id, None)
        self.routers.pop(mn_id, None)
        old = self.served.pop(mn_id, None)
        if old is None:
            return
        self.ra.withdraw(old.iface, mn_id)
        self._undo(old, keep=None)
        self._backend.flush()

    def _undo(self, old: _Served, keep: _Served | None) -> None:
        """Remove what ``old`` installed and ``keep`` does not use; release its tunnel."""
        same_link = keep is not None and keep.iface == old.iface
        if old.hoa is not None and not (same_link and keep.hoa == old.hoa):  # type: ignore[union-attr]
            self._backend.unroute(old.hoa, old.iface)
            with contextlib.suppress(OSError):  # a deleted link took its routes along
                self.routes.delete(old.hoa, socket.if_nametoindex(old.iface))
        if old.router is not None:  # the new one was held first: no flap when it stays
            self._release_router(old.iface, old.router)
        for hnp in old.hnps - (keep.hnps if same_link else frozenset()):  # type: ignore[union-attr]
            self._backend.unroute(hnp, old.iface)
            with contextlib.suppress(OSError):
                self.routes.delete(hnp, socket.if_nametoindex(old.iface))
        self.routes.flush()
        self._release(old.tunnel)

    # --- reference counts --------------------------------------------------------------

    def _hold(self, tunnel: TunnelKey) -> None:
        if not self.refs[tunnel]:
            self._backend.add_tunnel(tunnel)
        self.refs[tunnel] += 1

    def _release(self, tunnel: TunnelKey) -> None:
        self.refs[tunnel] -= 1
        if self.refs[tunnel] <= 0:
            del self.refs[tunnel]
            self._backend.remove_tunnel(tunnel)

    def _hold_router(self, iface: str, router: IPv4Address) -> None:
        if not self.router_refs[(iface, router)]:
            self._router_address("add", iface, router)
        self.router_refs[(iface, router)] += 1

    def _release_router(self, iface: str, router: IPv4Address) -> None:
        self.router_refs[(iface, router)] -= 1
        if self.router_refs[(iface, router)] <= 0:
            del self.router_refs[(iface, router)]
            self._router_address("del", iface, router)

    def _router_address(self, op: str, iface: str, router: IPv4Address) -> None:
        try:
            index = socket.if_nametoindex(iface)
        except OSError:
            if op == "add":
                log.warning("default router %s: no access link %s", router, iface)
            return  # deleted: its addresses went with it
        try:
            self.ipr.addr(
                op,
                index=index,
                address=str(router),
                prefixlen=32,
                proto=PROTO,
            )
        except (NetlinkError, OSError) as exc:
            if not (op == "add" and getattr(exc, "code", 0) == 17):  # already there
                log.warning("default router %s on %s (%s): %s", router, iface, op, exc)

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        for mn_id in list(self.served):
            with contextlib.suppress(Exception):
                self._forget(mn_id)
        ra: RouterAdvertiser | None = getattr(self, "ra", None)
        if ra is not None:
            ra.close()
        if self.backend is not None:
            self.backend.close()
        ipr: IPRouteThread | None = getattr(self, "ipr", None)
        if ipr is not None:
            self._drop_rules()
            ipr.close()
        routes: RouteBatch | None = getattr(self, "routes", None)
        if routes is not None:
            routes.close()
