"""Fuzz the wire codec and the LMA's inputs with random and mutated PBU/PBA bytes.

Seeds are valid encodings from both wire profiles (rfc5844: IPv4 HoA Request/Reply, DHCP
Support Mode; draft: IPv4 Home Address/Address Ack), PBUs and PBAs (the PBAs are what an
LMA answered to the PBU seeds, accepts and rejects, plus hand-built ones). They are rebuilt
every batch with fresh timestamps, so mutated PBUs still reach deep into the engine.

Mutations: bit flips, byte sets, truncation, extension, option length (and Header Len)
corruption, option type swaps, raw option splicing between seeds, option-level splicing
and repetition through ``encode`` (well-framed but semantically odd), and plain random or
random-but-framed bytes. Half of the size-changing mutations get their framing repaired
(padded to 8 octets, Header Len set) so they pass the first checks.

Every input goes through:
  decode(x)                            outcome: decoded OK / WireError by reason / other
  LmaEngine.receive_ipv6(x, mag, now)  must never raise; events and PBAs are counted and
                                       every PBA it emits must decode
  LmaEngine.receive_udp(p, v4, port, now) with p = x in an IPv6 header (checksum fixed or
                                       not, header sometimes damaged) or bare x (RFC 5844)
Decoded messages must also survive encode -> decode unchanged. Any exception, a WireError
"decoder-fault" (an exception the decoder caught), an undecodable PBA or a round-trip
mismatch is a finding: they are printed and counted (goal: 0).

Baseline in the same run: decode of the same count of valid seed messages. RSS is sampled
after every batch.

    .venv/bin/python bench/fuzz_codec.py [--quick] [--n N] [--seed S]
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from common import (
    LMAA,
    T0,
    arg_parser,
    finish_machine_info,
    machine_info,
    print_table,
    rss_bytes,
    write_json,
)

from pmip_agent.core.events import (
    BindingDown,
    BindingPurged,
    BindingUp,
    MessageDropped,
    PbuRejected,
    Transmit,
)
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.policy import Ipv4Mode, LmaSettings, MnProfile
from pmip_agent.core.pools import Ipv4Pool, PoolSet, PrefixPool
from pmip_agent.wire import (
    AccessTechTypeOption,
    BaFlags,
    BindingAck,
    BindingUpdate,
    BuFlags,
    GreKey,
    HandoffIndicatorOption,
    HomeNetworkPrefix,
    Ipv4AddressAck,
    Ipv4CareOfAddress,
    Ipv4DefaultRouter,
    Ipv4DhcpSupportMode,
    Ipv4HoaReply,
    Ipv4HoaRequest,
    Ipv4HomeAddress,
    LinkLocalAddress,
    MnIdentifier,
    MnLinkLayerId,
    NatDetection,
    Option,
    Status,
    Timestamp,
    UnknownOption,
    WireError,
    decode,
    encode,
    mh_checksum,
)
from pmip_agent.wire import ipv6 as ipv6_frame
from pmip_agent.wire.options import OPTION_CLASSES

BATCH = 10_000
STEP_S = 10e-6  # simulated clock per input and pass: a batch's pass spans 0.1 s
BATCH_GAP_S = 1.0  # the clock also jumps this much between batches (expiry, purges)
MAGS = tuple(IPv6Address(f"2001:db8:a:{i}::1") for i in range(4))
NAT_V4 = (IPv4Address("203.0.113.9"), IPv4Address("198.51.100.7"))  # what the LMA sees
MAG_V4 = IPv4Address("198.51.100.7")  # what a MAG puts in its IPv4 CoA option
ZERO4, ZERO6 = IPv4Address(0), IPv6Address(0)
KNOWN_TYPES = (0, 1, *sorted(OPTION_CLASSES), 50, 255)

# 40 MNs over all four IPv4 modes, more LMA-mode MNs than the pools hold (exhaustion paths).
MODES = (Ipv4Mode.LMA, Ipv4Mode.LMA, Ipv4Mode.STATIC, Ipv4Mode.DHCP_SERVER, Ipv4Mode.NONE)
N_MNS = 40


def mn(i: int) -> bytes:
    return b"fuzz%02d@example.net" % i


def make_profiles() -> dict[bytes, MnProfile]:
    out = {}
    for i in range(N_MNS):
        mode = MODES[i % len(MODES)]
        out[mn(i)] = MnProfile(
            mn(i),
            mode,
            ipv6=i % 3 != 0,
            ipv4_hoa=IPv4Address(f"10.9.0.{i + 2}") if mode is Ipv4Mode.STATIC else None,
            ipv4_prefix_len=24,
            ipv4_default_router=IPv4Address("10.9.0.1"),
            dhcp_prefix=IPv4Network("10.77.0.0/16") if mode is Ipv4Mode.DHCP_SERVER else None,
        )
    return out


def make_engines(profiles: dict[bytes, MnProfile]) -> list[LmaEngine]:
    """Two setting variants; each gets its own engine per input path."""
    variants = [
        LmaSettings(lmaa=LMAA),
        LmaSettings(
            lmaa=LMAA,
            timestamps=False,
            allowed_mags=frozenset(MAGS[:3]),
            accept_forced_udp=False,
            max_lifetime_s=8,
        ),
    ]
    return [
        LmaEngine(
            s,
            profiles,
            PoolSet(
                [
                    Ipv4Pool("small", IPv4Network("10.1.0.0/28")),  # 13 addresses
                    Ipv4Pool("other", IPv4Network("10.2.0.0/24")),
                ]
            ),
            PrefixPool(IPv6Network("2001:db8:100::/60")),  # 16 prefixes
        )
        for s in variants
    ]


# --- seeds ----------------------------------------------------------------------------


def pbu_seeds(now: float, rng: random.Random) -> list[BindingUpdate]:
    ts = Timestamp.from_seconds(now - 0.001)
    base = (HandoffIndicatorOption(1), AccessTechTypeOption(3))
    any6 = HomeNetworkPrefix(ZERO6, 0)
    seeds = []
    for i in range(N_MNS):
        mode = MODES[i % len(MODES)]
        mnid = MnIdentifier(mn(i))
        hoa = IPv4Address(f"10.9.0.{i + 2}") if mode is Ipv4Mode.STATIC else ZERO4
        if mode is Ipv4Mode.DHCP_SERVER:
            hoa = IPv4Address(f"10.77.1.{i}")
        seq = rng.randrange(1 << 16)
        lifetime = (100, 1, 0)[i % 7 % 3] if i % 7 < 3 else 100  # some short, some dereg
        rfc = (Ipv4HoaRequest(hoa),)
        draft = (Ipv4HomeAddress(hoa, 24 if mode is Ipv4Mode.STATIC else 0),)
        extra: tuple[Option, ...] = ()
        if i % 4 == 1:
            extra = (MnLinkLayerId(b"\x02\x00\x00\x00\x00%c" % i), LinkLocalAddress(MAGS[0]))
        elif i % 4 == 2:
            extra = (Ipv4CareOfAddress(MAG_V4 if i % 8 == 2 else NAT_V4[0]), GreKey(i))
        elif i % 4 == 3:
            extra = (UnknownOption(50, b"x" * (i % 9)),)
        tsopt = (ts,) if i % 6 else ()
        flags = BuFlags.A | BuFlags.P | (BuFlags.F if i % 10 == 4 else BuFlags.NONE)
        v6 = (any6,) if i % 3 else ()
        if i % 11 == 5:  # a named prefix, which only works if it is free in our pool
            v6 = (HomeNetworkPrefix(IPv6Address("2001:db8:100:3::"), 64),)
        ipv4 = draft if i % 2 else rfc
        opts = (mnid, *base, *tsopt, *v6, *ipv4, *extra)
        seeds.append(BindingUpdate(seq, lifetime, flags, opts))
    # a few structurally different ones: no IPv4, two IPv4 requests, missing options
    seeds.append(BindingUpdate(7, 100, options=(MnIdentifier(mn(1)), *base, ts, any6)))
    seeds.append(
        BindingUpdate(8, 100, options=(MnIdentifier(mn(5)), *base, ts, *rfc, Ipv4HoaRequest(hoa)))
    )
    seeds.append(BindingUpdate(9, 100, options=(MnIdentifier(mn(10)), ts, any6)))
    seeds.append(BindingUpdate(10, 100, BuFlags.A, options=(MnIdentifier(mn(0)), *base, ts)))
    return seeds


def pba_seeds() -> list[BindingAck]:
    v4 = IPv4Address("10.1.0.5")
    return [
        BindingAck(0, 1, 100, BaFlags.P, (MnIdentifier(mn(0)), Ipv4HoaReply(0, 24, v4))),
        BindingAck(
            0,
            2,
            100,
            BaFlags.P,
            (
                MnIdentifier(mn(1)),
                HomeNetworkPrefix(IPv6Address("2001:db8:100::"), 64),
                HandoffIndicatorOption(1),
                AccessTechTypeOption(3),
                Timestamp(123456789),
                Ipv4AddressAck(0, 24, v4),
                Ipv4DefaultRouter(IPv4Address("10.1.0.1")),
                NatDetection(110, True),
            ),
        ),
        BindingAck(
            Status.NOT_AUTHORIZED_FOR_IPV4_HOME_ADDRESS,
            3,
            0,
            BaFlags.P | BaFlags.T,
            (MnIdentifier(mn(2)), Ipv4HoaReply(129, 0, ZERO4), Ipv4DhcpSupportMode(True)),
        ),
    ]


def build_corpus(
    now: float, rng: random.Random, scratch: LmaEngine
) -> tuple[list[bytes], list[tuple[Option, ...]]]:
    """Encoded seeds (PBUs, the PBAs a scratch LMA answered, hand-built PBAs) and their
    option tuples, for option-level splicing."""
    msgs: list[BindingUpdate | BindingAck] = [*pbu_seeds(now, rng), *pba_seeds()]
    corpus = [encode(m) for m in msgs]
    for k, data in enumerate(corpus[: len(msgs) - 3]):
        if k % 2:
            scratch.receive_ipv6(data, MAGS[k % 4], now)
        else:
            scratch.receive_udp(data, NAT_V4[k % 2], 40000, now)
    for t in scratch.datagrams_to_send():
        mh = ipv6_frame.unwrap(t.data)[2] if t.data[0] >> 4 == 6 else t.data
        corpus.append(mh)
        msgs.append(decode(mh))
    while scratch.next_event() is not None:
        pass
    return corpus, [m.options for m in msgs]


# --- mutations ------------------------------------------------------------------------


def tlvs(b: bytes | bytearray) -> list[tuple[int, int]]:
    """(offset, total length) of each option TLV, as far as they can be walked."""
    out = []
    off = 12
    while off < len(b):
        if b[off] == 0:
            out.append((off, 1))
            off += 1
            continue
        if off + 1 >= len(b):
            break
        size = 2 + b[off + 1]
        out.append((off, size))
        off += size
    return out


def fix_framing(b: bytearray) -> bytearray:
    """Pad with Pad1 to a multiple of 8 and set Header Len to match."""
    if len(b) < 8:
        b += bytes(8 - len(b))
    b += bytes(-len(b) % 8)
    if len(b) <= 2048:
        b[1] = len(b) // 8 - 1
    return b


class Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.corpus: list[bytes] = []
        self.optsets: list[tuple[Option, ...]] = []
        self.ops: list[tuple[str, Callable[[], bytes], int]] = [
            ("bitflip", self.bitflip, 20),
            ("byteset", self.byteset, 8),
            ("truncate", self.truncate, 8),
            ("extend", self.extend, 8),
            ("length", self.length, 14),
            ("typeswap", self.typeswap, 8),
            ("splice-raw", self.splice_raw, 10),
            ("splice-options", self.splice_options, 10),
            ("repeat-option", self.repeat_option, 4),
            ("random", self.random_bytes, 4),
            ("random-framed", self.random_framed, 6),
        ]
        self.names = [o[0] for o in self.ops]
        self.funcs = [o[1] for o in self.ops]
        self.weights = [o[2] for o in self.ops]

    def pick(self) -> bytearray:
        return bytearray(self.rng.choice(self.corpus))

    def maybe_fix(self, b: bytearray) -> bytes:
        return bytes(fix_framing(b) if self.rng.random() < 0.5 else b)

    def generate(self) -> tuple[str, bytes]:
        k = self.rng.choices(range(len(self.funcs)), self.weights)[0]
        return self.names[k], self.funcs[k]()

    def bitflip(self) -> bytes:
        b = self.pick()
        for _ in range(self.rng.choice((1, 1, 1, 2, 3, 8))):
            pos = self.rng.randrange(len(b) * 8)
            b[pos >> 3] ^= 1 << (pos & 7)
        return bytes(b)

    def byteset(self) -> bytes:
        b = self.pick()
        for _ in range(self.rng.randint(1, 3)):
            b[self.rng.randrange(len(b))] = self.rng.choice(
                (0, 1, 0x7F, 0x80, 0xFF, self.rng.randrange(256))
            )
        return bytes(b)

    def truncate(self) -> bytes:
        b = self.pick()
        return self.maybe_fix(b[: self.rng.randrange(len(b))])

    def extend(self) -> bytes:
        b = self.pick()
        n = self.rng.randint(1, 64)
        tail = self.rng.choice((bytes(n), self.rng.randbytes(n), bytes((1, n)) + bytes(n)))
        return self.maybe_fix(b + tail)

    def length(self) -> bytes:
        b = self.pick()
        opts = [t for t in tlvs(b) if t[1] > 1]
        if not opts or self.rng.random() < 0.15:  # the Header Len byte
            b[1] = self.rng.choice((0, 1, 255, (b[1] + self.rng.choice((-1, 1))) & 0xFF))
            return bytes(b)
        off, _size = self.rng.choice(opts)
        old = b[off + 1]
        b[off + 1] = self.rng.choice(
            (0, 1, 255, (old + self.rng.randint(-3, 3)) & 0xFF, self.rng.randrange(256))
        )
        return bytes(b)

    def typeswap(self) -> bytes:
        b = self.pick()
        opts = tlvs(b)
        if not opts:
            return bytes(b)
        off, _ = self.rng.choice(opts)
        b[off] = self.rng.choice(KNOWN_TYPES)
        return bytes(b)

    def splice_raw(self) -> bytes:
        """Option TLVs from two seeds, shuffled, at their raw bytes: misalignment and
        duplicates included."""
        a, c = self.pick(), self.pick()
        pieces = [bytes(a[o : o + s]) for o, s in tlvs(a)] + [
            bytes(c[o : o + s]) for o, s in tlvs(c)
        ]
        self.rng.shuffle(pieces)
        keep = pieces[: self.rng.randint(0, len(pieces))]
        return self.maybe_fix(bytearray(a[:12]) + b"".join(keep))

    def _options_mix(self) -> list[Option]:
        a, c = self.rng.choice(self.optsets), self.rng.choice(self.optsets)
        opts = [o for o in a + c if self.rng.random() < 0.6]
        self.rng.shuffle(opts)
        return opts

    def _encode(self, opts: list[Option]) -> bytes:
        if self.rng.random() < 0.7:
            msg: BindingUpdate | BindingAck = BindingUpdate(
                self.rng.randrange(1 << 16),
                self.rng.choice((0, 1, 100, 0xFFFF)),
                BuFlags(self.rng.choice((0xC200, 0x8200, 0x8300, 0x0200, 0xFFFF))),
                tuple(opts),
            )
        else:
            msg = BindingAck(
                self.rng.choice((0, 128, 135, 156, 170)),
                self.rng.randrange(1 << 16),
                100,
                BaFlags(self.rng.choice((0x20, 0x00, 0xF0))),
                tuple(opts),
            )
        while True:
            try:
                return encode(msg)
            except ValueError:  # too long for one Mobility Header: drop options until it
                msg = replace(msg, options=msg.options[:-1])  # fits (near-2048 messages)

    def splice_options(self) -> bytes:
        """Options of two seed messages mixed at the dataclass level: always well framed."""
        return self._encode(self._options_mix())

    def repeat_option(self) -> bytes:
        """One option repeated many times, next to a valid PBU's options (long messages,
        duplicates, many prefixes echoed back)."""
        opts = list(self.rng.choice(self.optsets[: N_MNS + 4]))
        if not opts:
            return self.random_framed()
        opts += [self.rng.choice(opts)] * self.rng.choice((2, 8, 40, 90, 120))
        return self._encode(opts)

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice((0, 1, 7, 8, 12, 16, self.rng.randrange(80))))

    def random_framed(self) -> bytes:
        """A valid fixed header (MH type 5 or 6) followed by random TLVs."""
        body = bytearray()
        for _ in range(self.rng.randint(0, 8)):
            t = self.rng.choice(KNOWN_TYPES)
            n = self.rng.choice((0, 1, 2, 4, 6, 8, 16, 18, self.rng.randrange(40)))
            body += bytes((t, n)) + self.rng.randbytes(n)
        head = bytearray((59, 0, self.rng.choice((5, 6, 5, 6, 7)), 0, 0, 0))
        return bytes(fix_framing(head + self.rng.randbytes(6) + body))


# --- the run ----------------------------------------------------------------------------


class Findings:
    """Anything that must not happen, with the first few examples of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, dict[str, str]] = {}

    def add(self, kind: str, data: bytes, detail: str) -> None:
        self.counts[kind] += 1
        if kind not in self.examples:
            self.examples[kind] = {"input_hex": data.hex(), "detail": detail}


