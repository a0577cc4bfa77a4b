"""DhcpAgent, the MAG's DHCPv4 server and relay hook, driven by a real MagEngine and a real
LmaEngine talking in memory (``pump``), with client and server messages built by scapy and
the agent's output read back with ``codec.parse``.

Seed §3.1 Figure 2 (LMA allocation, minimal DHCP server on the MAG), the static flow of
§3.1, Figure 3 (external DHCP server behind the MAG's relay hook), RFC 2131 (message
semantics) and RFC 3046/3527 (relay agent information, link selection). The rig below
feeds the agent exactly as ``MagService`` does: ``attach`` before every client message but
RELEASE, ``detach`` after a RELEASE, and every MAG event handed to ``observe``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any

import pytest
from engine_helpers import (
    DHCP_PREFIX,
    DHCP_ROUTER,
    MAG1,
    MAG2,
    MN_DHCP,
    MN_DHCP2,
    MN_LMA,
    MN_LMA2,
    MN_STATIC,
    POOL_NET,
    POOL_ROUTER,
    STATIC_HOA,
    STATIC_ROUTER,
    T0,
    ZERO4,
    PumpResult,
    default_profiles,
    events,
    make_lma,
    make_mag,
    make_pools,
    of,
    pump,
)
from scapy.layers.dhcp import BOOTP, DHCP

from pmip_agent.core.events import (
    BindingLost,
    BindingUp,
    Deregistered,
    Event,
    Ipv4Denied,
    Ipv4Granted,
    RegistrationRejected,
)
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.mag import MagEngine
from pmip_agent.core.policy import Ipv4Mode, MnProfile
from pmip_agent.dhcp import codec
from pmip_agent.dhcp.agent import DhcpAgent, DhcpSend
from pmip_agent.dhcp.codec import ACK, NAK, OFFER, DhcpMessage
from pmip_agent.wire import Ipv4DefaultRouter, Ipv4HoaReply, Ipv4HoaRequest
from pmip_agent.wire.constants import Status

ACC = "acc1"
RELAY_ADDR = IPv4Address("198.51.100.1")
KEA = IPv4Address("198.51.100.2")
LEASE_S = 600
BROADCAST = ("255.255.255.255", 68)
MAC = {
    MN_LMA: bytes.fromhex("020000000101"),
    MN_LMA2: bytes.fromhex("020000000102"),
    MN_STATIC: bytes.fromhex("020000000103"),
    MN_DHCP: bytes.fromhex("020000000104"),
    MN_DHCP2: bytes.fromhex("020000000105"),
}
KEA_HOA = IPv4Address("10.20.0.50")  # inside the MN's authorized DHCP prefix 10.20.0.0/16
MASK_16 = IPv4Address("255.255.0.0")


# --- the rig: one LMA, one or two MAGs, each with its DhcpAgent --------------------------


@dataclass
class Site:
    name: str
    engine: MagEngine
    agent: DhcpAgent


@dataclass
class Rig:
    lma: LmaEngine
    now: float = T0
    sites: dict[str, Site] = field(default_factory=dict)
    mag_events: list[Event] = field(default_factory=list)
    # As the daemon: the relay's path from the bytes (forward, forward_reply) where it
    # applies, else the decoded message. False: from_client and from_server do it all.
    relay_first: bool = True

    def add_mag(self, name: str, coa: IPv6Address, **mag_settings: object) -> Site:
        engine = make_mag(coa=coa, **mag_settings)  # type: ignore[arg-type]
        agent = DhcpAgent(
            engine,
            node_name=name,
            lease_s=LEASE_S,
            servers=[KEA],
            relay_address=RELAY_ADDR,
            fallback_server_id=RELAY_ADDR,
            clock=lambda: self.now,
        )
        self.sites[name] = site = Site(name, engine, agent)
        return site

    def from_mn(self, mn_id: bytes, pkt: BOOTP, at: str = "mag1") -> list[DhcpSend]:
        """One client datagram, handled as MagService._on_dhcp does; returns what the agent
        wants sent at once, before any PBA (nothing is pumped here)."""
        site = self.sites[at]
        data = bytes(pkt)
        seen = codec.peek(data) if self.relay_first else None
        if seen is not None and site.agent.forward(ACC, mn_id, data, seen):
            out = site.agent.datagrams_to_send()
            assert site.engine.attach(mn_id, self.now, link_layer_id=seen.client_mac())
            return out
        msg = codec.parse(data)
        if msg.message_type == codec.RELEASE:
            site.agent.from_client(ACC, mn_id, msg, self.now)
            site.engine.detach(mn_id, self.now)
        else:
            assert site.engine.attach(mn_id, self.now, link_layer_id=codec.client_mac(msg))
            site.agent.from_client(ACC, mn_id, msg, self.now)
        return site.agent.datagrams_to_send()

    def from_server(self, data: bytes, at: str = "mag1") -> list[DhcpSend]:
        """One server datagram, handled as MagService._on_dhcp_server does."""
        site = self.sites[at]
        seen = codec.peek(data) if self.relay_first else None
        if seen is None or not site.agent.forward_reply(data, seen, self.now):
            site.agent.from_server(codec.parse(data), self.now)
        out = site.agent.datagrams_to_send()
        site.agent.report_offered(self.now)  # as MagService.flush, once the reply is out
        return out

    def pump(self, at: str = "mag1") -> tuple[PumpResult, list[DhcpSend]]:
        """Carry PBUs and PBAs between this MAG and the LMA, hand the MAG's events to the
        agent, and return what the agent then wants sent."""
        site = self.sites[at]
        result = pump(site.engine, self.lma, self.now)
        for event in result.mag_events:
            site.agent.observe(event)
        self.mag_events += result.mag_events
        return result, site.agent.datagrams_to_send()

    def exchange(self, mn_id: bytes, pkt: BOOTP, at: str = "mag1") -> list[DhcpSend]:
        """A client message and everything it sets off: the agent's output in order."""
        out = self.from_mn(mn_id, pkt, at)
        return out + self.pump(at)[1]

    def advance(self, until: float, *, lma_reachable: bool = True) -> list[DhcpSend]:
        """Fire the engines' timers in deadline order up to ``until``; with the LMA out of
        reach, the MAGs' PBUs are lost."""
        out: list[DhcpSend] = []
        for _ in range(10_000):
            engines: list[MagEngine | LmaEngine] = [s.engine for s in self.sites.values()]
            deadlines = [d for e in (*engines, self.lma) if (d := e.get_timer()) is not None]
            if not deadlines or min(deadlines) > until:
                break
            self.now = min(deadlines)
            self.lma.handle_timer(self.now)
            events(self.lma)
            for name, site in self.sites.items():
                site.engine.handle_timer(self.now)
                if lma_reachable:
                    out += self.pump(name)[1]
                else:
                    site.engine.datagrams_to_send()
                    for event in events(site.engine):
                        site.agent.observe(event)
                        self.mag_events.append(event)
                    out += site.agent.datagrams_to_send()
        else:
            raise AssertionError("timers never settled")
        self.now = until
        return out

    def later(self, seconds: float = 1.0) -> None:
        """Move time on (a new PBU needs a newer timestamp than the last one, RFC 5213 §5.5)."""
        self.advance(self.now + seconds)

    def attach_lma_mode(self, mn_id: bytes = MN_LMA, at: str = "mag1") -> DhcpMessage:
        """The whole Figure 2 exchange; returns the ACK."""
        [offer] = to_mn(self.exchange(mn_id, discover(mn_id), at))
        [ack] = to_mn(self.exchange(mn_id, selecting(mn_id, offer), at))
        assert ack.message_type == ACK
        return ack

    def attach_relayed(self, mn_id: bytes = MN_DHCP, hoa: IPv4Address = KEA_HOA) -> DhcpMessage:
        """The whole Figure 3 exchange with ``hoa`` offered by the server, the PBA in before
        the server's ACK; returns the ACK."""
        [relayed] = to_server(self.from_mn(mn_id, discover(mn_id)))
        [offer] = to_mn(self.from_server(server_reply(relayed, "offer", hoa)))
        [relayed] = to_server(self.from_mn(mn_id, selecting(mn_id, offer)))
        assert self.pump()[1] == []
        [ack] = to_mn(self.from_server(server_reply(relayed, "ack", hoa)))
        assert ack.message_type == ACK and ack.yiaddr == hoa
        return ack


