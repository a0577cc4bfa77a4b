"""The MAG's DHCPv4 side: a minimal server (seed §3.1, Figure 2) and a relay hook (Figure 3).

No sockets and no clock: the daemon feeds client and server messages in, hands it the MAG
engine's events, and sends what ``datagrams_to_send()`` returns. The registration itself
is the MAG engine's job; this class only decides what to tell the MN, and when:

- server (static and lma modes): DISCOVER waits for the PBA, then OFFER carries the HoA,
  a mask from the prefix length and the default router from the PBA (Figure 2, steps 3-5);
- relay (dhcp-server mode): the MN's messages go to the DHCP servers with giaddr and
  option 82. The server's OFFER goes on to the MN while the PBU reports the address it
  offers (seed §3.1: the MAG "sends that information to the mobile node by DHCP offer
  message. Meanwhile, it notifies the assigned IPv4 home address ... in a proxy binding
  update"); the server's ACK is held until the LMA has anchored that address (Figure 3,
  steps 3-4 and 8), and never passed on if the LMA refuses it. So an MN never configures
  an address the LMA has not anchored (seed §3.4), and the LMA's round trip overlaps the
  MN's REQUEST instead of delaying the OFFER.

The relay's common messages are taken from their bytes (`forward`, `forward_reply`, on
`codec.peek`), so the daemon passes them on before it decodes anything, attaches the
MN or reports an offered address (`report_offered`); they do exactly what `from_client`
and `from_server` would, and every other message takes that decoded way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

from ..core import events as ev
from ..core.mag import MagEngine
from ..core.policy import Ipv4Mode
from . import codec
from .codec import ACK, DECLINE, DISCOVER, INFORM, NAK, OFFER, RELEASE, REQUEST, DhcpMessage

log = logging.getLogger("pmip.dhcp")
BROADCAST = ("255.255.255.255", 68)
ZERO_PACKED = bytes(4)
SERVER_PORT = 67


class DhcpSend(NamedTuple):
    """``ifname`` set: to the MN on that access link. None: to a DHCP server. This and
    Grant are NamedTuples, not frozen dataclasses: they are built per message and per
    PBA, and a tuple is built without setting each field through object.__setattr__."""

    ifname: str | None
    data: bytes
    dest: tuple[str, int]


class Grant(NamedTuple):
    hoa: IPv4Address
    prefix_len: int
    router: IPv4Address | None
    lifetime_s: int
    granted_at: float


@dataclass(frozen=True, slots=True)
class _Held:
    """A server's reply held until the LMA grants its address (seed Figure 3, step 4)."""

    data: bytes  # as it goes to the MN: option 82 removed
    kind: int
    yiaddr: IPv4Address
    name: str


@dataclass(slots=True)
class _Client:
    mn_id: bytes
    ifname: str
    relay: bool
    waiting: DhcpMessage | None = None  # a client message answered once the LMA grants
    held_reply: _Held | None = None  # relay: a server reply held until the grant
    xids: set[int] = field(default_factory=set)
    relay_info: tuple[IPv4Network | None, bytes] | None = None  # option 82, by prefix hint


