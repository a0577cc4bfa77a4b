"""Kernel routes, rules, addresses and sysctls for the data plane, without shelling out.

Rules, links, addresses and dumps go through pyroute2. Routes go through
:class:`RouteBatch`, which encodes RTM_NEWROUTE/RTM_DELROUTE itself and sends hundreds per
netlink message: pyroute2's request/response call manages about 1,700 routes/s here, and
an LMA restarted with 1M bindings must reinstall 1M host routes (batched: ~250k/s).

Everything the data plane installs carries protocol ``PROTO`` (routes, rules, addresses),
so what a killed daemon left behind is found and removed at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE

log = logging.getLogger("pmip.dataplane")

PROTO = 77  # "pmip" in routes, rules and addresses; /etc/iproute2/rt_protos leaves 77 free
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete: match any scope
RTA_DST = 1
RTA_OIF = 4
RTA_TABLE = 15
NETLINK_CAP_ACK = 10
SOL_NETLINK = 270
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA_U32 = struct.Struct("=HHI")
_RTA_HDR = struct.Struct("=HH")
_ERRMSG = struct.Struct("=i")
# A whole route message with RTA_DST and RTA_OIF: nlmsghdr, rtmsg, then the attributes.
_ROUTE4 = struct.Struct("=IHHIIBBBBBBBBIHH4sHHI")
_ROUTE6 = struct.Struct("=IHHIIBBBBBBBBIHH16sHHI")
BATCH = 4096  # messages per sendmsg (about 256 KB); only failures and the last are answered
_NEW_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
_FLAGS = struct.Struct("=H")

Network = IPv4Network | IPv6Network
Prefix = tuple[IPv4Address | IPv6Address, int]


class IPRouteThread:
    """pyroute2's synchronous ``IPRoute``, called from anywhere. It drives an asyncio
    loop of its own, which cannot run inside the daemon's, so it lives in a thread of
    its own; each call waits for its result (a few hundred microseconds)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pmip-netlink")
        self._ipr: IPRoute = self._pool.submit(IPRoute).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._ipr, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            def run() -> Any:
                result = method(*args, **kwargs)
                # Dumps may be lazy: read them in the thread that owns the socket.
                return list(result) if isinstance(result, Iterator) else result

            return self._pool.submit(run).result()

        return call

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.submit(self._ipr.close).result()
        self._pool.shutdown()