RELAY_WAYS = ("relay-first", "decoded")
_relay_way = {"first": True}


@pytest.fixture(autouse=True, params=RELAY_WAYS)
def relay_way(request: pytest.FixtureRequest) -> str:
    """Every test here runs both ways: as the daemon does (the relay's bytes first), and
    through from_client/from_server alone. What the MN and the servers see must agree."""
    _relay_way["first"] = request.param == "relay-first"
    return str(request.param)


def rig(lma: LmaEngine | None = None, **mag_settings: object) -> Rig:
    r = Rig(make_lma() if lma is None else lma, relay_first=_relay_way["first"])
    r.add_mag("mag1", MAG1, **mag_settings)
    return r


# --- messages -------------------------------------------------------------------------


_xid = iter(range(0x1000, 0x10000))


def client_msg(
    mn_id: bytes,
    kind: str,
    *,
    ciaddr: IPv4Address = ZERO4,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    hops: int = 0,
    xid: int | None = None,
) -> BOOTP:
    mac = MAC[mn_id]
    options: list[object] = [("message-type", kind), ("client_id", b"\x01" + mac)]
    if requested is not None:
        options.append(("requested_addr", str(requested)))
    if server_id is not None:
        options.append(("server_id", str(server_id)))
    options += [("param_req_list", [1, 3, 51, 54]), "end"]
    return BOOTP(
        op=1,
        xid=next(_xid) if xid is None else xid,
        flags=0x8000,
        hops=hops,
        ciaddr=str(ciaddr),
        chaddr=mac + bytes(10),
    ) / DHCP(options=options)


def discover(mn_id: bytes, **kw: object) -> BOOTP:
    return client_msg(mn_id, "discover", **kw)  # type: ignore[arg-type]


def selecting(mn_id: bytes, offer: DhcpMessage) -> BOOTP:
    """RFC 2131 §4.3.2 SELECTING: server identifier and requested address from the OFFER."""
    return client_msg(
        mn_id, "request", requested=offer.yiaddr, server_id=offer.server_id, xid=offer.xid
    )


def init_reboot(mn_id: bytes, address: IPv4Address) -> BOOTP:
    """RFC 2131 §4.3.2 INIT-REBOOT: requested address, no server identifier, ciaddr 0."""
    return client_msg(mn_id, "request", requested=address)


def renew(mn_id: bytes, address: IPv4Address) -> BOOTP:
    """RFC 2131 §4.3.2 RENEWING: ciaddr set, neither server identifier nor requested address."""
    return client_msg(mn_id, "request", ciaddr=address)


def server_reply(
    relayed: DhcpMessage,
    kind: str,
    yiaddr: IPv4Address,
    *,
    echo_relay_info: bool = True,
    mask: IPv4Address = MASK_16,
) -> bytes:
    """What a DHCP server (Kea) answers to a relayed message: to giaddr, with option 82
    echoed (RFC 3046 §2.2)."""
    request = BOOTP(relayed.raw)
    options: list[object] = [("message-type", kind), ("server_id", str(KEA))]
    if kind in ("offer", "ack") and yiaddr != ZERO4:
        options += [("lease_time", 4000), ("subnet_mask", str(mask))]
    if kind != "nak":
        options.append(("router", str(DHCP_ROUTER)))
    if echo_relay_info and relayed.relay_agent_info is not None:
        options.append(("relay_agent_information", relayed.relay_agent_info))
    options.append("end")
    return bytes(
        BOOTP(
            op=2,
            xid=request.xid,
            flags=request.flags,
            hops=request.hops,
            ciaddr=request.ciaddr,
            yiaddr=str(yiaddr),
            giaddr=request.giaddr,
            chaddr=request.chaddr,
        )
        / DHCP(options=options)
    )


def to_mn(out: list[DhcpSend]) -> list[DhcpMessage]:
    """The agent's messages to MNs, parsed; each must go to the access link, broadcast."""
    msgs = []
    for send in out:
        assert send.ifname == ACC and send.dest == BROADCAST, send
        msgs.append(codec.parse(send.data))
    return msgs


def to_server(out: list[DhcpSend]) -> list[DhcpMessage]:
    msgs = []
    for send in out:
        assert send.ifname is None and send.dest == (str(KEA), 67), send
        msgs.append(codec.parse(send.data))
    return msgs


def scapy_options(msg: DhcpMessage) -> dict[str, object]:
    pkt = BOOTP(msg.raw)
    return {o[0]: o[1] for o in pkt[DHCP].options if isinstance(o, tuple)}


def mask(prefix_len: int) -> IPv4Address:
    return IPv4Network(f"0.0.0.0/{prefix_len}").netmask


# --- Figure 2: LMA allocation, the MAG as a minimal DHCP server -------------------------