def where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    frame = tb[-1] if tb else None
    loc = f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}" if frame else "?"
    return f"{type(exc).__name__} at {loc}"


def event_label(ev: object) -> str:
    if isinstance(ev, MessageDropped):
        return f"MessageDropped:{ev.reason}"
    if isinstance(ev, PbuRejected):
        try:
            return f"PbuRejected:{Status(ev.status).name.lower()}"
        except ValueError:
            return f"PbuRejected:{ev.status}"
    if isinstance(ev, BindingUp):
        return f"BindingUp:{ev.change}"
    if isinstance(ev, BindingDown):
        return f"BindingDown:{ev.reason}"
    if isinstance(ev, BindingPurged):
        return "BindingPurged"
    return type(ev).__name__


def udp_payload(x: bytes, k: int, rng: random.Random) -> bytes:
    mag = MAGS[k % 4]
    r = rng.random()
    if r < 0.2:
        return x  # RFC 5844 §4: a bare MH, checksum ignored
    if r < 0.7 and len(x) >= 6:
        x = x[:4] + mh_checksum(x, mag, LMAA).to_bytes(2, "big") + x[6:]
    packet = ipv6_frame.wrap(x, mag, LMAA)
    if r >= 0.9:  # damage the IPv6 header
        b = bytearray(packet)
        choice = rng.randrange(3)
        if choice == 0:
            pos = rng.randrange(40 * 8)
            b[pos >> 3] ^= 1 << (pos & 7)
        elif choice == 1:
            del b[rng.randrange(len(b)) :]
        else:
            b[4:6] = rng.randrange(1 << 16).to_bytes(2, "big")
        packet = bytes(b)
    return packet


