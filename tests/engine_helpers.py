"""Builders for the sans-I/O engine tests: an LMA factory, a MAG factory, PBU builders and
``pump``, which carries Transmits between a MagEngine and an LmaEngine in memory.

Nothing here opens a socket or reads the clock: every call takes ``now`` (UNIX seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeVar

from hypothesis import strategies as st

from pmip_agent.core.events import Event, Transmit
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.mag import MagEngine
from pmip_agent.core.policy import (
    Ipv4Mode,
    LmaPeerSettings,
    LmaSettings,
    MagSettings,
    MnProfile,
)
from pmip_agent.core.pools import Ipv4Pool, PoolSet, PrefixPool
from pmip_agent.wire import (
    AccessTechTypeOption,
    BindingAck,
    BindingUpdate,
    BuFlags,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    MnIdentifier,
    Option,
    Timestamp,
    WireProfile,
    decode,
    encode,
)
from pmip_agent.wire import ipv6 as ipv6_frame
from pmip_agent.wire.constants import PMIP6_CNTL_PORT

T0 = 1_700_000_000.0  # a fixed "now"; tests move time forward from here

ZERO4 = IPv4Address(0)
ZERO6 = IPv6Address(0)

LMA_NAME = "lma1"
LMAA = IPv6Address("2001:db8::1")
IPV4_LMAA = IPv4Address("198.51.100.1")

MAG1 = IPv6Address("2001:db8:a::1")
MAG1_V4 = IPv4Address("192.0.2.10")
MAG2 = IPv6Address("2001:db8:b::1")
MAG2_V4 = IPv4Address("192.0.2.20")
NAT_V4 = IPv4Address("203.0.113.7")  # the public side of a NAT in front of a MAG
NAT_PORT = 40001

POOL_NET = IPv4Network("10.1.0.0/24")  # the LMA's default IPv4 pool
POOL_ROUTER = IPv4Address("10.1.0.1")
HNP_NET = IPv6Network("2001:db8:100::/48")

STATIC_HOA = IPv4Address("10.9.0.5")
STATIC_ROUTER = IPv4Address("10.9.0.1")
DHCP_PREFIX = IPv4Network("10.20.0.0/16")
DHCP_ROUTER = IPv4Address("10.20.0.1")

MN_LMA = b"mn-lma@example.net"  # dual stack, IPv4 HoA from the LMA's pool
MN_LMA2 = b"mn-lma2@example.net"
MN_STATIC = b"mn-static@example.net"  # dual stack, static IPv4 HoA from the profile
MN_DHCP = b"mn-dhcp@example.net"  # dual stack, IPv4 HoA from an external DHCP server
MN_DHCP2 = b"mn-dhcp2@example.net"
MN_V6ONLY = b"mn-v6only@example.net"  # no IPv4 service
MN_V4ONLY = b"mn-v4only@example.net"  # IPv4 only (ipv6=False), from the LMA's pool
MN_UNKNOWN = b"stranger@example.net"  # no profile anywhere

E = TypeVar("E")


def default_profiles(lma: str | None = LMA_NAME) -> dict[bytes, MnProfile]:
    """One profile per IPv4 mode, shared by the LMA and the MAGs."""
    return {
        MN_LMA: MnProfile(MN_LMA, Ipv4Mode.LMA, lma=lma),
        MN_LMA2: MnProfile(MN_LMA2, Ipv4Mode.LMA, lma=lma),
        MN_STATIC: MnProfile(
            MN_STATIC,
            Ipv4Mode.STATIC,
            ipv4_hoa=STATIC_HOA,
            ipv4_prefix_len=24,
            ipv4_default_router=STATIC_ROUTER,
            lma=lma,
        ),
        MN_DHCP: MnProfile(
            MN_DHCP,
            Ipv4Mode.DHCP_SERVER,
            dhcp_prefix=DHCP_PREFIX,
            ipv4_default_router=DHCP_ROUTER,
            lma=lma,
        ),
        MN_DHCP2: MnProfile(
            MN_DHCP2,
            Ipv4Mode.DHCP_SERVER,
            dhcp_prefix=DHCP_PREFIX,
            ipv4_default_router=DHCP_ROUTER,
            lma=lma,
        ),
        MN_V6ONLY: MnProfile(MN_V6ONLY, Ipv4Mode.NONE, lma=lma),
        MN_V4ONLY: MnProfile(MN_V4ONLY, Ipv4Mode.LMA, ipv6=False, lma=lma),
    }


def make_pools(*nets: IPv4Network | str) -> PoolSet:
    nets = nets or (POOL_NET,)
    return PoolSet([Ipv4Pool(f"pool{i}", IPv4Network(n)) for i, n in enumerate(nets)])


def make_lma(
    profiles: dict[bytes, MnProfile] | None = None,
    *,
    pools: PoolSet | None = None,
    hnp_pool: PrefixPool | None = None,
    **settings: object,
) -> LmaEngine:
    """An LMA at LMAA/IPV4_LMAA with one /24 IPv4 pool and a /48 of /64 HNPs."""
    kwargs: dict[str, object] = {"lmaa": LMAA, "ipv4_lmaa": IPV4_LMAA}
    kwargs.update(settings)
    return LmaEngine(
        LmaSettings(**kwargs),  # type: ignore[arg-type]
        default_profiles() if profiles is None else profiles,
        make_pools() if pools is None else pools,
        PrefixPool(HNP_NET) if hnp_pool is None else hnp_pool,
    )


def make_mag(
    profiles: dict[bytes, MnProfile] | None = None,
    *,
    coa: IPv6Address = MAG1,
    ipv4_coa: IPv4Address | None = MAG1_V4,
    transport: str = "ipv6",
    wire_profile: WireProfile = WireProfile.RFC5844,
    force_udp: bool = False,
    sequence_start: int = 0,
    **settings: object,
) -> MagEngine:
    """A MAG at ``coa`` that reaches the LMA ``LMA_NAME`` over ``transport``."""
    lma = LmaPeerSettings(LMA_NAME, LMAA, IPV4_LMAA, transport, force_udp)
    kwargs: dict[str, object] = {
        "proxy_coa": coa,
        "ipv4_proxy_coa": ipv4_coa,
        "lmas": {LMA_NAME: lma},
        "profiles": default_profiles() if profiles is None else profiles,
        "wire_profile": wire_profile,
    }
    kwargs.update(settings)
    return MagEngine(MagSettings(**kwargs), sequence_start)  # type: ignore[arg-type]


# --- PBU builders -----------------------------------------------------------------------

ASSIGN_HNP = ((ZERO6, 0),)  # one all-zero HNP option: "assign me a prefix"


def pbu(
    mn_id: bytes | None = MN_LMA,
    *,
    seq: int = 1,
    lifetime_s: int = 400,
    ts: float | None = T0,
    hnps: Sequence[tuple[IPv6Address, int]] = ASSIGN_HNP,
    hi: int | None = 1,
    att: int | None = 3,
    ipv4: IPv4Address | str | None = None,
    ipv4_plen: int = 0,
    profile: WireProfile = WireProfile.RFC5844,
    flags: BuFlags = BuFlags.A | BuFlags.P,
    extra: Iterable[Option] = (),
) -> BindingUpdate:
    """A Proxy Binding Update. ``ts`` is the Timestamp option's time (None: no option);
    ``ipv4`` adds an IPv4 HoA Request (rfc5844) or IPv4 Home Address option (draft)."""
    opts: list[Option] = []
    if mn_id is not None:
        opts.append(MnIdentifier(mn_id))
    opts += [HomeNetworkPrefix(p, n) for p, n in hnps]
    if hi is not None:
        opts.append(HandoffIndicatorOption(hi))
    if att is not None:
        opts.append(AccessTechTypeOption(att))
    if ts is not None:
        opts.append(Timestamp.from_seconds(ts))
    if ipv4 is not None:
        addr = IPv4Address(ipv4)
        if profile is WireProfile.DRAFT:
            opts.append(Ipv4HomeAddress(addr, ipv4_plen or 32))
        else:
            opts.append(Ipv4HoaRequest(addr, ipv4_plen))
    opts += extra
    return BindingUpdate(seq, lifetime_s // 4, flags, tuple(opts))


def pbu_v4(mn_id: bytes = MN_LMA, ipv4: IPv4Address | str = ZERO4, **kw: object) -> BindingUpdate:
    """An IPv4-only PBU: an IPv4 request and no HNP option (RFC 5844 §3.1.2.1, seed §3)."""
    return pbu(mn_id, hnps=(), ipv4=ipv4, **kw)  # type: ignore[arg-type]


# --- delivering single messages to an LMA ------------------------------------------------


def decode_transmit(t: Transmit) -> BindingUpdate | BindingAck:
    """Decode a Transmit: a bare MH for a raw socket, or a UDP payload that is an IPv6
    header + checksummed MH (seed Figure 6) or a bare MH (RFC 5844 §4)."""
    if t.peer.v4 is not None and t.data[0] >> 4 == 6:
        src, dst, mh = ipv6_frame.unwrap(t.data)
        return decode(mh, src, dst)  # verifies the MH checksum
    return decode(t.data)


def only_pba(lma: LmaEngine) -> BindingAck | None:
    """The one PBA the LMA queued, or None; fails on more than one."""
    out = lma.datagrams_to_send()
    assert len(out) <= 1, out
    if not out:
        return None
    msg = decode_transmit(out[0])
    assert isinstance(msg, BindingAck)
    return msg


def send6(lma: LmaEngine, msg: BindingUpdate, now: float, src: IPv6Address = MAG1) -> BindingAck:
    """Deliver ``msg`` over IPv6 and return the PBA (which must exist)."""
    lma.receive_ipv6(encode(msg), src, now)
    pba = only_pba(lma)
    assert pba is not None, "no PBA"
    return pba


def udp_payload(msg: BindingUpdate, src6: IPv6Address = MAG1, *, bare: bool = False) -> bytes:
    if bare:
        return encode(msg)  # RFC 5844 §4.2.2.1: MH directly in UDP
    return ipv6_frame.wrap(encode(msg, src6, LMAA), src6, LMAA)


def send_udp(
    lma: LmaEngine,
    msg: BindingUpdate,
    now: float,
    *,
    src4: IPv4Address = MAG1_V4,
    port: int = PMIP6_CNTL_PORT,
    src6: IPv6Address = MAG1,
    bare: bool = False,
) -> tuple[BindingAck, Transmit]:
    """Deliver ``msg`` over IPv4/UDP as seen from ``src4:port``; return the PBA and its
    Transmit (to check where it goes and how it is framed)."""
    lma.receive_udp(udp_payload(msg, src6, bare=bare), src4, port, now)
    out = lma.datagrams_to_send()
    assert len(out) == 1, out
    pba = decode_transmit(out[0])
    assert isinstance(pba, BindingAck)
    return pba, out[0]


def events(engine: LmaEngine | MagEngine) -> list[Event]:
    out = []
    while (ev := engine.next_event()) is not None:
        out.append(ev)
    return out


def of(evs: Iterable[object], cls: type[E]) -> list[E]:
    return [e for e in evs if type(e) is cls]


def ipv4_answer(pba: BindingAck) -> Ipv4HoaReply | Ipv4AddressAck | None:
    """The IPv4 answer option of a PBA, whichever profile it uses."""
    return pba.find(Ipv4HoaReply) or pba.find(Ipv4AddressAck)


def register(
    lma: LmaEngine, mn_id: bytes, now: float, src: IPv6Address = MAG1, **kw: object
) -> BindingAck:
    """Register ``mn_id`` over IPv6 (timestamp ``now``) and check it was accepted."""
    pba = send6(lma, pbu(mn_id, ts=now, **kw), now, src)  # type: ignore[arg-type]
    assert pba.status == 0, pba
    return pba


# --- carrying Transmits between a MAG and an LMA ------------------------------------------


@dataclass
class PumpResult:
    mag_events: list[Event] = field(default_factory=list)
    lma_events: list[Event] = field(default_factory=list)
    pbus: list[BindingUpdate] = field(default_factory=list)
    pbas: list[BindingAck] = field(default_factory=list)
    to_lma: list[Transmit] = field(default_factory=list)
    to_mag: list[Transmit] = field(default_factory=list)


def pump(
    mag: MagEngine,
    lma: LmaEngine,
    now: float,
    nat_src: IPv4Address | None = None,
    nat_port: int = NAT_PORT,
) -> PumpResult:
    """Carry every queued Transmit between ``mag`` and ``lma`` until both are quiet, then
    drain both event queues. IPv4/UDP PBUs reach the LMA from ``nat_src:nat_port`` when a
    NAT is simulated, else from the MAG's IPv4-Proxy-CoA and port 5436. A PBA addressed to
    anything but this MAG (as the LMA saw it) fails the test."""
    result = PumpResult()
    mag_coa = mag.settings.proxy_coa
    src4 = nat_src or mag.settings.ipv4_proxy_coa
    port = nat_port if nat_src is not None else PMIP6_CNTL_PORT
    for _ in range(50):
        to_lma = mag.datagrams_to_send()
        for t in to_lma:
            msg = decode_transmit(t)
            assert isinstance(msg, BindingUpdate)
            result.pbus.append(msg)
            if t.peer.v4 is None:
                assert t.peer.v6 == lma.settings.lmaa
                lma.receive_ipv6(t.data, mag_coa, now)
            else:
                assert (t.peer.v4, t.peer.port) == (lma.settings.ipv4_lmaa, PMIP6_CNTL_PORT)
                assert src4 is not None
                lma.receive_udp(t.data, src4, port, now)
        to_mag = lma.datagrams_to_send()
        for t in to_mag:
            msg = decode_transmit(t)
            assert isinstance(msg, BindingAck)
            result.pbas.append(msg)
            if t.peer.v4 is None:
                assert t.peer.v6 == mag_coa, f"PBA for {t.peer}, not this MAG"
                mag.receive_ipv6(t.data, lma.settings.lmaa, now)
            else:
                assert (t.peer.v4, t.peer.port) == (src4, port), f"PBA for {t.peer}"
                mag.receive_udp(t.data, lma.settings.ipv4_lmaa, PMIP6_CNTL_PORT, now)  # type: ignore[arg-type]
        result.to_lma += to_lma
        result.to_mag += to_mag
        if not to_lma and not to_mag:
            break
    else:
        raise AssertionError("engines kept talking")
    result.mag_events = events(mag)
    result.lma_events = events(lma)
    return result


def run_timers(
    mag: MagEngine, lma: LmaEngine, until: float, nat_src: IPv4Address | None = None
) -> PumpResult:
    """Fire both engines' timers in deadline order up to ``until``, pumping after each;
    returns everything that happened, merged."""
    total = PumpResult()
    for _ in range(10_000):
        deadlines = [d for d in (mag.get_timer(), lma.get_timer()) if d is not None]
        if not deadlines or min(deadlines) > until:
            break
        now = min(deadlines)
        mag.handle_timer(now)
        lma.handle_timer(now)
        step = pump(mag, lma, now, nat_src)
        for name in ("mag_events", "lma_events", "pbus", "pbas", "to_lma", "to_mag"):
            getattr(total, name).extend(getattr(step, name))
    else:
        raise AssertionError("timers never settled")
    return total


# --- random MAG histories, for tests that compare a fast path with the full one ----------

MN_LONG = b"a-longer-identifier-for-another-mn@example.net"
HISTORY_MNS = (MN_LMA, MN_LMA2, MN_STATIC, MN_DHCP, MN_DHCP2, MN_V6ONLY, MN_V4ONLY, MN_LONG)
HISTORY_LINK_LAYER_IDS = (
    None,
    None,
    b"\x02\0\0\0\0\x01",
    b"\x02\0\0\0\0\x02",
    b"\x02\0\0\0\0\0\0\x03",
)
HISTORY_ADDRESSES = ("10.20.0.9", "10.20.0.10", "10.20.7.1")  # what a DHCP server offers


def history_profiles() -> dict[bytes, MnProfile]:
    """The default profiles and MN_LONG's, for HISTORY_MNS."""
    profiles = default_profiles()
    profiles[MN_LONG] = MnProfile(MN_LONG, Ipv4Mode.LMA, lma=LMA_NAME)
    return profiles