def test_discover_is_answered_only_after_the_pba() -> None:
    """Seed §3.1 Figure 2, steps 1-5: the DISCOVER sets off a PBU with IPv4 HoA 0.0.0.0
    (RFC 5844 §3.2.3.1); no OFFER leaves before the PBA is processed. The OFFER then
    carries yiaddr = the HoA the PBA granted, a subnet mask from its prefix length and the
    router option from the PBA's default router (RFC 2132 §3.3, §3.5), and its server
    identifier (RFC 2131 §4.3.1, Table 3). The lease is at most lease_s and at most the
    binding lifetime; T1 < T2 < lease (RFC 2131 §4.4.5)."""
    r = rig()
    disc = discover(MN_LMA)
    assert r.from_mn(MN_LMA, disc) == []  # step 1: nothing to the MN yet
    result, out = r.pump()
    [pbu] = result.pbus
    assert pbu.find(Ipv4HoaRequest) == Ipv4HoaRequest(ZERO4, 0)  # step 2
    [pba] = result.pbas
    reply = pba.find(Ipv4HoaReply)  # step 3
    assert reply is not None and reply.status == 0
    hoa, plen = reply.address, reply.prefix_len
    router = pba.find(Ipv4DefaultRouter)
    assert router is not None and router.address == POOL_ROUTER
    assert hoa in POOL_NET and plen == POOL_NET.prefixlen
    [granted] = of(result.mag_events, Ipv4Granted)
    [offer] = to_mn(out)  # step 5
    assert offer.message_type == OFFER and offer.op == 2
    assert offer.xid == disc.xid and offer.chaddr == MAC[MN_LMA]
    assert offer.yiaddr == hoa
    assert offer.subnet_mask == mask(plen) == IPv4Address("255.255.255.0")
    assert offer.router == POOL_ROUTER
    assert offer.server_id == POOL_ROUTER
    assert offer.lease_time is not None
    assert 0 < offer.lease_time <= LEASE_S
    assert offer.lease_time <= granted.lifetime_s
    opts = scapy_options(offer)
    assert 0 < opts["renewal_time"] < opts["rebinding_time"] < offer.lease_time  # type: ignore[operator]


def test_offer_and_ack_are_filled_in_and_equal_the_replies_built_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Figure 2: the OFFER at the PBA and the ACK at the REQUEST are build_reply's
    skeleton with the request's fields and the grant's values patched in
    (codec.ReplyTemplate): build_reply is not called on the MN's path. Each is octet
    for octet the reply build_reply makes for that request and grant."""
    r = rig()
    disc = discover(MN_LMA)
    assert r.from_mn(MN_LMA, disc) == []
    calls: list[int] = []
    full_build = codec.build_reply

    def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return full_build(*args, **kwargs)

    monkeypatch.setattr(codec, "build_reply", counted)
    _result, out = r.pump()
    [sent] = [o for o in out if o.ifname is not None]
    offer = codec.parse(sent.data)
    site = r.sites["mag1"]
    grant = site.agent.grants[MN_LMA]
    assert grant.router is not None and offer.lease_time is not None
    req = selecting(MN_LMA, offer)
    [ack_sent] = [o for o in r.exchange(MN_LMA, req) if o.ifname is not None]
    assert calls == []  # filled in, not built
    ack_out = ack_sent.data
    ack = codec.parse(ack_out)
    assert (ack.message_type, ack.yiaddr) == (ACK, grant.hoa) and ack.lease_time is not None
    for sent_bytes, asked, kind, lease_s in (
        (sent.data, disc, OFFER, offer.lease_time),
        (ack_out, req, ACK, ack.lease_time),
    ):
        expected = full_build(
            codec.parse(bytes(asked)),
            kind,
            grant.router,
            grant.hoa,
            lease_s=lease_s,
            prefix_len=grant.prefix_len,
            router=grant.router,
        )
        assert sent_bytes == expected


def test_an_exchange_the_kernel_answered_gets_no_offer_from_the_agent() -> None:
    """The daemon's kernel relay sent the OFFER with the PBA and ACKed the MN's REQUEST
    (relay.c, send_offer and send_ack); the REQUEST's copy reaches the daemon before the
    PBA's: the agent counts the exchange answered, and sends no OFFER of its own for the
    DISCOVER that was waiting, while the grant still comes through."""
    r = rig()
    assert r.from_mn(MN_LMA, discover(MN_LMA)) == []
    agent = r.sites["mag1"].agent
    agent.acked_in_kernel(MN_LMA)
    _result, out = r.pump()
    assert [o for o in out if o.ifname is not None] == []
    assert agent.grants[MN_LMA].hoa in POOL_NET
    assert not agent.exchange_open(r.now, 1.0)


def test_request_selecting_our_offer_is_acked() -> None:
    """RFC 2131 §4.3.2 SELECTING: a REQUEST with our server identifier and the offered
    address gets an ACK with that address, mask, router and lease (Figure 2, steps 6-7).
    No second PBU: the address is already anchored."""
    r = rig()
    [offer] = to_mn(r.exchange(MN_LMA, discover(MN_LMA)))
    req = selecting(MN_LMA, offer)
    out = r.from_mn(MN_LMA, req)
    [ack] = to_mn(out)
    assert ack.message_type == ACK and ack.xid == req.xid
    assert ack.yiaddr == offer.yiaddr
    assert ack.subnet_mask == offer.subnet_mask and ack.router == POOL_ROUTER
    assert ack.server_id == offer.server_id
    assert ack.lease_time is not None and 0 < ack.lease_time <= LEASE_S
    result, later = r.pump()
    assert result.pbus == [] and later == []


def test_request_for_another_address_gets_nak() -> None:
    """RFC 2131 §4.3.2 (INIT-REBOOT, and SELECTING our offer with another address): a
    REQUEST for an address that is not this MN's HoA gets a NAK with yiaddr 0 and no lease
    time (Table 3)."""
    r = rig()
    ack = r.attach_lma_mode()
    other = IPv4Address(int(ack.yiaddr) + 7)
    for req in (
        init_reboot(MN_LMA, other),
        client_msg(MN_LMA, "request", requested=other, server_id=ack.server_id),
    ):
        [nak] = to_mn(r.exchange(MN_LMA, req))
        assert nak.message_type == NAK and nak.xid == req.xid
        assert nak.yiaddr == ZERO4 and nak.ciaddr == ZERO4
        assert nak.lease_time is None and nak.server_id == ack.server_id
    [again] = to_mn(r.exchange(MN_LMA, init_reboot(MN_LMA, ack.yiaddr)))
    assert again.message_type == ACK and again.yiaddr == ack.yiaddr


def test_request_selecting_another_server_is_ignored() -> None:
    """RFC 2131 §4.3.2: a REQUEST whose server identifier names another server tells us
    the client took that server's offer: no answer at all, and our grant stays."""
    r = rig()
    [offer] = to_mn(r.exchange(MN_LMA, discover(MN_LMA)))
    req = client_msg(MN_LMA, "request", requested=offer.yiaddr, server_id=IPv4Address("192.0.2.99"))
    assert r.exchange(MN_LMA, req) == []
    assert r.sites["mag1"].agent.grants[MN_LMA].hoa == offer.yiaddr
    [ack] = to_mn(r.exchange(MN_LMA, selecting(MN_LMA, offer)))
    assert ack.message_type == ACK


