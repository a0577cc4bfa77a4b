"""The mobile access gateway: attachments and PBAs in, PBUs and events out. No sockets, no
clock.

Rules: RFC 5213 §6.9 (PBU construction, retransmission, refresh, de-registration), seed
§3.4 and §4.4 (IPv4 home address, IPv4 transport and NAT), RFC 5844 §3.2.3 and §4.2.2.
Time is UNIX seconds, passed in as ``now``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from ..wire import ipv6 as ipv6_frame
from ..wire.constants import (
    PMIP6_CNTL_PORT,
    BuFlags,
    HandoffIndicator,
    Ipv4Status,
    Status,
    WireProfile,
)
from ..wire.errors import WireError
from ..wire.messages import BindingAck, BindingUpdate, decode, encode, mh_checksum
from ..wire.options import (
    AccessTechTypeOption,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4CareOfAddress,
    Ipv4DefaultRouter,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    MnLinkLayerId,
    NatDetection,
    Option,
    Timestamp,
    timestamp_value,
)
from .bindings import BulEntry
from .events import (
    BindingLost,
    Deregistered,
    Encapsulation,
    Event,
    Ipv4Denied,
    Ipv4Granted,
    MessageDropped,
    Peer,
    Prefix6,
    RegistrationRejected,
    Transmit,
    TunnelNeeded,
)
from .policy import Ipv4Mode, LmaPeerSettings, MagSettings, MnProfile
from .templates import IPV4_REQUEST_TYPES, AckShape, AckShapeBook, PbuTemplate, option_offsets

ZERO4 = IPv4Address(0)
ZERO6 = IPv6Address(0)
NO_KEEPALIVE = 0xFFFF_FFFF

# Binding update list states.
WAITING_ADDRESS = "waiting-address"  # dhcp-server mode: no HoA learned from DHCP yet
REGISTERING = "registering"  # a PBU is outstanding
REGISTERED = "registered"
DEREGISTERING = "deregistering"
BACKOFF = "backoff"  # failed or rejected: register again later


@dataclass(frozen=True, slots=True)
class BulView:
    """A snapshot of one binding update list entry."""

    mn_id: bytes
    lma: str
    state: str
    registered: bool
    ipv4_hoa: IPv4Address | None
    ipv4_prefix_len: int
    ipv4_default_router: IPv4Address | None
    hnps: tuple[Prefix6, ...]
    encapsulation: str | None
    nat: bool
    lifetime_s: int
    expires_at: float
    link_layer_id: bytes | None


MAX_PBU_TEMPLATES = 256  # distinct PBU keys kept; beyond that, new ones are encoded in full


class _PbuOrder(NamedTuple):
    """A PBU to build: what it says is fixed when it is queued."""

    mn_id: bytes
    lma_name: str
    sequence: int
    lifetime_units: int
    handoff: int
    now: float
    hnps: tuple[Prefix6, ...]  # the HNP options; none for an IPv4-only MN
    link_layer_id: bytes | None
    hoa: IPv4Address | None
    prefix_len: int


class PbaFacts(NamedTuple):
    """What the MAG acts on in a PBA: from the decoder (`_facts`), or read from the bytes
    of a PBA in a known shape (`MagEngine._read`)."""

    mn_id: bytes | None
    status: int
    sequence: int
    lifetime: int  # in units of 4 s
    att: int | None  # the Access Technology Type option's value
    ipv4_reply: tuple[int, int, IPv4Address] | None  # status, prefix length, address
    router: IPv4Address | None
    hnps: tuple[Prefix6, ...]
    natd: NatDetection | None


def _facts(pba: BindingAck) -> PbaFacts:
    mnid = pba.find(MnIdentifier)
    att = pba.find(AccessTechTypeOption)
    reply = pba.find(Ipv4HoaReply) or pba.find(Ipv4AddressAck)
    router = pba.find(Ipv4DefaultRouter)
    return PbaFacts(
        mnid.identifier if mnid is not None else None,
        pba.status,
        pba.sequence,
        pba.lifetime,
        att.value if att is not None else None,
        (reply.status, reply.prefix_len, reply.address) if reply is not None else None,
        router.address if router is not None else None,
        tuple((o.prefix, o.prefix_len) for o in pba.find_all(HomeNetworkPrefix)),
        pba.find(NatDetection),
    )


class MagEngine:
    def __init__(self, settings: MagSettings, sequence_start: int = 0) -> None:
        self.settings = settings
        self._bul: dict[bytes, BulEntry] = {}
        self._sequence = sequence_start & 0xFFFF
        self._timers: list[tuple[float, int, bytes]] = []
        self._out: list[_PbuOrder] = []
        self._events: deque[Event] = deque()
        self.retransmissions = 0  # PBUs sent again after a timeout, for metrics
        # LMAs the MAG must not signal to now (e.g. no IPsec SA with them), and the
        # registrations parked until they are released: mn_id -> handoff indicator.
        self._held: set[str] = set()
        self._parked: dict[bytes, int] = {}
        # PBU templates by key (see _from_template): (template or None, checked yet).
        self._templates: dict[tuple[object, ...], tuple[PbuTemplate | None, bool]] = {}
        self._templates_for = settings
        self.pbu_templates = True  # False: every PBU through the option encoders (tests)
        # Accepting PBAs by shape (templates.AckShape): the next one in a shape is read
        # from its bytes, not decoded. ``pbas_read`` counts those, for tests and metrics.
        self._ack_shapes = AckShapeBook()
        self.pba_shapes = True  # False: every PBA through the decoder (tests)
        self.pbas_read = 0

    # --- inputs: the access link ----------------------------------------------------

    def attach(
        self,
        mn_id: bytes,
        now: float,
        *,
        link_layer_id: bytes | None = None,
        handoff: int = HandoffIndicator.NEW_INTERFACE,
        ipv4_hint: IPv4Address | None = None,
        hnp_hints: tuple[Prefix6, ...] = (),
    ) -> bool:
        """An MN appeared on an access link. False if its profile is unknown (no service).
        ``ipv4_hint``/``hnp_hints`` are addresses it held before (a MAG restart, or a
        roaming MN's DHCP request); they are asked for again."""
        if not self.can_serve(mn_id):
            return False
        profile = self.settings.profiles[mn_id]
        entry = self._bul.get(mn_id)
        if entry is not None and entry.state != DEREGISTERING:
            return True  # already being served: attach is idempotent
        requested, plen = self._initial_request(profile, ipv4_hint)
        entry = BulEntry(
            mn_id,
            profile.lma or next(iter(self.settings.lmas)),
            WAITING_ADDRESS,
            requested,
            plen,
            link_layer_id,
            handoff,
            hnps=hnp_hints if profile.ipv6 else (),
        )
        self._bul[mn_id] = entry
        if profile.ipv4_mode is Ipv4Mode.DHCP_SERVER and requested is None:
            return True  # registration starts once the DHCP server's answer is known
        self._start(entry, now)
        return True

    def can_serve(self, mn_id: bytes) -> bool:
        """True when ``mn_id`` has a profile and an LMA to register it with."""
        profile = self.settings.profiles.get(mn_id)
        return profile is not None and self.lma_for(profile) is not None

    def learn_ipv4(self, mn_id: bytes, hoa: IPv4Address, prefix_len: int, now: float) -> None:
        """The DHCP relay saw the server assign ``hoa``: register it (seed Figure 3, step 3)."""
        entry = self._bul.get(mn_id)
        if entry is None or entry.state == DEREGISTERING:
            return
        if entry.state == WAITING_ADDRESS or entry.requested_hoa != hoa:
            entry.requested_hoa, entry.requested_prefix_len = hoa, prefix_len
            self._start(entry, now)

    def arm_ipv4(
        self, mn_id: bytes, prefix_len: int, now: float
    ) -> tuple[int, bytes, int, IPv6Address] | None:
        """The PBU that `learn_ipv4` would send for ``mn_id``, which waits for its DHCP
        server's address (seed Figure 3), built now with 0.0.0.0 in that address's place:
        for a sender that puts in the address of the server's OFFER as it passes, ahead of
        this engine (the MAG's kernel relay, dhcp/offload.py). Its sequence number is used
        up, and nothing else changes: `armed_sent` says it went; if that never comes,
        `learn_ipv4` registers the MN as usual, with another number.

        Returns (sequence number, the PBU as an IPv6 packet with its Mobility Header
        checksum computed over 0.0.0.0, the address's offset in it, the LMA), or None when
        no such PBU can go: not waiting for an address, signalling held, or an LMA over
        IPv4 (its PBUs go in UDP)."""
        entry = self._bul.get(mn_id)
        settings = self.settings
        lma = settings.lmas.get(entry.lma_name) if entry is not None else None
        profile = settings.profiles.get(mn_id)
        if (
            entry is None
            or lma is None
            or profile is None
            or entry.state != WAITING_ADDRESS
            or lma.over_ipv4
            or entry.lma_name in self._held
        ):
            return None
        self._sequence = (self._sequence + 1) & 0xFFFF
        order = _PbuOrder(
            mn_id,
            entry.lma_name,
            self._sequence,
            max(1, settings.lifetime_s // 4),
            entry.handoff,
            now,
            (entry.hnps or ((ZERO6, 0),)) if profile.ipv6 else (),
            entry.link_layer_id,
            ZERO4,
            prefix_len,
        )
        mh = (self._from_template(order) if self.pbu_templates else None) or (
            self._encode_in_full(order)
        )
        offsets = option_offsets(mh)
        found = [offsets[t][0] for t in IPV4_REQUEST_TYPES if t in offsets]
        if not found:  # cannot happen: the order asks for an address
            return None
        hoa_at = found[0] + 4  # past type, length and the prefix-length word
        coa = settings.proxy_coa
        mh = mh[:4] + mh_checksum(mh, coa, lma.lmaa).to_bytes(2, "big") + mh[6:]
        packet = ipv6_frame.wrap(mh, coa, lma.lmaa)
        return self._sequence, packet, len(packet) - len(mh) + hoa_at, lma.lmaa

    def armed_sent(
        self, mn_id: bytes, sequence: int, hoa: IPv4Address, prefix_len: int, armed_at: float
    ) -> bool:
        """The PBU `arm_ipv4` built at ``armed_at`` went out with ``hoa`` in it: ``mn_id``
        registers it from here as if `learn_ipv4` had sent it. False when the entry no
        longer waits for an address (the PBU's PBA is then no one's)."""
        entry = self._bul.get(mn_id)
        if entry is None or entry.state != WAITING_ADDRESS:
            return False
        entry.requested_hoa, entry.requested_prefix_len = hoa, prefix_len
        entry.state = REGISTERING
        entry.outstanding = {sequence}
        entry.transmissions = 1
        entry.timeout_s = self.settings.initial_bindack_timeout_s
        entry.latest_sequence, entry.latest_sent_at = sequence, armed_at
        self._arm(entry, armed_at + entry.timeout_s)
        return True

    def detach(self, mn_id: bytes, now: float) -> None:
        """The MN left: de-register (RFC 5213 §6.9.1.4) and forget it."""
        entry = self._bul.get(mn_id)
        if entry is None or entry.state == DEREGISTERING:
            return
        if not entry.registered and entry.state != REGISTERING:
            self._remove(entry)
            return
        if entry.lma_name in self._held:  # cannot tell the LMA: its binding will lapse
            self._remove(entry)
            return
        entry.state = DEREGISTERING
        entry.outstanding = set()
        self._transmit(entry, 0, HandoffIndicator.UNKNOWN, now)
        self._arm(entry, now + self.settings.initial_bindack_timeout_s)

    def hold(self, lma_name: str) -> None:
        """Stop signalling to ``lma_name`` until :meth:`release`. Registrations due
        meanwhile are parked: no PBU, no retransmission, no expiry, so the binding update
        list is kept as it is (the LMA keeps its bindings for their lifetime)."""
        self._held.add(lma_name)

    def release(self, lma_name: str, now: float) -> None:
        """Signalling to ``lma_name`` may go again: parked registrations go at once."""
        self._held.discard(lma_name)
        for mn_id, handoff in list(self._parked.items()):
            entry = self._bul.get(mn_id)
            if entry is None or entry.lma_name != lma_name:
                continue
            del self._parked[mn_id]
            entry.transmissions = 0
            entry.timeout_s = self.settings.initial_bindack_timeout_s
            self._send_registration(entry, handoff, now)

    def held(self, lma_name: str) -> bool:
        return lma_name in self._held

    # --- inputs: the network --------------------------------------------------------

    def receive_ipv6(self, mh: bytes, src: IPv6Address, now: float) -> None:
        """``mh`` from a raw socket that checked its checksum (IPV6_CHECKSUM)."""
        peer = Peer(src)
        shape = self._ack_shapes.find(mh) if self.pba_shapes else None
        if shape is not None and shape.trusted:
            self.pbas_read += 1
            self._on_pba(self._read(shape, mh), peer, now)
            return
        try:
            msg = decode(mh)
        except WireError as exc:
            self._events.append(MessageDropped(peer, exc.reason, exc.detail))
            return
        facts = self._facts_of(msg, peer)
        if facts is None:
            return
        if shape is not None:  # the second PBA in this shape: its reading must agree
            shape.trusted = self._read(shape, mh) == facts
            if not shape.trusted:
                self._ack_shapes.forget(shape)
        elif self.pba_shapes and facts.status == Status.ACCEPTED and facts.lifetime > 0:
            self._ack_shapes.learn(mh, facts)
        self._on_pba(facts, peer, now)

    def receive_udp(self, payload: bytes, src: IPv4Address, port: int, now: float) -> None:
        try:
            if payload and payload[0] >> 4 == 6:
                src6, dst6, mh = ipv6_frame.unwrap(payload)
                msg = decode(mh, src6, dst6)
            else:  # RFC 5844 bare-MH framing
                src6 = IPv6Address(b"\0" * 10 + b"\xff\xff" + src.packed)
                msg = decode(payload)
        except WireError as exc:
            self._events.append(MessageDropped(Peer(ZERO6, src, port), exc.reason, exc.detail))
            return
        peer = Peer(src6, src, port)
        facts = self._facts_of(msg, peer)
        if facts is not None:
            self._on_pba(facts, peer, now)

    def _facts_of(self, msg: object, peer: Peer) -> PbaFacts | None:
        """The facts of a decoded message; None, dropped, for anything but a PBA."""
        if type(msg) is not BindingAck:
            self._events.append(MessageDropped(peer, "unexpected-message", type(msg).__name__))
            return None
        return _facts(msg)

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, generation, mn_id = heapq.heappop(timers)
            entry = self._bul.get(mn_id)
            if entry is not None and entry.timer_generation == generation:
                self._on_deadline(entry, now)

    # --- outputs --------------------------------------------------------------------

    def datagrams_to_send(self) -> list[Transmit]:
        out, self._out = self._out, []
        return [self._encoded(order) for order in out]

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The next deadline, or None. Superseded heap entries are dropped on the way."""
        timers = self._timers
        while timers:
            deadline, generation, mn_id = timers[0]
            entry = self._bul.get(mn_id)
            if entry is not None and entry.timer_generation == generation:
                return deadline
            heapq.heappop(timers)
        return None

    @property
    def sequence(self) -> int:
        return self._sequence

    def __len__(self) -> int:
        return len(self._bul)

    def entries(self) -> Iterator[BulView]:
        return (self._view(e) for e in self._bul.values())

    def entry(self, mn_id: bytes) -> BulView | None:
        e = self._bul.get(mn_id)
        return self._view(e) if e else None

    def reporting_ipv4(self, mn_id: bytes) -> tuple[int, IPv4Address, IPv6Address] | None:
        """The sequence number of the PBU now out for ``mn_id``, the IPv4 address it
        reports and the LMA it goes to, while it registers one: what its PBA, from that
        LMA, will accept or not."""
        e = self._bul.get(mn_id)
        lma = self.settings.lmas.get(e.lma_name) if e is not None else None
        if e is None or lma is None or e.state != REGISTERING or not e.requested_hoa:
            return None
        return e.latest_sequence, e.requested_hoa, lma.lmaa

    # --- registration ---------------------------------------------------------------

    def lma_for(self, profile: MnProfile) -> LmaPeerSettings | None:
        """The LMA that anchors ``profile``'s MN (None: none configured by that name)."""
        lmas = self.settings.lmas
        if profile.lma is None:
            return next(iter(lmas.values()), None)
        return lmas.get(profile.lma)

    def _initial_request(
        self, profile: MnProfile, hint: IPv4Address | None
    ) -> tuple[IPv4Address | None, int]:
        mode = profile.ipv4_mode
        if mode is Ipv4Mode.NONE:
            return None, 0
        if mode is Ipv4Mode.STATIC:
            return profile.ipv4_hoa, profile.ipv4_prefix_len  # seed §3.1: from the profile
        if hint is not None:
            return hint, 32
        if mode is Ipv4Mode.LMA:
            # 0.0.0.0 asks the LMA to allocate; RFC 5555 §3.1.1 forbids prefix length 0.
            return ZERO4, 32 if self.settings.wire_profile is WireProfile.DRAFT else 0
        return None, 0  # dhcp-server: wait for the DHCP server

    def _start(self, entry: BulEntry, now: float) -> None:
        entry.state = REGISTERING
        entry.outstanding = set()
        entry.transmissions = 0
        entry.timeout_s = self.settings.initial_bindack_timeout_s
        self._send_registration(entry, entry.handoff, now)

    def _send_registration(self, entry: BulEntry, handoff: int, now: float) -> None:
        if entry.lma_name in self._held:
            self._park(entry, handoff)
            return
        lifetime_units = max(1, self.settings.lifetime_s // 4)
        self._transmit(entry, lifetime_units, handoff, now)
        if entry.transmissions:
            self.retransmissions += 1
        entry.transmissions += 1
        deadline = now + entry.timeout_s
        if entry.registered:
            deadline = min(deadline, entry.expires_at)
        self._arm(entry, deadline)

    def _transmit(self, entry: BulEntry, lifetime_units: int, handoff: int, now: float) -> None:
        """Queue a PBU with the entry's request as it stands now; `datagrams_to_send`
        builds and encodes it. So a state change costs only its bookkeeping, and the
        daemon can answer the MN (a DHCP OFFER, say) before the PBU is put together."""
        profile = self.settings.profiles.get(entry.mn_id)
        self._sequence = (self._sequence + 1) & 0xFFFF
        entry.outstanding.add(self._sequence)
        entry.latest_sequence, entry.latest_sent_at = self._sequence, now
        self._out.append(
            _PbuOrder(
                entry.mn_id,
                entry.lma_name,
                self._sequence,
                lifetime_units,
                handoff,
                now,
                (entry.hnps or ((ZERO6, 0),)) if profile is not None and profile.ipv6 else (),
                entry.link_layer_id,
                entry.requested_hoa,
                entry.requested_prefix_len,
            )
        )

    def _encoded(self, order: _PbuOrder) -> Transmit:
        settings = self.settings
        lma = settings.lmas[order.lma_name]
        mh = self._from_template(order) if self.pbu_templates else None
        if mh is None:
            mh = self._encode_in_full(order)
        if lma.over_ipv4:
            coa = settings.proxy_coa
            mh = mh[:4] + mh_checksum(mh, coa, lma.lmaa).to_bytes(2, "big") + mh[6:]
            data = ipv6_frame.wrap(mh, coa, lma.lmaa)
            return Transmit(data, Peer(lma.lmaa, lma.ipv4_lmaa, PMIP6_CNTL_PORT))
        return Transmit(mh, Peer(lma.lmaa))

    def _from_template(self, order: _PbuOrder) -> bytes | None:
        """The PBU from the template of its key (its options and everything in them but
        the per-MN values; see templates.PbuTemplate), learning the template from the
        full encoder the first time and checking it against the full encoder the second
        time. None: encode it in full."""
        if self._templates_for is not self.settings:  # reconfigured: start again
            self._templates.clear()
            self._templates_for = self.settings
        hnps = order.hnps
        if len(hnps) > 1:
            return None
        hoa = order.hoa
        key = (
            order.lma_name,
            order.lifetime_units,
            order.handoff,
            len(order.mn_id),
            hnps[0][1] if hnps else -1,
            len(order.link_layer_id) if order.link_layer_id else 0,
            order.prefix_len if hoa is not None else -1,
        )
        known = self._templates.get(key)
        if known is None:
            if len(self._templates) < MAX_PBU_TEMPLATES:
                mh = self._encode_in_full(order)
                self._templates[key] = (PbuTemplate.derive(mh), False)
                return mh
            return None
        template, trusted = known
        if template is None:
            return None
        mh = template.build(
            order.sequence.to_bytes(2, "big"),
            order.mn_id,
            hnps[0][0].packed if hnps else None,
            order.link_layer_id,
            timestamp_value(order.now).to_bytes(8, "big") if self.settings.timestamps else None,
            hoa.packed if hoa is not None else None,
        )
        if not trusted:
            full = self._encode_in_full(order)
            self._templates[key] = (template if mh == full else None, True)
            return full
        return mh

    def _encode_in_full(self, order: _PbuOrder) -> bytes:
        """The PBU through the option encoders, without a checksum."""
        settings = self.settings
        lma = settings.lmas[order.lma_name]
        opts: list[Option] = [MnIdentifier(order.mn_id)]
        opts += [HomeNetworkPrefix(p, n) for p, n in order.hnps]
        opts.append(HandoffIndicatorOption(order.handoff))
        opts.append(AccessTechTypeOption(settings.access_tech))
        if order.link_layer_id:
            opts.append(MnLinkLayerId(order.link_layer_id))
        if settings.timestamps:
            opts.append(Timestamp.from_seconds(order.now))  # retransmissions carry the latest
        if order.hoa is not None:
            if settings.wire_profile is WireProfile.DRAFT:
                opts.append(Ipv4HomeAddress(order.hoa, order.prefix_len))
            else:
                opts.append(Ipv4HoaRequest(order.hoa, order.prefix_len))
        flags = int(BuFlags.A | BuFlags.P)
        if lma.over_ipv4:
            if settings.ipv4_proxy_coa is not None:  # seed §4.3: lets the LMA detect a NAT
                opts.append(Ipv4CareOfAddress(settings.ipv4_proxy_coa))
            if lma.force_udp:
                flags |= int(BuFlags.F)
        return encode(BindingUpdate(order.sequence, order.lifetime_units, flags, tuple(opts)))

    def _park(self, entry: BulEntry, handoff: int) -> None:
        entry.state = REGISTERING
        self._parked[entry.mn_id] = handoff
        entry.timer_generation += 1  # no deadline, so no retransmission and no expiry

    def _on_deadline(self, entry: BulEntry, now: float) -> None:
        settings = self.settings
        if entry.state != DEREGISTERING and entry.lma_name in self._held:
            self._park(entry, _handoff_again(entry))
        elif entry.state == DEREGISTERING:
            self._remove(entry)  # §6.9.1.4: no answer within the timeout is fine
        elif entry.state == REGISTERED:
            entry.state = REGISTERING
            entry.outstanding = set()
            entry.transmissions = 0
            entry.timeout_s = settings.initial_bindack_timeout_s
            self._send_registration(entry, HandoffIndicator.NO_HANDOFF, now)
        elif entry.state == BACKOFF:
            self._start(entry, now)
        elif entry.state == REGISTERING:
            if entry.registered and now >= entry.expires_at:
                self._lose(entry, "expired")
            if entry.transmissions >= settings.max_transmissions:
                if entry.registered:
                    self._lose(entry, "no-response")
                entry.state = BACKOFF
                self._arm(entry, now + settings.retry_after_failure_s)
                return
            entry.timeout_s = min(entry.timeout_s * 2, settings.max_bindack_timeout_s)
            self._send_registration(entry, _handoff_again(entry), now)

    def _read(self, shape: AckShape, mh: bytes) -> PbaFacts:
        """The facts of ``mh``, a PBA in ``shape``: the shape's, with this PBA's values of
        the masked fields the MAG acts on (sequence number, MN-ID, HNP, IPv4 address)."""
        known = shape.facts
        hnps, reply = known.hnps, known.ipv4_reply
        if shape.hnp:
            hnps = ((IPv6Address(mh[shape.hnp : shape.hnp + 16]), hnps[0][1]),)
        if shape.v4:
            reply = (reply[0], reply[1], IPv4Address(mh[shape.v4 : shape.v4 + 4]))
        return PbaFacts(
            mh[15 : shape.mn_id_end],
            known.status,
            int.from_bytes(mh[8:10], "big"),
            known.lifetime,
            known.att,
            reply,
            known.router,
            hnps,
            known.natd,
        )

    def _on_pba(self, msg: PbaFacts, peer: Peer, now: float) -> None:
        entry = self._bul.get(msg.mn_id) if msg.mn_id is not None else None
        if entry is None:
            self._events.append(MessageDropped(peer, "pba-unknown-mn"))
            return
        lma = self.settings.lmas[entry.lma_name]
        if peer.v6 != lma.lmaa and (peer.v4 is None or peer.v4 != lma.ipv4_lmaa):
            self._events.append(MessageDropped(peer, "pba-from-unknown-lma"))
            return
        if msg.status == Status.SEQUENCE_OUT_OF_WINDOW and entry.state == REGISTERING:
            # RFC 6275 §9.5.1: the PBA carries the last sequence the LMA accepted.
            if _after(msg.sequence, self._sequence):
                self._sequence = msg.sequence
            self._send_registration(entry, entry.handoff, now)
            return
        if msg.sequence not in entry.outstanding:
            self._events.append(MessageDropped(peer, "pba-unexpected-sequence"))
            return
        if msg.att is not None and msg.att != self.settings.access_tech:
            self._events.append(MessageDropped(peer, "pba-mismatched-options"))  # §6.9.1.2
            return
        accepted = msg.status == Status.ACCEPTED and msg.lifetime > 0
        if not accepted and entry.state == REGISTERING and msg.sequence != entry.latest_sequence:
            # A refusal of an earlier transmission while a later one is outstanding: that
            # one's answer decides. PBUs held up on the way (say, while the next hop's
            # neighbour entry resolves) reach the LMA together, and it refuses the stale
            # ones (156, timestamp mismatch) but accepts a fresh last one; taking the
            # first refusal would back off while the LMA holds the binding.
            entry.outstanding.discard(msg.sequence)
            self._events.append(MessageDropped(peer, "pba-superseded", f"status {msg.status}"))
            return
        settings = self.settings
        age = now - entry.latest_sent_at
        if (
            msg.status == Status.TIMESTAMP_MISMATCH
            and entry.state == REGISTERING
            and age > settings.timestamp_window_s
            and entry.transmissions < settings.max_transmissions
        ):
            # Refused for the time the latest PBU spent on its way rather than for the
            # clocks: one with a fresh timestamp, at once. Clocks that differ get that one
            # refused too, promptly, and the attempt then ends and backs off as usual.
            entry.outstanding.discard(msg.sequence)
            self._events.append(
                MessageDropped(peer, "pba-late", f"status 156 after {age:.3f} s: PBU sent again")
            )
            self._send_registration(entry, _handoff_again(entry), now)
            return
        entry.outstanding = set()
        if entry.state == DEREGISTERING:
            self._remove(entry)
        elif accepted:
            self._accepted(entry, msg, peer, now)
        else:
            self._rejected(entry, msg, now)

    def _accepted(self, entry: BulEntry, pba: PbaFacts, peer: Peer, now: float) -> None:
        settings = self.settings
        profile = settings.profiles[entry.mn_id]
        lma = settings.lmas[entry.lma_name]
        lifetime_s = pba.lifetime * 4
        hoa, plen, router, denied = self._ipv4_result(entry, profile, pba)
        hnps = pba.hnps
        natd = pba.natd
        nat = natd is not None and natd.refresh_time not in (0, NO_KEEPALIVE)
        if peer.v4 is None:
            encapsulation = Encapsulation.IPV6
        elif natd is not None and (natd.forced or nat):  # RFC 5844 §4.2.2, seed §4.4
            encapsulation = Encapsulation.IPV4_UDP
        else:
            encapsulation = Encapsulation.IPV4
        changed = (
            not entry.registered
            or hoa != entry.hoa
            or hnps != entry.hnps
            or encapsulation != entry.encapsulation
        )
        if denied is not None and (not entry.registered or entry.hoa is not None):  # once
            self._events.append(Ipv4Denied(entry.mn_id, denied))
        entry.registered, entry.state = True, REGISTERED
        entry.hnps, entry.hoa, entry.hoa_prefix_len, entry.default_router = hnps, hoa, plen, router
        entry.lifetime_s, entry.expires_at = lifetime_s, now + lifetime_s
        entry.nat, entry.encapsulation = nat, encapsulation
        entry.nat_refresh_s = natd.refresh_time if nat and natd is not None else 0
        entry.handoff = HandoffIndicator.NO_HANDOFF
        if hoa is not None:
            entry.requested_hoa, entry.requested_prefix_len = hoa, plen
        if changed:
            if hoa is not None:
                self._events.append(Ipv4Granted(entry.mn_id, hoa, plen, router, lifetime_s))
            self._events.append(
                TunnelNeeded(
                    entry.mn_id,
                    Peer(lma.lmaa, peer.v4, peer.port) if peer.v4 else Peer(lma.lmaa),
                    encapsulation,
                    nat,
                    hoa,
                    hnps,
                    lifetime_s,
                )
            )
        interval = lifetime_s * settings.refresh_fraction
        if nat:  # seed §4.4: re-send the PBU within every refresh time to keep the NAT open
            interval = min(interval, entry.nat_refresh_s * settings.nat_keepalive_fraction)
        self._arm(entry, now + max(interval, 1.0))

    def _ipv4_result(
        self, entry: BulEntry, profile: MnProfile, pba: PbaFacts
    ) -> tuple[IPv4Address | None, int, IPv4Address | None, int | None]:
        """(hoa, prefix length, router, denial status). A refused or inconsistent IPv4
        answer is never reported as granted (seed §3.4)."""
        if entry.requested_hoa is None:
            return None, 0, None, None
        reply = pba.ipv4_reply
        if reply is None:
            return None, 0, None, Ipv4Status.FAILURE_UNSPECIFIED
        status, prefix_len, granted = reply
        if status != Ipv4Status.SUCCESS:
            return None, 0, None, status
        if granted == ZERO4 or (
            profile.ipv4_mode is not Ipv4Mode.LMA and entry.requested_hoa not in (ZERO4, granted)
        ):
            return None, 0, None, Ipv4Status.INCORRECT_IPV4_HOME_ADDRESS
        return granted, prefix_len, pba.router, None

    def _rejected(self, entry: BulEntry, pba: PbaFacts, now: float) -> None:
        status = pba.status
        self._events.append(RegistrationRejected(entry.mn_id, status))
        if entry.requested_hoa is not None:
            reply = pba.ipv4_reply
            denial = reply[0] if reply is not None and reply[0] else status
            self._events.append(Ipv4Denied(entry.mn_id, denial))
        if entry.registered:
            self._lose(entry, f"rejected-{status}")
        profile = self.settings.profiles[entry.mn_id]
        if (
            status == Status.NOT_AUTHORIZED_FOR_IPV4_HOME_ADDRESS
            and profile.ipv4_mode is Ipv4Mode.LMA
        ):
            entry.requested_hoa = ZERO4  # RFC 5844 §3.2.3.2: let the LMA choose instead
        entry.state = BACKOFF
        self._arm(entry, now + self.settings.retry_after_failure_s)

    def _lose(self, entry: BulEntry, reason: str) -> None:
        entry.registered = False
        entry.hoa = None
        entry.encapsulation = None
        self._events.append(BindingLost(entry.mn_id, reason))

    def _remove(self, entry: BulEntry) -> None:
        del self._bul[entry.mn_id]
        self._parked.pop(entry.mn_id, None)
        entry.timer_generation += 1
        self._events.append(Deregistered(entry.mn_id))

    def _arm(self, entry: BulEntry, deadline: float) -> None:
        entry.timer_generation += 1
        entry.deadline = deadline
        heapq.heappush(self._timers, (deadline, entry.timer_generation, entry.mn_id))
        if len(self._timers) > 2 * len(self._bul) + 1024:
            self._timers = [(e.deadline, e.timer_generation, e.mn_id) for e in self._bul.values()]
            heapq.heapify(self._timers)

    @staticmethod
    def _view(e: BulEntry) -> BulView:
        return BulView(
            e.mn_id,
            e.lma_name,
            e.state,
            e.registered,
            e.hoa,
            e.hoa_prefix_len,
            e.default_router,
            e.hnps,
            e.encapsulation.value if e.encapsulation else None,
            e.nat,
            e.lifetime_s,
            e.expires_at,
            e.link_layer_id,
        )


def _handoff_again(entry: BulEntry) -> int:
    """The Handoff Indicator of a PBU that repeats or resumes an attempt: no handoff once
    the MN is registered here (the binding is being refreshed), else the attach's own."""
    return HandoffIndicator.NO_HANDOFF if entry.registered else entry.handoff


def _after(a: int, b: int) -> bool:
    return 0 < (a - b) & 0xFFFF < 0x8000