def random_mag_step(
    data: st.DataObject,
    mags: Sequence[tuple[MagEngine, LmaEngine]],
    now: float,
    mns: Sequence[bytes] = HISTORY_MNS,
) -> list[object]:
    """Draw one thing that happens (an attach, an address report, a detach or a timer;
    the LMA answering or the PBU lost) and do it to each (MAG, LMA) pair in ``mags``: what
    each MAG sent and reported, for the caller to compare."""
    mn = data.draw(st.sampled_from(mns))
    action = data.draw(st.sampled_from(["attach", "attach", "report", "detach", "timer"]))
    llid = data.draw(st.sampled_from(HISTORY_LINK_LAYER_IDS))
    hoa = IPv4Address(data.draw(st.sampled_from(HISTORY_ADDRESSES)))
    plen = data.draw(st.sampled_from([16, 24]))
    lma_answers = data.draw(st.integers(0, 3)) > 0
    results: list[object] = []
    for mag, lma in mags:
        if action == "attach":
            mag.attach(mn, now, link_layer_id=llid)
        elif action == "report":
            mag.learn_ipv4(mn, hoa, plen, now)
        elif action == "detach":
            mag.detach(mn, now)
        else:
            mag.handle_timer(now)
        if lma_answers:
            got = pump(mag, lma, now)
            results.append((got.to_lma, got.mag_events))
        else:  # lost on the way: the next timer retransmits
            results.append((mag.datagrams_to_send(), events(mag)))
    return results