def test_renew_acked_while_binding_valid_and_not_after_binding_lost() -> None:
    """RFC 2131 §4.3.2 RENEWING (ciaddr set) is ACKed while the binding is valid, with
    ciaddr and yiaddr = the HoA. Once the MAG loses the binding (the LMA stops answering
    its refreshes, RFC 5213 §6.9.4), a RENEW gets no answer: the MN must not be told it
    may keep an address that is no longer anchored (seed §3.4)."""
    r = rig()
    hoa = r.attach_lma_mode().yiaddr
    r.later(100)
    [ack] = to_mn(r.exchange(MN_LMA, renew(MN_LMA, hoa)))
    assert ack.message_type == ACK and ack.yiaddr == hoa and ack.ciaddr == hoa
    assert ack.lease_time is not None and 0 < ack.lease_time <= LEASE_S
    expires = r.sites["mag1"].engine.entry(MN_LMA).expires_at  # type: ignore[union-attr]
    assert r.advance(expires + 1, lma_reachable=False) == []
    assert of(r.mag_events, BindingLost)
    assert r.from_mn(MN_LMA, renew(MN_LMA, hoa)) == []


def test_inform_is_acked_without_yiaddr_or_lease() -> None:
    """RFC 2131 §4.3.5: a DHCPINFORM from an MN that holds its HoA gets an ACK with
    yiaddr 0 and no lease time, carrying the configuration (mask, router). Before any
    grant there is nothing to tell, so no answer."""
    r = rig()
    hoa = IPv4Address("10.1.0.2")
    assert r.exchange(MN_LMA, client_msg(MN_LMA, "inform", ciaddr=hoa)) == []
    granted = r.attach_lma_mode().yiaddr
    inform = client_msg(MN_LMA, "inform", ciaddr=granted)
    [ack] = to_mn(r.exchange(MN_LMA, inform))
    assert ack.message_type == ACK and ack.xid == inform.xid
    assert ack.yiaddr == ZERO4 and ack.ciaddr == granted
    assert ack.lease_time is None
    assert ack.router == POOL_ROUTER and ack.subnet_mask == mask(24)


def test_release_forgets_the_grant_and_deregisters() -> None:
    """RFC 2131 §4.3.4 and the issue ("RELEASE deregisters"): no answer to a RELEASE; the
    agent forgets the grant (a RENEW is no longer answered), the MAG sends a
    de-registration (lifetime 0, RFC 5213 §6.9.1.4). A new DISCOVER within the LMA's
    MinDelayBeforeBCEDelete (RFC 5213 §5.3.5) gets an OFFER of the same HoA."""
    r = rig()
    ack = r.attach_lma_mode()
    hoa = ack.yiaddr
    r.later()
    release = client_msg(MN_LMA, "release", ciaddr=hoa, server_id=ack.server_id)
    assert r.from_mn(MN_LMA, release) == []
    assert MN_LMA not in r.sites["mag1"].agent.grants
    result, out = r.pump()
    assert out == [] and [p.lifetime for p in result.pbus] == [0]
    assert of(result.mag_events, Deregistered)
    assert r.lma.binding(MN_LMA).state == "deregistered"  # type: ignore[union-attr]
    r.later()
    # A RENEW after the RELEASE is not answered (it re-attaches the MN, as any client
    # message but RELEASE does in MagService, and is not queued for the new grant).
    assert r.exchange(MN_LMA, renew(MN_LMA, hoa)) == []
    assert r.sites["mag1"].agent.grants[MN_LMA].hoa == hoa
    [offer] = to_mn(r.exchange(MN_LMA, discover(MN_LMA)))
    assert offer.message_type == OFFER and offer.yiaddr == hoa


def test_decline_forgets_the_grant() -> None:
    """RFC 2131 §4.3.3: a DECLINE gets no answer, and the agent no longer hands out the
    declined address: an INIT-REBOOT or RENEW for it is not ACKed."""
    r = rig()
    ack = r.attach_lma_mode()
    hoa = ack.yiaddr
    decline = client_msg(MN_LMA, "decline", requested=hoa, server_id=ack.server_id)
    assert r.exchange(MN_LMA, decline) == []
    assert MN_LMA not in r.sites["mag1"].agent.grants
    assert r.exchange(MN_LMA, renew(MN_LMA, hoa)) == []
    assert all(m.message_type != ACK for m in to_mn(r.exchange(MN_LMA, init_reboot(MN_LMA, hoa))))


def test_discover_after_decline_gets_an_offer() -> None:
    """RFC 2131 §3.1 step 5 and §4.4.1: after a DECLINE the client restarts with a
    DISCOVER, which a server must answer (§4.3.1). Here it is retransmitted for a minute
    (§4.1: 4, 8, 16... s) while the MAG keeps its binding refreshed."""
    r = rig()
    ack = r.attach_lma_mode()
    decline = client_msg(MN_LMA, "decline", requested=ack.yiaddr, server_id=ack.server_id)
    assert r.exchange(MN_LMA, decline) == []
    offers: list[DhcpMessage] = []
    for wait in (10, 4, 8, 16, 32):
        r.later(wait)
        offers += [
            m for m in to_mn(r.exchange(MN_LMA, discover(MN_LMA))) if m.message_type == OFFER
        ]
    assert offers, "the MN's DISCOVERs after its DECLINE were never answered"


@pytest.mark.parametrize("why", ["pool-exhausted", "not-authorized"])
def test_mn_denied_ipv4_gets_no_offer(why: str) -> None:
    """Seed §3.4 / RFC 5844 §3.2.3.2: when the LMA refuses the MN's IPv4 HoA (its pool is
    exhausted, status 130; or the MN is not authorized for IPv4 at the LMA, status 154),
    the MAG reports Ipv4Denied and the agent answers neither the waiting DISCOVER nor
    later ones, nor an INIT-REBOOT (RFC 2131 §4.3.2: a server with no lease stays silent)."""
    if why == "pool-exhausted":
        lma = make_lma(pools=make_pools("10.1.0.0/30"))  # one address beside the router
        status = Status.INSUFFICIENT_RESOURCES
    else:
        profiles = default_profiles()
        profiles[MN_LMA2] = MnProfile(MN_LMA2, Ipv4Mode.NONE)
        lma = make_lma(profiles)
        status = Status.NOT_AUTHORIZED_FOR_IPV4_MOBILITY_SERVICE
    r = rig(lma)
    r.attach_lma_mode(MN_LMA)
    r.later()
    assert r.from_mn(MN_LMA2, discover(MN_LMA2)) == []
    result, out = r.pump()
    assert out == []
    assert [e.status for e in of(result.mag_events, RegistrationRejected)] == [status]
    assert of(result.mag_events, Ipv4Denied)
    assert MN_LMA2 in r.sites["mag1"].agent.denied
    assert r.exchange(MN_LMA2, discover(MN_LMA2)) == []
    assert r.exchange(MN_LMA2, init_reboot(MN_LMA2, IPv4Address("10.1.0.3"))) == []
    assert r.advance(r.now + 5) == []


