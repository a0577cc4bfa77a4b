"""Helpers for the robustness tests and benches of issue 7 (no IPsec).

Built on ``daemon_lab`` (MN — MAG — (NAT) — LMA with the real daemons) and ``netns``
(per-run namespace prefix, teardown by PID even on failure). What this adds:

* ``RobustTopology``: the same lab, with extra mobile nodes, access links, LMA and MAG
  settings, and extra namespaces that send crafted traffic to the daemons;
* ``MhClient``/``UdpClient``: crafted PBUs from a namespace (raw IPv6 socket of protocol
  135 with IPV6_CHECKSUM=4, or UDP 5436 in either framing), PBAs read back and decoded;
* ``RegistrationLoad``: many MNs registered through one raw socket, closed loop, with
  retransmission as a MAG would do (the kill -9 test and bench);
* ``Sniffer``: an AF_PACKET capture, to replay a PBU seen on the wire;
* nftables helpers: loss injection with ``numgen`` and NAT rebinding;
* ``DaemonFuzzer``: mutated PBU/PBA/DHCP packets at the running daemons, with flow control
  from the daemons' socket queues, and the checks of what they must still look like.

Sockets are opened inside a namespace with ``setns`` on the calling thread and stay there
when the thread switches back, so the test process itself is the sender.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any

from daemon_lab import (
    LMA_V4,
    LMAA,
    MAG_V4_DIRECT,
    MN_ID,
    PROXY_COA,
    Daemon,
    Topology,
)
from netns import Lab, in_netns, sh, wait_for

from pmip_agent.wire import (
    AccessTechTypeOption,
    BaFlags,
    BindingAck,
    BindingUpdate,
    BuFlags,
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
    Status,
    Timestamp,
    UnknownOption,
    WireError,
    decode,
    encode,
    mh_checksum,
)
from pmip_agent.wire import ipv6 as ipv6_frame

IPPROTO_MH = 135
IPV6_CHECKSUM = getattr(socket, "IPV6_CHECKSUM", 7)
ETH_P_IPV6 = 0x86DD
ZERO4, ZERO6 = IPv4Address(0), IPv6Address(0)
A_P = int(BuFlags.A | BuFlags.P)

# A second MAG (or an attacker) on its own link to the LMA namespace.
MAG2_LINK_LMA = "2001:db8:e::1"
MAG2 = "2001:db8:e::2"
ROGUE = "2001:db8:e::66"  # on the same link, never in allowed_mags
MAG2_V4_LMA_SIDE = "198.51.100.1"
MAG2_V4 = "198.51.100.2"
ROGUE_V4 = "198.51.100.66"


# --- namespaces ---------------------------------------------------------------------------


def nft(ns: str, script: str) -> None:
    """Apply an nftables script inside ``ns``; fail loudly with nft's message."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=script,
        text=True,
        capture_output=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"nft in {ns} failed: {out.stderr.strip()}\n{script}")


def nft_counters(ns: str, family: str, table: str) -> dict[str, int]:
    """Packet counts of the named counters of one table."""
    out = sh(f"ip netns exec {ns} nft -j list counters table {family} {table}").stdout
    found: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        counter = item.get("counter")
        if counter is not None:
            found[counter["name"]] = counter["packets"]
    return found