class DhcpAgent:
    def __init__(
        self,
        engine: MagEngine,
        *,
        node_name: str,
        lease_s: int,
        servers: list[IPv4Address],
        relay_address: IPv4Address | None,
        fallback_server_id: IPv4Address | None,
        clock: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.clock = clock  # when a grant arrived, for lease times; tests pass their own
        self.node_name = node_name
        self.lease_s = lease_s
        self.servers = servers
        # Where relayed messages go, as sendto() takes it: str(IPv4Address) per message
        # took about 9 us of a relayed DISCOVER when the MAG had been idle.
        self._server_dests = tuple((str(s), SERVER_PORT) for s in servers)
        self.relay_address = relay_address
        self.fallback_server_id = fallback_server_id
        self.grants: dict[bytes, Grant] = {}
        self.denied: set[bytes] = set()
        self._clients: dict[bytes, _Client] = {}
        self._by_xid: dict[int, bytes] = {}
        self._out: list[DhcpSend] = []
        self._now = 0.0
        # MNs sent an OFFER whose REQUEST/ACK has not happened yet, and when: the daemon
        # holds back slower work (tunnel setup, commits) while an exchange is this close.
        self._offered: dict[bytes, float] = {}
        # OFFERs passed on by forward_reply, for report_offered: (MN, yiaddr, option 1's
        # content), as octets; the addresses are made once the OFFER is out.
        self._offered_addresses: list[tuple[bytes, bytes, bytes | None]] = []
        self.kernel_relay = False  # the daemon's kernel relay passes granted ACKs on
        self._held_for: dict[bytes, _Client] = {}  # clients with a held_reply, maybe stale

    def datagrams_to_send(self) -> list[DhcpSend]:
        out, self._out = self._out, []
        return out

    def exchange_open(self, now: float, within: float) -> bool:
        """True when some MN got an OFFER less than ``within`` seconds ago and has not
        been answered an ACK or NAK since: its REQUEST is about to come in."""
        offered = self._offered
        if offered:
            for mn_id in [m for m, t in offered.items() if now - t >= within]:
                del offered[mn_id]
        return bool(offered)

    def _note(self, mn_id: bytes, kind: int) -> None:
        if kind == OFFER:
            self._offered[mn_id] = self.clock()
        elif kind in (ACK, NAK):
            self._offered.pop(mn_id, None)

    # --- from the MN ----------------------------------------------------------------

    def from_client(self, ifname: str, mn_id: bytes, msg: DhcpMessage, now: float) -> None:
        self._now = now
        profile = self.engine.settings.profiles.get(mn_id)
        if profile is None:
            return
        relay = profile.ipv4_mode is Ipv4Mode.DHCP_SERVER
        client = self._client(ifname, mn_id, relay)
        if relay:
            self._relay_from_client(client, profile.dhcp_prefix, msg)
        else:
            self._serve(client, msg)

    # --- the relay's own path: from the bytes, before any decoding ---------------------

    def forward(
        self, ifname: str, mn_id: bytes, data: bytes, seen: codec.Peek, copy: bool = False
    ) -> bool:
        """All of `from_client` for a dhcp-server mode MN's DISCOVER, INFORM or REQUEST
        (but an INIT-REBOOT one), done from the message's bytes (``seen`` is
        `codec.peek(data)`): relay it to the servers. The daemon sends that, then attaches
        the MN; it need not decode the message. False when the message is not one of
        those: the daemon decodes it and calls `from_client`, which does it all.
        ``copy``: the kernel relayed it already (kernel_relay.py); only note the client."""
        if seen.op != 1 or seen.relay_info_at >= 0:
            return False
        kind = seen.message_type
        if kind == REQUEST:
            sid = seen.server_id
            if (sid is None or len(sid) != 4) and seen.ciaddr == ZERO_PACKED:
                return False  # INIT-REBOOT: from_client registers the address first
        elif kind != DISCOVER and kind != INFORM:
            return False  # RELEASE and DECLINE: from_client forgets the MN first
        profile = self.engine.settings.profiles.get(mn_id)
        if profile is None or profile.ipv4_mode is not Ipv4Mode.DHCP_SERVER:
            return False
        if self.engine.lma_for(profile) is None:  # the attach will refuse it: no relaying
            return False
        relay_address = self.relay_address
        if relay_address is None or not self.servers:
            return False  # from_client says why
        client = self._client(ifname, mn_id, True)
        if copy:
            client.xids.add(seen.xid)
            self._by_xid[seen.xid] = mn_id
            return True
        info = self._relay_info(client, profile.dhcp_prefix)
        relayed = codec.relayed_at(data, seen.end_at, relay_address.packed, info)
        self._to_servers(client, seen.xid, relayed)
        return True

    def forward_reply(self, data: bytes, seen: codec.Peek, now: float, copy: bool = False) -> bool:
        """All of `from_server` for a server's reply, done from the bytes: an OFFER
        (unless the LMA refused this MN), a NAK, or an ACK of the address the LMA
        granted, which go on to the MN at once; or an ACK that came before the PBA, held
        for it (its address reported to the engine at once). An OFFER's address is
        reported to the engine, for the PBU (seed Figure 3, step 3), by the next
        `report_offered`: the daemon sends the OFFER first. False for anything else (a
        reply for an MN the LMA refused, say): the daemon decodes it and calls
        `from_server`. ``copy``: the kernel passed it on already (kernel_relay.py); only
        the rest is done."""
        if seen.op != 2:
            return False
        info = codec.relay_info_of(data, seen.relay_info_at)
        mn_id = codec.sub_option(info, codec.RAI_REMOTE_ID) or self._by_xid.get(seen.xid)
        client = self._clients.get(mn_id) if mn_id is not None else None
        if client is None or not client.relay:
            return False
        kind, yiaddr = seen.message_type, seen.yiaddr
        grant = self.grants.get(client.mn_id)
        granted = yiaddr == ZERO_PACKED or (grant is not None and grant.hoa.packed == yiaddr)
        if kind == OFFER:
            if client.mn_id in self.denied:
                return False
            if not granted:  # what from_server does for a new address, once it is out
                self._offered_addresses.append((client.mn_id, yiaddr, seen.subnet_mask))
        elif kind == ACK and not granted and not copy and client.mn_id not in self.denied:
            # Held for the PBA, as from_server does: its address goes in a PBU now.
            self._now = now
            out = codec.without_relay_info_at(data, seen.relay_info_at)
            hoa = IPv4Address(yiaddr)
            self._hold(client, _Held(out, kind, hoa, seen.name))
            self.engine.learn_ipv4(client.mn_id, hoa, _mask_len(seen.subnet_mask), now)
            return True
        elif (kind != ACK or not granted) and kind != NAK:
            return False
        self._now = now
        if not copy:
            out = codec.without_relay_info_at(data, seen.relay_info_at)
            self._out.append(DhcpSend(client.ifname, out, BROADCAST))
        self._note(client.mn_id, kind)
        return True

    def report_offered(self, now: float) -> list[bytes]:
        """Report the addresses of the OFFERs `forward_reply` passed on since the last
        call, as `from_server` does at once: the engine sends a PBU for each (seed
        Figure 3, step 3). The daemon calls this once the OFFERs are sent, so the MN's
        step does not wait for the PBU to be built. Returns the MNs reported."""
        if not self._offered_addresses:
            return []
        pending, self._offered_addresses = self._offered_addresses, []
        for mn_id, yiaddr, mask in pending:
            self.engine.learn_ipv4(mn_id, IPv4Address(yiaddr), _mask_len(mask), now)
        return [mn_id for mn_id, _yiaddr, _mask in pending]

    # --- the decoded way --------------------------------------------------------------

    def _client(self, ifname: str, mn_id: bytes, relay: bool) -> _Client:
        client = self._clients.get(mn_id)
        if client is None or client.ifname != ifname:
            client = self._clients[mn_id] = _Client(mn_id, ifname, relay)
        return client

    def _serve(self, client: _Client, msg: DhcpMessage) -> None:
        mn_id = client.mn_id
        kind = msg.message_type
        if kind in (RELEASE, DECLINE):
            if kind == DECLINE:
                log.warning("DHCP DECLINE from %s for %s", _name(mn_id), msg.requested_ip)
            self._forget(mn_id)
            return
        grant = self.grants.get(mn_id)
        if grant is None and kind == DISCOVER:
            grant = self._grant_from_engine(mn_id)
        if kind == INFORM:
            if grant is not None:
                self._reply(client, msg, ACK, IPv4Address(0), grant, lease=False)
            return
        if grant is None:
            if mn_id in self.denied:
                log.info("no IPv4 service for %s: DHCP %s not answered", _name(mn_id), msg.name)
            elif kind in (DISCOVER, REQUEST) and msg.ciaddr == IPv4Address(0):
                client.waiting = msg  # answered when the PBA arrives (Figure 2, step 5)
            return  # a RENEW is answered only while the binding is valid
        self._answer(client, msg, grant)

    def acked_in_kernel(self, mn_id: bytes) -> None:
        """The daemon's kernel relay ACKed this MN's REQUEST for the OFFER it sent with
        the PBA (dhcp/bpf/relay.c, send_ack): the exchange is over, as if answered here;
        a DISCOVER still waiting for that PBA's intake needs no OFFER from here."""
        client = self._clients.get(mn_id)
        waiting = client.waiting if client is not None else None
        if client is not None and waiting is not None and waiting.message_type == DISCOVER:
            client.waiting = None
        self._note(mn_id, ACK)

    def _grant_from_engine(self, mn_id: bytes) -> Grant | None:
        view = self.engine.entry(mn_id)
        if view is None or not view.registered or view.ipv4_hoa is None:
            return None
        grant = Grant(
            view.ipv4_hoa,
            view.ipv4_prefix_len,
            view.ipv4_default_router,
            int(view.expires_at - self.clock()),
            self.clock(),
        )
        self.grants[mn_id] = grant
        return grant

    def _answer(self, client: _Client, msg: DhcpMessage, grant: Grant) -> None:
        kind = msg.message_type
        if kind == DISCOVER:
            self._reply(client, msg, OFFER, grant.hoa, grant)
            return
        if kind != REQUEST:
            return
        if msg.server_id is not None and msg.server_id != self._server_id(grant):
            return  # SELECTING another server's offer (RFC 2131 §4.3.2)
        wanted = msg.requested_ip or msg.ciaddr
        if wanted == grant.hoa:
            self._reply(client, msg, ACK, grant.hoa, grant)
        else:  # someone else's address, or one the LMA no longer grants
            log.info(
                "DHCP NAK to %s: asked for %s, holds %s", _name(client.mn_id), wanted, grant.hoa
            )
            self._reply(client, msg, NAK, IPv4Address(0), grant, lease=False)

    def _server_id(self, grant: Grant) -> IPv4Address:
        return grant.router or self.fallback_server_id or IPv4Address(0)

    def _reply(
        self,
        client: _Client,
        request: DhcpMessage,
        kind: int,
        yiaddr: IPv4Address,
        grant: Grant,
        lease: bool = True,
    ) -> None:
        lease_s = None
        if lease:
            view = self.engine.entry(client.mn_id)
            expires = (
                view.expires_at
                if view is not None and view.registered
                else grant.granted_at + grant.lifetime_s
            )
            remaining = int(expires - self.clock())
            lease_s = max(1, min(self.lease_s, remaining))  # never past the binding
        if lease_s is not None and grant.router is not None and kind != NAK:
            # build_reply's bytes, patched into its skeleton: no dpkt on the MN's path.
            data = codec.ReplyTemplate.of(request, kind).fill(
                self._server_id(grant), yiaddr, lease_s, grant.prefix_len, grant.router
            )
        else:
            data = codec.build_reply(
                request,
                kind,
                self._server_id(grant),
                yiaddr,
                lease_s=lease_s,
                prefix_len=grant.prefix_len if kind != NAK else None,
                router=grant.router if kind != NAK else None,
            )
        self._out.append(DhcpSend(client.ifname, data, BROADCAST))
        self._note(client.mn_id, kind)

    # --- relay ----------------------------------------------------------------------

    def _relay_from_client(
        self, client: _Client, prefix: IPv4Network | None, msg: DhcpMessage
    ) -> None:
        if self.relay_address is None or not self.servers:
            log.warning(
                "DHCP relay for %s: no relay address or server configured", _name(client.mn_id)
            )
            return
        kind = msg.message_type
        if kind in (RELEASE, DECLINE):
            self._forget(client.mn_id, keep_client=False)
        elif kind == REQUEST and msg.ciaddr == IPv4Address(0) and msg.server_id is None:
            # INIT-REBOOT of a roaming MN: register the address it holds before the
            # server's ACK reaches it, so the lease continues (issue "Roaming").
            grant = self.grants.get(client.mn_id)
            if msg.requested_ip is not None and grant is None:
                plen = prefix.prefixlen if prefix is not None else 32
                self.engine.learn_ipv4(client.mn_id, msg.requested_ip, plen, self._now)
        self._pass_to_servers(client, prefix, msg)

    def _pass_to_servers(
        self, client: _Client, prefix: IPv4Network | None, msg: DhcpMessage
    ) -> None:
        if self.relay_address is not None and self.servers:
            info = self._relay_info(client, prefix)
            self._to_servers(client, msg.xid, codec.relayed(msg, self.relay_address, info))

    def _relay_info(self, client: _Client, prefix: IPv4Network | None) -> bytes:
        """Option 82 for this MN: built once per MN and link, not per packet."""
        cached = client.relay_info
        if cached is None or cached[0] != prefix:
            cached = client.relay_info = (prefix, self.relay_info(client.ifname, client.mn_id))
        return cached[1]

    def relay_info(self, ifname: str, mn_id: bytes) -> bytes:
        """Option 82's content for a dhcp-server mode MN on access link ``ifname``:
        circuit-id (MAG and link), remote-id (MN-ID), link-selection (its prefix hint)."""
        profile = self.engine.settings.profiles.get(mn_id)
        prefix = profile.dhcp_prefix if profile is not None else None
        link_selection = prefix.network_address if prefix is not None else IPv4Address(0)
        return codec.relay_agent_info(f"{self.node_name}:{ifname}".encode(), mn_id, link_selection)

    def relays(self, mn_id: bytes) -> bool:
        """True for an MN whose DHCP this relays (`forward` would take its requests)."""
        profile = self.engine.settings.profiles.get(mn_id)
        return (
            profile is not None
            and profile.ipv4_mode is Ipv4Mode.DHCP_SERVER
            and self.engine.lma_for(profile) is not None
            and self.relay_address is not None
            and bool(self.servers)
            and mn_id not in self.denied
        )

    def _to_servers(self, client: _Client, xid: int, data: bytes) -> None:
        client.xids.add(xid)
        self._by_xid[xid] = client.mn_id
        for dest in self._server_dests:
            self._out.append(DhcpSend(None, data, dest))

    def from_server(self, msg: DhcpMessage, now: float) -> None:
        self._now = now
        mn_id = codec.sub_option(msg.relay_agent_info, codec.RAI_REMOTE_ID) or self._by_xid.get(
            msg.xid
        )
        client = self._clients.get(mn_id) if mn_id is not None else None
        if client is None or not client.relay or msg.op != 2:
            log.debug("DHCP reply from a server for no known client (xid %#x)", msg.xid)
            return
        kind = msg.message_type
        grant = self.grants.get(client.mn_id)
        if (
            kind in (OFFER, ACK)
            and msg.yiaddr != IPv4Address(0)
            and (grant is None or grant.hoa != msg.yiaddr)
        ):
            # Figure 3 step 3: report the address in a PBU (once: the engine ignores the
            # same address again while it registers it or backs off after a refusal).
            plen = _prefix_len(msg.subnet_mask)
            self.engine.learn_ipv4(client.mn_id, msg.yiaddr, plen, now)
            if client.mn_id in self.denied:
                log.warning(
                    "LMA refused an address for %s: the server's %s of %s is not passed on",
                    _name(client.mn_id),
                    msg.name,
                    msg.yiaddr,
                )
            elif kind == OFFER:
                self._pass_to_client(client, msg)  # "meanwhile" (seed §3.1)
                return
            held = _Held(codec.without_relay_info(msg), kind, msg.yiaddr, msg.name)
            self._hold(client, held)
            return
        self._pass_to_client(client, msg)

    def _pass_to_client(self, client: _Client, msg: DhcpMessage) -> None:
        self._out.append(DhcpSend(client.ifname, codec.without_relay_info(msg), BROADCAST))
        self._note(client.mn_id, msg.message_type)

    def _hold(self, client: _Client, held: _Held) -> None:
        client.held_reply = held  # until the PBA grants it (Figure 3, step 4)
        self._held_for[client.mn_id] = client

    def _pass_held(self, client: _Client, held: _Held) -> None:
        self._out.append(DhcpSend(client.ifname, held.data, BROADCAST))
        self._note(client.mn_id, held.kind)

    # --- MAG events -----------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.Ipv4Granted:
            e: ev.Ipv4Granted = event  # type: ignore[assignment]
            self.grants[e.mn_id] = Grant(
                e.hoa, e.prefix_len, e.default_router, e.lifetime_s, self.clock()
            )
            self.denied.discard(e.mn_id)
            self._release_held(e.mn_id)
            if self.kernel_relay:  # its ACK may pass in the kernel, unseen: not held open
                self._offered.pop(e.mn_id, None)
        elif kind is ev.TunnelNeeded:
            e2: ev.TunnelNeeded = event  # type: ignore[assignment]
            grant = self.grants.get(e2.mn_id)
            if grant is not None:  # a refresh: the lease may now run as long again
                self.grants[e2.mn_id] = Grant(
                    grant.hoa, grant.prefix_len, grant.router, e2.lifetime_s, self.clock()
                )
        elif kind is ev.Ipv4Denied:
            e3: ev.Ipv4Denied = event  # type: ignore[assignment]
            self.grants.pop(e3.mn_id, None)
            self._offered.pop(e3.mn_id, None)
            self.denied.add(e3.mn_id)
            client = self._clients.get(e3.mn_id)
            if client is not None:
                if client.held_reply is not None:
                    log.warning(
                        "LMA refused %s for %s (status %d): the server's %s is not passed on",
                        client.held_reply.yiaddr,
                        _name(e3.mn_id),
                        e3.status,
                        client.held_reply.name,
                    )
                client.held_reply = None
                client.waiting = None
        elif kind in (ev.BindingLost, ev.Deregistered):
            self.grants.pop(event.mn_id, None)  # type: ignore[union-attr]

    def holds_replies(self) -> bool:
        """True while some server's ACK waits here for its PBA."""
        held = self._held_for
        if held:  # a reply released, dropped or forgotten elsewhere leaves its entry
            self._held_for = held = {m: c for m, c in held.items() if c.held_reply is not None}
        return bool(held)

    def release_early(self, mn_id: bytes, hoa: bytes) -> bool:
        """A PBA accepting ``hoa`` for ``mn_id`` came in (read from its bytes by the
        daemon, `templates.accepted_ipv4`): the server's ACK of it, held here, goes on
        now, before the PBA's intake; the grant follows with `observe`."""
        client = self._held_for.get(mn_id)
        held = client.held_reply if client is not None else None
        if client is None or held is None or held.yiaddr.packed != hoa:
            return False
        del self._held_for[mn_id]
        client.held_reply = None
        self._pass_held(client, held)
        return True

    def _release_held(self, mn_id: bytes) -> None:
        client = self._clients.get(mn_id)
        grant = self.grants.get(mn_id)
        if client is None or grant is None:
            return
        if client.waiting is not None:
            waiting, client.waiting = client.waiting, None
            self._answer(client, waiting, grant)
        if client.held_reply is not None:
            held, client.held_reply = client.held_reply, None
            if held.yiaddr == grant.hoa:
                self._pass_held(client, held)

    def _forget(self, mn_id: bytes, keep_client: bool = True) -> None:
        self.grants.pop(mn_id, None)
        self._offered.pop(mn_id, None)
        client = self._clients.get(mn_id)
        if client is not None:
            client.waiting = client.held_reply = None
            if not keep_client:
                for xid in client.xids:
                    self._by_xid.pop(xid, None)
                client.xids.clear()


def _prefix_len(mask: IPv4Address | None) -> int:
    return bin(int(mask)).count("1") if mask is not None else 32


def _mask_len(mask: bytes | None) -> int:
    """`_prefix_len` of a subnet mask option's content, as `codec.peek` reads it."""
    return _prefix_len(IPv4Address(mask) if mask and len(mask) == 4 else None)


def _name(mn_id: bytes) -> str:
    return mn_id.decode("utf-8", "backslashreplace")
