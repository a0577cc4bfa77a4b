"""The user-space tunnel backend: one TUN device, the :class:`Forwarder`, and the kernel
routes and rules that lead packets into the TUN device.

* LMA (``route_to``): a kernel route ``prefix dev <tun>`` per IPv4 home address (/32)
  and per home network prefix, plus the forwarder's entry naming the tunnel. The kernel
  route stays put across a handover; the forwarder's entry moves in one assignment.
* MAG (``route_from``): a policy rule ``from <prefix> iif <access link> lookup <table>``
  per prefix of each MN, where the table holds ``default dev <tun>`` (IPv4 and IPv6),
  plus the forwarder's entry naming the tunnel by the MN's source address.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from ..config import DataplaneConfig
from .forwarder import Forwarder
from .netlink import PROTO, IPRouteThread, RouteBatch, sysctl
from .tun import Tun, UdpTunnelTap
from .tunnel import Prefix, TunnelKey

log = logging.getLogger("pmip.dataplane")
ROUTES_PER_FLUSH = 20_000  # about 0.4 s of netlink work before the event loop runs again
IPV6_HEADER = 40  # the largest tunnel overhead: IPv4 + UDP is 28, IPv4 alone 20
TUN_QUEUE = 1000  # packets


@dataclass(frozen=True, slots=True)
class UserspaceSettings:
    tun_name: str
    mtu: int
    tso: bool
    gso: bool
    gro: bool
    data_port: int
    table: int
    rule_priority: int
    keepalive_s: float


class UserspaceBackend:
    """:class:`~pmip_agent.dataplane.tunnel.TunnelBackend` over a TUN device."""

    def __init__(
        self,
        role: str,
        settings: UserspaceSettings,
        own_id: IPv6Address,
        local6: IPv6Address | None,
        local4: IPv4Address | None,
    ) -> None:
        self.role = role
        self.settings = settings
        self.ipr = IPRouteThread()
        self.gso_tap: UdpTunnelTap | None = None  # see _udp_tunnel_gso
        self.tun = Tun(settings.tun_name, vnet=settings.gro, tso=settings.tso)
        try:
            self.ifindex = self.ipr.link_lookup(ifname=self.tun.name)[0]
            # No link-local address: the kernel would send its own MLD reports and
            # router solicitations into the tunnel device.
            sysctl(f"net/ipv6/conf/{self.tun.name}/addr_gen_mode", 1)
            # A TUN queue holds 500 packets: eleven 64 KB bursts of a sender's TSO. The
            # forwarder thread loses the CPU for longer than that on a busy host, and the
            # drops halve TCP's window; 1000, as an Ethernet device has, rarely overflows.
            self.ipr.link("set", index=self.ifindex, mtu=settings.mtu, txqlen=TUN_QUEUE, state="up")
            # Inner packets arrive on the TUN device from sources routed elsewhere (a
            # CN behind the LMA, seen at the MAG): loose reverse-path filtering.
            sysctl(f"net/ipv4/conf/{self.tun.name}/rp_filter", 2)
            self.routes = RouteBatch()
            self.gso_tap = self._udp_tunnel_gso(settings, local4)
            self.forwarder = Forwarder(
                role,
                self.tun,
                settings.mtu,
                own_id,
                local6,
                local4,
                settings.data_port,
                keepalive_s=settings.keepalive_s,
                gso=settings.gso,
                gro=settings.gro,
                gso_tap=self.gso_tap,
            )
        except BaseException:
            if self.gso_tap is not None:
                self.gso_tap.close()
            self.tun.close()
            self.ipr.close()
            raise
        if role == "mag":
            for default in ((IPv4Address(0), 0), (IPv6Address(0), 0)):
                self.routes.replace(default, self.ifindex, table=settings.table)
        self._rules: set[tuple[Prefix, str]] = set()
        self.forwarder.start()
        log.info(
            "data plane: %s up, mtu %d, offloads tso=%s gso=%s gro=%s, udp tunnel gso %s",
            self.tun.name,
            settings.mtu,
            settings.tso,
            settings.gso,
            settings.gro,
            self.gso_tap.name if self.gso_tap else "off",
        )

    def _udp_tunnel_gso(
        self, settings: UserspaceSettings, local4: IPv4Address | None
    ) -> UdpTunnelTap | None:
        """With tso and gso, a TAP device for UDP tunnel GSO writes (see
        :class:`~pmip_agent.dataplane.tun.UdpTunnelTap`), its MAC address read, or None
        where the kernel or the host's settings rule it out; the forwarder then
        cuts IPv4-UDP bursts itself. The frames enter the IP stack as if received on the
        TAP, from this node's own address, and are forwarded: the TAP accepts a local
        source, and reverse-path filtering must be off or loose for it."""
        if not (settings.tso and settings.gso) or local4 is None:
            return None
        try:
            strict = Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text().strip() == "1"
        except OSError:
            strict = False  # unreadable: the TAP device's own setting is all there is
        if strict:
            log.info("udp tunnel gso off: net.ipv4.conf.all.rp_filter is 1 (strict)")
            return None
        try:
            tap = UdpTunnelTap(f"{settings.tun_name[:11]}-gso")
        except OSError as exc:
            log.info("udp tunnel gso off: the kernel has no TAP offload for it (%s)", exc)
            return None
        try:
            index = self.ipr.link_lookup(ifname=tap.name)[0]
            for path, value in (
                (f"net/ipv6/conf/{tap.name}/disable_ipv6", 1),  # nothing of its own to send
                (f"net/ipv4/conf/{tap.name}/accept_local", 1),
                (f"net/ipv4/conf/{tap.name}/rp_filter", 0),
            ):
                if not sysctl(path, value):
                    raise OSError(f"cannot set {path}")
            self.ipr.link("set", index=index, state="up")
            mac = self.ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
        except (OSError, NetlinkError, IndexError) as exc:
            tap.close()
            log.warning("udp tunnel gso off: setting up the TAP device failed: %s", exc)
            return None
        tap.mac = bytes.fromhex(mac.replace(":", ""))
        return tap

    # --- TunnelBackend ---------------------------------------------------------------

    def add_tunnel(self, tunnel: TunnelKey) -> None:
        self.forwarder.add_tunnel(tunnel)
        log.info("tunnel up: %s", tunnel)

    def remove_tunnel(self, tunnel: TunnelKey) -> None:
        self.forwarder.remove_tunnel(tunnel)
        log.info("tunnel down: %s", tunnel)

    def route_to(self, prefix: Prefix, tunnel: TunnelKey) -> None:
        if not self.forwarder.route(prefix, tunnel):  # a move keeps the kernel route
            self.routes.replace(prefix, self.ifindex)

    def route_from(self, prefix: Prefix, iif: str, tunnel: TunnelKey) -> None:
        self.forwarder.route(prefix, tunnel)
        if (prefix, iif) not in self._rules:
            self._rule("add", prefix, iif)
            self._rules.add((prefix, iif))

    def unroute(self, prefix: Prefix, iif: str | None = None) -> None:
        if iif is None:
            if self.forwarder.unroute(prefix):
                self.routes.delete(prefix, self.ifindex)
            return
        if (prefix, iif) in self._rules:
            self._rules.discard((prefix, iif))
            self._rule("del", prefix, iif)
        # The MN may have moved to another access link of this MAG: its entry stays
        # while a rule still leads its traffic in.
        if not any(p == prefix for p, _ in self._rules):
            self.forwarder.unroute(prefix)

    def flush(self) -> bool:
        self.routes.flush(limit=ROUTES_PER_FLUSH)
        return bool(self.routes.pending)

    def flush_in_background(self) -> None:
        self.routes.flush_in_background()

    def close(self) -> None:
        self.forwarder.stop()
        log.info("data plane stopped: %s", self.forwarder.stats())
        for prefix, iif in list(self._rules):
            self._rule("del", prefix, iif)
        self._rules.clear()
        self.tun.close()  # its routes go with it
        if self.gso_tap is not None:
            self.gso_tap.close()
        self.routes.close()
        self.ipr.close()

    def _rule(self, op: str, prefix: Prefix, iif: str) -> None:
        address, plen = prefix
        family = socket.AF_INET if isinstance(address, IPv4Address) else socket.AF_INET6
        try:
            self.ipr.rule(
                op,
                family=family,
                priority=self.settings.rule_priority,
                src=str(address),
                src_len=plen,
                iifname=iif,
                table=self.settings.table,
                protocol=PROTO,
            )
        except NetlinkError as exc:
            if not (op == "del" and exc.code in (2, 3)):  # already gone
                log.warning("rule %s from %s iif %s: %s", op, prefix, iif, exc)


def settings_from(config: DataplaneConfig) -> UserspaceSettings:
    return UserspaceSettings(
        tun_name=config.tun_name,
        mtu=tunnel_mtu(config),
        tso="tso" in config.offload,
        gso="gso" in config.offload,
        gro="gro" in config.offload,
        data_port=config.data_port,
        table=config.table,
        rule_priority=config.rule_priority,
        keepalive_s=config.nat_keepalive_s,
    )


def tunnel_mtu(config: DataplaneConfig) -> int:
    """The TUN device's MTU: what is left of the underlay's for the largest tunnel
    header, the same at both ends whichever encapsulation a binding uses."""
    return config.mtu or config.underlay_mtu - IPV6_HEADER