def ip_batch(commands: Sequence[str], ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    out = subprocess.run(argv, input="\n".join(commands) + "\n", text=True, capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(f"ip -batch failed: {out.stderr.strip()}")


# --- process figures ----------------------------------------------------------------------


def daemon_pid(daemon: Daemon) -> int:
    """The daemon's PID: ``ip netns exec`` execs, so the spawned PID is the agent itself."""
    assert daemon.proc is not None and daemon.proc.poll() is None, "daemon not running"
    pid = daemon.proc.pid
    exe = os.readlink(f"/proc/{pid}/exe")
    assert "python" in Path(exe).name, f"PID {pid} is {exe}, not the agent's interpreter"
    return pid


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def socket_queues(pid: int) -> dict[str, tuple[int, int]]:
    """(rx_queue bytes, drops) of each UDP and raw IPv6 socket the process holds, keyed
    "udp:<port>" or "raw6:<protocol>:<local address hex>"."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    out: dict[str, tuple[int, int]] = {}
    for table in ("udp", "raw6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[9] not in inodes:
                    continue
                local = cols[1]
                rx = int(cols[4].split(":")[1], 16)
                drops = int(cols[-1])
                addr, port = local.split(":")
                key = f"udp:{int(port, 16)}" if table == "udp" else f"raw6:{int(port, 16)}:{addr}"
                old = out.get(key, (0, 0))
                out[key] = (old[0] + rx, old[1] + drops)
    return out


def log_problems(text: str) -> list[str]:
    """Lines of a daemon log that show an exception escaped a handler."""
    return [
        line
        for line in text.splitlines()
        if "Traceback" in line or "error while handling input" in line or " ERROR " in line
    ]


# --- the lab ------------------------------------------------------------------------------


def mn_name(prefix: str, i: int) -> str:
    return f"{prefix}{i:04d}@example.net"


def mac_of(i: int, kind: int = 0x10) -> str:
    return f"02:00:00:{kind:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


@dataclass
class RobustTopology(Topology):
    """``daemon_lab.Topology`` with more to configure. Set the fields before ``build()``."""

    lma_nodes: list[dict[str, Any]] = field(default_factory=list)  # extra LMA profiles
    mag_nodes: list[dict[str, Any]] = field(default_factory=list)  # extra MAG profiles
    mag_access: list[dict[str, Any]] = field(default_factory=list)  # extra access links
    mag_lmas: list[dict[str, Any]] = field(default_factory=list)  # extra entries in mag.lmas
    lma_timers: dict[str, Any] = field(default_factory=dict)
    lma_top: dict[str, Any] = field(default_factory=dict)  # top-level keys of the LMA file
    ns_mag2: str = ""

    def _lma_config(self, extra: dict[str, Any], nat_refresh_s: int) -> dict[str, Any]:
        cfg = super()._lma_config(extra, nat_refresh_s)
        cfg["mobile_nodes"] += self.lma_nodes
        cfg["timers"].update(self.lma_timers)
        cfg.update(self.lma_top)
        return cfg

    def _mag_config(self, mag_v4: str, timers: dict[str, Any]) -> dict[str, Any]:
        cfg = super()._mag_config(mag_v4, timers)
        cfg["mag"]["access_interfaces"] += self.mag_access
        cfg["mag"]["lmas"] += self.mag_lmas
        cfg["mobile_nodes"] += self.mag_nodes
        return cfg

    def add_mag2(self) -> str:
        """A namespace on its own link to the LMA: a second MAG (MAG2) and a rogue address
        (ROGUE), over IPv6 and IPv4. Call after build()."""
        lab = self.lab
        self.ns_mag2 = lab.ns("mag2")
        lab.link(self.ns_mag2, "tr0", self.ns_lma, "tr1")
        lab.addr(self.ns_lma, "tr1", f"{MAG2_LINK_LMA}/64")
        lab.addr(self.ns_lma, "tr1", f"{MAG2_V4_LMA_SIDE}/24")
        for addr in (MAG2, ROGUE):
            lab.addr(self.ns_mag2, "tr0", f"{addr}/64")
        for addr in (MAG2_V4, ROGUE_V4):
            lab.addr(self.ns_mag2, "tr0", f"{addr}/24")
        lab.run(self.ns_mag2, f"ip -6 route add {LMAA}/128 via {MAG2_LINK_LMA}")
        lab.run(self.ns_mag2, f"ip route add {LMA_V4}/32 via {MAG2_V4_LMA_SIDE}")
        return self.ns_mag2

    def add_dedicated_links(self, names: Sequence[tuple[str, str, str]]) -> None:
        """One veth per MN between the MAG ("accN", up) and the MN namespace ("ethN",
        down until the MN attaches), for (access interface, MN interface, MAC) triples."""
        ip_batch(
            [
                f"link add {acc} netns {self.ns_mag} type veth peer name {eth} netns {self.ns_mn}"
                for acc, eth, _ in names
            ]
        )
        ip_batch([f"link set {acc} up" for acc, _, _ in names], self.ns_mag)
        ip_batch([f"link set {eth} address {mac}" for _, eth, mac in names], self.ns_mn)

    def set_mn_links(self, names: Sequence[str], up: bool) -> None:
        state = "up" if up else "down"
        ip_batch([f"link set {eth} {state}" for eth in names], self.ns_mn)

    def lma_rows(self) -> list[dict[str, Any]]:
        return list(self.lma.ctl_json("bindings"))

    def mag_rows(self) -> list[dict[str, Any]]:
        return list(self.mag.ctl_json("bindings"))


def dedicated_mns(
    n: int, prefix: str = "mn", first: int = 2
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[tuple]]:
    """n MNs, each on its own access link: (LMA profiles, MAG profiles, MAG access
    interfaces, (acc, eth, mac) triples)."""
    lma_nodes, mag_nodes, access, links = [], [], [], []
    for k in range(first, first + n):
        mn = mn_name(prefix, k)
        mac = mac_of(k)
        lma_nodes.append({"mn_id": mn, "ipv6": True, "ipv4": {"mode": "lma", "pool": "pool1"}})
        mag_nodes.append(
            {
                "mn_id": mn,
                "lma": "lma1",
                "ipv6": True,
                "ipv4": {"mode": "lma"},
                "link_layer_ids": [mac],
            }
        )
        access.append({"name": f"acc{k}", "mn_id": mn})
        links.append((f"acc{k}", f"eth{k}", mac))
    return lma_nodes, mag_nodes, access, links


# --- crafted signalling -------------------------------------------------------------------


def make_pbu(
    mn_id: str | bytes,
    seq: int,
    *,
    ts: float | None = None,
    timestamp: int | None = None,
    hoa: IPv4Address | str | None = ZERO4,
    hoa_plen: int = 0,
    hnp: bool = False,
    lifetime_units: int = 900,
    draft: bool = False,
    flags: int = A_P,
    coa4: str | None = None,
    llid: bytes | None = None,
) -> BindingUpdate:
    """A PBU as a MAG builds one. ``ts`` (default: now) or a raw ``timestamp`` value."""
    ident = mn_id.encode() if isinstance(mn_id, str) else mn_id
    opts: list[Option] = [MnIdentifier(ident)]
    if hnp:
        opts.append(HomeNetworkPrefix(ZERO6, 0))
    opts += [HandoffIndicatorOption(1), AccessTechTypeOption(3)]
    if llid is not None:
        opts.append(MnLinkLayerId(llid))
    if timestamp is not None:
        opts.append(Timestamp(timestamp))
    else:
        opts.append(Timestamp.from_seconds(time.time() if ts is None else ts))
    if hoa is not None:
        addr = IPv4Address(hoa)
        opts.append(Ipv4HomeAddress(addr, hoa_plen) if draft else Ipv4HoaRequest(addr, hoa_plen))
    if coa4 is not None:
        opts.append(Ipv4CareOfAddress(IPv4Address(coa4)))
    return BindingUpdate(seq & 0xFFFF, lifetime_units, flags, tuple(opts))


def pba_hoa(pba: BindingAck) -> tuple[int | None, IPv4Address | None]:
    """(IPv4 status, address) of the PBA's IPv4 HoA Reply or IPv4 Address Ack."""
    reply = pba.find(Ipv4HoaReply) or pba.find(Ipv4AddressAck)
    if reply is None:
        return None, None
    return reply.status, reply.address


def pba_mn(data: bytes) -> bytes | None:
    """The MN identifier of an encoded PBA/PBU (MN-ID first, as every sender here puts it)."""
    if len(data) >= 16 and data[12] == 8:
        return data[15 : 14 + data[13]]
    return None


class MhClient:
    """A raw IPv6 socket of protocol 135 in one namespace. The source address is chosen
    per packet (IPV6_PKTINFO); the kernel fills the checksum in on send and checks it on
    receive."""

    def __init__(self, ns: str, dest: str, rcvbuf: int = 4 << 20) -> None:
        with in_netns(ns):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 4)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setblocking(False)
        self.sock = sock
        self.dest = (dest, 0)
        self._cmsg: dict[str, list[tuple[int, int, bytes]]] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, mh: bytes | BindingUpdate | BindingAck, src: str) -> None:
        data = mh if isinstance(mh, bytes | bytearray) else encode(mh)
        cmsg = self._cmsg.get(src)
        if cmsg is None:
            cmsg = self._cmsg[src] = [
                (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, IPv6Address(src).packed + bytes(4))
            ]
        while True:
            try:
                self.sock.sendmsg([data], cmsg, 0, self.dest)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)

    def recv_all(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65535))
            except (BlockingIOError, InterruptedError):
                return out

    def wait_pba(self, mn_id: str | bytes, seq: int, timeout: float = 5.0) -> BindingAck | None:
        """The PBA for this MN and sequence number, or None after ``timeout``."""
        ident = mn_id.encode() if isinstance(mn_id, str) else mn_id
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            select.select([self.sock], [], [], left)
            for data in self.recv_all():
                with contextlib.suppress(WireError):
                    msg = decode(data)
                    if (
                        isinstance(msg, BindingAck)
                        and msg.sequence == seq
                        and pba_mn(data) == ident
                    ):
                        return msg
        return None

    def exchange(
        self, pbu: BindingUpdate, src: str, timeout: float = 5.0, tries: int = 3
    ) -> BindingAck:
        """Send ``pbu`` from ``src`` and return its PBA (sent again if none came back)."""
        ident = pbu.options[0].identifier  # type: ignore[attr-defined]
        for _ in range(tries):
            self.send(pbu, src)
            pba = self.wait_pba(ident, pbu.sequence, timeout / tries)
            if pba is not None:
                return pba
        raise AssertionError(f"no PBA for {ident!r} seq {pbu.sequence} from {self.dest[0]}")

    def close(self) -> None:
        self.sock.close()


class UdpClient:
    """A UDP socket in one namespace sending to an LMA's or MAG's port 5436, in the seed's
    framing (IPv6 header + checksummed MH) or RFC 5844's bare MH."""

    def __init__(self, ns: str, bind: tuple[str, int], dest: tuple[str, int]) -> None:
        with in_netns(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(bind)
        sock.setblocking(False)
        self.sock = sock
        self.dest = dest

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_raw(self, payload: bytes) -> None:
        while True:
            try:
                self.sock.sendto(payload, self.dest)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)

    def send(self, msg: BindingUpdate, src6: str | None, dst6: str | None) -> None:
        """Seed framing when src6/dst6 are given, else a bare MH (checksum zero)."""
        if src6 is None or dst6 is None:
            self.send_raw(encode(msg))
        else:
            s, d = IPv6Address(src6), IPv6Address(dst6)
            self.send_raw(ipv6_frame.wrap(encode(msg, s, d), s, d))

    def recv_all(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65535))
            except (BlockingIOError, InterruptedError):
                return out

    def wait_pba(self, mn_id: str, seq: int, timeout: float = 5.0) -> BindingAck | None:
        ident = mn_id.encode()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            select.select([self.sock], [], [], left)
            for data in self.recv_all():
                mh = data[40:] if data and data[0] >> 4 == 6 else data
                with contextlib.suppress(WireError):
                    msg = decode(mh)
                    if isinstance(msg, BindingAck) and msg.sequence == seq and pba_mn(mh) == ident:
                        return msg
        return None

    def close(self) -> None:
        self.sock.close()


