"""Which peers the signalling is IPsec-protected with, read from strongSwan's vici.

An :class:`SaTable` is a snapshot: the remote traffic selectors of every INSTALLED child
SA, and the index of the device protected packets come in through (kernel-libipsec's TUN
device, when it is used). A :class:`SaWatcher` polls charon in a worker thread and hands
each changed table to the event loop; while charon cannot be reached the table is empty,
so nothing counts as protected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any

log = logging.getLogger("pmip.ipsec")

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class SaTable:
    hosts: frozenset[Address] = frozenset()  # /32 and /128 selectors: one set lookup
    networks: tuple[Network, ...] = ()
    ingress_ifindex: int | None = None  # None: any device (kernel ESP)
    ingress_required: bool = False  # an ingress device is configured (absent: nothing passes)
    peers: tuple[str, ...] = field(default=(), compare=False)  # for logs

    def covers(self, addr: Address) -> bool:
        """An INSTALLED child SA's remote selectors include ``addr``."""
        if addr in self.hosts:
            return True
        return any(addr in net for net in self.networks if net.version == addr.version)

    def protected(self, src: Address, ifindex: int | None) -> bool:
        """A packet from ``src`` that came in on ``ifindex`` was carried by an SA."""
        wrong_device = self.ingress_ifindex is None or ifindex != self.ingress_ifindex
        if self.ingress_required and wrong_device:
            return False
        return self.covers(src)


def table_from_sas(
    sas: Iterable[Mapping[str, Any]], ingress_ifindex: int | None, ingress_required: bool
) -> SaTable:
    """The table of vici's ``list-sas`` answer (one ``{ike_name: ike_sa}`` per IKE SA)."""
    hosts: set[Address] = set()
    networks: set[Network] = set()
    peers: list[str] = []
    for message in sas:
        for ike_name, ike in message.items():
            if _text(ike.get("state")) != "ESTABLISHED":
                continue
            for child in (ike.get("child-sas") or {}).values():
                if _text(child.get("state")) != "INSTALLED":
                    continue
                for ts in child.get("remote-ts") or ():
                    net = _selector(_text(ts))
                    if net is None:
                        continue
                    if net.num_addresses == 1:
                        hosts.add(net.network_address)
                    else:
                        networks.add(net)
                peers.append(f"{ike_name}/{_text(child.get('name'))}")
    return SaTable(
        frozenset(hosts),
        tuple(sorted(networks, key=lambda n: (n.version, n))),
        ingress_ifindex,
        ingress_required,
        tuple(sorted(peers)),
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _selector(ts: str) -> Network | None:
    """``10.0.0.1/32`` or ``2001:db8::/64``; ranges and ``[proto/port]`` suffixes (which
    strongSwan shows for narrowed selectors) are taken at their address part."""
    ts = ts.split("[", 1)[0].strip()
    if "-" in ts:  # an address range: not produced by our configuration
        return None
    try:
        return ip_network(ts, strict=False)
    except ValueError:
        return None


class SaWatcher:
    """Polls charon's SAs every ``interval_s`` and calls ``on_change(table)`` in the event
    loop whenever what is protected changes (also on the first poll)."""

    def __init__(
        self,
        vici_socket: Path,
        interval_s: float,
        ingress_interface: str | None,
        on_change: Callable[[SaTable], None],
    ) -> None:
        self.vici_socket = vici_socket
        self.interval_s = interval_s
        self.ingress_interface = ingress_interface
        self.on_change = on_change
        self.table: SaTable | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self._sock: socket.socket | None = None
        self._warned = False

    async def start(self) -> None:
        """First poll before returning, so the service starts with the real table."""
        await self._poll_once()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._disconnect()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._poll_once()

    async def _poll_once(self) -> None:
        table = await asyncio.to_thread(self._read)
        if table != self.table:
            self.table = table
            self.on_change(table)

    def _read(self) -> SaTable:
        ifindex = None
        if self.ingress_interface is not None:
            with contextlib.suppress(OSError):  # absent until charon creates it
                ifindex = socket.if_nametoindex(self.ingress_interface)
        try:
            sas = list(self._connect().list_sas())
        except Exception as exc:  # charon down or restarting: nothing is protected
            if not self._warned:
                log.warning("cannot read IPsec SAs from %s: %s", self.vici_socket, exc)
                self._warned = True
            self._disconnect()
            sas = []
        else:
            self._warned = False
        return table_from_sas(sas, ifindex, self.ingress_interface is not None)

    def _connect(self) -> Any:
        if self._session is None:
            import vici  # only needed with require_ipsec

            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5.0)
            try:
                sock.connect(str(self.vici_socket))
            except OSError:
                sock.close()
                raise
            self._sock, self._session = sock, vici.Session(sock)
        return self._session

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._session = None
