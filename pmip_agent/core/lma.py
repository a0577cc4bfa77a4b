"""The local mobility anchor: PBU in, PBA and events out. No sockets, no clock.

Rules: RFC 5213 §5.3 (PBU processing, in its step order) and §5.5 (timestamps), seed §3.5
and §4.5 (IPv4 home address and transport), RFC 5844 §3.1.2 (status codes of the rfc5844
wire profile) and §4.1 (IPv4 transport). The LMA answers in the wire profile the PBU used.

Drive it like aioquic's connection: call ``receive_ipv6``/``receive_udp``/``handle_timer``
with the current UNIX time, then drain ``datagrams_to_send()`` and ``next_event()`` and
arm a timer for ``get_timer()``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address, IPv6Address

from ..wire import ipv6 as ipv6_frame
from ..wire.constants import BaFlags, BuFlags, Ipv4Status, Status, WireProfile
from ..wire.errors import WireError
from ..wire.messages import BindingAck, BindingUpdate, decode, encode
from ..wire.options import (
    AccessTechTypeOption,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4CareOfAddress,
    Ipv4DefaultRouter,
    Ipv4DhcpSupportMode,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    MnLinkLayerId,
    NatDetection,
    Option,
    Timestamp,
)
from .bindings import ACTIVE, DEREGISTERED, BindingCacheEntry
from .events import (
    BindingDown,
    BindingPurged,
    BindingUp,
    BindingView,
    Encapsulation,
    Event,
    MessageDropped,
    PbuRejected,
    Peer,
    Prefix6,
    Transmit,
)
from .policy import Ipv4Mode, LmaSettings, MnProfile
from .pools import PoolSet, PrefixPool
from .templates import MAX_TEMPLATES_PER_SHAPE, ZERO16, PbaTemplate, ShapeBook
from .templates import ZERO4 as ZERO4_BYTES

ZERO4 = IPv4Address(0)
ZERO6 = IPv6Address(0)
NO_KEEPALIVE = 0xFFFF_FFFF  # NAT Detection refresh time: no NAT, no keepalives (RFC 5555)
# Flag bits as plain ints: IntFlag arithmetic costs close to a microsecond per operation.
_A, _P, _F = int(BuFlags.A), int(BuFlags.P), int(BuFlags.F)
_BA_P = int(BaFlags.P)


class _Reject(Exception):
    """Internal: abort PBU processing with this status."""

    def __init__(self, status: int, ipv4_status: int | None = None, reason: str = "") -> None:
        self.status = status
        self.ipv4_status = ipv4_status
        self.reason = reason or Status(status).name.lower()


class _Pbu:
    """The options of one PBU, sorted out in a single pass."""

    __slots__ = ("att", "coa", "hi", "hnps", "ipv4", "llid", "mnid", "msg", "profile", "raw", "ts")

    def __init__(self, msg: BindingUpdate, default_profile: WireProfile) -> None:
        self.msg = msg
        self.raw: bytes | None = None  # the Mobility Header as received, over raw IPv6
        self.mnid: MnIdentifier | None = None
        self.hi: HandoffIndicatorOption | None = None
        self.att: AccessTechTypeOption | None = None
        self.ts: Timestamp | None = None
        self.llid: MnLinkLayerId | None = None
        self.coa: Ipv4CareOfAddress | None = None
        self.hnps: list[HomeNetworkPrefix] = []
        self.ipv4: list[Ipv4HoaRequest | Ipv4HomeAddress] = []
        profile = default_profile
        for opt in msg.options:
            kind = type(opt)
            if kind is MnIdentifier:
                self.mnid = opt  # type: ignore[assignment]
            elif kind is HomeNetworkPrefix:
                self.hnps.append(opt)  # type: ignore[arg-type]
            elif kind is HandoffIndicatorOption:
                self.hi = opt  # type: ignore[assignment]
            elif kind is AccessTechTypeOption:
                self.att = opt  # type: ignore[assignment]
            elif kind is Timestamp:
                self.ts = opt  # type: ignore[assignment]
            elif kind is Ipv4HoaRequest:
                self.ipv4.append(opt)  # type: ignore[arg-type]
                profile = WireProfile.RFC5844
            elif kind is Ipv4HomeAddress:
                self.ipv4.append(opt)  # type: ignore[arg-type]
                profile = WireProfile.DRAFT
            elif kind is MnLinkLayerId:
                self.llid = opt  # type: ignore[assignment]
            elif kind is Ipv4CareOfAddress:
                self.coa = opt  # type: ignore[assignment]
        self.profile = profile


def _mapped(v4: IPv4Address) -> IPv6Address:
    """The IPv4-mapped IPv6 form in which allowed_mags lists IPv4 addresses."""
    return IPv6Address(b"\0" * 10 + b"\xff\xff" + v4.packed)


def _profile_kind(profile: MnProfile) -> tuple[object, ...]:
    """What of a profile a PBA template depends on: profiles alike share templates. (The
    mode only as "LMA-allocated or not", and the DHCP server's prefix and router for that
    mode: templates are made for LMA and DHCP-server mode or for PBUs without an IPv4
    request, whose answer no mode changes; and Enum hashing is slow.)"""
    if profile.ipv4_mode is Ipv4Mode.DHCP_SERVER:
        return (False, profile.ipv6, None, profile.dhcp_prefix, profile.ipv4_default_router)
    return (profile.ipv4_mode is Ipv4Mode.LMA, profile.ipv6, profile.ipv4_pool)


_LMA_SOURCE = str(Ipv4Mode.LMA)
_DHCP_SOURCE = str(Ipv4Mode.DHCP_SERVER)


_RESTORED = -1  # timer_generation of an entry armed in the restored list (never reached by +1)


def _timer_at(entry: BindingCacheEntry) -> float:
    return entry.timer_at  # type: ignore[return-value]


def _seq_newer(new: int, old: int) -> bool:
    """RFC 6275 §9.5.1: greater than ``old`` modulo 2**16."""
    return 0 < (new - old) & 0xFFFF < 0x8000


class LmaEngine:
    def __init__(
        self,
        settings: LmaSettings,
        profiles: Mapping[bytes, MnProfile],
        pools: PoolSet,
        hnp_pool: PrefixPool | None = None,
    ) -> None:
        self.settings = settings
        self.profiles = profiles
        self.pools = pools
        self.hnp_pool = hnp_pool
        self._cache: dict[bytes, BindingCacheEntry] = {}
        self._by_hoa: dict[IPv4Address, bytes] = {}
        self._timers: list[tuple[float, int, bytes]] = []
        # Restored entries are armed here instead of in the heap: one list slot each, in
        # the order of their deadlines (sorted when first needed), not a heap tuple each.
        # An entry is armed here while its timer_generation is _RESTORED and its deadline
        # is timer_at; the list is read from _restored_at on.
        self._restored: list[BindingCacheEntry] = []
        self._restored_at = 0
        self._restored_sorted = True
        self._out: list[Transmit] = []
        self._events: deque[Event] = deque()
        self._peers: dict[tuple[IPv6Address, IPv4Address | None, int], Peer] = {}
        self._generation = 0  # bumped by reconfigure: older templates are not used
        self._shapes = ShapeBook()
        self.fast_paths = True  # False: every PBU takes the full path (tests compare both)

    # --- inputs -----------------------------------------------------------------------

    def receive_ipv6(self, mh: bytes, src: IPv6Address, now: float) -> None:
        """A Mobility Header from a raw IPv6 socket (the kernel checked its checksum)."""
        if type(mh) is not bytes:
            mh = bytes(mh)
        if self.fast_paths and len(mh) >= 16 and mh[12] == 8 and self._fast(mh, src, now):
            return
        peer = self._peer(src, None, 0)
        try:
            msg = decode(mh)
        except WireError as exc:
            self._events.append(MessageDropped(peer, exc.reason, exc.detail))
            return
        self._dispatch(msg, peer, self.settings.lmaa, now, mh)

    def receive_udp(self, payload: bytes, src: IPv4Address, port: int, now: float) -> None:
        """A UDP/5436 payload: IPv6 header + MH (seed Figure 6) or a bare MH (RFC 5844 §4)."""
        try:
            if payload and payload[0] >> 4 == 6:
                src6, dst6, mh = ipv6_frame.unwrap(payload)
                msg = decode(mh, src6, dst6)
            else:
                # RFC 5844 §4.2.2.1: no inner IPv6 header, and the MH checksum is ignored.
                src6, dst6 = IPv6Address(b"\0" * 10 + b"\xff\xff" + src.packed), None
                msg = decode(payload)
        except WireError as exc:
            self._events.append(
                MessageDropped(self._peer(ZERO6, src, port), exc.reason, exc.detail)
            )
            return
        self._dispatch(msg, self._peer(src6, src, port), dst6, now)

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while True:
            head = self._restored_head()
            first = None if head is None else head.timer_at
            if timers and timers[0][0] <= now and (first is None or timers[0][0] <= first):
                _, generation, mn_id = heapq.heappop(timers)
                entry = self._cache.get(mn_id)
                if entry is None or entry.timer_generation != generation:
                    continue
            elif head is not None and first <= now:  # type: ignore[operator]
                self._restored_at += 1
                entry = head
            else:
                return
            if entry.expires_at > now:  # extended since it was armed: arm it again
                entry.timer_at = entry.expires_at
                heapq.heappush(timers, (entry.expires_at, entry.timer_generation, entry.mn_id))
                continue
            entry.timer_at = None
            if entry.state == ACTIVE:
                self._events.append(BindingDown(entry.view(), "expired"))
            self._purge(entry)

    # --- outputs ----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The next deadline, or None. Superseded heap entries are dropped on the way."""
        timers = self._timers
        head = self._restored_head()
        while head is not None and head.expires_at != head.timer_at:  # extended: to the heap
            self._restored_at += 1
            head.timer_at = head.expires_at
            heapq.heappush(timers, (head.expires_at, head.timer_generation, head.mn_id))
            head = self._restored_head()
        first = None if head is None else head.timer_at
        while timers:
            deadline, generation, mn_id = timers[0]
            entry = self._cache.get(mn_id)
            if entry is None or entry.timer_generation != generation:
                heapq.heappop(timers)
            elif entry.expires_at != deadline:  # extended since it was armed
                entry.timer_at = entry.expires_at
                heapq.heapreplace(timers, (entry.expires_at, generation, mn_id))
            else:
                return deadline if first is None or deadline < first else first
        return first

    def _restored_head(self) -> BindingCacheEntry | None:
        """The restored entry armed with the earliest deadline, or None. Entries since
        re-armed in the heap, replaced or purged are dropped on the way."""
        restored = self._restored
        if not restored:
            return None
        if not self._restored_sorted:
            del restored[: self._restored_at]
            restored.sort(key=_timer_at)
            self._restored_at, self._restored_sorted = 0, True
        cache, at = self._cache, self._restored_at
        while at < len(restored):
            entry = restored[at]
            if entry.timer_generation == _RESTORED and cache.get(entry.mn_id) is entry:
                self._restored_at = at
                return entry
            at += 1
        self._restored, self._restored_at = [], 0  # all consumed: let the list go
        return None

    # --- state ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cache)

    def nat_count(self) -> int:
        """Active bindings whose MAG is behind a NAT (walks the cache: call sparingly)."""
        return sum(1 for e in self._cache.values() if e.nat and e.state == ACTIVE)

    def bindings(self) -> Iterator[BindingView]:
        return (entry.view() for entry in self._cache.values())

    def binding(self, mn_id: bytes) -> BindingView | None:
        entry = self._cache.get(mn_id)
        return entry.view() if entry else None

    def restore(self, views: list[BindingView], now: float) -> None:
        """Reload bindings kept across a restart. Live ones come back with their remaining
        lifetime and a BindingUp("restored") each, so the data plane is reinstalled by the
        same events as at registration; lapsed ones are purged."""
        peers: dict[int, Peer] = {}  # id(view.mag) -> ours: the views share their Peers
        events, cache, restored = self._events, self._cache, self._restored
        for view in views:
            mag = peers.get(id(view.mag))
            if mag is None:
                m = view.mag
                mag = peers[id(m)] = self._peer(m.v6, m.v4, m.port)
            entry = BindingCacheEntry.from_view(view, mag)
            if not self._claim_addresses(entry):
                events.append(MessageDropped(mag, "restore-conflict", entry.mn_name))
                continue
            cache[entry.mn_id] = entry
            expires_at = entry.expires_at
            if expires_at > now and entry.state in (ACTIVE, DEREGISTERED):
                if entry.state == ACTIVE:
                    events.append(BindingUp(entry.view(), "restored"))
                entry.timer_generation, entry.timer_at = _RESTORED, expires_at
                restored.append(entry)  # armed: see _restored_head
            else:
                self._purge(entry)
        if len(self._restored) > self._restored_at:
            self._restored_sorted = False

    def reconfigure(
        self,
        settings: LmaSettings,
        profiles: Mapping[bytes, MnProfile],
        pools: PoolSet,
        hnp_pool: PrefixPool | None,
        now: float,
    ) -> None:
        """Apply new settings, profiles and pools. Bindings the change leaves authorized are
        kept, with their addresses re-claimed in the new pools; the others go down."""
        entries = list(self._cache.values())
        self.settings, self.profiles, self.pools, self.hnp_pool = (
            settings,
            profiles,
            pools,
            hnp_pool,
        )
        self._generation += 1  # templates answered under the old configuration
        self._shapes.clear()
        self._cache.clear()
        self._by_hoa.clear()
        for entry in entries:
            if self._still_authorized(entry) and self._claim_addresses(entry):
                self._cache[entry.mn_id] = entry
                continue
            # Its addresses belonged to the old pools, so there is nothing to give back.
            if entry.state == ACTIVE:
                self._events.append(BindingDown(entry.view(), "policy-changed"))
            self._events.append(BindingPurged(entry.mn_id, entry.ipv4_hoa))

    # --- PBU processing ---------------------------------------------------------------

    def _peer(self, v6: IPv6Address, v4: IPv4Address | None, port: int) -> Peer:
        key = (v6, v4, port)
        peer = self._peers.get(key)
        if peer is None:
            if len(self._peers) > 65536:
                self._peers.clear()
            peer = self._peers[key] = Peer(v6, v4, port)
        return peer

    def _dispatch(
        self,
        msg: object,
        peer: Peer,
        local6: IPv6Address | None,
        now: float,
        raw: bytes | None = None,
    ) -> None:
        if type(msg) is not BindingUpdate:
            self._events.append(MessageDropped(peer, "unexpected-message", type(msg).__name__))
            return
        if not msg.flags & _P:
            self._events.append(MessageDropped(peer, "not-proxy-registration"))
            return
        pbu = _Pbu(msg, self.settings.default_wire_profile)
        pbu.raw = raw
        try:
            self._process(pbu, peer, local6, now)
        except _Reject as rej:
            mn_id = pbu.mnid.identifier if pbu.mnid else None
            self._events.append(PbuRejected(mn_id, peer, rej.status, rej.ipv4_status, rej.reason))
            self._reply_reject(pbu, peer, local6, rej, now)

    def _process(self, pbu: _Pbu, peer: Peer, local6: IPv6Address | None, now: float) -> None:
        settings = self.settings
        rfc = pbu.profile is WireProfile.RFC5844
        # RFC 5213 §5.3.1 step 4, then 5/6 and 7: identify the MN and authorize the MAG.
        if pbu.mnid is None:
            raise _Reject(Status.MISSING_MN_IDENTIFIER_OPTION)
        mn_id = pbu.mnid.identifier
        allowed = settings.allowed_mags
        if allowed is not None and (
            peer.v6 not in allowed
            # Over UDP the inner IPv6 source is whatever the sender wrote: the address the
            # packet really came from (the MAG's, or its NAT's) must be allowed too.
            or (peer.v4 is not None and _mapped(peer.v4) not in allowed)
        ):
            raise _Reject(Status.MAG_NOT_AUTHORIZED_FOR_PROXY_REG)
        profile = self.profiles.get(mn_id)
        if profile is None:
            raise _Reject(Status.NOT_LMA_FOR_THIS_MOBILE_NODE)
        entry = self._cache.get(mn_id)
        # Step 9, §5.5: timestamps when present, else sequence numbers (RFC 6275 §9.5.1).
        ts = pbu.ts if settings.timestamps else None
        if ts is not None:
            if entry is not None and ts.value < entry.last_timestamp:
                raise _Reject(Status.TIMESTAMP_LOWER_THAN_PREV_ACCEPTED)
            if abs(ts.seconds - now) > settings.timestamp_window_s or (
                entry is not None and ts.value == entry.last_timestamp
            ):
                raise _Reject(Status.TIMESTAMP_MISMATCH)
        elif entry is not None and not _seq_newer(pbu.msg.sequence, entry.last_sequence):
            raise _Reject(Status.SEQUENCE_OUT_OF_WINDOW)
        # Steps 10-12; an IPv4 home address request stands in for the HNP (RFC 5844 §3.1.2.1).
        if not pbu.hnps and not pbu.ipv4:
            raise _Reject(Status.MISSING_HOME_NETWORK_PREFIX_OPTION)
        if pbu.hi is None:
            raise _Reject(Status.MISSING_HANDOFF_INDICATOR_OPTION)
        if pbu.att is None:
            raise _Reject(Status.MISSING_ACCESS_TECH_TYPE_OPTION)
        if len(pbu.ipv4) > 1:
            raise _Reject(Status.MULTIPLE_IPV4_HOME_ADDRESS_ASSIGNMENT_NOT_SUPPORTED, 128)
        if pbu.hnps and not profile.ipv6:
            raise _Reject(
                Status.NOT_AUTHORIZED_FOR_IPV6_MOBILITY_SERVICE
                if rfc
                else Status.ADMINISTRATIVELY_PROHIBITED
            )
        forced_udp = bool(pbu.msg.flags & _F) and peer.v4 is not None
        if forced_udp and not settings.accept_forced_udp:
            raise _Reject(Status.ADMINISTRATIVELY_PROHIBITED, reason="forced-udp-not-accepted")
        if pbu.msg.lifetime == 0:
            self._deregister(pbu, entry, peer, local6, now)
        else:
            self._register(pbu, profile, entry, peer, local6, forced_udp, now)

    def _deregister(
        self,
        pbu: _Pbu,
        entry: BindingCacheEntry | None,
        peer: Peer,
        local6: IPv6Address | None,
        now: float,
    ) -> None:
        # §5.3.5: a de-registration from a MAG that does not serve the MN is ignored.
        if entry is None or entry.mag.v6 != peer.v6:
            reason = "dereg-unknown-binding" if entry is None else "dereg-from-non-serving-mag"
            self._events.append(MessageDropped(peer, reason, repr(pbu.mnid)))
            return
        self._accept_replay_state(entry, pbu)
        # Keep the entry (and so its addresses) for MinDelayBeforeBCEDelete.
        entry.expires_at = now + self.settings.min_delay_before_bce_delete_s
        if entry.state == ACTIVE:
            entry.state = DEREGISTERED
            self._events.append(BindingDown(entry.view(), "deregistered"))
        self._schedule(entry, entry.expires_at)
        self._reply_accept(pbu, entry, peer, local6, 0, None)

    def _register(
        self,
        pbu: _Pbu,
        profile: MnProfile,
        entry: BindingCacheEntry | None,
        peer: Peer,
        local6: IPv6Address | None,
        forced_udp: bool,
        now: float,
    ) -> None:
        undo: list[tuple[object, object]] = []  # addresses claimed by this PBU, for rollback
        try:
            hnps = self._grant_hnps(pbu, entry, undo)
            ipv4, ipv4_failure = self._grant_ipv4(pbu, profile, entry, bool(hnps), undo)
        except _Reject:
            self._rollback(undo)
            raise
        settings = self.settings
        if peer.v4 is None:
            encapsulation, nat = Encapsulation.IPV6, False
        else:
            # Seed §4.3 (DSMIPv6 NAT detection): the MAG's own address against what we saw.
            nat = pbu.coa is not None and pbu.coa.address != peer.v4
            udp = nat or forced_udp
            encapsulation = Encapsulation.IPV4_UDP if udp else Encapsulation.IPV4
        lifetime_s = min(pbu.msg.lifetime * 4, settings.max_lifetime_s)
        hoa, plen, router, source, pool_name = ipv4 or (None, 0, None, None, None)
        if entry is None:
            change, previous = "created", None
            entry = BindingCacheEntry(
                pbu.mnid.identifier,  # type: ignore[union-attr]
                peer,
                encapsulation,
                nat,
                hoa,
                plen,
                router,
                source,
                pool_name,
                hnps,
                lifetime_s,
                now + lifetime_s,
                now,
                pbu.msg.sequence,
                0,
                pbu.profile,
                pbu.att.value,  # type: ignore[union-attr]
                pbu.llid.identifier if pbu.llid else None,
            )
            self._cache[entry.mn_id] = entry
        else:
            previous = entry.mag if entry.mag.v6 != peer.v6 else None
            if previous is not None:
                change = "moved"
            elif entry.state == DEREGISTERED:
                change = "created"
            elif (
                entry.mag is not peer
                or entry.ipv4_hoa != hoa
                or entry.hnps != hnps
                or entry.encapsulation is not encapsulation
                or entry.nat != nat
                or entry.ipv4_prefix_len != plen
                or entry.ipv4_default_router != router
                or entry.ipv4_source != source
                or entry.ipv4_pool != pool_name
                or entry.wire_profile != pbu.profile
                or entry.access_tech != pbu.att.value  # type: ignore[union-attr]
                or (pbu.llid is not None and entry.link_layer_id != pbu.llid.identifier)
            ):
                change = "updated"
            else:
                change = "refreshed"  # only the lifetime, the expiry and the replay state
            self._release_unused(entry, hoa, hnps)
            entry.mag, entry.encapsulation, entry.nat = peer, encapsulation, nat
            entry.ipv4_hoa, entry.ipv4_prefix_len, entry.ipv4_default_router = hoa, plen, router
            entry.ipv4_source, entry.ipv4_pool, entry.hnps = source, pool_name, hnps
            entry.lifetime_s, entry.expires_at, entry.state = lifetime_s, now + lifetime_s, ACTIVE
            entry.wire_profile, entry.access_tech = pbu.profile, pbu.att.value  # type: ignore[union-attr]
            if pbu.llid:
                entry.link_layer_id = pbu.llid.identifier
        self._accept_replay_state(entry, pbu)
        if hoa is not None:
            self._by_hoa[hoa] = entry.mn_id
        self._schedule(entry, entry.expires_at)
        self._events.append(BindingUp(entry.view(), change, previous))
        entry.refresh = None
        if pbu.msg.flags & _A:
            sent = len(self._out)
            self._reply_accept(pbu, entry, peer, local6, lifetime_s, ipv4_failure)
            if (
                len(self._out) > sent
                and pbu.ts is not None
                and settings.timestamps
                and ipv4_failure is None
                and peer.v4 is None
            ):
                self._capture(entry, pbu, profile, self._out[-1].data)

    def _accept_replay_state(self, entry: BindingCacheEntry, pbu: _Pbu) -> None:
        entry.last_sequence = pbu.msg.sequence
        if pbu.ts is not None and self.settings.timestamps:
            entry.last_timestamp = pbu.ts.value

    # --- fast paths -------------------------------------------------------------------

    def _fast(self, mh: bytes, src: IPv6Address, now: float) -> bool:
        """Answer a PBU of a known shape from a PBA template (see templates.py), when the
        outcome can only be the full path's acceptance. False: take the full path."""
        mn_id = mh[15 : 14 + mh[13]]
        entry = self._cache.get(mn_id)
        if entry is None:
            return self._fast_register(mh, mn_id, src, now)
        return self._fast_refresh(mh, entry, src, now)

    def _fast_register(self, mh: bytes, mn_id: bytes, src: IPv6Address, now: float) -> bool:
        """RFC 5213 §5.3.2 for a new MN whose profile has the LMA allocate its addresses: the
        steps of _process with every branch that could reject left to the full path."""
        shape = self._shapes.find(mh)
        if shape is None:
            return False
        profile = self.profiles.get(mn_id)
        if profile is None:
            return False
        template = shape.templates.get(_profile_kind(profile))
        settings = self.settings
        allowed = settings.allowed_mags
        if (
            template is None
            or template.generation != self._generation
            or (allowed is not None and src not in allowed)
        ):
            return False
        stamp = mh[shape.ts : shape.ts + 8]
        ts = int.from_bytes(stamp, "big")
        if abs(ts / 65536 - now) > settings.timestamp_window_s:
            return False
        hnp_pool = self.hnp_pool
        if shape.hnp and (
            shape.hnp_plen
            or mh[shape.hnp : shape.hnp + 16] != ZERO16
            or hnp_pool is None
            or not hnp_pool.has_free()  # checked first: the full path allocates it first
        ):
            return False
        hoa = pool = None
        plen, router, source = 0, None, None
        if shape.v4:
            asked = mh[shape.v4 : shape.v4 + 4]
            if profile.ipv4_mode is Ipv4Mode.DHCP_SERVER:  # seed §3.1: the server's choice
                hoa = IPv4Address(asked)
                prefix = profile.dhcp_prefix
                if (
                    prefix is None
                    or hoa not in prefix
                    or hoa == ZERO4
                    or self._by_hoa.get(hoa) is not None  # a new MN holds none
                    or self.pools.owner_pool(hoa) is not None
                ):
                    return False  # the full path refuses it
                self._by_hoa[hoa] = mn_id
                plen, router, source = prefix.prefixlen, profile.ipv4_default_router, _DHCP_SOURCE
            else:
                if asked != ZERO4_BYTES:
                    return False
                pool = self.pools.get(profile.ipv4_pool)
                if pool is None:
                    return False
                claim = self._by_hoa.setdefault  # claimed now: nothing below can fail
                hoa = pool.allocate()
                while hoa is not None and claim(hoa, mn_id) != mn_id:
                    hoa = pool.allocate()  # a static HoA inside the pool: leave it taken
                if hoa is None:
                    return False  # the full path answers "exhausted"
                plen, router, source = pool.prefix_len, pool.default_router, _LMA_SOURCE
        hnps: tuple[Prefix6, ...] = ()
        if shape.hnp:
            hnps = (hnp_pool.allocate(),)  # type: ignore[union-attr,assignment]
        llid = mh[shape.llid : shape.llid + shape.llid_len] if shape.llid else None
        pba = template.build(
            mh[6:8],
            mn_id,
            stamp,
            hnps[0][0].packed if hnps else None,
            hoa.packed if hoa is not None else None,
            llid,
        )
        if pba is None:  # cannot happen: a stored template was checked against this shape
            if hoa is not None:
                del self._by_hoa[hoa]
            self._rollback([(pool, hoa)] if pool is not None else [])
            self._rollback([(hnp_pool, hnps[0])] if hnps else [])
            return False
        lifetime_s = min(shape.lifetime * 4, settings.max_lifetime_s)
        peer = self._peer(src, None, 0)
        entry = BindingCacheEntry(
            mn_id,
            peer,
            Encapsulation.IPV6,
            False,
            hoa,
            plen,
            router,
            source,
            pool.name if pool is not None else None,
            hnps,
            lifetime_s,
            now + lifetime_s,
            now,
            (mh[6] << 8) | mh[7],
            ts,
            shape.wire_profile,
            shape.att,
            llid,
        )
        entry.refresh = template
        self._cache[mn_id] = entry
        self._schedule(entry, entry.expires_at)
        self._events.append(BindingUp(entry.view(), "created", None))
        self._out.append(Transmit(pba, peer))
        return True

    def _fast_refresh(
        self, mh: bytes, entry: BindingCacheEntry, src: IPv6Address, now: float
    ) -> bool:
        """RFC 5213 §5.3.3: the serving MAG re-registers an unchanged binding with a PBU of
        the shape its last accepted one had, asking for the addresses it holds (or for
        any). That can only be accepted the same way, so the PBA is the template's with the
        per-MN fields filled in. Anything else, including every reject, takes the full
        path."""
        template = entry.refresh
        if (
            template is None
            or template.generation != self._generation
            or entry.state != ACTIVE
            or entry.mag.v4 is not None
            or (entry.mag.v6 is not src and entry.mag.v6 != src)  # mostly the same object
        ):
            return False
        shape = template.shape
        if len(mh) != shape.length or shape.keep(mh) != shape.tail:
            return False
        stamp = mh[shape.ts : shape.ts + 8]
        ts = int.from_bytes(stamp, "big")
        if ts <= entry.last_timestamp or abs(ts / 65536 - now) > self.settings.timestamp_window_s:
            return False  # the full path answers with 156 or 157
        llid = None
        if shape.llid:  # another identifier is another interface: the full path's update
            llid = mh[shape.llid : shape.llid + shape.llid_len]
            if llid != entry.link_layer_id:
                return False
        hnp = hoa = None
        if shape.hnp:
            hnp = entry.hnps[0][0].packed
            asked = mh[shape.hnp : shape.hnp + 16]
            if asked != (hnp if shape.hnp_plen else ZERO16):
                return False
        if shape.v4:
            hoa = entry.ipv4_hoa.packed  # type: ignore[union-attr]
            asked = mh[shape.v4 : shape.v4 + 4]
            # "Any address" keeps an LMA-allocated one; a DHCP server's must be named.
            if asked != hoa and (asked != ZERO4_BYTES or entry.ipv4_source != _LMA_SOURCE):
                return False
        pba = template.build(mh[6:8], entry.mn_id, stamp, hnp, hoa, llid)
        if pba is None:
            return False
        entry.last_sequence = (mh[6] << 8) | mh[7]
        entry.last_timestamp = ts
        entry.expires_at = now + entry.lifetime_s
        self._schedule(entry, entry.expires_at)
        self._events.append(BindingUp(entry.view(), "refreshed"))
        self._out.append(Transmit(pba, entry.mag))
        return True

    def _capture(self, entry: BindingCacheEntry, pbu: _Pbu, profile: MnProfile, pba: bytes) -> None:
        """After a full-path acceptance over IPv6: learn the PBU's shape and the PBA
        template for it, and let the entry use the template if, filled in with this
        entry's values, it gives exactly the PBA the full path just sent."""
        raw = pbu.raw
        mode = profile.ipv4_mode
        if raw is None or (
            pbu.ipv4 and mode is not Ipv4Mode.LMA and mode is not Ipv4Mode.DHCP_SERVER
        ):
            return
        if len(pbu.hnps) > 1 or len(entry.hnps) != len(pbu.hnps):
            return
        shape = self._shapes.learn(
            raw,
            {
                "flags": pbu.msg.flags,
                "lifetime": pbu.msg.lifetime,
                "wire_profile": pbu.profile,
                "att": pbu.att.value,  # type: ignore[union-attr]
            },
        )
        if shape is None:
            return
        kind = _profile_kind(profile)
        template = shape.templates.get(kind)
        known = template is not None and template.generation == self._generation
        if not known:
            template = PbaTemplate.derive(shape, pba, self._generation)
            if template is None:
                return
        hnp = entry.hnps[0][0].packed if entry.hnps else None
        hoa = entry.ipv4_hoa.packed if entry.ipv4_hoa is not None and shape.v4 else None
        stamp = raw[shape.ts : shape.ts + 8]
        llid = raw[shape.llid : shape.llid + shape.llid_len] if shape.llid else None
        if template.build(raw[6:8], entry.mn_id, stamp, hnp, hoa, llid) != pba:  # type: ignore[union-attr]
            return
        entry.refresh = template
        room = len(shape.templates) < MAX_TEMPLATES_PER_SHAPE or kind in shape.templates
        if not known and room:
            shape.templates[kind] = template  # type: ignore[assignment]

    # --- address decisions ------------------------------------------------------------

    def _grant_hnps(
        self, pbu: _Pbu, entry: BindingCacheEntry | None, undo: list[tuple[object, object]]
    ) -> tuple[Prefix6, ...]:
        if not pbu.hnps:
            return ()
        current = entry.hnps if entry is not None else ()
        wanted = [(o.prefix, o.prefix_len) for o in pbu.hnps if o.prefix_len or o.prefix != ZERO6]
        if wanted:
            if current:
                # RFC 5213 §5.4.1.1: the PBU's prefix set must be the entry's.
                if set(wanted) != set(current):
                    raise _Reject(Status.BCE_PBU_PREFIX_SET_DO_NOT_MATCH)
                return current
            for prefix, plen in wanted:  # §5.3.2: a named prefix must be ours and free
                if self.hnp_pool is None or not self.hnp_pool.reserve(prefix, plen):
                    raise _Reject(Status.NOT_AUTHORIZED_FOR_HOME_NETWORK_PREFIX)
                undo.append((self.hnp_pool, (prefix, plen)))
            return tuple(wanted)
        if current:
            return current
        got = self.hnp_pool.allocate() if self.hnp_pool is not None else None
        if got is None:
            raise _Reject(Status.INSUFFICIENT_RESOURCES, reason="hnp-pool-exhausted")
        undo.append((self.hnp_pool, got))
        return (got,)

    def _grant_ipv4(
        self,
        pbu: _Pbu,
        profile: MnProfile,
        entry: BindingCacheEntry | None,
        has_ipv6: bool,
        undo: list[tuple[object, object]],
    ) -> tuple[tuple[IPv4Address, int, IPv4Address | None, str, str | None] | None, _Reject | None]:
        """The IPv4 home address to bind, seed §3.5 and RFC 5844 §3.1.2.2. Returns (grant,
        None), or (None, failure) when the draft profile accepts the IPv6 part alone."""
        if not pbu.ipv4:
            return None, None
        try:
            return self._decide_ipv4(pbu, profile, entry, undo), None
        except _Reject as rej:
            if pbu.profile is WireProfile.DRAFT and has_ipv6:
                return None, rej  # DSMIPv6 style: BA accepted, IPv4 Ack carries the refusal
            raise

    def _decide_ipv4(
        self,
        pbu: _Pbu,
        profile: MnProfile,
        entry: BindingCacheEntry | None,
        undo: list[tuple[object, object]],
    ) -> tuple[IPv4Address, int, IPv4Address | None, str, str | None]:
        rfc = pbu.profile is WireProfile.RFC5844
        req = pbu.ipv4[0].address
        mn_id = pbu.mnid.identifier  # type: ignore[union-attr]  # profiles may be shared
        by_hoa = self._by_hoa
        refuse_address = self._refuse_rfc if rfc else self._refuse_draft

        def held_by_other(addr: IPv4Address) -> bool:
            owner = by_hoa.get(addr)
            return owner is not None and owner != mn_id

        mode = profile.ipv4_mode
        if mode is Ipv4Mode.NONE:
            if rfc:
                raise _Reject(Status.NOT_AUTHORIZED_FOR_IPV4_MOBILITY_SERVICE, 129)
            raise _Reject(
                Status.ADMINISTRATIVELY_PROHIBITED,
                Ipv4Status.ADMINISTRATIVELY_PROHIBITED,
                "no-ipv4-service",
            )
        if mode is Ipv4Mode.STATIC:
            hoa = profile.ipv4_hoa
            if hoa is None or req not in (ZERO4, hoa) or held_by_other(hoa):
                raise refuse_address(Ipv4Status.INCORRECT_IPV4_HOME_ADDRESS)
            return hoa, profile.ipv4_prefix_len, profile.ipv4_default_router, str(mode), None
        if mode is Ipv4Mode.LMA:
            pool = self.pools.get(profile.ipv4_pool)
            current = (
                entry.ipv4_hoa if entry is not None and entry.ipv4_source == str(mode) else None
            )
            if pool is None:
                raise self._exhausted(rfc, "no-such-pool")
            if req == ZERO4:
                hoa = current or pool.allocate()
                while current is None and hoa is not None and held_by_other(hoa):
                    hoa = pool.allocate()  # a static HoA inside the pool: leave it taken
                if hoa is None:
                    raise self._exhausted(rfc, "ipv4-pool-exhausted")
                if current is None:
                    undo.append((pool, hoa))
            elif req == current:
                hoa = current
            elif req in pool and not held_by_other(req) and pool.reserve(req):
                hoa = req  # e.g. a restarted MAG asking again for the address it had
                undo.append((pool, hoa))
            else:
                raise refuse_address(Ipv4Status.INCORRECT_IPV4_HOME_ADDRESS)
            return hoa, pool.prefix_len, pool.default_router, str(mode), pool.name
        # dhcp-server: the MAG reports what the DHCP server assigned (seed §3.1, §6).
        prefix = profile.dhcp_prefix
        if req == ZERO4:
            raise refuse_address(Ipv4Status.DYNAMIC_ASSIGNMENT_NOT_AVAILABLE, 132)
        if (
            prefix is None
            or req not in prefix
            or self.pools.owner_pool(req) is not None
            or held_by_other(req)
        ):
            raise refuse_address(Ipv4Status.INCORRECT_IPV4_HOME_ADDRESS)
        return req, prefix.prefixlen, profile.ipv4_default_router, str(mode), None

    @staticmethod
    def _refuse_rfc(_draft_status: int, rfc_reply: int = 129) -> _Reject:
        # RFC 5844 §3.1.2.2: 171, with reply status 129 (administratively prohibited).
        return _Reject(Status.NOT_AUTHORIZED_FOR_IPV4_HOME_ADDRESS, rfc_reply)

    @staticmethod
    def _refuse_draft(draft_status: int, _rfc_reply: int = 129) -> _Reject:
        return _Reject(Status.ADMINISTRATIVELY_PROHIBITED, draft_status, "ipv4-address-refused")

    @staticmethod
    def _exhausted(rfc: bool, reason: str) -> _Reject:
        # RFC 5844 §3.1.2.2: status 130 with reply status 128; RFC 5555 §4.5: ack status 132.
        if rfc:
            return _Reject(Status.INSUFFICIENT_RESOURCES, 128, reason)
        return _Reject(
            Status.INSUFFICIENT_RESOURCES, Ipv4Status.DYNAMIC_ASSIGNMENT_NOT_AVAILABLE, reason
        )

    def _rollback(self, undo: list[tuple[object, object]]) -> None:
        for pool, item in undo:
            if isinstance(item, tuple):
                pool.release(*item)  # type: ignore[attr-defined]
            else:
                pool.release(item)  # type: ignore[attr-defined]

    def _release_unused(
        self, entry: BindingCacheEntry, hoa: IPv4Address | None, hnps: tuple[Prefix6, ...]
    ) -> None:
        if entry.ipv4_hoa is not None and entry.ipv4_hoa != hoa:
            self._release_hoa(entry)
        if self.hnp_pool is not None:
            for prefix in entry.hnps:
                if prefix not in hnps:
                    self.hnp_pool.release(*prefix)

    def _release_hoa(self, entry: BindingCacheEntry) -> None:
        hoa = entry.ipv4_hoa
        if hoa is None:
            return
        if self._by_hoa.get(hoa) == entry.mn_id:
            del self._by_hoa[hoa]
        if entry.ipv4_source == Ipv4Mode.LMA.value:
            pool = self.pools.get(entry.ipv4_pool)
            if pool is not None:
                pool.release(hoa)

    def _claim_addresses(self, entry: BindingCacheEntry) -> bool:
        """Mark a restored or kept entry's addresses as taken; False on a conflict."""
        hoa = entry.ipv4_hoa
        if hoa is not None:
            mn_id, by_hoa = entry.mn_id, self._by_hoa
            held = len(by_hoa)
            # One hash of the address (ipaddress hashes are slow): claim, or see the owner.
            if by_hoa.setdefault(hoa, mn_id) != mn_id:
                return False
            if entry.ipv4_source == _LMA_SOURCE:
                pool = self.pools.get(entry.ipv4_pool)
                if pool is None or not (pool.reserve(hoa) or pool.is_allocated(hoa)):
                    if len(by_hoa) > held:
                        del by_hoa[hoa]  # the claim made just above
                    return False
        if self.hnp_pool is not None:
            for prefix in entry.hnps:
                self.hnp_pool.reserve(*prefix)
        return True

    def _still_authorized(self, entry: BindingCacheEntry) -> bool:
        profile = self.profiles.get(entry.mn_id)
        if profile is None:
            return False
        if (
            self.settings.allowed_mags is not None
        ) and entry.mag.v6 not in self.settings.allowed_mags:
            return False
        if entry.hnps and not profile.ipv6:
            return False
        hoa = entry.ipv4_hoa
        if hoa is None:
            return True
        if str(profile.ipv4_mode) != entry.ipv4_source:
            return False
        if profile.ipv4_mode is Ipv4Mode.STATIC:
            return hoa == profile.ipv4_hoa
        if profile.ipv4_mode is Ipv4Mode.LMA:
            pool = self.pools.get(profile.ipv4_pool)
            return pool is not None and pool.name == entry.ipv4_pool and hoa in pool
        prefix = profile.dhcp_prefix
        return prefix is not None and hoa in prefix and self.pools.owner_pool(hoa) is None

    # --- timers and purge -------------------------------------------------------------

    def _schedule(self, entry: BindingCacheEntry, deadline: float) -> None:
        """Make ``deadline`` (the entry's expires_at) the entry's expiry. A later deadline
        than the one armed costs nothing now: the armed heap item re-arms itself when it
        comes up, so a refresh adds no heap item (and no memory) per binding."""
        armed = entry.timer_at
        if armed is not None and armed <= deadline:
            return
        entry.timer_generation += 1
        entry.timer_at = deadline
        heapq.heappush(self._timers, (deadline, entry.timer_generation, entry.mn_id))
        if len(self._timers) > 2 * len(self._cache) + 1024:
            self._timers = []
            self._restored, self._restored_at = [], 0  # every entry is in the new heap
            for e in self._cache.values():
                e.timer_at = e.expires_at
                self._timers.append((e.expires_at, e.timer_generation, e.mn_id))
            heapq.heapify(self._timers)

    def _purge(self, entry: BindingCacheEntry) -> None:
        self._cache.pop(entry.mn_id, None)
        self._release_hoa(entry)
        if self.hnp_pool is not None:
            for prefix in entry.hnps:
                self.hnp_pool.release(*prefix)
        self._events.append(BindingPurged(entry.mn_id, entry.ipv4_hoa))

    # --- replies ----------------------------------------------------------------------

    def _send(self, pba: BindingAck, peer: Peer, local6: IPv6Address | None) -> None:
        try:
            if peer.v4 is None:
                data = encode(pba)  # the raw socket's IPV6_CHECKSUM fills the checksum
            elif local6 is None:
                data = encode(pba)  # RFC 5844 §4.1.3.2: bare MH in UDP, checksum zero
            else:
                data = ipv6_frame.wrap(encode(pba, local6, peer.v6), local6, peer.v6)
        except ValueError as exc:  # the echoed options of a near-2048-octet PBU overflow
            self._events.append(MessageDropped(peer, "reply-too-large", str(exc)))
            return
        self._out.append(Transmit(data, peer))

    def _echo(self, pbu: _Pbu, hnps: list[Option], ts: Timestamp | None) -> list[Option]:
        """The options a PBA repeats from its PBU (RFC 5213 §5.3.6)."""
        opts: list[Option] = [pbu.mnid] if pbu.mnid is not None else []
        opts += hnps
        opts.append(pbu.hi or HandoffIndicatorOption(0))
        opts.append(pbu.att or AccessTechTypeOption(0))
        if pbu.llid is not None:
            opts.append(pbu.llid)
        if ts is not None:
            opts.append(ts)
        return opts

    def _reply_accept(
        self,
        pbu: _Pbu,
        entry: BindingCacheEntry,
        peer: Peer,
        local6: IPv6Address | None,
        lifetime_s: int,
        ipv4_failure: _Reject | None,
    ) -> None:
        hnps: list[Option] = [HomeNetworkPrefix(p, n) for p, n in entry.hnps] if pbu.hnps else []
        ts = pbu.ts if self.settings.timestamps else None
        opts = self._echo(pbu, hnps, ts)
        if pbu.ipv4:
            req = pbu.ipv4[0]
            if ipv4_failure is not None:  # draft only: refusal inside an accepted PBA
                opts.append(Ipv4AddressAck(ipv4_failure.ipv4_status or 128, 0, req.address))
            elif entry.ipv4_hoa is not None:
                hoa, plen = entry.ipv4_hoa, entry.ipv4_prefix_len
                if pbu.profile is WireProfile.RFC5844:
                    opts.append(Ipv4HoaReply(0, plen, hoa))
                else:
                    opts.append(Ipv4AddressAck(0, plen, hoa))
                if entry.ipv4_default_router is not None:
                    opts.append(Ipv4DefaultRouter(entry.ipv4_default_router))
                if pbu.profile is WireProfile.RFC5844:
                    opts.append(
                        Ipv4DhcpSupportMode(entry.ipv4_source != Ipv4Mode.DHCP_SERVER.value)
                    )
        if peer.v4 is not None:
            # RFC 5555 §4.5: present whenever the PBU came over UDP. All-ones refresh says
            # no NAT; F tells the MAG to use UDP (RFC 5844 §4.2.2 keys on it).
            refresh = self.settings.nat_refresh_s if entry.nat else NO_KEEPALIVE
            opts.append(NatDetection(refresh, entry.encapsulation is Encapsulation.IPV4_UDP))
        pba = BindingAck(Status.ACCEPTED, pbu.msg.sequence, lifetime_s // 4, _BA_P, tuple(opts))
        self._send(pba, peer, local6)

    def _reply_reject(
        self, pbu: _Pbu, peer: Peer, local6: IPv6Address | None, rej: _Reject, now: float
    ) -> None:
        status = rej.status
        sequence = pbu.msg.sequence
        if status == Status.SEQUENCE_OUT_OF_WINDOW:
            entry = self._cache.get(pbu.mnid.identifier)  # type: ignore[union-attr]
            sequence = entry.last_sequence if entry is not None else sequence
        if status in (Status.TIMESTAMP_MISMATCH, Status.TIMESTAMP_LOWER_THAN_PREV_ACCEPTED):
            ts: Timestamp | None = Timestamp.from_seconds(now)  # §5.5: our time of day
        else:
            ts = pbu.ts
        hnps: list[Option] = list(pbu.hnps)
        if not hnps and not pbu.ipv4:
            hnps = [HomeNetworkPrefix(ZERO6, 0)]
        opts = self._echo(pbu, hnps, ts)
        if pbu.ipv4:
            req = pbu.ipv4[0]
            ipv4_status = rej.ipv4_status or Ipv4Status.FAILURE_UNSPECIFIED
            if pbu.profile is WireProfile.RFC5844:
                opts.append(Ipv4HoaReply(ipv4_status, req.prefix_len, req.address))
            else:
                opts.append(Ipv4AddressAck(ipv4_status, 0, req.address))
        self._send(BindingAck(status, sequence, 0, _BA_P, tuple(opts)), peer, local6)