def test_static_mode_serves_the_profile_address() -> None:
    """Seed §3.1 static assignment: the MAG registers the profile's HoA (the PBU's IPv4
    HoA Request carries it, with its prefix length) and serves exactly it by DHCP, with
    the profile's mask and default router."""
    r = rig()
    disc = discover(MN_STATIC)
    assert r.from_mn(MN_STATIC, disc) == []
    result, out = r.pump()
    assert result.pbus[0].find(Ipv4HoaRequest) == Ipv4HoaRequest(STATIC_HOA, 24)
    [offer] = to_mn(out)
    assert offer.message_type == OFFER and offer.yiaddr == STATIC_HOA
    assert offer.subnet_mask == mask(24) and offer.router == STATIC_ROUTER
    assert offer.server_id == STATIC_ROUTER
    [ack] = to_mn(r.exchange(MN_STATIC, selecting(MN_STATIC, offer)))
    assert ack.message_type == ACK and ack.yiaddr == STATIC_HOA
    [nak] = to_mn(r.exchange(MN_STATIC, init_reboot(MN_STATIC, IPv4Address("10.9.0.6"))))
    assert nak.message_type == NAK


def test_roaming_mn_init_reboot_is_acked_by_the_new_mag() -> None:
    """Issue "Roaming" (seed §3: the same IPv4 address across access links): MAG2 learns
    the HoA from its PBA (the LMA moves the binding, RFC 5213 §5.3.4) and ACKs the MN's
    INIT-REBOOT for that address (RFC 2131 §4.3.2)."""
    r = rig()
    hoa = r.attach_lma_mode(MN_LMA, "mag1").yiaddr
    r.add_mag("mag2", MAG2)
    r.later(5)
    req = init_reboot(MN_LMA, hoa)
    assert r.from_mn(MN_LMA, req, "mag2") == []
    result, out = r.pump("mag2")
    assert [e.change for e in of(result.lma_events, BindingUp)] == ["moved"]
    [ack] = to_mn(out)
    assert ack.message_type == ACK and ack.yiaddr == hoa and ack.xid == req.xid


# --- lease time against the binding ------------------------------------------------------


def test_renew_after_binding_refreshes_gets_the_full_lease() -> None:
    """Issue flow 2 ("the lease is no longer than the binding lifetime") read the other
    way: the MAG refreshes the binding at 80 % of its lifetime (RFC 5213 §6.9.1.3), so a
    RENEW hours later, on a binding that is valid for most of its lifetime, deserves the
    configured lease again, not the 60 s floor (RFC 2131 §4.3.2: the server extends)."""
    r = rig()
    hoa = r.attach_lma_mode().yiaddr
    r.advance(T0 + 2 * 3600 + 100)
    entry = r.sites["mag1"].engine.entry(MN_LMA)
    assert entry is not None and entry.registered and entry.expires_at - r.now > LEASE_S
    [ack] = to_mn(r.exchange(MN_LMA, renew(MN_LMA, hoa)))
    assert ack.message_type == ACK
    assert ack.lease_time == LEASE_S


def test_lease_never_exceeds_a_short_binding_lifetime() -> None:
    """Issue flow 2: "The lease is no longer than the binding lifetime." With the LMA
    granting 40 s (MaxLifetime), the OFFER's lease must be at most 40 s."""
    r = rig(make_lma(max_lifetime_s=40))
    [offer] = to_mn(r.exchange(MN_LMA, discover(MN_LMA)))
    [granted] = of(r.mag_events, Ipv4Granted)
    assert granted.lifetime_s == 40
    assert offer.lease_time is not None and offer.lease_time <= 40


# --- Figure 3: the relay hook to an external DHCP server ---------------------------------


def test_relayed_discover_carries_giaddr_hops_and_option_82() -> None:
    """RFC 2131 §4.1 / RFC 1542 §4.1.1: the relay sets giaddr to its own address and
    increments hops. RFC 3046 §2.0: option 82 is added as the last option before End,
    with circuit-id (§2.1: "<node>:<access interface>"), remote-id (§2.2: the MN-ID) and
    RFC 3527 link-selection = the MN's IPv4 home network prefix (seed §3.1 "home network
    prefix hint"). Nothing is registered yet: the MAG waits for the server's address."""
    r = rig()
    disc = discover(MN_DHCP, hops=2)
    out = r.from_mn(MN_DHCP, disc)
    [relayed] = to_server(out)
    assert relayed.op == 1 and relayed.message_type == codec.DISCOVER
    assert relayed.xid == disc.xid and relayed.chaddr == MAC[MN_DHCP]
    assert relayed.client_id == b"\x01" + MAC[MN_DHCP]
    assert relayed.giaddr == RELAY_ADDR
    assert relayed.raw[3] == 3  # hops
    circuit = b"mag1:acc1"
    expected = (
        bytes([1, len(circuit)])
        + circuit
        + bytes([2, len(MN_DHCP)])
        + MN_DHCP
        + bytes([5, 4, 10, 20, 0, 0])
    )
    assert relayed.relay_agent_info == expected
    assert DHCP_PREFIX.network_address.packed == bytes([10, 20, 0, 0])
    options = BOOTP(relayed.raw)[DHCP].options
    while options and options[-1] == "pad":  # padding to the BOOTP minimum follows End
        options.pop()
    assert options[-1] == "end" and options[-2] == ("relay_agent_information", expected)
    result, _ = r.pump()
    assert result.pbus == []  # dhcp-server mode: no PBU before the server has answered


