"""The user-space forwarder: inner packets between a TUN device and MAG-LMA tunnels.

This kernel has no tunnel drivers (no ipip, sit, ip6tnl, fou), so the encapsulation is
done here. One TUN device serves every tunnel of the node; a table in this process picks
the tunnel (by destination on the LMA, by source on the MAG), so a handover is one dict
assignment. The kernel builds every outer header, but for the UDP tunnel GSO bursts below:

* IPv6 transport (RFC 5213 §6.10.2, RFC 5844 §3.1.3 Fig. 2): raw AF_INET6 sockets of
  protocol 41 (IPv6 in IPv6, RFC 2473) and 4 (IPv4 in IPv6);
* IPv4 transport (RFC 5844 §4, mode IPv4): raw AF_INET sockets of protocol 4 (IPv4 in
  IPv4, RFC 2003) and 41 (IPv6 in IPv4, RFC 4213);
* IPv4-UDP (RFC 5844 §4 mode IPv4-UDP, Figs. 12 and 14; seed §4.4 when a NAT is
  detected): a UDP socket on the pmip6-data port 5437 carrying the inner packet with no
  further header; the receiver tells IPv4 from IPv6 by the version nibble. 5437 is not
  the signalling port 5436 (RFC 5844 §4: "this is different port than is used for
  signaling"), so behind a NAT the data flow has its own mapping. The LMA learns it
  from the MAG's keepalive (see :func:`packet.keepalive`), and only from the public
  address the MAG's signalling came from.

Two threads: ``tun->net`` reads the TUN device and sends; ``net->tun`` receives from the
sockets and writes to the TUN device. Table changes come from the daemon's thread under
a lock; the threads read the dicts without one (single dict operations are atomic).

Batching (configuration ``offload``; bench/dataplane_throughput.py measures each):

* reads: the TUN device is drained into one buffer, packets back to back, before
  anything is sent (one poll per burst, not per packet);
* ``tso``: the TUN device hands over 64 KB TCP super-packets (one read instead of ~45),
  cut into wire segments by :func:`vector.segment_tcp`, every segment's header and full
  checksum computed in one numpy pass over the burst. Single packets whose checksum the
  kernel left partial are finished (:func:`packet.complete_checksum`) and join the batch;
* ``gso``: a run of equal-sized packets for one IPv4-UDP tunnel (a cut super-packet's
  segments among them) leaves in one sendmsg with UDP_SEGMENT, the kernel cutting it
  into one datagram per inner packet;
* ``tso`` and ``gso`` with UDP tunnel GSO (Linux 6.17; see :class:`.tun.UdpTunnelTap`):
  a super-packet for an IPv4-UDP tunnel is not cut here at all. The forwarder puts one
  outer IPv4 and UDP header in front of it (:func:`packet.udp_tunnel_gso_headers`) and
  writes it to a TAP device; the kernel forwards it as one packet and cuts it into
  datagrams, inner and outer headers and checksums each, only where a link needs it.
  A forwarder that receives it whole (as veths pass it) writes it to its TUN device
  with a GSO header, like any inner packet longer than the MTU;
* ``gro``: UDP_GRO hands over up to 64 datagrams per recvmsg. A run that is one TCP
  flow's consecutive segments becomes one TUN write with a virtio-net GSO header
  (:func:`vector.merge_segments`, one numpy pass); anything else goes through the
  per-packet :class:`packet.Coalescer`. The kernel forwards the result as one packet and
  cuts it only where it must.
* Inner packets longer than the TUN MTU (what a NIC's GRO makes of a flow's tunnelled
  segments before a raw socket reads them) are written with a GSO header too
  (:func:`packet.gso_header`), so the kernel cuts them to fit the next link.

MTU: the TUN MTU leaves room for the largest outer header in use, so the kernel answers
oversized packets with ICMP "fragmentation needed"/"packet too big" before they reach
the TUN device, and the MSS option of every TCP SYN entering a tunnel is clamped to fit,
so TCP works even where those ICMP messages are filtered. If the underlay path MTU turns
out smaller, the outer packet is fragmented (RFC 4213 §3.2, RFC 2473 §7).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import numpy as np

from ..core.events import Encapsulation
from . import packet as pk
from . import vector as vec
from .tun import MAX_READ, Tun, UdpTunnelTap
from .tunnel import Prefix, TunnelKey

log = logging.getLogger("pmip.dataplane")

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
UDP_MAX_SEGMENTS = 64
UDP_MAX_PAYLOAD = 65535 - 20 - 8
IP_MTU_DISCOVER = 10  # not in Python's socket module
IP_PMTUDISC_DONT = 0  # outer DF clear: the kernel may fragment (RFC 4213 §3.2)
RX_BATCH = 64  # datagrams received per socket per round, merged before the TUN writes
READ_BATCH = 64  # packets read from the TUN device before they are sent
RX_ROW = (MAX_READ + 2048 + 63) // 64 * 64
_GSO_CMSG = struct.Struct("=H")
_GRO_CMSG = struct.Struct("=i")


class Tunnel:
    """Forwarding state of one shared tunnel."""

    __slots__ = ("dest", "key", "packets_in", "packets_out", "routes", "sock4", "sock6", "udp")

    def __init__(self, key: TunnelKey, dest: tuple[str, int] | None) -> None:
        self.key = key
        self.dest = dest  # sendto address; None until a NAT's port is learned
        self.sock4: socket.socket | None = None  # carries inner IPv4
        self.sock6: socket.socket | None = None  # carries inner IPv6
        self.udp = key.mode is Encapsulation.IPV4_UDP
        self.packets_in = 0
        self.packets_out = 0
        self.routes = 0  # prefixes routed into it


class Forwarder:
    """Forwards between ``tun`` and the tunnels. ``role`` "lma" picks tunnels by inner
    destination and accepts from a tunnel only sources routed into it; "mag" the other
    way round. ``own_id`` is this node's IPv6 identity (LMAA or Proxy-CoA)."""

    def __init__(
        self,
        role: str,
        tun: Tun,
        mtu: int,
        own_id: IPv6Address,
        local6: IPv6Address | None,
        local4: IPv4Address | None,
        data_port: int,
        keepalive_s: float = 15.0,
        gso: bool = True,
        gro: bool = True,
        gso_tap: UdpTunnelTap | None = None,
    ) -> None:
        self.role = role
        self.tun = tun
        self.own_id = own_id.packed
        self.data_port = data_port
        self.keepalive_s = keepalive_s
        self.gso = gso
        self.gro = gro
        self.mtu = mtu
        self.mss4 = pk.mss_limit(mtu, 4)
        self.mss6 = pk.mss_limit(mtu, 6)
        # the TAP device for UDP tunnel GSO writes (with tso, gso and local4); _tunnel_gso
        self._gso_tap = gso_tap
        self._local4 = local4.packed if local4 is not None else b""
        self._ident = 0  # outer IPv4 identification of those writes
        # Which inner address picks (and polices) the tunnel: LMA by destination on the
        # way out, by source on the way in; the MAG the other way round.
        self._out4, self._out6 = (16, 24) if role == "lma" else (12, 8)
        self._in4, self._in6 = (12, 8) if role == "lma" else (16, 24)
        self._lock = threading.Lock()
        self.tunnels: dict[TunnelKey, Tunnel] = {}
        self._rx: dict[tuple[Encapsulation, str, int], Tunnel] = {}
        self._by_peer: dict[tuple[bytes, str], Tunnel] = {}  # learning (LMA, IPv4-UDP)
        self._learned: dict[tuple[bytes, str], int] = {}  # keepalives seen, tunnel or not
        # IPv4 keyed by the address as an int: the engine's own int object (the home
        # address's), so a million routes add no key objects.
        self._routes4: dict[int, Tunnel] = {}
        self._routes6: dict[int, dict[bytes, Tunnel]] = {}
        self._lens6: tuple[int, ...] = ()
        self._keepalive_due: dict[TunnelKey, float] = {}
        self.drops: Counter[str] = Counter()
        # bursts handled whole: "segmented" TSO super-packets, "merged" GRO receives,
        # "tunnel-gso" super-packets sent through the TAP device, "whole" inner
        # super-packets received in one piece and written with a GSO header
        self.bursts: Counter[str] = Counter()
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._threads: list[threading.Thread] = []
        self._sockets: dict[str, socket.socket] = {}
        if local6 is not None:
            for proto in (4, 41):
                s = self._raw(socket.AF_INET6, proto, str(local6))
                self._sockets[f"ip6-{proto}"] = s
        if local4 is not None:
            for proto in (4, 41):
                s = self._raw(socket.AF_INET, proto, str(local4))
                s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
                self._sockets[f"ip4-{proto}"] = s
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            u.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            self._buffers(u)
            u.bind((str(local4), data_port))
            u.setblocking(False)
            if gro:
                try:
                    u.setsockopt(SOL_UDP, UDP_GRO, 1)
                except OSError:
                    self.gro = False
            self._sockets["udp"] = u

    @staticmethod
    def _buffers(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)

    def _raw(self, family: int, proto: int, bind: str) -> socket.socket:
        s = socket.socket(family, socket.SOCK_RAW, proto)
        self._buffers(s)
        s.bind((bind, 0))
        s.setblocking(False)
        return s

    # --- control (the daemon's thread) ---------------------------------------------

    def start(self) -> None:
        os.set_blocking(self.tun.fd, False)
        for name, target in (("tun->net", self._tun_loop), ("net->tun", self._net_loop)):
            t = threading.Thread(target=target, name=f"pmip-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join(5)
        for s in self._sockets.values():
            s.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def add_tunnel(self, key: TunnelKey) -> None:
        with self._lock:
            if key in self.tunnels:
                return
            port = 0 if key.mode is not Encapsulation.IPV4_UDP else self.data_port
            if key.learn_port:
                port = self._learned.get((key.peer.packed, str(key.remote)), 0)
            t = Tunnel(key, (str(key.remote), port) if not key.learn_port or port else None)
            if key.mode is Encapsulation.IPV6:
                t.sock4, t.sock6 = self._sockets.get("ip6-4"), self._sockets.get("ip6-41")
            elif key.mode is Encapsulation.IPV4:
                t.sock4, t.sock6 = self._sockets.get("ip4-4"), self._sockets.get("ip4-41")
            else:
                t.sock4 = t.sock6 = self._sockets.get("udp")
            if t.sock4 is None:
                raise OSError(errno.EADDRNOTAVAIL, f"no local address for a {key.mode} tunnel")
            self.tunnels[key] = t
            if t.dest is not None:
                self._rx[(key.mode, str(key.remote), port)] = t
            if t.udp:
                self._by_peer[(key.peer.packed, str(key.remote))] = t
                if self.role == "mag":
                    self._keepalive_due[key] = 0.0
        if t.udp and self.role == "mag":
            self._send_keepalive(t)  # at once: the LMA cannot send before it has one

    def remove_tunnel(self, key: TunnelKey) -> None:
        with self._lock:
            t = self.tunnels.pop(key, None)
            if t is None:
                return
            self._keepalive_due.pop(key, None)
            if t.dest is not None:
                self._rx.pop((key.mode, t.dest[0], t.dest[1]), None)
            if self._by_peer.get((key.peer.packed, str(key.remote))) is t:
                del self._by_peer[(key.peer.packed, str(key.remote))]
            if t.routes:  # the callers unroute first; this is the safety net
                log.warning("tunnel %s removed with %d prefixes still routed", key, t.routes)
                for table in (self._routes4, *self._routes6.values()):
                    for addr in [a for a, via in table.items() if via is t]:
                        del table[addr]

    def route(self, prefix: Prefix, key: TunnelKey) -> bool:
        """Send the inner packets of ``prefix`` into ``key``'s tunnel, replacing any
        previous one: a single dict assignment, so a handover is one step. True when
        the prefix was routed before (a move)."""
        with self._lock:
            t = self.tunnels[key]
            table, addr = self._entry(prefix)
            old = table.get(addr)
            if old is not t:
                if old is not None:
                    old.routes -= 1
                t.routes += 1
                table[addr] = t
            return old is not None

    def unroute(self, prefix: Prefix) -> bool:
        """Stop forwarding ``prefix``; True when it was routed."""
        with self._lock:
            table, addr = self._entry(prefix)
            old = table.pop(addr, None)
            if old is not None:
                old.routes -= 1
            return old is not None

    def _entry(self, prefix: Prefix) -> tuple[dict[Any, Tunnel], int | bytes]:
        address, plen = prefix
        if address.version == 4:
            if plen != 32:
                raise ValueError(f"IPv4 routes are host routes (home addresses), not /{plen}")
            return self._routes4, int(address)
        packed = address.packed
        table = self._routes6.get(plen)
        if table is None:
            table = self._routes6[plen] = {}
            self._lens6 = tuple(sorted(self._routes6, reverse=True))
        return table, _prefix_key(packed, plen)

    def stats(self) -> dict[str, Any]:
        return {
            "tunnels": [
                {
                    "tunnel": str(t.key),
                    "port": t.dest[1] if t.dest else None,
                    "packets_in": t.packets_in,
                    "packets_out": t.packets_out,
                }
                for t in list(self.tunnels.values())
            ],
            "drops": dict(self.drops),
            "bursts": dict(self.bursts),
        }

    # --- lookups (the forwarding threads) ------------------------------------------

    def _lookup(self, pkt: memoryview, v4_off: int, v6_off: int) -> Tunnel | None:
        if pkt[0] >> 4 == 4:
            return self._routes4.get(int.from_bytes(pkt[v4_off : v4_off + 4]))
        for plen in self._lens6:
            table = self._routes6.get(plen)
            if table:
                t = table.get(_prefix_key(pkt[v6_off : v6_off + 16], plen))
                if t is not None:
                    return t
        return None

    # --- TUN -> tunnels --------------------------------------------------------------

    def _tun_loop(self) -> None:
        """Read what the TUN device has (up to READ_BATCH packets, back to back in one
        buffer), then send it: runs of equal-sized packets for one IPv4-UDP tunnel leave
        in a single UDP GSO send. Poll only when the device is empty."""
        fd = self.tun.fd
        vnet = self.tun.vnet
        buf = bytearray(READ_BATCH * 2048 + MAX_READ)
        view = memoryview(buf)
        head = bytearray(pk.VNET_HDR_LEN)
        self._seg_buf = bytearray(2 * MAX_READ)  # the segments of one TSO super-packet
        self._seg_np = np.frombuffer(self._seg_buf, np.uint8)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop:
            batch: list[tuple[int, int]] = []  # (offset, length) of each packet
            pos = 0
            try:
                while len(batch) < READ_BATCH and pos + MAX_READ <= len(buf):
                    if vnet:
                        n = os.readv(fd, [head, view[pos : pos + MAX_READ]]) - pk.VNET_HDR_LEN
                        if head[1] == pk.GSO_NONE:
                            # one packet; a partial sum is finished here, and it joins
                            # the batch (and its GSO runs) as any other. DATA_VALID
                            # (checksum already verified) asks for nothing.
                            if head[0] & pk.VNET_F_NEEDS_CSUM:
                                self._complete(head, view[pos : pos + n])
                        else:  # a super-packet
                            self._send_batch(view, batch)  # first what came before it
                            self._offloaded(head, view[pos : pos + n])
                            batch, pos = [], 0
                            continue
                    else:
                        n = os.readv(fd, [view[pos : pos + MAX_READ]])
                    batch.append((pos, n))
                    pos += n
            except BlockingIOError:
                pass
            except OSError as exc:
                if self._stop:
                    return
                log.warning("reading %s: %s", self.tun.name, exc)
                time.sleep(0.1)
            except Exception:  # one bad packet must not stop the data plane
                self.drops["error"] += 1
                log.exception("forwarding a packet from %s", self.tun.name)
            if not batch:
                poller.poll(1000)
                continue
            try:
                self._send_batch(view, batch)
            except Exception:
                self.drops["error"] += 1
                log.exception("forwarding packets from %s", self.tun.name)

    def _route_out(self, pkt: memoryview) -> Tunnel | None:
        if len(pkt) < 20:
            self.drops["runt"] += 1
            return None
        t = self._lookup(pkt, self._out4, self._out6)
        if t is None:
            self.drops["no-tunnel"] += 1
        elif t.dest is None:
            self.drops["nat-port-unknown"] += 1
            return None
        return t

    def _send_batch(self, view: memoryview, batch: list[tuple[int, int]]) -> None:
        run: Tunnel | None = None  # the IPv4-UDP tunnel of the current GSO run
        run_start = run_end = size = count = 0
        for start, n in batch:
            pkt = view[start : start + n]
            t = self._route_out(pkt)
            if t is None:
                continue
            version = pkt[0] >> 4
            if _is_syn(pkt, version):  # a SYN fits the tunnel
                pk.clamp_mss(pkt, self.mss4 if version == 4 else self.mss6)
            if not (t.udp and self.gso):
                self._send(t, pkt, version)
                continue
            if (
                t is run
                and start == run_end
                and n <= size
                and count < UDP_MAX_SEGMENTS
                and run_end - run_start + n <= UDP_MAX_PAYLOAD
            ):
                run_end += n
                count += 1
                if n < size:  # only the last datagram of a GSO send may be shorter
                    self._send_run(run, view[run_start:run_end], size, count)
                    run = None
                continue
            if run is not None:
                self._send_run(run, view[run_start:run_end], size, count)
            run, run_start, run_end, size, count = t, start, start + n, n, 1
        if run is not None:
            self._send_run(run, view[run_start:run_end], size, count)

    def _send_run(self, t: Tunnel, data: memoryview, size: int, count: int) -> None:
        """``count`` inner packets of ``size`` octets (the last maybe shorter), back to
        back: one UDP GSO send, the kernel cuts it into one datagram each."""
        try:
            if count == 1:
                t.sock4.sendto(data, t.dest)  # type: ignore[union-attr, arg-type]
            else:
                cmsg = [(SOL_UDP, UDP_SEGMENT, _GSO_CMSG.pack(size))]
                t.sock4.sendmsg([data], cmsg, 0, t.dest)  # type: ignore[union-attr]
            t.packets_out += count
        except OSError as exc:
            if count > 1 and exc.errno in (errno.EINVAL, errno.EMSGSIZE, errno.EIO):
                for off in range(0, len(data), size):  # one by one; may fragment
                    with contextlib.suppress(OSError):
                        t.sock4.sendto(data[off : off + size], t.dest)  # type: ignore[union-attr, arg-type]
                return
            self._send_failed(exc)

    def _complete(self, head: bytearray, pkt: memoryview) -> None:
        """Finish the checksum of a packet the kernel handed over with a partial one
        (the MSS of a SYN clamped first: the partial sum leaves the options out)."""
        _flags, _gso, _hl, _size, cstart, coff = pk.VNET_HDR.unpack_from(head)
        if len(pkt) < 20 or cstart + coff + 2 > len(pkt):
            return  # the batch's checks drop it
        version = pkt[0] >> 4
        if _is_syn(pkt, version):
            pk.clamp_mss(pkt, self.mss4 if version == 4 else self.mss6, partial=True)
        pk.complete_checksum(pkt, cstart, coff)

    def _offloaded(self, head: bytearray, pkt: memoryview) -> None:
        """A TSO super-packet: cut into segments (their checksums computed whole)."""
        _flags, gso_type, _hl, gso_size, _cstart, _coff = pk.VNET_HDR.unpack_from(head)
        t = self._route_out(pkt)
        if t is None:
            return
        if t.udp and self._gso_tap is not None and self._tunnel_gso(t, head, pkt, gso_size):
            return
        version = pkt[0] >> 4
        if gso_type & ~pk.GSO_ECN in (pk.GSO_TCPV4, pk.GSO_TCPV6):
            cut = vec.segment_tcp(pkt, gso_size, self._seg_np)
            if cut is not None:
                self.bursts["segmented"] += 1
                self._send_strided(t, cut[0], cut[1], version)
            else:
                self._send_segments(t, *pk.segment_tcp(pkt, gso_size, self._seg_buf), version)
        else:
            self.drops["unexpected-gso"] += 1

    def _tunnel_gso(self, t: Tunnel, head: bytearray, pkt: memoryview, gso_size: int) -> bool:
        """Send a TSO super-packet into an IPv4-UDP tunnel whole: one TAP write with a
        UDP tunnel GSO header (:func:`packet.udp_tunnel_gso_headers`), the kernel cuts
        it into datagrams, in C, only where a link needs it. False when it does not
        apply; the caller then cuts the packet here."""
        tap = self._gso_tap
        assert tap is not None and t.dest is not None
        ident = self._ident
        # TTL 65: this node's kernel forwards the frame and takes one off
        headers = pk.udp_tunnel_gso_headers(
            head, pkt, tap.mac, self._local4, socket.inet_aton(t.dest[0]),
            (self.data_port, t.dest[1]), ident, 65,
        )  # fmt: skip
        if headers is None:
            return False
        segments = -(-len(pkt) // gso_size)
        self._ident = (ident + segments) & 0xFFFF  # the kernel numbers each segment
        try:
            os.writev(tap.fd, [headers, pkt])
        except OSError as exc:
            self.drops[f"tap-write-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                log.warning("udp tunnel gso refused (%s): bursts are cut here from now on", exc)
                self._gso_tap = None
            return False
        self.bursts["tunnel-gso"] += 1
        t.packets_out += segments
        return True

    def _send(self, t: Tunnel, pkt: memoryview, version: int) -> None:
        sock = t.sock4 if version == 4 else t.sock6
        try:
            sock.sendto(pkt, t.dest)  # type: ignore[union-attr, arg-type]
            t.packets_out += 1
        except OSError as exc:
            self._send_failed(exc)

    def _send_strided(self, t: Tunnel, whole: memoryview, stride: int, version: int) -> None:
        """Segments back to back, each ``stride`` long but the last: with UDP GSO a send
        per 64 of them, else one send each."""
        if t.udp and self.gso:
            self._send_segments(t, whole, [whole[:stride]], version, len(whole))
        else:
            segments = [whole[i : i + stride] for i in range(0, len(whole), stride)]
            self._send_segments(t, whole, segments, version)

    def _send_segments(
        self,
        t: Tunnel,
        whole: memoryview,
        segments: list[memoryview],
        version: int,
        length: int = 0,
    ) -> None:
        """``length``: ``whole`` is ``segments[0]``'s size throughout (the last may be
        shorter) and only the first is listed: the UDP GSO sends need no more."""
        sock = t.sock4 if version == 4 else t.sock6
        assert sock is not None and t.dest is not None
        try:
            if t.udp and self.gso and (length or len(segments) > 1):
                # The segments lie back to back: each UDP_SEGMENT send takes a run of
                # them as they are and the kernel cuts it into datagrams.
                size = len(segments[0])
                per = min(UDP_MAX_SEGMENTS, UDP_MAX_PAYLOAD // size)
                cmsg = [(SOL_UDP, UDP_SEGMENT, _GSO_CMSG.pack(size))]
                for start in range(0, len(whole), per * size):
                    sock.sendmsg([whole[start : start + per * size]], cmsg, 0, t.dest)
                t.packets_out += -(-len(whole) // size)
            else:
                for seg in segments:
                    sock.sendto(seg, t.dest)
                t.packets_out += len(segments)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EMSGSIZE, errno.EIO) and t.udp and self.gso:
                # GSO refused (e.g. a path MTU below the segment size): one by one, so
                # the kernel may fragment the outer packets instead.
                size = len(segments[0])
                for start in range(0, len(whole), size):
                    with contextlib.suppress(OSError):
                        sock.sendto(whole[start : start + size], t.dest)
                return
            self._send_failed(exc)

    def _send_failed(self, exc: OSError) -> None:
        reason = f"send-{errno.errorcode.get(exc.errno or 0, 'error')}"
        self.drops[reason] += 1

    def _send_keepalive(self, t: Tunnel) -> None:
        if t.dest is None:
            return
        try:
            t.sock4.sendto(pk.keepalive(self.own_id, t.key.peer.packed), t.dest)  # type: ignore[union-attr]
        except OSError as exc:
            self._send_failed(exc)

    # --- tunnels -> TUN --------------------------------------------------------------

    def _net_loop(self) -> None:
        poller = select.poll()
        handlers: dict[int, Callable[[socket.socket], None]] = {}
        for name, sock in self._sockets.items():
            poller.register(sock.fileno(), select.POLLIN)
            if name == "udp":
                handlers[sock.fileno()] = self._recv_udp
            elif name.startswith("ip6"):
                handlers[sock.fileno()] = self._recv_raw6
            else:
                handlers[sock.fileno()] = self._recv_raw4
        poller.register(self._wake_r, select.POLLIN)
        # room past MAX_READ for a whole last datagram: vec.merge_segments takes the
        # buffer as rows of equal size
        # One array, a row per receive, with room past MAX_READ for a whole last
        # datagram: the vector functions take runs of packets as rows.
        self._grid = np.zeros((RX_BATCH, RX_ROW), np.uint8)
        self._views = [memoryview(row) for row in self._grid]
        self._bufs = self._views
        self._arrays = list(self._grid)
        socks = {s.fileno(): s for s in self._sockets.values()}
        while not self._stop:
            timeout = self._keepalives() if self.role == "mag" else 1000
            for fd, _ev in poller.poll(timeout):
                handler = handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler(socks[fd])
                except Exception:
                    self.drops["error"] += 1
                    log.exception("forwarding packets to %s", self.tun.name)

    def _keepalives(self) -> int:
        """Send the keepalives that are due; returns the poll timeout until the next."""
        now = time.monotonic()
        nxt = now + 1.0
        for key, due in list(self._keepalive_due.items()):
            if due <= now:
                t = self.tunnels.get(key)
                if t is not None:
                    self._send_keepalive(t)
                due = now + self.keepalive_s
                with self._lock:
                    if key in self._keepalive_due:
                        self._keepalive_due[key] = due
            nxt = min(nxt, due)
        return max(1, int((nxt - now) * 1000))

    def _recv_raw6(self, sock: socket.socket) -> None:
        self._recv_raw(sock, Encapsulation.IPV6, outer=False)

    def _recv_raw4(self, sock: socket.socket) -> None:
        self._recv_raw(sock, Encapsulation.IPV4, outer=True)  # with the outer header

    def _recv_raw(self, sock: socket.socket, mode: Encapsulation, outer: bool) -> None:
        """One packet per receive, each into a row of one array. Then each run of
        equal-sized packets from one peer (and a shorter last one) is offered to
        :func:`vector.merge_rows`, which checks every TCP checksum (no transport
        checksum covered them) and makes the run one TUN write."""
        got: list[tuple[int, int, str]] = []  # per row: inner offset, inner length, peer
        for i in range(RX_BATCH):
            try:
                n, addr = sock.recvfrom_into(self._bufs[i])
            except (BlockingIOError, InterruptedError):
                break
            off = (self._bufs[i][0] & 0x0F) * 4 if outer else 0
            got.append((off, n - off, addr[0]))
        received: list[memoryview | list[Any]] = []
        j = 0
        while j < len(got):
            off, size, peer = got[j]
            k = j + 1
            if self.gro and size <= self.mtu:
                while k < len(got) and got[k] == got[j]:
                    k += 1
                if k < len(got) and got[k][2] == peer and got[k][0] == off and got[k][1] < size:
                    k += 1
            t = self._rx.get((mode, peer, 0))
            if t is None:
                self.drops["unknown-peer"] += k - j
                j = k
                continue
            if k - j > 1:
                grid = self._grid[j:k, off:]
                merged = vec.merge_rows(grid, size, got[k - 1][1], verify=True)
                if merged is not None and self._accept(t, self._views[j][off : off + size]):
                    t.packets_in += k - j - 1
                    self.bursts["merged"] += 1
                    received.append(merged)
                    j = k
                    continue
            for row in range(j, k):
                o, length, _peer = got[row]
                inner = self._accept(t, self._views[row][o : o + length])
                if inner is not None:
                    received.append(inner)
            j = k
        self._to_tun(received, merge=False)

    def _recv_udp(self, sock: socket.socket) -> None:
        mode = Encapsulation.IPV4_UDP
        received: list[memoryview | list[Any]] = []
        space = socket.CMSG_SPACE(4)
        for i in range(RX_BATCH):
            buf = self._bufs[i]
            try:
                if self.gro:
                    n, anc, _flags, addr = sock.recvmsg_into([buf], space)
                else:
                    n, addr = sock.recvfrom_into(buf)
                    anc = []
            except (BlockingIOError, InterruptedError):
                break
            view = self._views[i][:n]
            size = n
            for level, kind, data in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    size = _GRO_CMSG.unpack_from(data)[0] or n
            t = self._rx.get((mode, addr[0], addr[1]))
            if size < n and t is not None and self.gro:
                # a run of one TCP flow's segments: one TUN write, checked as a whole
                merged = vec.merge_segments(self._arrays[i], n, size)
                if merged is not None and self._accept(t, view[:size]) is not None:
                    t.packets_in += -(-n // size) - 1
                    self.bursts["merged"] += 1
                    received.append(merged)
                    continue
            for off in range(0, n, size):
                datagram = view[off : off + size]
                if (
                    len(datagram) == 40
                    and datagram[6] == pk.IPPROTO_NONE
                    and self._learn(datagram, addr)
                ):
                    t = self._rx.get((mode, addr[0], addr[1]))
                    continue
                if t is None:
                    self.drops["unknown-peer"] += 1
                    continue
                inner = self._accept(t, datagram)
                if inner is not None:
                    received.append(inner)
        # The UDP checksum, checked by the kernel, covered every byte of these packets:
        # they may be merged without checking their own checksums again.
        self._to_tun(received, merge=True)

    def _learn(self, datagram: memoryview, addr: tuple[str, int]) -> bool:
        """An LMA learns a MAG's data address and port from its keepalive (see
        :func:`packet.keepalive`). True when ``datagram`` was one (it is consumed)."""
        peer = pk.keepalive_source(datagram, self.own_id) if self.role == "lma" else None
        if peer is None:
            return False
        host, port = addr
        with self._lock:
            if len(self._learned) > 65536:
                self._learned.clear()
            self._learned[(peer, host)] = port
            t = self._by_peer.get((peer, host))
            if t is not None and t.dest != addr:
                if t.dest is not None:
                    self._rx.pop((t.key.mode, t.dest[0], t.dest[1]), None)
                t.dest = (host, port)
                self._rx[(t.key.mode, host, port)] = t
                log.info("data path of %s learned: %s:%d", t.key, host, port)
        return True

    def _accept(self, t: Tunnel, inner: memoryview) -> memoryview | None:
        """The inner packet if it is sane and its home address belongs to this tunnel
        (RFC 5213 §5.6.2/§6.10.5: only a registered MN's traffic is forwarded)."""
        version = pk.inner_version(inner)
        if not version:
            self.drops["bad-inner"] += 1
            return None
        if self._lookup(inner, self._in4, self._in6) is not t:
            self.drops["not-routed-to-tunnel"] += 1
            return None
        t.packets_in += 1
        return inner

    def _to_tun(self, packets: Sequence[memoryview | list[Any]], merge: bool) -> None:
        """Write ``packets`` to the TUN device; a list is a merged run's writev parts
        (:func:`vector.merge_segments`), written after what came before it."""
        if not packets:
            return
        fd = self.tun.fd
        try:
            if any(len(p) > self.mtu for p in packets if not isinstance(p, list)):
                packets = self._fit(packets)  # type: ignore[arg-type]
            if not self.tun.vnet:
                for p in packets:
                    os.write(fd, p)  # type: ignore[arg-type]
            elif merge and self.gro and len(packets) > 1:
                merger = pk.Coalescer()
                for p in packets:
                    if isinstance(p, list):
                        for parts in merger.flush():
                            os.writev(fd, parts)
                        os.writev(fd, p)
                    else:
                        merger.add(p)
                for parts in merger.flush():
                    os.writev(fd, parts)
            else:
                for p in packets:
                    os.writev(fd, p if isinstance(p, list) else [pk.VNET_PLAIN, p])
        except OSError as exc:
            self.drops[f"tun-write-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1

    def _fit(self, packets: list[memoryview]) -> list[memoryview | list[Any]]:
        """Packets longer than the TUN MTU (a raw socket's GRO products): with a GSO
        header for the kernel to cut, or cut here when the device has no vnet header.
        Others go as they are: the kernel fragments them or answers "too big", as it
        did before."""
        out: list[memoryview | list[Any]] = []
        for p in packets:
            if len(p) <= self.mtu:
                out.append(p)
                continue
            vnet = pk.gso_header(p, self.mtu)
            if vnet is None:
                out.append(p)
            elif self.tun.vnet:
                self.bursts["whole"] += 1  # e.g. a UDP tunnel GSO burst, as veths pass it
                out.append([vnet, p])
            else:
                # segment_tcp sums each segment whole: the partial sum does not matter
                out.extend(pk.segment_tcp(p, pk.VNET_HDR.unpack(vnet)[3])[1])
        return out


def _prefix_key(addr: bytes | memoryview, plen: int) -> bytes:
    """The first ``plen`` bits of an IPv6 address, as bytes: a dict key per length."""
    whole, bits = divmod(plen, 8)
    if not bits:
        return bytes(addr[:whole])
    return bytes(addr[:whole]) + bytes((addr[whole] & (0xFF00 >> bits) & 0xFF,))


def _is_syn(pkt: memoryview, version: int) -> bool:
    if version == 4:
        l3 = (pkt[0] & 0x0F) * 4
        return pkt[9] == 6 and len(pkt) > l3 + 13 and bool(pkt[l3 + 13] & pk.TCP_SYN)
    return pkt[6] == 6 and len(pkt) > 53 and bool(pkt[53] & pk.TCP_SYN)