class RouteBatch:
    """Route changes queued by ``replace``/``delete`` and sent by ``flush``.

    The queue is the encoded messages back to back in one buffer (about 50 bytes a route,
    no Python object per route): a restart queues a million routes at once. Only the last
    message of each ``sendmsg`` asks for an ACK; the kernel reports a failed one anyway
    (an error is always answered), with the request's header, so failures are still
    seen one by one, and the final ACK says the whole chunk was processed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        with contextlib.suppress(OSError):  # error replies without the request copied in
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.bind((0, 0))
        self._buf = bytearray()  # queued messages, back to back
        self._ends = array("Q")  # where each queued message ends in _buf
        self._done = 0  # messages of _ends already sent
        self._seq = 0
        self._worker: ThreadPoolExecutor | None = None  # flush_in_background's thread
        self._sending: list[Future[int]] = []

    def replace(
        self,
        prefix: Prefix,
        oif: int | None,
        table: int = RT_TABLE_MAIN,
        kind: int = RTN_UNICAST,
    ) -> None:
        """Add or replace the route to ``prefix`` out of interface ``oif`` (or of type
        ``kind``, e.g. unreachable, without an interface)."""
        self._encode(RTM_NEWROUTE, _NEW_FLAGS, prefix, oif, table, kind)

    def delete(
        self, prefix: Prefix, oif: int | None, table: int = RT_TABLE_MAIN, kind: int = 0
    ) -> None:
        self._encode(RTM_DELROUTE, NLM_F_REQUEST, prefix, oif, table, kind)

    def _encode(
        self, cmd: int, flags: int, prefix: Prefix, oif: int | None, table: int, kind: int
    ) -> None:
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        dst = prefix[0].packed
        v4 = len(dst) == 4
        scope = RT_SCOPE_LINK if v4 and oif is not None and kind == RTN_UNICAST else 0
        if oif is not None and table < 256:  # a home address or prefix: one pack
            whole = _ROUTE4 if v4 else _ROUTE6
            self._buf += whole.pack(
                whole.size,
                cmd,
                flags,
                seq,
                0,
                socket.AF_INET if v4 else socket.AF_INET6,
                prefix[1],
                0,
                0,
                table,
                PROTO,
                scope if cmd == RTM_NEWROUTE else RT_SCOPE_NOWHERE,
                kind,
                0,
                4 + len(dst),
                RTA_DST,
                dst,
                8,
                RTA_OIF,
                oif,
            )
            self._ends.append(len(self._buf))
            return
        body = _RTMSG.pack(
            socket.AF_INET if v4 else socket.AF_INET6,
            prefix[1],
            0,
            0,
            table if table < 256 else 0,
            PROTO,
            scope if cmd == RTM_NEWROUTE else RT_SCOPE_NOWHERE,
            kind,
            0,
        )
        body += _RTA_HDR.pack(4 + len(dst), RTA_DST) + dst
        if oif is not None:
            body += _RTA_U32.pack(8, RTA_OIF, oif)
        if table >= 256:  # a smaller one is in the rtmsg itself
            body += _RTA_U32.pack(8, RTA_TABLE, table)
        buf = self._buf
        buf += _NLMSGHDR.pack(16 + len(body), cmd, flags, seq, 0)
        buf += body
        self._ends.append(len(buf))

    @property
    def pending(self) -> int:
        return len(self._ends) - self._done

    def flush(self, limit: int | None = None) -> int:
        """Send what is queued, at most ``limit`` changes (the rest stays queued, so a
        caller can yield between rounds); returns the number of failures (each logged),
        those of earlier ``flush_in_background`` rounds included. A delete of a route that
        is already gone is not a failure."""
        failures = self._settle()
        ends = self._ends
        stop = len(ends) if limit is None else min(len(ends), self._done + limit)
        try:
            failures += self._send(self._buf, ends, self._done, stop, own=True)
        finally:
            if self._done == len(ends):  # all sent: give the memory back
                self._buf, self._ends, self._done = bytearray(), array("Q"), 0
        return failures

    def flush_in_background(self) -> None:
        """Hand all that is queued to a thread of its own and return at once: a restart
        decodes its next bindings while the kernel adds the routes of the last ones (the
        kernel's work happens inside the send, without the GIL). The next ``flush`` or
        ``close`` waits for it first, so changes keep their order."""
        if not self.pending:
            return
        job = (self._buf, self._ends, self._done, len(self._ends))
        self._buf, self._ends, self._done = bytearray(), array("Q"), 0
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="pmip-routes")
        self._sending.append(self._worker.submit(self._send, *job))

    def _settle(self) -> int:
        """Wait for the background rounds; their failures."""
        sending, self._sending = self._sending, []
        return sum(round_.result() for round_ in sending)

    def _send(
        self, buf: bytearray, ends: array[int], first: int, stop: int, own: bool = False
    ) -> int:
        """Send messages ``first``..``stop``-1 of ``buf``, a chunk per sendmsg. ``own``:
        they are the queue's, whose progress is kept as chunks go out."""
        failures = 0
        view = memoryview(buf)
        try:
            while first < stop:
                last = min(stop, first + BATCH) - 1
                begin = ends[first - 1] if first else 0
                end = ends[last]
                # The chunk's last message asks for the ACK that closes the chunk.
                at = (ends[last - 1] if last else 0) + 6
                flags = _FLAGS.unpack_from(buf, at)[0]
                _FLAGS.pack_into(buf, at, flags | NLM_F_ACK)
                self.sock.send(view[begin:end])
                first = last + 1
                if own:
                    self._done = first
                failures += self._replies(_NLMSGHDR.unpack_from(buf, at - 6)[3])
        finally:
            view.release()
        return failures

    def _replies(self, last_seq: int) -> int:
        """Read the replies of one chunk: the failures, then the ACK of ``last_seq``."""
        failures = 0
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if kind == NLMSG_ERROR and length >= 36:
                    err = -_ERRMSG.unpack_from(data, off + 16)[0]
                    request = _NLMSGHDR.unpack_from(data, off + 20)[1]
                    if err and not (request == RTM_DELROUTE and err in (errno.ESRCH, errno.ENOENT)):
                        failures += 1
                        op = "del" if request == RTM_DELROUTE else "add"
                        log.warning("route %s failed: %s", op, errno.errorcode.get(err, err))
                    if seq == last_seq:
                        return failures
                if length == 0:
                    break
                off += (length + 3) & ~3

    def close(self) -> None:
        if self._worker is not None:
            with contextlib.suppress(Exception):
                self._settle()
            self._worker.shutdown()
        self.sock.close()


def sysctl(path: str, value: str | int) -> bool:
    """Write /proc/sys/<path> (the daemon's own network namespace). False if refused."""
    try:
        Path("/proc/sys", path).write_text(f"{value}\n")
        return True
    except OSError as exc:
        log.warning("cannot set %s=%s: %s", path.replace("/", "."), value, exc)
        return False


@dataclass(frozen=True, slots=True)
class Ownership:
    """What one data plane installs, so a restart removes its own leftovers and nothing
    of another agent in the same namespace: PROTO-tagged rules of these priorities,
    routes in these tables, to these destinations or out of these interfaces, and
    addresses on these interfaces."""

    rule_priorities: frozenset[int] = frozenset()
    tables: frozenset[int] = frozenset()
    destinations: frozenset[Network] = frozenset()
    interfaces: frozenset[str] = frozenset()


def remove_leftovers(ipr: IPRouteThread, owned: Ownership) -> int:
    """Delete what a previous run of this data plane left (a kill -9 skips its clean-up).
    Returns how many rules, routes and addresses were removed."""
    removed = 0
    indexes = set()
    for name in owned.interfaces:
        with contextlib.suppress(OSError):
            indexes.add(socket.if_nametoindex(name))
    for rule in ipr.get_rules():
        prio = rule.get("FRA_PRIORITY")
        if rule.get("FRA_PROTOCOL") == PROTO and prio in owned.rule_priorities:
            with contextlib.suppress(Exception):
                ipr.rule("del", family=rule["family"], priority=prio, protocol=PROTO)
                removed += 1
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in ipr.get_routes(family=family, table=0):
            if route["proto"] != PROTO:
                continue
            spec = _route_spec(route)
            dst = spec.get("dst")
            net = ip_network(f"{dst}/{spec['dst_len']}") if dst is not None else None
            if (
                spec["table"] in owned.tables
                or spec.get("oif") in indexes
                or net in owned.destinations
            ):
                with contextlib.suppress(Exception):
                    ipr.route("del", **spec)
                    removed += 1
    for addr in ipr.get_addr():
        if addr.get("IFA_PROTO") == PROTO and addr["index"] in indexes:
            with contextlib.suppress(Exception):
                ipr.addr(
                    "del",
                    index=addr["index"],
                    address=addr.get("IFA_ADDRESS"),
                    prefixlen=addr["prefixlen"],
                )
                removed += 1
    return removed


def _route_spec(route: object) -> dict[str, object]:
    r = route  # a pyroute2 rtmsg
    spec: dict[str, object] = {
        "family": r["family"],  # type: ignore[index]
        "dst_len": r["dst_len"],  # type: ignore[index]
        "table": r.get("RTA_TABLE") or r["table"],  # type: ignore[attr-defined, index]
        "proto": PROTO,
        "type": r["type"],  # type: ignore[index]
    }
    dst = r.get("RTA_DST")  # type: ignore[attr-defined]
    if dst is not None:
        spec["dst"] = dst
    oif = r.get("RTA_OIF")  # type: ignore[attr-defined]
    if oif is not None:
        spec["oif"] = oif
    return spec
