"""The MAG's side of the kernel relay (mag.dhcp.kernel_relay): keeps `KernelRelay`'s
maps in step with the MAG, so that the kernel relays exactly what `DhcpAgent.forward`
would, and lets an ACK through only for an address the LMA granted.

- Which MNs the kernel serves, per access link: those the agent relays (a dhcp-server
  mode profile, an LMA to serve it, not refused), each with its option 82. Synced at
  start, when an access link (re)appears, on reload and on a refusal or a grant.
- Grants: from the engine's events (`observe`), keyed by the MAC the MN's DHCP came
  from; revoked when the LMA refuses the address or the binding ends.
- Armed PBUs: at an MN's DISCOVER, the PBU its OFFER calls for, which the kernel sends
  as the OFFER passes, with the offered address in it (`arm`); the engine learns it went
  from its PBA or the server's next reply (`confirm`).
- Armed OFFERs: at the DISCOVER of an MN the MAG's own server answers (seed Figure 2),
  as its PBU asks the LMA for an address, the OFFER it will get, less what the PBA
  grants; the kernel fills that in and sends it as the PBA passes (`arm_offer`), and
  ACKs the MN's REQUEST for it. The daemon's own copy of that OFFER is then not sent
  (`sent_already`), and the REQUEST's copy tells the agent (`acked_in_kernel`).
- Expected PBAs: the kernel reads each PBU that asks for an address as it leaves, so
  that it grants the address as an accepting PBA comes in, and sends on the server's
  ACK of it that came first. The daemon's copy of that ACK is then not sent
  (`sent_already`).

Errors on the maps are logged (rate-limited) and leave the message to the daemon's own
relay: the kernel relay only ever makes the common case faster."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from ..core import events as ev
from ..net.ratelimit import RateLimitedLog
from . import codec
from .agent import DhcpAgent
from .kernel_relay import (
    KernelRelay,
    KernelRelayError,
    mac_of,
    offer_frame,
    remove_stale,
    upstream_of,
)
from .sockets import rcvmark_works

log = logging.getLogger("pmip.mag")
ZERO4 = bytes(4)
OFFER_TYPE = bytes((53, 1, codec.OFFER))  # build_reply's first option


class RelayOffload:
    def __init__(
        self,
        kernel: KernelRelay,
        agent: DhcpAgent,
        drops: RateLimitedLog,
        macs_of: Callable[[bytes], Iterable[bytes]],
        uplinks: dict[IPv6Address, int] | None = None,
        relay: IPv4Address | None = None,
    ) -> None:
        self.kernel = kernel
        self.agent = agent
        self.drops = drops
        # Per LMA (over IPv6), the link toward it: where an armed PBU leaves. Empty: no
        # PBU is armed (with require_ipsec, say: a PBU sent by tc would bypass the SA).
        self._uplinks = uplinks or {}
        # giaddr of what the kernel relays: only such replies can have been sent there.
        self._relay = relay.packed if relay is not None else None
        # Armed PBUs: per MAC (MN, sequence number, prefix length, when armed), and the
        # MAC per sequence number.
        self._armed: dict[bytes, tuple[bytes, int, int, float]] = {}
        self._armed_seq: dict[int, bytes] = {}
        # Armed OFFERs of the MAG's own server: per chaddr, (PBU sequence number, xid).
        self._offers: dict[bytes, tuple[int, bytes]] = {}
        self._access: dict[str, tuple[int, bytes]] = {}  # per access link: ifindex, MAC
        self.offers_armed = 0
        self._profile_macs = macs_of  # an MN's link-layer ids from its profile
        # Per (access ifindex, MN's MAC or None for the link's own MN): option 82, MN.
        self._links: dict[tuple[int, bytes | None], tuple[bytes, bytes]] = {}
        self._served: set[bytes] = set()  # the MNs with entries in the kernel
        self._dhcp_macs: dict[bytes, bytes] = {}  # per MN, the chaddr of its last DHCP
        self._iface_mn: dict[str, bytes] = {}  # as of the last sync
        self._by_mac: dict[bytes, bytes] = {}
        self.copies = 0  # the kernel's marked copies the daemon read

    @classmethod
    def start(
        cls,
        state_dir: Path,
        relay: IPv4Address,
        server: IPv4Address,
        proxy_coa: IPv6Address,
        lmas: Iterable[Any],
        agent: DhcpAgent,
        drops: RateLimitedLog,
        macs_of: Callable[[bytes], Iterable[bytes]],
        pbus: bool = True,
    ) -> RelayOffload | None:
        """The programs loaded and attached toward the server and the LMAs, or None
        (logged): the daemon's own relay then does all of it, as without the setting.
        ``pbus``: the kernel may send the PBU an OFFER calls for (`arm`)."""
        kernel = None
        try:
            if not rcvmark_works():
                raise KernelRelayError("the kernel cannot report marks (SO_RCVMARK: Linux 5.19)")
            kernel = KernelRelay(state_dir)
            upstream = upstream_of(server)
            kernel.configure(
                relay.packed, server.packed, socket.if_nametoindex(upstream), proxy_coa.packed
            )
            # The links the PBUs leave and the PBAs come in by (over IPv6): the PBUs that
            # ask for an address, and the PBAs granting it, are read there (relay.c,
            # uplink_out and pba_in).
            by_lma = {lma.lmaa: upstream_of(lma.lmaa) for lma in lmas if not lma.over_ipv4}
            toward_lmas = set(by_lma.values())
            for uplink in sorted({upstream, *toward_lmas}):
                kernel.attach(uplink, upstream=True, pbus=uplink in toward_lmas)
            uplinks = {a: socket.if_nametoindex(n) for a, n in by_lma.items()} if pbus else {}
        except (KernelRelayError, OSError) as exc:
            if kernel is not None:
                kernel.close()
            log.error("DHCP kernel relay off, relaying in user space: %s", exc)
            return None
        log.info("DHCP kernel relay on: replies from %s come in on %s", server, upstream)
        return cls(kernel, agent, drops, macs_of, uplinks, relay)

    @staticmethod
    def remove_stale(access: list[str], toward: list[object]) -> None:
        """A killed daemon's filters stay on the links (a clean stop takes them off):
        their programs would go on relaying beside a daemon that does not read their
        copies. Off the access links and the links toward ``toward``."""
        links = list(access)
        for address in toward:
            with contextlib.suppress(KernelRelayError, OSError):
                link = upstream_of(address)
                if link not in links:
                    links.append(link)
        removed = remove_stale(links)
        if removed:
            log.warning(
                "DHCP kernel relay is off: removed its filters from %s, left by an earlier run",
                ", ".join(removed),
            )

    # --- links and MNs ----------------------------------------------------------------

    def link_up(self, ifname: str, iface_mn: dict[str, bytes], by_mac: dict[bytes, bytes]) -> None:
        """The access program on ``ifname`` (again, when it was re-created), and its MNs."""
        self._access.pop(ifname, None)
        try:
            self.kernel.attach(ifname)
        except OSError as exc:
            log.warning("DHCP kernel relay: not on %s, relayed in user space: %s", ifname, exc)
            self.kernel.attached.pop(ifname, None)
        self.sync(iface_mn, by_mac)

    def links_gone(self, access: set[str]) -> None:
        """Access links no longer configured: their filters go."""
        for name, (_index, program) in list(self.kernel.attached.items()):
            if program == "access_in" and name not in access:
                self.kernel.detach(name)

    def sync(self, iface_mn: dict[str, bytes], by_mac: dict[bytes, bytes]) -> None:
        """The kernel's per-MN entries as the profiles, links and refusals now are: only
        the MNs `DhcpAgent.forward` would relay (the rest take the daemon's path)."""
        self._iface_mn, self._by_mac = iface_mn, by_mac
        kernel, agent = self.kernel, self.agent
        want: dict[tuple[int, bytes | None], tuple[bytes, bytes, str]] = {}
        for ifname, (index, program) in kernel.attached.items():
            if program != "access_in":
                continue
            own = iface_mn.get(ifname)
            if own is not None:
                if agent.relays(own):
                    want[(index, None)] = (agent.relay_info(ifname, own), own, ifname)
                continue
            for mac, mn_id in by_mac.items():
                if len(mac) == 6 and agent.relays(mn_id):
                    want[(index, mac)] = (agent.relay_info(ifname, mn_id), mn_id, ifname)
        self._served = {mn_id for _info, mn_id, _ifname in want.values()}
        for key in [k for k in self._links if k not in want]:
            kernel.unserve(*key)
            del self._links[key]
        own_macs: dict[str, bytes] = {}  # per access link, read from sysfs once
        for key, (info, mn_id, ifname) in want.items():
            if self._links.get(key) == (info, mn_id):
                continue
            try:
                if ifname not in own_macs:
                    own_macs[ifname] = mac_of(ifname)
                kernel.serve(key[0], key[1], own_macs[ifname], info)
            except (OSError, ValueError) as exc:
                self.drops.warning(
                    "kernel-relay-map", time.time(), "DHCP kernel relay: %s on %s: %s",
                    key[1].hex(":") if key[1] else "its MN", ifname, exc,
                )  # fmt: skip
                continue
            self._links[key] = (info, mn_id)

    def note_mac(self, mn_id: bytes, mac: bytes) -> None:
        """The MAC ``mn_id``'s DHCP came from: the chaddr its server's ACK will carry."""
        self._dhcp_macs[mn_id] = mac

    # --- grants and expected PBAs -------------------------------------------------------

    def observe(self, event: ev.Event) -> bool:
        """Grants into the kernel as the PBAs come: the server's ACK of a granted address
        then passes there; refused, released or lost, it goes to the daemon again. True
        for a grant (its ACK is on its way to the MN, in the kernel or from the agent)."""
        kernel = self.kernel
        kind = type(event)
        if kind is ev.Ipv4Granted:
            e: ev.Ipv4Granted = event  # type: ignore[assignment]
            mn_id = e.mn_id
            last = self._dhcp_macs.get(mn_id)
            for mac in (last,) if last is not None else self._macs(mn_id):
                try:
                    kernel.grant(mac, e.hoa.packed)
                except OSError as exc:  # its ACK goes up to the daemon, which passes it on
                    self.drops.warning("kernel-relay-map", time.time(), "%s", exc)
            if mn_id not in self._served and self.agent.relays(mn_id):
                self.sync(self._iface_mn, self._by_mac)  # a refusal had taken it out
            return True
        if kind is ev.Ipv4Denied or kind is ev.BindingLost or kind is ev.Deregistered:
            mn_id = event.mn_id  # type: ignore[attr-defined]
            for mac in self._macs(mn_id):
                kernel.revoke(mac)  # its armed PBU too
                armed = self._armed.pop(mac, None)
                if armed is not None:
                    self._armed_seq.pop(armed[1], None)
            if kind is ev.Ipv4Denied:
                self.sync(self._iface_mn, self._by_mac)  # its requests go to the daemon
        return False

    # --- PBUs armed at the DISCOVER, sent by the kernel with the OFFER ----------------

    def arm(self, mn_id: bytes, mac: bytes, now: float) -> None:
        """At this MN's DISCOVER (its copy): the PBU for the address its server will
        offer, built now (`MagEngine.arm_ipv4`) and left in the kernel, which sends it
        with the address as the OFFER passes (relay.c, send_pbu), so that the PBU leaves
        with the OFFER and not once the daemon has woken up for its copy."""
        if not self._uplinks:
            return
        engine = self.agent.engine
        profile = engine.settings.profiles.get(mn_id)
        prefix = profile.dhcp_prefix if profile is not None else None
        plen = prefix.prefixlen if prefix is not None else 32  # as for an OFFER without one
        armed = engine.arm_ipv4(mn_id, plen, now)
        if armed is None:
            return
        sequence, packet, hoa_at, lmaa = armed
        uplink = self._uplinks.get(lmaa)
        if uplink is None:
            return
        try:
            self.kernel.arm(mac, packet, hoa_at, uplink)
        except (OSError, ValueError) as exc:  # the daemon sends it, at the OFFER's copy
            self.drops.warning("kernel-relay-map", time.time(), "%s", exc)
            return
        if len(self._armed) > 4096:  # DISCOVERs no OFFER answered
            self._armed.clear()
            self._armed_seq.clear()
        old = self._armed.get(mac)
        if old is not None:
            self._armed_seq.pop(old[1], None)
        self._armed[mac] = (mn_id, sequence, plen, now)
        self._armed_seq[sequence] = mac

    def offered(self, mac: bytes) -> None:
        """The kernel passed on a server's OFFER to this MN without sending its armed PBU
        (the copy of an OFFER it sent one with does not come up): that PBU is dropped,
        and the engine sends one of its own, as without arming."""
        armed = self._armed.pop(mac, None)
        if armed is not None:
            self._armed_seq.pop(armed[1], None)
            self.kernel.disarm(mac)

    def confirm(self, mac: bytes) -> None:
        """News of this MN's armed PBU, if it has one: a PBA answering it, or another
        reply from its server. If the kernel sent it, the engine registers from it (with
        the address it went with), before the PBA's intake or the reply's; else it is
        dropped (`offered`)."""
        armed = self._armed.pop(mac, None)
        if armed is None:
            return
        mn_id, sequence, plen, armed_at = armed
        self._armed_seq.pop(sequence, None)
        try:
            hoa = self.kernel.take_armed(mac)
        except OSError:
            hoa = None
        if hoa is not None:
            self.agent.engine.armed_sent(mn_id, sequence, IPv4Address(hoa), plen, armed_at)

    def answered(self, sequence: int) -> None:
        """A PBA for this sequence number came in: if an armed PBU carried it, `confirm`."""
        mac = self._armed_seq.get(sequence)
        if mac is not None:
            self.confirm(mac)

    @property
    def armed(self) -> bool:
        return bool(self._armed_seq)

    # --- OFFERs armed at the DISCOVER, sent by the kernel with the PBA (Figure 2) -------

    def arm_offer(self, mn_id: bytes, ifname: str, data: bytes, seen: codec.Peek) -> None:
        """At the DISCOVER (BOOTP ``data``, `codec.peek`'d as ``seen``) of an MN the MAG's
        own server answers once the LMA grants it an address (seed Figure 2), once the
        engine has the PBU asking for it ready to leave: the OFFER `DhcpAgent` will build,
        left in the kernel, which completes it from the PBA and sends it as the PBA
        passes (relay.c, send_offer). Built from the DISCOVER's bytes
        (`codec.reply_template`), before they are decoded, and written in place: 50 us
        in bench/daemon_steps.py, probes included. The daemon's own copy of that OFFER is
        then not sent (`sent_already`)."""
        if not self._uplinks or seen.message_type != codec.DISCOVER or seen.ciaddr != ZERO4:
            return
        agent = self.agent
        if mn_id in agent.grants or mn_id in agent.denied:
            return  # answered at once, or not at all
        reporting = agent.engine.reporting_ipv4(mn_id)
        if reporting is None:
            return
        sequence, hoa, lmaa = reporting
        if hoa.packed != ZERO4 or lmaa not in self._uplinks:
            return  # an address of the MN's own to register: no OFFER waits for the PBA
        try:
            access = self._access.get(ifname)
            if access is None:
                access = self._access[ifname] = (socket.if_nametoindex(ifname), mac_of(ifname))
            bootp, at = codec.reply_template(data, codec.OFFER)
            self.kernel.arm_offer(sequence, offer_frame(access[1], bootp), at, access[0],
                                  agent.lease_s, lmaa.packed)  # fmt: skip
        except (OSError, ValueError) as exc:  # the daemon sends it, as without arming
            self.drops.warning("kernel-relay-map", time.time(), "%s", exc)
            return
        if len(self._offers) > 4096:  # DISCOVERs no PBA answered
            self._offers.clear()
        self._offers[data[28:34]] = (sequence, data[4:8])
        self._dhcp_macs[mn_id] = data[28:34]  # revoked with the binding: its ACK too
        self.offers_armed += 1

    def _offer_sent(self, data: bytes) -> bool:
        """True for the MAG's own OFFER (BOOTP ``data``) that the kernel sent already."""
        armed = self._offers.pop(data[28:34], None)
        if armed is None:
            return False
        sequence, xid = armed
        sent = self.kernel.take_offer(sequence)  # in place: no system call to fail
        return sent and xid == data[4:8] and data[240:243] == OFFER_TYPE

    def sent_already(self, data: bytes) -> bool:
        """True for a reply to an MN (BOOTP ``data``) that the kernel sent already:
        - the MAG's own OFFER, armed at the DISCOVER (`arm_offer`) and sent with the PBA;
        - a server's ACK that came before its PBA, which the PBA released in the kernel
          (relay.c, release) while the daemon held its own copy.
        That copy is not sent. Other replies cost a dictionary lookup at most."""
        if len(data) < 243 or data[0] != 2:
            return False
        if data[24:28] != self._relay:
            return bool(self._offers) and self._offer_sent(data)
        try:
            return self.kernel.released(data[28:34], data[4:8])
        except OSError:
            return False

    def _macs(self, mn_id: bytes) -> set[bytes]:
        """Every MAC the kernel may know this MN by: its profile's and its DHCP's."""
        macs = {m for m in self._profile_macs(mn_id) if len(m) == 6}
        last = self._dhcp_macs.get(mn_id)
        if last is not None:
            macs.add(last)
        return macs

    def status(self) -> dict[str, Any]:
        return {
            "active": True,
            "links": sorted(self.kernel.attached),
            "entries": len(self._links),
            "copies_read": self.copies,
            "offers_armed": self.offers_armed,
            **self.kernel.stats(),
        }

    def close(self) -> None:
        self.kernel.close()  # its filters go; the links' other filters stay