def test_forward_relays_from_the_bytes_ahead_of_the_attach() -> None:
    """MagService._on_dhcp relays a dhcp-server mode MN's DISCOVER from its bytes, before
    the MN is attached (so before any registration work), and never decodes it; the
    server's OFFER goes on to the MN the same way (`forward_reply`), and `report_offered`
    then reports its address in a PBU, as from_server would (seed Figure 3, step 3)."""
    r = rig()
    site = r.sites["mag1"]
    data = bytes(discover(MN_DHCP))
    seen = codec.peek(data)
    assert seen is not None and site.agent.forward(ACC, MN_DHCP, data, seen)
    [relayed] = to_server(site.agent.datagrams_to_send())
    assert relayed.xid == seen.xid and relayed.giaddr == RELAY_ADDR
    assert site.engine.entry(MN_DHCP) is None  # not attached yet
    assert site.engine.attach(MN_DHCP, r.now, link_layer_id=seen.client_mac())
    reply = server_reply(relayed, "offer", KEA_HOA)
    seen = codec.peek(reply)
    assert seen is not None and site.agent.forward_reply(reply, seen, r.now)
    [offer] = to_mn(site.agent.datagrams_to_send())
    assert offer.yiaddr == KEA_HOA and offer.relay_agent_info is None
    assert r.pump()[0].pbus == []  # the OFFER goes out before the PBU is even built
    site.agent.report_offered(r.now)
    [pbu] = r.pump()[0].pbus
    assert pbu.find(Ipv4HoaRequest) == Ipv4HoaRequest(KEA_HOA, 16)
    # The MN's REQUEST (SELECTING) and the server's ACK, once the LMA granted the address.
    req = bytes(selecting(MN_DHCP, offer))
    seen = codec.peek(req)
    assert seen is not None and site.agent.forward(ACC, MN_DHCP, req, seen)
    [relayed] = to_server(site.agent.datagrams_to_send())
    ack = server_reply(relayed, "ack", KEA_HOA)
    seen = codec.peek(ack)
    assert seen is not None and site.agent.forward_reply(ack, seen, r.now)
    [got] = to_mn(site.agent.datagrams_to_send())
    assert got.message_type == ACK and got.yiaddr == KEA_HOA


def test_kernel_copies_are_noted_not_relayed() -> None:
    """With the kernel relay (kernel_relay.py) the daemon reads marked copies of what the
    kernel passed on already: the DISCOVER's only notes the client, the OFFER's reports
    the address for the PBU; neither sends anything. The grant closes the exchange (the
    kernel may pass the ACK on unseen), so the held-back work need not wait it out."""
    r = rig()
    site = r.sites["mag1"]
    agent = site.agent
    agent.kernel_relay = True
    data = bytes(discover(MN_DHCP))
    seen = codec.peek(data)
    assert seen is not None and agent.forward(ACC, MN_DHCP, data, seen, copy=True)
    assert agent.datagrams_to_send() == []
    assert site.engine.attach(MN_DHCP, r.now, link_layer_id=seen.client_mac())
    relayed = codec.parse(
        codec.relayed(codec.parse(data), RELAY_ADDR, agent.relay_info(ACC, MN_DHCP))
    )
    reply = server_reply(relayed, "offer", KEA_HOA)
    seen = codec.peek(reply)
    assert seen is not None and agent.forward_reply(reply, seen, r.now, copy=True)
    assert agent.datagrams_to_send() == []
    assert agent.exchange_open(r.now, 0.05)
    agent.report_offered(r.now)
    result, out = r.pump()
    [pbu] = result.pbus
    assert pbu.find(Ipv4HoaRequest) == Ipv4HoaRequest(KEA_HOA, 16)
    [granted] = of(result.mag_events, Ipv4Granted)
    assert granted.hoa == KEA_HOA and out == []
    assert not agent.exchange_open(r.now, 0.05)


def test_forward_leaves_other_messages_to_the_decoded_way() -> None:
    """Not taken from the bytes: an lma-mode MN's messages (the MAG answers those
    itself), a RELEASE or DECLINE (from_client forgets the MN first), an INIT-REBOOT
    REQUEST (from_client registers the address it asks for first), an MN without an LMA
    to serve it (the attach refuses it, so nothing may reach the server), any message when
    no relay address is configured (from_client logs why); and the server's ACK or OFFER
    for an MN the LMA refused (from_server logs it)."""
    r = rig()
    agent = r.sites["mag1"].agent

    def fwd(mn_id: bytes, pkt: BOOTP, on: DhcpAgent = agent) -> bool:
        data = bytes(pkt)
        seen = codec.peek(data)
        assert seen is not None
        return on.forward(ACC, mn_id, data, seen)

    assert not fwd(MN_LMA, discover(MN_LMA))
    for kind in ("release", "decline"):
        assert not fwd(MN_DHCP, client_msg(MN_DHCP, kind, ciaddr=KEA_HOA))
    assert not fwd(MN_DHCP, init_reboot(MN_DHCP, KEA_HOA))
    assert fwd(MN_DHCP, renew(MN_DHCP, KEA_HOA))  # ciaddr set: not INIT-REBOOT
    assert not fwd(b"nobody@example.net", discover(MN_DHCP))
    agent.datagrams_to_send()
    lonely = rig().sites["mag1"].agent
    lonely.engine.settings = replace(lonely.engine.settings, lmas={})
    assert not fwd(MN_DHCP, discover(MN_DHCP), lonely)
    lonely.relay_address = None
    assert not fwd(MN_DHCP, discover(MN_DHCP), lonely)
    assert lonely.datagrams_to_send() == []

    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    agent.denied.add(MN_DHCP)
    ack = server_reply(relayed, "ack", KEA_HOA)
    seen = codec.peek(ack)
    assert seen is not None and not agent.forward_reply(ack, seen, r.now)
    offer = server_reply(relayed, "offer", KEA_HOA)
    seen = codec.peek(offer)
    assert seen is not None and not agent.forward_reply(offer, seen, r.now)
    assert agent.datagrams_to_send() == []


def test_server_offer_goes_on_while_the_pbu_does_and_the_ack_waits_for_the_pba() -> None:
    """Seed §3.1 and Figure 3: the MAG passes the server's OFFER on to the MN (step 6)
    "meanwhile" it reports the offered address in a PBU (step 3, IPv4 HoA Request with the
    server's mask length). The OFFER loses option 82 (RFC 3046 §2.1.1: the relay removes
    it). The MN's REQUEST is relayed (step 7); the server's ACK (step 8) is held until the
    PBA anchors the address (step 4), then passed on; later ACKs go on at once."""
    r = rig()
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    [offer] = to_mn(r.from_server(server_reply(relayed, "offer", KEA_HOA)))
    assert offer.message_type == OFFER and offer.yiaddr == KEA_HOA
    assert offer.relay_agent_info is None
    assert b"mag1:acc1" not in offer.raw
    assert offer.server_id == KEA and offer.subnet_mask == MASK_16
    assert offer.giaddr == RELAY_ADDR  # RFC 2131 §4.1: giaddr left as the server set it
    engine = r.sites["mag1"].engine
    assert engine.entry(MN_DHCP).state == "registering"  # type: ignore[union-attr]
    [relayed_req] = to_server(r.from_mn(MN_DHCP, selecting(MN_DHCP, offer)))
    assert relayed_req.message_type == codec.REQUEST and relayed_req.giaddr == RELAY_ADDR
    assert relayed_req.relay_agent_info == relayed.relay_agent_info
    assert r.from_server(server_reply(relayed_req, "ack", KEA_HOA)) == []  # no PBA yet
    result, out = r.pump()
    assert [p.find(Ipv4HoaRequest) for p in result.pbus] == [Ipv4HoaRequest(KEA_HOA, 16)]
    binding = r.lma.binding(MN_DHCP)
    assert binding is not None and binding.ipv4_hoa == KEA_HOA
    assert binding.ipv4_source == "dhcp-server"
    [ack] = to_mn(out)
    assert ack.message_type == ACK and ack.yiaddr == KEA_HOA and ack.relay_agent_info is None
    r.later()
    [renew] = to_server(r.from_mn(MN_DHCP, client_msg(MN_DHCP, "request", ciaddr=KEA_HOA)))
    [ack] = to_mn(r.from_server(server_reply(renew, "ack", KEA_HOA)))
    assert ack.message_type == ACK and ack.yiaddr == KEA_HOA
    result, later = r.pump()
    assert result.pbus == [] and later == []