def check_outputs(out: list[Transmit], findings: Findings) -> int:
    """Every PBA the LMA sends must decode back (with its checksum when it has one)."""
    for t in out:
        try:
            if t.peer.v4 is not None and t.data and t.data[0] >> 4 == 6:
                src, dst, mh = ipv6_frame.unwrap(t.data)
                msg = decode(mh, src, dst)
            else:
                msg = decode(t.data)
            if not isinstance(msg, BindingAck):
                findings.add("engine-output-not-a-pba", t.data, type(msg).__name__)
        except WireError as exc:
            findings.add(f"engine-output-undecodable:{exc.reason}", t.data, str(exc))
    return len(out)


def run(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    profiles = make_profiles()
    engines_v6 = make_engines(profiles)
    engines_udp = make_engines(profiles)
    scratch = make_engines(profiles)[0]
    mut = Mutator(rng)
    findings = Findings()
    decode_out: Counter[str] = Counter()
    by_mutation: dict[str, Counter[str]] = {name: Counter() for name in mut.names}
    roundtrip: Counter[str] = Counter()
    events: dict[str, Counter[str]] = {"ipv6": Counter(), "udp": Counter()}
    pbas = {"ipv6": 0, "udp": 0}
    t_decode = t_ipv6 = t_udp = t_valid = t_gen = 0.0
    now = T0
    rss: list[int] = []
    rss_start = 0
    batches = (n + BATCH - 1) // BATCH
    print(f"fuzz: {n:,} inputs in {batches} batches, seed {seed}", flush=True)
    started = time.perf_counter()
    for b in range(batches):
        count = min(BATCH, n - b * BATCH)
        t = time.perf_counter()
        mut.corpus, mut.optsets = build_corpus(now, rng, scratch)
        valid = [mut.corpus[k % len(mut.corpus)] for k in range(count)]
        batch = [mut.generate() for _ in range(count)]
        inputs = [x for _, x in batch]
        udp_inputs = [udp_payload(x, k, rng) for k, x in enumerate(inputs)]
        t_gen += time.perf_counter() - t
        if b == 0:
            rss_start = rss_bytes()

        # 1. decode: every outcome counted; only WireError may come out.
        results: list[object] = []
        append = results.append
        t = time.perf_counter()
        for x in inputs:
            try:
                append(decode(x))
            except WireError as exc:
                append(exc)
            except Exception as exc:  # a finding: decode must raise only WireError
                append(exc)
        t_decode += time.perf_counter() - t
        for (op, x), res in zip(batch, results, strict=True):
            if isinstance(res, WireError):
                label = f"WireError:{res.reason}"
                if res.reason == "decoder-fault":
                    findings.add("decode:decoder-fault", x, res.detail)
            elif isinstance(res, Exception):
                label = f"EXCEPTION:{type(res).__name__}"
                findings.add(f"decode:{where(res)}", x, repr(res))
            else:
                label = f"ok:{type(res).__name__}"
                try:
                    again = decode(encode(res))  # type: ignore[arg-type]
                    roundtrip["same" if again == res else "mismatch"] += 1
                    if again != res:
                        findings.add("roundtrip-mismatch", x, f"{res!r} -> {again!r}")
                except Exception as exc:  # encode refusing what decode accepted
                    roundtrip[f"reencode-error:{type(exc).__name__}"] += 1
                    findings.add(f"reencode:{where(exc)}", x, repr(exc))
            decode_out[label] += 1
            by_mutation[op][label.split(":")[0]] += 1

        # 2. baseline: the same count of valid decodes.
        t = time.perf_counter()
        for x in valid:
            decode(x)
        t_valid += time.perf_counter() - t

        # 3. and 4. the LMA's two inputs; nothing may escape.
        variant = b % 2
        for path, eng, payloads in (
            ("ipv6", engines_v6[variant], inputs),
            ("udp", engines_udp[variant], udp_inputs),
        ):
            out: list[Transmit] = []
            evs: list[object] = []
            receive_v6, receive_udp = eng.receive_ipv6, eng.receive_udp
            datagrams, next_event = eng.datagrams_to_send, eng.next_event
            bad: list[tuple[bytes, Exception]] = []
            t = time.perf_counter()
            for k, x in enumerate(payloads):
                clock = now + k * STEP_S
                try:
                    if path == "ipv6":
                        receive_v6(x, MAGS[k % 4], clock)
                    else:
                        receive_udp(x, NAT_V4[k % 2], 40000 + k % 3, clock)
                except Exception as exc:  # a finding: the engine must absorb any input
                    bad.append((x, exc))
                out += datagrams()
                while (ev := next_event()) is not None:
                    evs.append(ev)
            elapsed = time.perf_counter() - t
            if path == "ipv6":
                t_ipv6 += elapsed
            else:
                t_udp += elapsed
            now += count * STEP_S
            eng.handle_timer(now)
            eng.get_timer()
            while (ev := next_event()) is not None:
                evs.append(ev)
            for x, exc in bad:
                tb = "".join(traceback.format_exception(exc)[-3:])
                findings.add(f"{path}:{where(exc)}", x, tb)
            events[path].update(event_label(e) for e in evs)
            events[path]["EXCEPTION"] += len(bad)
            pbas[path] += check_outputs(out, findings)
        now += BATCH_GAP_S
        rss.append(rss_bytes())
        done = b * BATCH + count
        if (b + 1) % max(1, batches // 10) == 0 or b == batches - 1:
            print(
                f"  {done:>9,} inputs  {time.perf_counter() - started:6.1f} s  "
                f"rss {rss[-1] / 2**20:,.1f} MiB  findings {sum(findings.counts.values())}",
                flush=True,
            )

    half = rss[len(rss) // 2]
    return {
        "inputs": n,
        "seed": seed,
        "decode_outcomes": dict(decode_out.most_common()),
        "outcomes_by_mutation": {k: dict(v) for k, v in by_mutation.items()},
        "roundtrip": dict(roundtrip),
        "engine_events": {k: dict(v.most_common()) for k, v in events.items()},
        "engine_pbas_sent": pbas,
        "bindings_at_end": {
            "ipv6": [len(e) for e in engines_v6],
            "udp": [len(e) for e in engines_udp],
        },
        "findings": dict(findings.counts),
        "finding_examples": findings.examples,
        "seconds": {
            "decode": round(t_decode, 2),
            "valid_decode_baseline": round(t_valid, 2),
            "receive_ipv6": round(t_ipv6, 2),
            "receive_udp": round(t_udp, 2),
            "generate": round(t_gen, 2),
            "wall": round(time.perf_counter() - started, 1),
        },
        "per_s": {
            "decode": round(n / t_decode),
            "valid_decode_baseline": round(n / t_valid),
            "receive_ipv6": round(n / t_ipv6),
            "receive_udp": round(n / t_udp),
        },
        "rss_bytes": {
            "before_first_batch": rss_start,
            "after_first_batch": rss[0],
            "middle": half,
            "end": rss[-1],
            "max": max(rss),
            "growth_total": rss[-1] - rss_start,
            "growth_after_first_batch": rss[-1] - rss[0],
            "growth_second_half": rss[-1] - half,
            "per_batch": rss,
        },
    }


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--n", type=int, help="inputs (default 1000000, quick 20000)")
    parser.add_argument("--seed", type=int, default=5213)
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 1_000_000)
    machine = machine_info()
    res = run(n, args.seed)

    total = sum(res["decode_outcomes"].values())
    print(f"\ndecode outcomes ({total:,} inputs):")
    print_table(
        [(k, f"{v:,}", f"{100 * v / total:.2f}") for k, v in res["decode_outcomes"].items()],
        ("outcome", "count", "%"),
    )
    print("\nby mutation (ok / WireError / EXCEPTION):")
    print_table(
        [
            (op, f"{c.get('ok', 0):,}", f"{c.get('WireError', 0):,}", f"{c.get('EXCEPTION', 0):,}")
            for op, c in res["outcomes_by_mutation"].items()
        ],
        ("mutation", "ok", "WireError", "EXCEPTION"),
    )
    print(f"\nre-encode round trip of decoded messages: {res['roundtrip']}")
    for path in ("ipv6", "udp"):
        evs = res["engine_events"][path]
        print(
            f"\nLMA receive_{path}: {res['engine_pbas_sent'][path]:,} PBAs sent, "
            f"{evs.get('EXCEPTION', 0)} exceptions; top events:"
        )
        print_table(
            [(k, f"{v:,}") for k, v in list(evs.items())[:14]],
            ("event", "count"),
        )
    sec, rate = res["seconds"], res["per_s"]
    print("\nThroughput (timed loops only; input generation excluded):")
    print_table(
        [
            ("decode(valid seeds)  [baseline]", f"{rate['valid_decode_baseline']:,}", "1.00"),
            (
                "decode(fuzzed)",
                f"{rate['decode']:,}",
                f"{rate['decode'] / rate['valid_decode_baseline']:.2f}",
            ),
            (
                "LmaEngine.receive_ipv6(fuzzed)",
                f"{rate['receive_ipv6']:,}",
                f"{rate['receive_ipv6'] / rate['valid_decode_baseline']:.2f}",
            ),
            (
                "LmaEngine.receive_udp(fuzzed)",
                f"{rate['receive_udp']:,}",
                f"{rate['receive_udp'] / rate['valid_decode_baseline']:.2f}",
            ),
        ],
        ("path", "inputs/s", "vs baseline"),
    )
    r = res["rss_bytes"]
    print(
        f"\nRSS: {r['before_first_batch'] / 2**20:.1f} MiB at start, {r['end'] / 2**20:.1f} MiB "
        f"at end (max {r['max'] / 2**20:.1f}); growth {r['growth_total'] / 2**20:+.2f} MiB in "
        f"all, {r['growth_after_first_batch'] / 2**20:+.2f} MiB after the first batch "
        f"(warm-up), {r['growth_second_half'] / 2**20:+.2f} MiB over the second half"
    )
    print(f"wall {sec['wall']} s (generation {sec['generate']} s)")
    nfind = sum(res["findings"].values())
    print(f"\nFINDINGS (goal 0): {nfind}")
    for kind, count in res["findings"].items():
        ex = res["finding_examples"][kind]
        print(f"  {count:>8,}  {kind}\n            {ex['detail'].strip()[:300]}")
        print(f"            input: {ex['input_hex'][:160]}")
    write_json(
        "fuzz_codec",
        {
            "benchmark": "fuzz_codec",
            "quick": args.quick,
            "machine": finish_machine_info(machine),
            **res,
        },
        quick=args.quick,
        tag=args.tag,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