class Sniffer:
    """AF_PACKET capture of IPv6 frames on one interface of a namespace."""

    def __init__(self, ns: str, ifname: str) -> None:
        with in_netns(ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
            sock.bind((ifname, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        self.sock = sock

    def mobility_headers(self) -> list[tuple[IPv6Address, IPv6Address, bytes]]:
        """(source, destination, MH) of every captured IPv6 packet carrying an MH."""
        out = []
        while True:
            try:
                frame = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return out
            packet = frame[14:]
            if len(packet) >= 48 and packet[0] >> 4 == 6 and packet[6] == IPPROTO_MH:
                out.append((IPv6Address(packet[8:24]), IPv6Address(packet[24:40]), packet[40:]))

    def close(self) -> None:
        self.sock.close()


# --- many MNs from one namespace ----------------------------------------------------------


@dataclass
class Grant:
    hoa: IPv4Address | None
    seq: int
    at: float  # time.monotonic() when the PBA came back


class RegistrationLoad:
    """Registers MNs with an LMA the way MAGs would: one PBU outstanding per MN, at most
    ``window`` in all, each sent again with a fresh sequence number and timestamp after
    ``timeout_s`` without a PBA. An accepted PBA completes the MN; a rejected one counts
    and the MN is tried again after the timeout. MN i is served by ``mags[i % len]``."""

    def __init__(
        self,
        client: MhClient,
        mn_ids: Sequence[str],
        mags: Sequence[str],
        *,
        window: int = 64,
        timeout_s: float = 1.0,
        hnp: bool = False,
    ) -> None:
        self.client = client
        self.ids = [m.encode() for m in mn_ids]
        self.index = {m: j for j, m in enumerate(self.ids)}
        self.mags = list(mags)
        self.window = window
        self.timeout_s = timeout_s
        self.hnp = hnp
        self.seq = [random.randrange(1 << 16) for _ in self.ids]
        self.sent_at = [0.0] * len(self.ids)  # 0: nothing outstanding
        self.retry_at = [0.0] * len(self.ids)
        self.granted: dict[bytes, Grant] = {}
        self.pending = list(range(len(self.ids)))
        self.sent = 0
        self.retransmissions = 0
        self.statuses: Counter[int] = Counter()
        self.unmatched = 0
        self.hoa_changes: list[tuple[str, str, str]] = []

    def _pbu(self, j: int) -> BindingUpdate:
        self.seq[j] = (self.seq[j] + 1) & 0xFFFF
        return make_pbu(self.ids[j], self.seq[j], hnp=self.hnp)

    def run(self, stop: Callable[[RegistrationLoad], bool] | None = None, limit_s: float = 120):
        """Until every MN is granted, ``stop(self)`` is true (checked after each burst of
        sends), or ``limit_s`` passed."""
        client = self.client
        deadline = time.monotonic() + limit_s
        outstanding = sum(1 for t in self.sent_at if t)
        ready = [j for j in self.pending if not self.sent_at[j]]
        while self.pending and time.monotonic() < deadline:
            now = time.monotonic()
            keep = []
            for j in ready:
                if outstanding < self.window and self.retry_at[j] <= now:
                    if self.retry_at[j]:
                        self.retransmissions += 1
                    client.send(self._pbu(j), self.mags[j % len(self.mags)])
                    self.sent += 1
                    self.sent_at[j] = now
                    outstanding += 1
                else:
                    keep.append(j)
            ready = keep
            # Checked right after a burst: a caller that kills the LMA here does so with
            # up to a window of PBUs on their way to it or being processed.
            if stop is not None and stop(self):
                return
            select.select([client.sock], [], [], 0.01)
            for data in client.recv_all():
                j = self.index.get(pba_mn(data) or b"")
                try:
                    msg = decode(data)
                except WireError:
                    self.unmatched += 1
                    continue
                if (
                    j is None
                    or not isinstance(msg, BindingAck)
                    or not self.sent_at[j]
                    or msg.sequence != self.seq[j]
                ):
                    self.unmatched += 1
                    continue
                self.sent_at[j] = 0.0
                outstanding -= 1
                self.statuses[msg.status] += 1
                if msg.status == Status.ACCEPTED:
                    _status, hoa = pba_hoa(msg)
                    self.granted[self.ids[j]] = Grant(hoa, msg.sequence, time.monotonic())
                    self.pending.remove(j)
                else:
                    self.retry_at[j] = time.monotonic() + self.timeout_s
                    ready.append(j)
            now = time.monotonic()
            for j in self.pending:
                if self.sent_at[j] and now - self.sent_at[j] > self.timeout_s:
                    self.sent_at[j] = 0.0
                    outstanding -= 1
                    self.retry_at[j] = now  # retransmit at once, new sequence and timestamp
                    ready.append(j)

    def expire_outstanding(self) -> None:
        """Forget every outstanding PBU (the LMA that had them is gone)."""
        for j, t in enumerate(self.sent_at):
            if t:
                self.sent_at[j] = 0.0
                self.retry_at[j] = time.monotonic()


# --- faults -------------------------------------------------------------------------------

LOSS_TABLE = "pmiploss"


def inject_loss(ns: str, transport: str, percent: int = 30) -> None:
    """Drop ``percent`` % of signalling between this namespace and the LMA, each direction,
    with ``numgen random``. Named counters: seen_out/dropped_out, seen_in/dropped_in."""
    if transport == "ipv6":
        out_match, in_match = (
            f"ip6 daddr {LMAA} meta l4proto 135",
            f"ip6 saddr {LMAA} meta l4proto 135",
        )
    else:
        out_match, in_match = (
            f"ip daddr {LMA_V4} udp dport 5436",
            f"ip saddr {LMA_V4} udp sport 5436",
        )
    tenths = percent // 10
    assert tenths * 10 == percent, "percent in steps of 10"
    nft(
        ns,
        f"""
table inet {LOSS_TABLE} {{
  counter seen_out {{}}
  counter dropped_out {{}}
  counter seen_in {{}}
  counter dropped_in {{}}
  chain out {{
    type filter hook output priority 0; policy accept;
    {out_match} counter name seen_out
    {out_match} numgen random mod 10 < {tenths} counter name dropped_out drop
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    {in_match} counter name seen_in
    {in_match} numgen random mod 10 < {tenths} counter name dropped_in drop
  }}
}}
""",
    )


def nat_rebind(ns_nat: str, port_range: str = "20000-20100") -> None:
    """Restart the NAT's masquerade so the MAG's public port changes: the table is replaced
    by one that maps to ``port_range``, and the NAT's connection tracking table is flushed
    (deleting a NAT table keeps existing mappings alive in conntrack)."""
    nft(
        ns_nat,
        "delete table ip nat\n"
        "add table ip nat\n"
        "add chain ip nat post { type nat hook postrouting priority 100 ; }\n"
        f"add rule ip nat post oifname out0 meta l4proto udp masquerade to :{port_range}\n"
        "add rule ip nat post oifname out0 masquerade\n",
    )
    flush_conntrack(ns_nat)


def flush_conntrack(ns: str) -> int:
    """Flush connection tracking in ``ns`` through netlink with pyroute2 (a project
    dependency: no conntrack tool needed). It runs in a child process started inside the
    namespace, since pyroute2 opens its netlink socket lazily (after a setns would have
    been undone). Returns how many entries there were."""
    code = (
        "from pyroute2 import Conntrack\n"
        "ct = Conntrack()\n"
        "print(len(list(ct.dump_entries())))\n"
        "ct.flush()\n"
        "ct.close()\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"conntrack flush in {ns} failed: {out.stderr.strip()}")
    return int(out.stdout.split()[-1])


def conntrack_text(ns: str) -> str:
    return sh(f"ip netns exec {ns} cat /proc/net/nf_conntrack", check=False).stdout


# --- fuzzing the running daemons ----------------------------------------------------------

FUZZ_MAG = "2001:db8:e::2"  # = MAG2: allowed at the LMA, so fuzzed PBUs reach deep paths
FUZZ_MAG_V4 = MAG2_V4
N_FUZZ_MNS = 24
N_DHCP_MNS = 4
FUZZ_POOL = "10.11.0.0/28"  # 13 addresses for 12+ LMA-mode MNs: exhaustion reachable
FUZZ_STATIC = "10.21.0.{}"
FUZZ_DHCP_NET = "10.31.0.0/24"
MODES = ("lma", "lma", "static", "dhcp-server", "none")


def fuzz_mn(i: int) -> str:
    return f"fz{i:02d}@example.net"


def dhcp_mn(i: int) -> str:
    return f"fzd{i}@example.net"


def dhcp_mac(i: int) -> bytes:
    return bytes((2, 0, 0, 0, 0xFD, i))


def fuzz_profiles() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(LMA profiles, MAG profiles): fuzz MNs in every IPv4 mode for the PBU fuzzer, and a
    few MNs the MAG knows by MAC on its shared access link for the DHCP fuzzer."""
    lma: list[dict[str, Any]] = []
    for i in range(N_FUZZ_MNS):
        mode = MODES[i % len(MODES)]
        v4: dict[str, Any] = {"mode": mode}
        if mode == "lma":
            v4["pool"] = "fz"
        elif mode == "static":
            v4.update(address=FUZZ_STATIC.format(i + 2) + "/24", default_router="10.21.0.1")
        elif mode == "dhcp-server":
            v4["prefix"] = FUZZ_DHCP_NET
        lma.append({"mn_id": fuzz_mn(i), "ipv6": i % 3 != 0 or mode == "none", "ipv4": v4})
    mag: list[dict[str, Any]] = []
    for i in range(N_DHCP_MNS):
        lma.append({"mn_id": dhcp_mn(i), "ipv6": True, "ipv4": {"mode": "lma", "pool": "fz"}})
        mag.append(
            {
                "mn_id": dhcp_mn(i),
                "lma": "lma1",
                "ipv6": True,
                "ipv4": {"mode": "lma"},
                "link_layer_ids": [dhcp_mac(i).hex(":")],
            }
        )
    return lma, mag


def fuzz_topology(lab: Lab, tmp: Path) -> RobustTopology:
    """MN1 on its dedicated link through the real MAG over IPv4 transport; the MAG also
    listens on raw MH (a second, IPv6-transport LMA entry) and has a shared access link
    (accs) for DHCP; MAG2 is the fuzzer's namespace, an allowed MAG at the LMA."""
    lma_nodes, mag_nodes = fuzz_profiles()
    topo = RobustTopology(
        lab,
        tmp,
        "ipv4",
        lma_nodes=lma_nodes,
        mag_nodes=mag_nodes,
        mag_access=[{"name": "accs"}],
        mag_lmas=[{"name": "lma1v6", "lmaa": LMAA, "transport": "ipv6"}],
    )
    topo.build(
        lma_extra={
            # Over UDP the LMA also checks the real IPv4 source of each PBU.
            "allowed_mags": [PROXY_COA, MAG_V4_DIRECT, FUZZ_MAG, FUZZ_MAG_V4],
            "ipv4_pools": [
                {"name": "pool1", "prefix": "10.10.0.0/24"},
                {"name": "fz", "prefix": FUZZ_POOL},
            ],
            "dhcp_server_pools": ["10.31.0.0/16"],
        }
    )
    topo.add_mag2()
    lab.link(topo.ns_mn, "eths", topo.ns_mag, "accs")
    return topo


def binding_key(row: dict[str, Any]) -> dict[str, Any]:
    """A binding row without the fields that move by themselves."""
    return {k: v for k, v in row.items() if k not in ("lifetime_remaining_s",)}


def pool_accounting(lma_rows: list[dict[str, Any]], pools: list[dict[str, Any]]) -> list[str]:
    """Disagreements between the LMA's pools and its binding cache: every LMA-allocated
    HoA in the cache is counted once in its pool, every HNP in the HNP pool, nothing else."""
    problems = []
    for pool in pools:
        if pool["name"] == "hnp":
            held = sum(len(r["ipv6_hnps"]) for r in lma_rows)
        else:
            net = IPv4Network(pool["prefix"])
            held = sum(
                1
                for r in lma_rows
                if r["ipv4_source"] == "lma" and r["ipv4_hoa"] and IPv4Address(r["ipv4_hoa"]) in net
            )
        if held != pool["used"]:
            problems.append(f"pool {pool['name']}: used {pool['used']}, bindings hold {held}")
    hoas = [r["ipv4_hoa"] for r in lma_rows if r["ipv4_hoa"]]
    dup = [h for h, c in Counter(hoas).items() if c > 1]
    if dup:
        problems.append(f"HoAs held twice: {dup}")
    hnps = [p for r in lma_rows for p in r["ipv6_hnps"]]
    dup = [h for h, c in Counter(hnps).items() if c > 1]
    if dup:
        problems.append(f"HNPs held twice: {dup}")
    return problems


# mutation helpers ---------------------------------------------------------------------------


def _tlvs(b: bytes | bytearray, start: int = 12) -> list[tuple[int, int]]:
    out, off = [], start
    while off < len(b):
        if b[off] == 0:
            out.append((off, 1))
            off += 1
            continue
        if off + 1 >= len(b):
            break
        out.append((off, 2 + b[off + 1]))
        off += 2 + b[off + 1]
    return out


def _fix_framing(b: bytearray) -> bytearray:
    """Pad to a multiple of 8 with Pad1 and set Header Len to match."""
    if len(b) < 8:
        b += bytes(8 - len(b))
    b += bytes(-len(b) % 8)
    if len(b) <= 2048:
        b[1] = len(b) // 8 - 1
    return b


KNOWN_OPTION_TYPES = (0, 1, 8, 22, 23, 24, 25, 26, 27, 29, 30, 31, 32, 33, 36, 37, 38, 39, 50, 255)


class MhMutator:
    """Mutated Mobility Headers from a corpus of valid PBUs and PBAs: bit flips, byte sets,
    truncation and extension, option and Header Len corruption, option type swaps, raw TLV
    splicing, option splicing through ``encode``, MH type changes, random bytes and random
    TLVs behind a valid header. Half the size-changing mutants get their framing repaired."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.corpus: list[bytes] = []
        self.optsets: list[tuple[Option, ...]] = []
        ops: list[tuple[str, Callable[[], bytes], int]] = [
            ("bitflip", self.bitflip, 20),
            ("byteset", self.byteset, 10),
            ("truncate", self.truncate, 8),
            ("extend", self.extend, 8),
            ("length", self.length, 12),
            ("typeswap", self.typeswap, 8),
            ("mhtype", self.mhtype, 4),
            ("splice-raw", self.splice_raw, 8),
            ("splice-options", self.splice_options, 10),
            ("random", self.random_bytes, 4),
            ("random-framed", self.random_framed, 6),
            ("valid", self.valid, 2),
        ]
        self.names = [o[0] for o in ops]
        self.funcs = [o[1] for o in ops]
        self.cum = []
        total = 0
        for o in ops:
            total += o[2]
            self.cum.append(total)

    def set_corpus(self, msgs: Sequence[BindingUpdate | BindingAck]) -> None:
        self.corpus = [encode(m) for m in msgs]
        self.optsets = [m.options for m in msgs]

    def generate(self) -> tuple[str, bytes]:
        k = self.rng.choices(range(len(self.funcs)), cum_weights=self.cum)[0]
        return self.names[k], self.funcs[k]()

    def _pick(self) -> bytearray:
        return bytearray(self.rng.choice(self.corpus))

    def _maybe_fix(self, b: bytearray) -> bytes:
        return bytes(_fix_framing(b) if self.rng.random() < 0.5 else b)

    def valid(self) -> bytes:
        return bytes(self._pick())

    def bitflip(self) -> bytes:
        b = self._pick()
        for _ in range(self.rng.choice((1, 1, 1, 2, 3, 8))):
            pos = self.rng.randrange(len(b) * 8)
            b[pos >> 3] ^= 1 << (pos & 7)
        return bytes(b)

    def byteset(self) -> bytes:
        b = self._pick()
        for _ in range(self.rng.randint(1, 3)):
            b[self.rng.randrange(len(b))] = self.rng.choice(
                (0, 1, 0x7F, 0x80, 0xFF, self.rng.randrange(256))
            )
        return bytes(b)

    def truncate(self) -> bytes:
        b = self._pick()
        return self._maybe_fix(b[: self.rng.randrange(len(b))])

    def extend(self) -> bytes:
        b = self._pick()
        n = self.rng.randint(1, 64)
        tail = self.rng.choice((bytes(n), self.rng.randbytes(n), bytes((1, n)) + bytes(n)))
        return self._maybe_fix(b + tail)

    def length(self) -> bytes:
        b = self._pick()
        opts = [t for t in _tlvs(b) if t[1] > 1]
        if not opts or self.rng.random() < 0.15:
            b[1] = self.rng.choice((0, 1, 255, (b[1] + self.rng.choice((-1, 1))) & 0xFF))
            return bytes(b)
        off, _ = self.rng.choice(opts)
        b[off + 1] = self.rng.choice(
            (0, 1, 255, (b[off + 1] + self.rng.randint(-3, 3)) & 0xFF, self.rng.randrange(256))
        )
        return bytes(b)

    def typeswap(self) -> bytes:
        b = self._pick()
        opts = _tlvs(b)
        if opts:
            off, _ = self.rng.choice(opts)
            b[off] = self.rng.choice(KNOWN_OPTION_TYPES)
        return bytes(b)

    def mhtype(self) -> bytes:
        b = self._pick()
        b[2] = self.rng.choice((5, 6, 5, 6, 0, 1, 7, 255))
        if self.rng.random() < 0.3:
            b[0] = self.rng.choice((59, 0, 135, 255))
        return bytes(b)

    def splice_raw(self) -> bytes:
        a, c = self._pick(), self._pick()
        pieces = [bytes(a[o : o + s]) for o, s in _tlvs(a)]
        pieces += [bytes(c[o : o + s]) for o, s in _tlvs(c)]
        self.rng.shuffle(pieces)
        keep = pieces[: self.rng.randint(0, len(pieces))]
        return self._maybe_fix(bytearray(a[:12]) + b"".join(keep))

    def splice_options(self) -> bytes:
        a, c = self.rng.choice(self.optsets), self.rng.choice(self.optsets)
        opts = [o for o in a + c if self.rng.random() < 0.6]
        self.rng.shuffle(opts)
        if self.rng.random() < 0.1 and opts:
            opts += [self.rng.choice(opts)] * self.rng.choice((2, 8, 40, 100))
        msg: BindingUpdate | BindingAck
        if self.rng.random() < 0.7:
            msg = BindingUpdate(
                self.rng.randrange(1 << 16),
                self.rng.choice((0, 1, 100, 900, 0xFFFF)),
                self.rng.choice((0xC200, 0x8200, 0x8300, 0x0200, 0xFFFF)),
                tuple(opts),
            )
        else:
            msg = BindingAck(
                self.rng.choice((0, 128, 135, 156, 170, 171)),
                self.rng.randrange(1 << 16),
                self.rng.choice((0, 100, 900)),
                self.rng.choice((0x20, 0x00, 0xF0)),
                tuple(opts),
            )
        while True:
            try:
                return encode(msg)
            except ValueError:  # longer than one Mobility Header: drop options until it fits
                msg = replace(msg, options=msg.options[:-1])

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice((0, 1, 5, 7, 8, 12, 16, self.rng.randrange(80))))

    def random_framed(self) -> bytes:
        body = bytearray()
        for _ in range(self.rng.randint(0, 8)):
            t = self.rng.choice(KNOWN_OPTION_TYPES)
            n = self.rng.choice((0, 1, 2, 4, 6, 8, 16, 18, self.rng.randrange(40)))
            body += bytes((t, n)) + self.rng.randbytes(n)
        head = bytearray((59, 0, self.rng.choice((5, 6, 5, 6, 7)), 0, 0, 0))
        return bytes(_fix_framing(head + self.rng.randbytes(6) + body))


MAGIC_COOKIE = b"c\x82Sc"
DHCP_TYPES = (1, 3, 4, 7, 8, 2, 5, 6, 0, 9, 255)  # DISCOVER..INFORM, replies, bogus


def dhcp_packet(
    op: int,
    mac: bytes,
    msg_type: int | None,
    *,
    xid: int = 1,
    ciaddr: bytes = bytes(4),
    options: bytes = b"",
    flags: int = 0x8000,
) -> bytes:
    head = struct.pack("!BBBBIHH", op, 1, 6, 0, xid, 0, flags)
    body = ciaddr + bytes(12) + mac + bytes(10) + bytes(192) + MAGIC_COOKIE
    opts = (bytes((53, 1, msg_type)) if msg_type is not None else b"") + options + b"\xff"
    return head + body + opts


class DhcpMutator:
    """Valid-looking DHCP client messages from the fuzz MNs' MACs and random ones, then
    mutated: bit flips, byte sets, truncation, extension, option length corruption, header
    fields (op, htype, hlen, cookie), random option TLVs and random bytes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def seed(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.5:
            mac = dhcp_mac(rng.randrange(N_DHCP_MNS))
        else:
            mac = bytes((rng.randrange(256) & 0xFE | 2,)) + rng.randbytes(5)
        kind = rng.choice(DHCP_TYPES)
        opts = b""
        if rng.random() < 0.5:
            opts += bytes((50, 4)) + IPv4Address(f"10.11.0.{rng.randrange(16)}").packed
        if rng.random() < 0.3:
            opts += bytes((54, 4)) + IPv4Address(f"10.11.0.{rng.randrange(3)}").packed
        if rng.random() < 0.3:
            opts += bytes((61, 7, 1)) + (mac if rng.random() < 0.7 else rng.randbytes(6))
        if rng.random() < 0.2:
            info = bytes((1, 4)) + rng.randbytes(4) + bytes((2, 3)) + rng.randbytes(3)
            opts += bytes((82, len(info))) + info
        if rng.random() < 0.2:
            opts += bytes((55, 4, 1, 3, 6, 51))
        ciaddr = (
            IPv4Address(f"10.11.0.{rng.randrange(16)}").packed if rng.random() < 0.2 else bytes(4)
        )
        return dhcp_packet(1, mac, kind, xid=rng.randrange(1 << 32), ciaddr=ciaddr, options=opts)

    def generate(self) -> tuple[str, bytes]:
        rng = self.rng
        b = bytearray(self.seed())
        r = rng.random()
        if r < 0.2:
            return "dhcp-valid", bytes(b)
        if r < 0.4:
            for _ in range(rng.choice((1, 2, 4, 16))):
                pos = rng.randrange(len(b) * 8)
                b[pos >> 3] ^= 1 << (pos & 7)
            return "dhcp-bitflip", bytes(b)
        if r < 0.5:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.choice((0, 1, 0xFF, rng.randrange(256)))
            return "dhcp-byteset", bytes(b)
        if r < 0.6:
            return "dhcp-truncate", bytes(b[: rng.randrange(len(b))])
        if r < 0.68:
            return "dhcp-extend", bytes(b[:-1] + rng.randbytes(rng.randint(1, 300)) + b"\xff")
        if r < 0.8:
            opts = _tlvs(b, 240)
            if opts:
                off, _ = rng.choice(opts)
                if off + 1 < len(b):
                    b[off + 1] = rng.choice((0, 1, 2, 255, rng.randrange(256)))
            return "dhcp-optlen", bytes(b)
        if r < 0.88:
            pos = rng.choice((0, 1, 2, 3, 236, 237, 238, 239))
            b[pos] = rng.randrange(256)
            return "dhcp-header", bytes(b)
        if r < 0.96:
            body = b""
            for _ in range(rng.randint(0, 12)):
                n = rng.choice((0, 1, 4, 7, rng.randrange(64)))
                body += bytes((rng.choice((53, 50, 54, 61, 82, 55, 51, 12, 0, 255)), n))
                body += rng.randbytes(n)
            return "dhcp-random-options", bytes(b[:240]) + body
        return "dhcp-random", rng.randbytes(rng.choice((0, 1, 100, 239, 240, 241, 300, 576)))


@dataclass
class FuzzStats:
    sent: Counter[str] = field(default_factory=Counter)  # by target
    mutations: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)  # what came back, by kind
    waits: int = 0  # times the sender waited for a daemon's socket queue to drain
    send_errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    rss_kb: list[tuple[int, int, int]] = field(default_factory=list)  # (sent, LMA, MAG)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


TARGET_WEIGHTS = (
    ("lma-mh", 34),  # PBU-corpus mutants over raw IPv6 to the LMA
    ("lma-udp-seed", 16),  # in IPv4/UDP 5436, IPv6 header + MH (checksum fixed or not)
    ("lma-udp-bare", 8),  # in IPv4/UDP 5436, RFC 5844 bare MH
    ("mag-mh", 10),  # PBA-corpus mutants over raw IPv6 to the MAG (from the LMAA)
    ("mag-udp", 12),  # to the MAG's UDP 5436 from the LMA's IPv4 address, both framings
    ("mag-dhcp", 20),  # DHCP to the MAG's shared access link
)


class DaemonFuzzer:
    """Sends mutated packets at the daemons of a ``fuzz_topology``. The LMA gets mutants
    of valid PBUs (fresh timestamps: rebuilt every 50 ms) from MAG2, an allowed MAG; the
    MAG gets mutants of PBAs for MN1 and its DHCP MNs from the LMA's own addresses, and
    DHCP on its shared access link. Before sending to a daemon socket whose receive queue
    holds more than ``max_queue`` bytes, the sender waits, so the daemons process what is
    sent rather than the kernel dropping it."""

    def __init__(self, topo: RobustTopology, seed: int = 1, max_queue: int = 96 << 10) -> None:
        self.topo = topo
        self.rng = random.Random(seed)
        self.mh_lma = MhMutator(self.rng)  # corpus without MN1 (see _refresh_corpus)
        self.mh_mag = MhMutator(self.rng)
        self.dhcp = DhcpMutator(self.rng)
        self.lma_pid = daemon_pid(topo.lma)
        self.mag_pid = daemon_pid(topo.mag)
        self.max_queue = max_queue
        ns2 = topo.ns_mag2
        self.to_lma_mh = MhClient(ns2, LMAA)
        self.to_lma_udp = UdpClient(ns2, (FUZZ_MAG_V4, 0), (LMA_V4, 5436))
        self.to_mag_mh = MhClient(topo.ns_lma, PROXY_COA, rcvbuf=4096)
        self.to_mag_udp = UdpClient(topo.ns_lma, (LMA_V4, 0), (MAG_V4_DIRECT, 5436))
        with in_netns(topo.ns_mn):
            d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        d.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        d.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        d.setsockopt(socket.SOL_SOCKET, 25, b"eths")  # SO_BINDTODEVICE
        d.bind(("0.0.0.0", 68))
        d.setblocking(False)
        self.to_mag_dhcp = d
        self.targets = [t for t, _ in TARGET_WEIGHTS]
        self.cum = []
        total = 0
        for _, w in TARGET_WEIGHTS:
            total += w
            self.cum.append(total)
        self._corpus_at = 0.0
        self.stats = FuzzStats()
        self.queue_keys = {
            "lma-mh": (self.lma_pid, "raw6:135:"),
            "lma-udp-seed": (self.lma_pid, "udp:5436"),
            "lma-udp-bare": (self.lma_pid, "udp:5436"),
            "mag-mh": (self.mag_pid, "raw6:135:"),
            "mag-udp": (self.mag_pid, "udp:5436"),
            "mag-dhcp": (self.mag_pid, "udp:67"),
        }

    def close(self) -> None:
        for s in (self.to_lma_mh, self.to_lma_udp, self.to_mag_mh, self.to_mag_udp):
            s.close()
        self.to_mag_dhcp.close()

    # corpus ---------------------------------------------------------------------------

    def _refresh_corpus(self) -> None:
        now = time.time()
        rng = self.rng
        msgs: list[BindingUpdate | BindingAck] = []
        for i in range(N_FUZZ_MNS):
            mode = MODES[i % len(MODES)]
            hoa: IPv4Address | None = ZERO4
            if mode == "static":
                hoa = IPv4Address(FUZZ_STATIC.format(i + 2 + (rng.random() < 0.2)))
            elif mode == "dhcp-server":
                hoa = IPv4Address(f"10.31.0.{rng.randrange(256)}")
            elif mode == "lma" and rng.random() < 0.3:
                hoa = IPv4Address(f"10.11.0.{rng.randrange(16)}")
            msgs.append(
                make_pbu(
                    fuzz_mn(i),
                    rng.randrange(1 << 16),
                    ts=now - rng.choice((0.0, 0.0, 0.0, 0.001, 2.0, -2.0)),
                    hoa=hoa if rng.random() < 0.9 else None,
                    hnp=rng.random() < 0.6,
                    draft=rng.random() < 0.4,
                    lifetime_units=rng.choice((900, 900, 900, 1, 0)),
                    flags=rng.choice((A_P, A_P, A_P, A_P | int(BuFlags.F), int(BuFlags.A))),
                    coa4=rng.choice((None, FUZZ_MAG_V4, "203.0.113.9")),
                    llid=rng.choice((None, b"\x02\x00\x00\x00\x00\x09")),
                )
            )
        for ident in (MN_ID, *(dhcp_mn(i) for i in range(N_DHCP_MNS))):
            hoa = IPv4Address(f"10.10.0.{rng.randrange(2, 10)}")
            msgs.append(
                BindingAck(
                    rng.choice((0, 0, 128, 135, 156, 170, 171)),
                    rng.randrange(1 << 16),
                    rng.choice((900, 0, 1)),
                    int(BaFlags.P),
                    (
                        MnIdentifier(ident.encode()),
                        HomeNetworkPrefix(IPv6Address("2001:db8:100:1::"), 64),
                        HandoffIndicatorOption(1),
                        AccessTechTypeOption(rng.choice((3, 3, 4))),
                        Timestamp.from_seconds(now),
                        Ipv4HoaReply(0, 24, hoa)
                        if rng.random() < 0.5
                        else Ipv4AddressAck(0, 24, hoa),
                        Ipv4DefaultRouter(IPv4Address("10.10.0.1")),
                        Ipv4DhcpSupportMode(True),
                        NatDetection(rng.choice((110, 0xFFFFFFFF, 0, 1)), rng.random() < 0.5),
                    ),
                )
            )
        msgs.append(make_pbu(fuzz_mn(0), 1, hoa=None, flags=A_P))
        msgs.append(BindingUpdate(9, 900, A_P, (UnknownOption(50, b"xyz"),)))
        # The LMA's corpus must not name MN1 anywhere: spliced into a PBU from MAG2 (an
        # allowed MAG) with a fresh timestamp, MN1's identifier makes a valid handover, and
        # MN1's binding is the one the state check expects untouched.
        ident1 = MN_ID.encode()
        self.mh_lma.set_corpus(
            [m for m in msgs if all(getattr(o, "identifier", None) != ident1 for o in m.options)]
        )
        self.mh_mag.set_corpus(
            [m for m in msgs if isinstance(m, BindingAck)] + [m for m in msgs[:3]]
        )
        self._corpus_at = time.monotonic()

    # sending --------------------------------------------------------------------------

    def _queues(self) -> dict[str, int]:
        """Receive-queue bytes of each target's daemon socket."""
        lma, mag = socket_queues(self.lma_pid), socket_queues(self.mag_pid)
        out = {}
        for target, (pid, prefix) in self.queue_keys.items():
            table = lma if pid == self.lma_pid else mag
            out[target] = sum(rx for k, (rx, _) in table.items() if k.startswith(prefix))
        return out

    def _send(self, target: str) -> None:
        rng = self.rng
        stats = self.stats
        if target == "mag-dhcp":
            name, data = self.dhcp.generate()
            stats.mutations[name] += 1
            try:
                self.to_mag_dhcp.sendto(data, ("255.255.255.255", 67))
            except BlockingIOError:
                select.select([], [self.to_mag_dhcp], [], 1.0)
                self.to_mag_dhcp.sendto(data, ("255.255.255.255", 67))
            return
        name, data = (self.mh_mag if target.startswith("mag") else self.mh_lma).generate()
        stats.mutations[name] += 1
        if target == "lma-mh" or target == "mag-mh":
            client = self.to_lma_mh if target == "lma-mh" else self.to_mag_mh
            src = FUZZ_MAG if target == "lma-mh" else LMAA
            if target == "lma-mh" and rng.random() < 0.05:
                src = ROGUE
            if len(data) < 6:  # the checksum offset must be inside: such bytes go bare UDP
                target = "lma-udp-bare" if target == "lma-mh" else "mag-udp"
            else:
                try:
                    client.send(data, src)
                except OSError as exc:  # e.g. EMSGSIZE past the MTU: counted, not fatal
                    stats.send_errors[f"{target}:{exc.errno}"] += 1
                return
        if target.startswith("lma-udp"):
            payload = data if target == "lma-udp-bare" else self._seed_framing(data, FUZZ_MAG, LMAA)
            self.to_lma_udp.send_raw(payload)
            return
        # mag-udp
        payload = data if rng.random() < 0.3 else self._seed_framing(data, LMAA, PROXY_COA)
        self.to_mag_udp.send_raw(payload)

    def _seed_framing(self, mh: bytes, src: str, dst: str) -> bytes:
        rng = self.rng
        s, d = IPv6Address(src), IPv6Address(dst)
        if rng.random() < 0.1:
            s = IPv6Address(rng.randbytes(16))
        if rng.random() < 0.7 and len(mh) >= 6:
            mh = mh[:4] + mh_checksum(mh, s, d).to_bytes(2, "big") + mh[6:]
        packet = ipv6_frame.wrap(mh, s, d)
        if rng.random() < 0.1:
            b = bytearray(packet)
            k = rng.randrange(3)
            if k == 0:
                pos = rng.randrange(40 * 8)
                b[pos >> 3] ^= 1 << (pos & 7)
            elif k == 1:
                del b[rng.randrange(len(b)) :]
            else:
                b[4:6] = rng.randrange(1 << 16).to_bytes(2, "big")
            packet = bytes(b)
        return packet

    def _drain(self) -> None:
        """Read what the daemons answered (PBAs to MAG2, DHCP replies on the MN side)."""
        for data in self.to_lma_mh.recv_all():
            self.stats.replies[_reply_label(data)] += 1
        for data in self.to_lma_udp.recv_all():
            mh = data[40:] if data and data[0] >> 4 == 6 else data
            self.stats.replies[_reply_label(mh)] += 1
        self.to_mag_mh.recv_all()  # copies of incoming PBUs in the LMA's namespace
        self.to_mag_udp.recv_all()
        while True:
            try:
                data = self.to_mag_dhcp.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            kind = data[242] if len(data) > 242 and data[240] == 53 else 0
            self.stats.replies[f"dhcp-reply-{kind}"] += 1

    def run(
        self, n: int, progress: Callable[[FuzzStats], None] | None = None, every: int = 50_000
    ) -> FuzzStats:
        stats = self.stats
        self._refresh_corpus()
        t0 = time.monotonic()
        queues = self._queues()
        sent = 0
        stats.rss_kb.append((0, vm_rss_kb(self.lma_pid), vm_rss_kb(self.mag_pid)))
        while sent < n:
            if time.monotonic() - self._corpus_at > 0.05:
                self._refresh_corpus()
            for _ in range(min(128, n - sent)):
                target = self.targets[
                    self.rng.choices(range(len(self.targets)), cum_weights=self.cum)[0]
                ]
                waited = 0
                while queues[target] > self.max_queue:
                    if waited == 0:
                        stats.waits += 1
                    time.sleep(0.0005)
                    waited += 1
                    queues = self._queues()
                    if waited > 20_000:  # 10 s without draining: the daemon is stuck
                        raise AssertionError(f"{target}: the daemon stopped reading its socket")
                self._send(target)
                stats.sent[target] += 1
                sent += 1
            self._drain()
            queues = self._queues()
            if sent % every < 128:
                stats.rss_kb.append((sent, vm_rss_kb(self.lma_pid), vm_rss_kb(self.mag_pid)))
                if progress is not None:
                    progress(stats)
        # Let the daemons finish what is queued before the caller looks at them.
        wait_for(lambda: not any(self._queues().values()), 30, what="daemon queues drained")
        time.sleep(0.2)
        self._drain()
        stats.rss_kb.append((sent, vm_rss_kb(self.lma_pid), vm_rss_kb(self.mag_pid)))
        stats.elapsed_s = time.monotonic() - t0
        return stats


def _reply_label(mh: bytes) -> str:
    try:
        msg = decode(mh)
    except WireError as exc:
        return f"undecodable:{exc.reason}"
    if isinstance(msg, BindingAck):
        return f"pba-{msg.status}"
    return "pbu"


def daemon_drops(metrics: dict[str, float]) -> dict[str, float]:
    """pmip_messages_dropped_total by reason."""
    out = {}
    for k, v in metrics.items():
        m = re.match(r'pmip_messages_dropped_total\{reason="([^"]*)"\}', k)
        if m:
            out[m.group(1)] = v
    return out


def lma_pbu_outcomes(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        m = re.match(r'pmip_pbu_total\{direction="received",status="(\d+)"\}', k)
        if m:
            out[m.group(1)] = v
    return out


def fuzz_state(topo: RobustTopology) -> dict[str, Any]:
    """What the fuzz checks compare: the daemons' binding tables and pools."""
    return {
        "lma": topo.lma_rows(),
        "mag": topo.mag_rows(),
        "pools": topo.lma.ctl_json("pools"),
    }


def fuzz_state_problems(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Everything about the state after fuzzing that bad packets must not have caused.

    MN1 is registered by the real MAG before fuzzing and no fuzzer seed names it at the
    LMA, so its binding must be exactly as before (same HoA, MAG, registration time) on
    both sides. Any other binding must belong to a fuzz MN (a mutant that is a valid PBU
    from an allowed MAG, or a DHCP message from a fuzz MN's MAC, registers legitimately),
    and the LMA's pools must account for exactly the addresses its bindings hold."""
    problems = []
    fuzz_ids = {fuzz_mn(i) for i in range(N_FUZZ_MNS)} | {dhcp_mn(i) for i in range(N_DHCP_MNS)}
    lma_b = {r["mn_id"]: binding_key(r) for r in before["lma"]}
    lma_a = {r["mn_id"]: binding_key(r) for r in after["lma"]}
    if lma_a.get(MN_ID) != lma_b.get(MN_ID):
        problems.append(f"LMA: MN1 changed: {lma_b.get(MN_ID)} -> {lma_a.get(MN_ID)}")
    strangers = set(lma_a) - fuzz_ids - {MN_ID}
    if strangers:
        problems.append(f"LMA: bindings for MNs no packet could register: {sorted(strangers)}")
    mag_b = {r["mn_id"]: binding_key(r) for r in before["mag"]}
    mag_a = {r["mn_id"]: binding_key(r) for r in after["mag"]}
    if mag_a.get(MN_ID) != mag_b.get(MN_ID):
        problems.append(f"MAG: MN1 changed: {mag_b.get(MN_ID)} -> {mag_a.get(MN_ID)}")
    strangers = set(mag_a) - fuzz_ids - {MN_ID}
    if strangers:
        problems.append(f"MAG: entries for MNs no packet could attach: {sorted(strangers)}")
    problems += [f"LMA: {p}" for p in pool_accounting(after["lma"], after["pools"])]
    for r in after["lma"]:
        hoa = r["ipv4_hoa"]
        if hoa is None:
            continue
        addr = IPv4Address(hoa)
        i = (
            int(r["mn_id"][2:4])
            if r["mn_id"].startswith("fz") and r["mn_id"][2:4].isdigit()
            else -1
        )
        if r["ipv4_source"] == "static" and i >= 0 and hoa != FUZZ_STATIC.format(i + 2):
            problems.append(f"LMA: {r['mn_id']} bound to {hoa}, not its static address")
        if r["ipv4_source"] == "dhcp-server" and addr not in IPv4Network(FUZZ_DHCP_NET):
            problems.append(f"LMA: {r['mn_id']} bound to {hoa} outside its DHCP prefix")
        if r["ipv4_source"] == "lma" and r["mn_id"] != MN_ID and addr not in IPv4Network(FUZZ_POOL):
            problems.append(f"LMA: {r['mn_id']} bound to {hoa} outside pool fz")
    return problems


def wait_rows(
    fetch: Callable[[], list[dict[str, Any]]],
    ok: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    what: str,
) -> list[dict[str, Any]]:
    """Poll ``fetch`` until ``ok`` holds for its rows; the rows."""
    found: list[list[dict[str, Any]]] = []

    def check() -> bool:
        rows = fetch()
        found[:] = [rows]
        return ok(rows)

    wait_for(check, timeout, 0.2, what)
    return found[0]


_MAG_GRANT_LINE = re.compile(r"IPv4 granted: mn=(\S+) hoa=([\d.]+)/")


def lma_logged_hoas(log: str) -> dict[str, set[str]]:
    """Every HoA the LMA's log shows each MN bound to (created, updated, refreshed...)."""
    out: dict[str, set[str]] = {}
    for line in log.splitlines():
        if "binding " not in line or " mn=" not in line or "binding down" in line:
            continue
        m = re.search(r"mn=(\S+) hoa=(\S+)", line)
        if m and m.group(2) != "-":
            out.setdefault(m.group(1), set()).add(m.group(2))
    return out


def mag_logged_hoas(log: str) -> dict[str, set[str]]:
    """Every HoA the MAG's log says it was granted, per MN."""
    out: dict[str, set[str]] = {}
    for m in _MAG_GRANT_LINE.finditer(log):
        out.setdefault(m.group(1), set()).add(m.group(2))
    return out


def duplicated_hoas(by_mn: dict[str, set[str]]) -> dict[str, list[str]]:
    """HoAs that more than one MN was bound to."""
    owners: dict[str, list[str]] = {}
    for mn, hoas in by_mn.items():
        for hoa in hoas:
            owners.setdefault(hoa, []).append(mn)
    return {h: sorted(m) for h, m in owners.items() if len(m) > 1}


LOSS_TIMERS = {
    "initial_bindack_timeout_s": 0.2,
    "max_bindack_timeout_s": 1.6,
    "max_transmissions": 20,
    "retry_after_failure_s": 1.0,
}


def loss_run(
    lab: Lab, tmp: Path, transport: str, n: int, percent: int = 30, limit_s: float = 180
) -> dict[str, Any]:
    """n MNs on dedicated access links attach at once while ``percent`` % of the
    signalling between MAG and LMA is dropped in each direction. Returns the figures and
    the rows; the caller asserts."""
    lma_nodes, mag_nodes, access, links = dedicated_mns(n)
    topo = RobustTopology(
        lab, tmp, transport, lma_nodes=lma_nodes, mag_nodes=mag_nodes, mag_access=access
    )
    pool = "10.10.0.0/24" if n < 250 else "10.10.0.0/16"
    topo.build(
        mag_timers=LOSS_TIMERS, lma_extra={"ipv4_pools": [{"name": "pool1", "prefix": pool}]}
    )
    topo.add_dedicated_links(links)
    topo.lma.start()
    topo.mag.start()
    inject_loss(topo.ns_mag, transport, percent)
    wanted = {m["mn_id"] for m in mag_nodes}
    t0 = time.monotonic()
    topo.set_mn_links([eth for _, eth, _ in links], True)

    def all_registered(rows: list[dict[str, Any]]) -> bool:
        return {r["mn_id"] for r in rows if r["registered"]} >= wanted

    mag_rows = wait_rows(topo.mag_rows, all_registered, limit_s, f"{n} MNs registered")
    elapsed = time.monotonic() - t0
    counters = nft_counters(topo.ns_mag, "inet", LOSS_TABLE)
    lma_rows = topo.lma_rows()
    metrics = topo.mag.metrics()
    return {
        "topo": topo,
        "wanted": wanted,
        "elapsed_s": elapsed,
        "counters": counters,
        "mag_rows": mag_rows,
        "lma_rows": lma_rows,
        "pools": topo.lma.ctl_json("pools"),
        "retransmissions": metrics.get("pmip_pbu_retransmissions_total", 0.0),
        "lma_log_hoas": lma_logged_hoas(topo.lma.log_text()),
        "mag_log_hoas": mag_logged_hoas(topo.mag.log_text()),
    }


def loss_problems(res: dict[str, Any]) -> list[str]:
    """What must hold after a loss run: every MN registered on both sides with one HoA,
    the same on both, never given to another MN, and the pool counting exactly those."""
    problems = []
    wanted = res["wanted"]
    lma = {r["mn_id"]: r for r in res["lma_rows"] if r["state"] == "active"}
    mag = {r["mn_id"]: r for r in res["mag_rows"] if r["registered"]}
    for mn in sorted(wanted):
        if mn not in lma:
            problems.append(f"{mn}: no active binding at the LMA")
        elif mn not in mag:
            problems.append(f"{mn}: not registered at the MAG")
        elif lma[mn]["ipv4_hoa"] != mag[mn]["ipv4_hoa"] or lma[mn]["ipv4_hoa"] is None:
            problems.append(f"{mn}: LMA {lma[mn]['ipv4_hoa']} != MAG {mag[mn]['ipv4_hoa']}")
    problems += pool_accounting(res["lma_rows"], res["pools"])
    for side in ("lma_log_hoas", "mag_log_hoas"):
        logged = {m: h for m, h in res[side].items() if m in wanted}
        several = {m: sorted(h) for m, h in logged.items() if len(h) > 1}
        if several:
            problems.append(f"{side}: MNs given more than one HoA: {several}")
        dup = duplicated_hoas(logged)
        if dup:
            problems.append(f"{side}: HoAs given to more than one MN: {dup}")
        if set(logged) != wanted:
            problems.append(f"{side}: {len(wanted - set(logged))} MNs never logged with a HoA")
    c = res["counters"]
    if not (c.get("dropped_out", 0) and c.get("dropped_in", 0)):
        problems.append(f"no loss was injected: {c}")
    return problems


LOAD_MAGS = [f"2001:db8:f::a:{m:x}" for m in range(8)]


def load_topology(lab: Lab, tmp: Path, n: int) -> tuple[RobustTopology, list[str]]:
    """An LMA with n IPv4-only MN profiles (LMA-allocated HoAs) that the 8 LOAD_MAGS
    addresses, put in the MAG namespace, may register. The MAG daemon is not started: a
    load generator there stands in for the MAGs."""
    ids = [mn_name("load", i) for i in range(n)]
    topo = RobustTopology(
        lab,
        tmp,
        "ipv6",
        lma_nodes=[
            {"mn_id": m, "ipv6": False, "ipv4": {"mode": "lma", "pool": "pool1"}} for m in ids
        ],
    )
    topo.build(
        lma_extra={
            "allowed_mags": [PROXY_COA, *LOAD_MAGS],
            "ipv4_pools": [
                {"name": "pool1", "prefix": "10.10.0.0/20" if n < 4000 else "10.10.0.0/14"}
            ],
        }
    )
    for mag in LOAD_MAGS:
        lab.addr(topo.ns_mag, "tr0", f"{mag}/64")
    return topo, ids