def test_an_ack_before_its_pba_is_held_from_its_bytes() -> None:
    """The server's ACK that comes before the PBA (Figure 3: step 8 before step 4) is held
    from its bytes, not decoded (`forward_reply` takes it), and once the PBA grants its
    address the MN gets what from_server would have held: the ACK without option 82."""
    r = rig()
    agent = r.sites["mag1"].agent
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    [offer] = to_mn(r.from_server(server_reply(relayed, "offer", KEA_HOA)))
    [relayed_req] = to_server(r.from_mn(MN_DHCP, selecting(MN_DHCP, offer)))
    ack = server_reply(relayed_req, "ack", KEA_HOA)
    seen = codec.peek(ack)
    assert seen is not None and agent.forward_reply(ack, seen, r.now)
    assert agent.datagrams_to_send() == [] and agent.holds_replies()
    result, out = r.pump()
    assert result.pbas
    [sent] = out
    assert sent.data == codec.without_relay_info(codec.parse(ack))
    assert not agent.holds_replies()


def test_a_held_ack_goes_on_early_when_the_pba_accepts_its_address() -> None:
    """MagService._on_mh reads an accepting PBA from its bytes and calls release_early:
    the server's ACK held for it goes on at once, and not again with the PBA's intake. An
    address the PBA does not accept, or an MN with nothing held, releases nothing."""
    r = rig()
    agent = r.sites["mag1"].agent
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    [offer] = to_mn(r.from_server(server_reply(relayed, "offer", KEA_HOA)))
    [relayed_req] = to_server(r.from_mn(MN_DHCP, selecting(MN_DHCP, offer)))
    assert r.from_server(server_reply(relayed_req, "ack", KEA_HOA)) == []  # held
    assert agent.holds_replies()
    assert not agent.release_early(MN_DHCP, IPv4Address("10.99.0.1").packed)
    assert not agent.release_early(MN_LMA, KEA_HOA.packed)
    assert agent.datagrams_to_send() == []
    assert agent.release_early(MN_DHCP, KEA_HOA.packed)
    [ack] = to_mn(agent.datagrams_to_send())
    assert ack.message_type == ACK and ack.yiaddr == KEA_HOA
    assert not agent.holds_replies()
    result, out = r.pump()  # the PBA's intake: the grant, and no second ACK
    assert result.pbas and out == []
    assert agent.grants[MN_DHCP].hoa == KEA_HOA


def test_server_reply_without_option_82_is_matched_by_xid() -> None:
    """RFC 3046 §2.2 says servers echo option 82; one that does not is still matched to
    its MN through the transaction id of the message it answers (RFC 2131 §4.1)."""
    r = rig()
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    reply = server_reply(relayed, "offer", KEA_HOA, echo_relay_info=False)
    [offer] = to_mn(r.from_server(reply))
    assert offer.yiaddr == KEA_HOA and offer.xid == relayed.xid
    result, _ = r.pump()
    assert [p.find(Ipv4HoaRequest) for p in result.pbus] == [Ipv4HoaRequest(KEA_HOA, 16)]


@pytest.mark.parametrize("pba_first", [True, False], ids=["pba-before-ack", "ack-before-pba"])
def test_lma_refusal_means_the_ack_is_never_passed_on(pba_first: bool) -> None:
    """Seed §6 and §3.4: the LMA anchors a DHCP-assigned HoA only inside the MN's
    authorized prefix (RFC 5844 status 171 outside it). The first OFFER went on while the
    PBU was out, but the server's ACK is never passed on, whether it comes before or after
    the refusal, so the MN never configures the address. Once refused, neither the MN's
    next DISCOVER nor the MAG's later retry (after retry_after_failure_s) lets an OFFER or
    an ACK for that address through."""
    r = rig()
    outside = IPv4Address("10.99.0.7")
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    [offer] = to_mn(r.from_server(server_reply(relayed, "offer", outside)))
    [relayed] = to_server(r.from_mn(MN_DHCP, selecting(MN_DHCP, offer)))
    if pba_first:
        result, out = r.pump()
        assert r.from_server(server_reply(relayed, "ack", outside)) == []
    else:
        assert r.from_server(server_reply(relayed, "ack", outside)) == []
        result, out = r.pump()
    assert out == []
    assert [p.status for p in result.pbas] == [Status.NOT_AUTHORIZED_FOR_IPV4_HOME_ADDRESS]
    assert of(result.mag_events, Ipv4Denied)
    assert r.lma.binding(MN_DHCP) is None
    r.later(4)
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    assert r.from_server(server_reply(relayed, "offer", outside)) == []
    assert r.advance(r.now + 100) == []
    assert of(r.mag_events, Ipv4Denied) and not of(r.mag_events, Ipv4Granted)
    assert r.lma.binding(MN_DHCP) is None


def test_relayed_nak_is_passed_on_at_once() -> None:
    """Issue flow 3 ("NAK ... handled"): a server's NAK is relayed to the MN straight
    away, without option 82 (RFC 2131 §4.3.2, RFC 3046 §2.1.1)."""
    r = rig()
    ack = r.attach_relayed()
    r.later()
    wrong = IPv4Address("10.20.9.9")
    req = client_msg(MN_DHCP, "request", requested=wrong, server_id=ack.server_id)
    [relayed] = to_server(r.from_mn(MN_DHCP, req))
    [nak] = to_mn(r.from_server(server_reply(relayed, "nak", ZERO4)))
    assert nak.message_type == NAK and nak.xid == req.xid
    assert nak.relay_agent_info is None and nak.yiaddr == ZERO4


def test_init_reboot_for_another_mns_address_keeps_the_binding() -> None:
    """RFC 2131 §4.3.2: whether an INIT-REBOOT's address is right is the server's call
    (here: NAK). An MN that holds a granted HoA at this MAG and asks, in INIT-REBOOT, for
    an address the LMA has anchored for another MN must not lose its binding over it
    (seed §3.4: only the LMA's answer about *its* address decides its IPv4 service; RFC
    5844 rejects the whole PBU, so IPv6 would go too): no BindingLost, the LMA keeps both
    MNs' addresses, and the MN's next DISCOVER/OFFER round works."""
    r = rig()
    r.attach_relayed(MN_DHCP, KEA_HOA)
    r.later()
    other = IPv4Address("10.20.0.51")
    r.attach_relayed(MN_DHCP2, other)
    r.later()
    [relayed] = to_server(r.from_mn(MN_DHCP, init_reboot(MN_DHCP, other)))
    result, _ = r.pump()
    [nak] = to_mn(r.from_server(server_reply(relayed, "nak", ZERO4)))
    assert nak.message_type == NAK
    assert not of(result.mag_events, BindingLost), result.pbas
    entry = r.sites["mag1"].engine.entry(MN_DHCP)
    assert entry is not None and entry.registered and entry.ipv4_hoa == KEA_HOA
    assert r.lma.binding(MN_DHCP).ipv4_hoa == KEA_HOA  # type: ignore[union-attr]
    assert r.lma.binding(MN_DHCP2).ipv4_hoa == other  # type: ignore[union-attr]


def test_relayed_release_is_forwarded_and_forgets_the_grant() -> None:
    """RFC 2131 §4.4.6 / issue flow 3: the MN's RELEASE goes on to the server (with
    option 82), the agent forgets the grant and the MAG de-registers."""
    r = rig()
    ack = r.attach_relayed()
    r.later()
    release = client_msg(MN_DHCP, "release", ciaddr=KEA_HOA, server_id=ack.server_id)
    [relayed] = to_server(r.from_mn(MN_DHCP, release))
    assert relayed.message_type == codec.RELEASE and relayed.relay_agent_info is not None
    assert MN_DHCP not in r.sites["mag1"].agent.grants
    result, out = r.pump()
    assert out == [] and [p.lifetime for p in result.pbus] == [0]


def test_relayed_inform_ack_is_passed_on_and_keeps_the_binding() -> None:
    """RFC 2131 §4.3.5: the server answers a relayed DHCPINFORM with an ACK whose yiaddr
    is 0 (no address is assigned). The relay must pass it on, and must not mistake it for
    an address assignment: no PBU, and the MN's binding and grant stay."""
    r = rig()
    r.attach_relayed()
    r.later()
    inform = client_msg(MN_DHCP, "inform", ciaddr=KEA_HOA)
    [relayed] = to_server(r.from_mn(MN_DHCP, inform))
    out = r.from_server(server_reply(relayed, "ack", ZERO4))
    result, later = r.pump()
    assert result.pbus == [], [p.find(Ipv4HoaRequest) for p in result.pbus]
    assert not of(result.mag_events, BindingLost)
    [ack] = to_mn(out + later)
    assert ack.message_type == ACK and ack.yiaddr == ZERO4 and ack.ciaddr == KEA_HOA
    assert r.sites["mag1"].agent.grants[MN_DHCP].hoa == KEA_HOA


def test_init_reboot_of_roaming_mn_registers_before_relaying() -> None:
    """Issue "Roaming", flow 3: at MAG2 the MN's INIT-REBOOT for its address (RFC 2131
    §4.3.2) makes the MAG report that address in a PBU (learn_ipv4) as it relays the
    REQUEST, so the binding has moved by the time the server's ACK comes back; the ACK
    is then passed on at once and the lease continues with no new address."""
    r = rig()
    r.attach_relayed()
    r.add_mag("mag2", MAG2)
    r.later(5)
    mag2 = r.sites["mag2"]
    req = init_reboot(MN_DHCP, KEA_HOA)
    out = r.from_mn(MN_DHCP, req, "mag2")
    entry = mag2.engine.entry(MN_DHCP)
    assert entry is not None and entry.state == "registering"  # the PBU is already queued
    [relayed] = to_server(out)
    assert relayed.xid == req.xid and relayed.requested_ip == KEA_HOA
    assert relayed.relay_agent_info is not None and b"mag2:acc1" in relayed.relay_agent_info
    result, nothing = r.pump("mag2")
    assert nothing == []
    assert [p.find(Ipv4HoaRequest) for p in result.pbus] == [Ipv4HoaRequest(KEA_HOA, 16)]
    assert [e.change for e in of(result.lma_events, BindingUp)] == ["moved"]
    assert [e.hoa for e in of(result.mag_events, Ipv4Granted)] == [KEA_HOA]
    [ack] = to_mn(r.from_server(server_reply(relayed, "ack", KEA_HOA), "mag2"))
    assert ack.message_type == ACK and ack.yiaddr == KEA_HOA and ack.xid == req.xid
    result, _ = r.pump("mag2")
    assert result.pbus == []


def test_exchange_open_from_offer_to_ack() -> None:
    """What lets the daemon hold back commits and tunnel setup for an MN about to REQUEST
    (seed Figures 2 and 3: tunnel setup runs in parallel with OFFER/REQUEST/ACK): open
    from the OFFER to the ACK, in both flows, and never longer than ``within``."""
    r = rig()
    agent = r.sites["mag1"].agent
    assert not agent.exchange_open(r.now, 0.05)
    [offer] = to_mn(r.exchange(MN_LMA, discover(MN_LMA)))
    assert agent.exchange_open(r.now, 0.05)
    assert not agent.exchange_open(r.now + 0.06, 0.05)  # the bound: a lost REQUEST
    [offer] = to_mn(r.exchange(MN_LMA, discover(MN_LMA)))  # retransmitted DISCOVER
    assert agent.exchange_open(r.now, 0.05)
    [ack] = to_mn(r.exchange(MN_LMA, selecting(MN_LMA, offer)))
    assert ack.message_type == ACK and not agent.exchange_open(r.now, 0.05)
    [relayed] = to_server(r.from_mn(MN_DHCP, discover(MN_DHCP)))
    assert not agent.exchange_open(r.now, 0.05)  # the server has not offered yet
    [offer] = to_mn(r.from_server(server_reply(relayed, "offer", KEA_HOA)))
    assert agent.exchange_open(r.now, 0.05)
    [relayed] = to_server(r.from_mn(MN_DHCP, selecting(MN_DHCP, offer)))
    assert agent.exchange_open(r.now, 0.05)
    assert r.pump()[1] == []
    [ack] = to_mn(r.from_server(server_reply(relayed, "ack", KEA_HOA)))
    assert ack.message_type == ACK and not agent.exchange_open(r.now, 0.05)
