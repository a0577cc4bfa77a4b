"""The relay hook's common messages relayed in the kernel (mag.dhcp.kernel_relay).

`bpf/relay.c` (with `bpf/bootp.h`) holds three tc programs: `access_in` on each access
link's ingress, `uplink_in` on the ingress of the links toward the DHCP server and the
LMAs, `uplink_out` on the egress of those toward the LMAs. They pass a known MN's
DISCOVER and SELECTING REQUEST to the server, and the server's OFFER and granted ACK to
the MN, with the edits the daemon's relay makes, so that no process wakes up for them.
A marked copy (`MARK`) of each DISCOVER still reaches the daemon, which attaches the MN
and arms the PBU that will report the offered address (`arm`); the OFFER sends that PBU
as it passes. An OFFER whose PBU was not armed in time goes up as a marked copy too,
and the daemon sends the PBU. An accepting PBA for an expected PBU grants its address
as it passes, and sends on the server's ACK of it if that came first (a copy waits in
the kernel beside the one the daemon holds; `KernelRelay.released` tells the daemon not
to send its own).
For an MN the MAG's own server answers (seed Figure 2), the daemon arms the OFFER at
the DISCOVER, as its PBU asks the LMA for an address (`arm_offer`); the PBA granting it
becomes that OFFER, with the grant filled in, and the MN's REQUEST for it becomes the
ACK (marked copies of both go up; `take_offer` tells the daemon not to send its own).
Everything else (other message types, an ACK the LMA has not granted yet, a server
whose neighbour is not resolved, anything unusual) goes up the stack untouched and takes
the daemon's own path.

This module is the I/O around those programs: it compiles the object (clang, cached in
the state directory), loads it (libbpf, through ctypes), attaches the programs with
pyroute2 under their own priority, and writes the maps: per MN and access link, the
option 82 it is relayed with; per MN, the address the LMA granted it; and, written in
place (mmap'ed array maps), per MN an armed PBU and per PBU sequence number an armed
OFFER.
`offload.RelayOffload` decides what goes in them. The address a PBA may grant, per PBU
sequence number, the kernel reads from the PBUs themselves as they leave (uplink_out, on
the egress of the links toward the LMAs): no system call on the PBU's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import mmap
import shutil
import socket
import struct
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TypeVar

from ..wire.messages import internet_checksum

MARK = 0x5EED  # the copies' skb mark, as in relay.c
PRIO = 0x5EED  # the filters' tc priority: ours to replace and delete, no one else's
TC_INGRESS = "ffff:fff2"
TC_EGRESS = "ffff:fff3"
ETH_P_ALL = 3
TAIL_MAX = 128  # relay.c: option 82 and END
# relay.c's stats slots, in order
STATS = ("to_server", "to_mn", "no_route", "ack_up", "pba_grants", "acks_released", "pbus_sent",
         "offers_sent", "acks_sent")  # fmt: skip
APT_HINT = "apt-get install clang libbpf-dev"

T = TypeVar("T")


class KernelRelayError(Exception):
    """The kernel relay cannot run here; the message says what is missing."""


SOURCES = ("relay.c", "bootp.h")  # in pmip_agent/dhcp/bpf; relay.c includes bootp.h
# -mcpu=v3: relay.c's compare-and-swap (BPF atomics, Linux 5.12).
CFLAGS = ("-O2", "-g", "-target", "bpf", "-mcpu=v3")


def _sources() -> dict[str, bytes]:
    bpf = resources.files("pmip_agent.dhcp").joinpath("bpf")
    return {name: bpf.joinpath(name).read_bytes() for name in SOURCES}


def build(state_dir: Path) -> Path:
    """The compiled object, built with clang once per version of the sources."""
    sources = _sources()
    flags = " ".join(CFLAGS).encode()
    digest = hashlib.sha256(b"".join([flags, *(sources[n] for n in SOURCES)])).hexdigest()[:16]
    obj = state_dir / f"dhcp-relay-{digest}.o"
    if obj.exists():
        return obj
    clang = shutil.which("clang")
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    include = Path("/usr/include") / multiarch
    if clang is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise KernelRelayError(f"clang and the libbpf headers are needed ({APT_HINT})")
    work = state_dir / f"dhcp-relay-{digest}.src"
    work.mkdir(exist_ok=True)
    for name, text in sources.items():
        (work / name).write_bytes(text)
    tmp = obj.with_suffix(".tmp")
    run = subprocess.run(
        [clang, *CFLAGS, f"-I{include}", "-c", str(work / "relay.c"), "-o", str(tmp)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    if run.returncode != 0:
        raise KernelRelayError(f"clang failed on relay.c: {run.stderr.strip()[-400:]}")
    tmp.replace(obj)
    return obj


class Libbpf:
    """The libbpf calls needed, through ctypes (libbpf1): no skeleton to link. Also
    bench/relay_floor.py's."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise KernelRelayError(f"libbpf.so.1 not found ({APT_HINT}): {exc}") from exc
        ptr = ctypes.c_void_p
        lib.bpf_object__open_file.restype = ptr
        lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ptr]
        lib.bpf_object__load.argtypes = [ptr]
        lib.bpf_object__close.argtypes = [ptr]
        for find in ("bpf_object__find_program_by_name", "bpf_object__find_map_by_name"):
            getattr(lib, find).restype = ptr
            getattr(lib, find).argtypes = [ptr, ctypes.c_char_p]
        lib.bpf_program__fd.argtypes = [ptr]
        lib.bpf_map__fd.argtypes = [ptr]
        lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ptr, ptr, ctypes.c_uint64]
        lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ptr, ptr]
        lib.bpf_map_delete_elem.argtypes = [ctypes.c_int, ptr]
        self.lib = lib


def _in_thread(fn: Callable[[], T]) -> T:
    """pyroute2's synchronous IPRoute refuses to run inside a running event loop."""
    box: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    t = threading.Thread(target=run, name="kernel-relay-tc")
    t.start()
    t.join()
    if failed:
        raise failed[0]
    return box[0]


def mac_key(mac: bytes) -> int:
    """A MAC as relay.c's __u64 key: its six octets in memory order, zero-extended."""
    return int.from_bytes(mac[:6], "little")


def _link_key(ifindex: int, mac: bytes | None) -> bytes:
    return (
        (mac_key(mac) if mac else 0).to_bytes(8, "little")
        + ifindex.to_bytes(4, "little")
        + (bytes(4))
    )


MAPS = ("conf", "links", "attached", "grants", "expects", "held", "armed", "offers", "acks",
        "stats")  # fmt: skip
ARMED_MAX = 512  # relay.c: an armed PBU's frame
HELD_MAX = 1024  # relay.c: a held ACK's frame
HELD_RELEASED = 2  # relay.c: struct held's state once the kernel sent it
ARMED, ARMED_SENT = 1, 2  # relay.c: struct armed's and struct offer's states
OFFER_MAX = 512  # relay.c: an armed OFFER's frame
OFFER_FIELDS = 6  # relay.c: the values a PBA fills in (codec.ReplyTemplate's)
BOOTP_AT = 14 + 20 + 8  # relay.c: Ethernet, IPv4 without options, UDP


class _Held(ctypes.Structure):
    """relay.c's struct held."""

    _fields_ = (
        ("state", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("info_at", ctypes.c_uint32),
        ("gone", ctypes.c_uint32),
        ("yiaddr", ctypes.c_uint32),
        ("xid", ctypes.c_ubyte * 4),  # as on the wire
        ("access_if", ctypes.c_uint32),
        ("own_link", ctypes.c_uint32),
        ("at_ns", ctypes.c_uint64),
        ("frame", ctypes.c_ubyte * HELD_MAX),
    )


ARMED_SLOTS = 4096  # relay.c: armed PBUs, by armed_slot
# relay.c's struct armed up to its frame (native order, no padding: it has none there).
_ARMED_HEAD = struct.Struct("=IIIII4sQQ")
_ARMED_SIZE = _ARMED_HEAD.size + ARMED_MAX
_ARMED_MAC = struct.Struct("=Q")  # struct armed's mac, at _ARMED_MAC_AT
_ARMED_MAC_AT = _ARMED_HEAD.size - 8
_ARMED_HOA_AT = 20  # struct armed's hoa: the address a sent PBU went with, as on the wire


def armed_slot(mac: bytes) -> int:
    """relay.c's armed_slot: where this MN's PBU is armed (Fibonacci hashing)."""
    return ((mac_key(mac) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 52 & (ARMED_SLOTS - 1)


OFFER_SLOTS = 4096  # relay.c: armed OFFERs, by PBU sequence number modulo this
# relay.c's struct offer up to its frame (native order, no padding: it has none there).
_OFFER_HEAD = struct.Struct(f"=IIIII{OFFER_FIELDS}HQ16s")
_OFFER_SIZE = _OFFER_HEAD.size + OFFER_MAX
_STATE = struct.Struct("=II")  # struct offer's state and sequence number


@functools.lru_cache(maxsize=64)
def _headers(access_mac: bytes, bootp_len: int) -> tuple[bytes, bytes, int]:
    """`offer_frame`'s Ethernet and IPv4 headers, its UDP header less the checksum, and
    the checksum's sum over those and the UDP pseudo-header."""
    udp_len = 8 + bootp_len
    ip = bytearray(b"\x45\0" + (20 + udp_len).to_bytes(2, "big") + bytes(4) + b"\x40\x11"
                   + bytes(6) + b"\xff" * 4)  # fmt: skip
    ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    udp = b"\0\x43\0\x44" + udp_len.to_bytes(2, "big")
    pseudo = bytes(4) + b"\xff" * 4 + b"\0\x11" + udp_len.to_bytes(2, "big")
    eth = b"\xff" * 6 + access_mac[:6] + b"\x08\0"
    return eth + bytes(ip), udp, ~internet_checksum(pseudo + udp) & 0xFFFF


def offer_frame(access_mac: bytes, bootp: bytes) -> bytes:
    """The frame relay.c's send_offer completes: ``bootp`` (`codec.reply_template`'s,
    zeros for what the grant says, of even length) broadcast on the access link, as the
    MAG's server socket sends it, from 0.0.0.0 for now (the router's address, from the
    PBA, goes there), with the IPv4 and UDP checksums computed so."""
    head, udp, partial = _headers(access_mac, len(bootp))
    udp_sum = internet_checksum(partial.to_bytes(2, "big") + bootp) or 0xFFFF
    return head + udp + udp_sum.to_bytes(2, "big") + bootp


def _write_slot(mem: mmap.mmap, at: int, value: bytes) -> None:
    """``value`` (an armed entry, its state first) into the mmap'ed array slot at ``at``,
    in place, the state last: freed first, so that the kernel never takes a half-written
    entry as ARMED. The stores go out in program order on x86 (TSO); a CPU that may
    reorder them could still let the kernel read a torn entry in that instant."""
    mem[at : at + 4] = bytes(4)
    mem[at + 4 : at + len(value)] = value[4:]
    mem[at : at + 4] = value[:4]


class KernelRelay:
    """The loaded programs and their maps; one per MAG daemon."""

    def __init__(self, state_dir: Path) -> None:
        obj_path = build(state_dir)
        self._bpf = Libbpf()
        lib = self._bpf.lib
        obj = lib.bpf_object__open_file(str(obj_path).encode(), None)
        if not obj:
            raise KernelRelayError(f"libbpf cannot open {obj_path}")
        if lib.bpf_object__load(obj) != 0:
            lib.bpf_object__close(obj)
            err = ctypes.get_errno()
            raise KernelRelayError(f"the kernel refused relay.c's programs: {os_error(err)}")
        self._obj = obj
        self._maps = {
            name: int(lib.bpf_map__fd(lib.bpf_object__find_map_by_name(obj, name.encode())))
            for name in MAPS
        }
        self._offers = mmap.mmap(self._maps["offers"], _OFFER_SIZE * OFFER_SLOTS)
        self._armed = mmap.mmap(self._maps["armed"], _ARMED_SIZE * ARMED_SLOTS)
        self.attached: dict[str, tuple[int, str]] = {}  # ifname -> (ifindex, program)
        self.egress: set[str] = set()  # links with uplink_out too

    # --- maps -----------------------------------------------------------------------

    def _update(self, name: str, key: bytes, value: bytes) -> None:
        k = ctypes.create_string_buffer(key, len(key))
        v = ctypes.create_string_buffer(value, len(value))
        if self._bpf.lib.bpf_map_update_elem(self._maps[name], k, v, 0) != 0:
            raise OSError(ctypes.get_errno(), f"kernel relay: cannot update map {name}")

    def _delete(self, name: str, key: bytes) -> None:
        k = ctypes.create_string_buffer(key, len(key))
        self._bpf.lib.bpf_map_delete_elem(self._maps[name], k)  # ENOENT is fine

    def configure(
        self, relay_ip: bytes, server_ip: bytes, upstream_if: int, proxy_coa: bytes
    ) -> None:
        """Where relayed requests go (giaddr, the server, the link the route to it uses),
        and where the LMAs' PBAs come to."""
        value = relay_ip + server_ip + upstream_if.to_bytes(4, "little") + bytes(4) + proxy_coa
        self._update("conf", bytes(4), value)

    def serve(self, ifindex: int, mac: bytes | None, access_mac: bytes, relay_info: bytes) -> None:
        """Relay this MN's requests on this access link with option 82 ``relay_info``.
        ``mac`` None: whichever MN is on the link (a link of its own)."""
        tail = bytes((82, len(relay_info))) + relay_info + b"\xff"
        if len(tail) > TAIL_MAX:
            raise ValueError(f"option 82 of {len(relay_info)} octets is too long to relay")
        value = access_mac[:6] + bytes((len(tail), 0)) + tail.ljust(TAIL_MAX, b"\0")
        self._update("links", _link_key(ifindex, mac), value)

    def unserve(self, ifindex: int, mac: bytes | None) -> None:
        self._delete("links", _link_key(ifindex, mac))

    def grant(self, mac: bytes, hoa: bytes) -> None:
        """The LMA anchored ``hoa`` for this MN: the server's ACK of it may pass. On the
        PBA's path: plain ctypes integers, no buffers built."""
        key = ctypes.c_uint64(mac_key(mac))
        value = ctypes.c_uint32(int.from_bytes(hoa, "little"))
        if self._bpf.lib.bpf_map_update_elem(
            self._maps["grants"], ctypes.byref(key), ctypes.byref(value), 0
        ):
            raise OSError(ctypes.get_errno(), "kernel relay: cannot update map grants")

    def revoke(self, mac: bytes) -> None:
        key = mac_key(mac).to_bytes(8, "little")
        self._delete("grants", key)
        self._delete("attached", key)
        self._delete("held", key)
        self.disarm(mac)
        self._delete("acks", key)  # the REQUEST of an OFFER the kernel sent goes up

    def arm(self, mac: bytes, packet: bytes, hoa_at: int, uplink_if: int) -> None:
        """The PBU this MN's server's OFFER is to send, as an IPv6 ``packet`` with 0.0.0.0
        at ``hoa_at`` and its checksum computed so: the kernel puts the offered address
        there, mends the checksum and sends it to the LMA by ``uplink_if``, within
        relay.c's ARMED_NS (and sends up no copy of that OFFER: `take_armed`)."""
        frame = bytes(12) + b"\x86\xdd" + packet  # Ethernet: the FIB's addresses, later
        if len(frame) > ARMED_MAX:
            raise ValueError(f"a PBU of {len(packet)} octets is too long to arm")
        value = _ARMED_HEAD.pack(
            ARMED, len(frame), 14 + hoa_at, 14 + 40 + 4, uplink_if, bytes(4),
            time.clock_gettime_ns(time.CLOCK_MONOTONIC), mac_key(mac),
        ) + frame  # fmt: skip
        # The kernel sends only an ARMED entry of this MAC (relay.c, armed_pbu). Another
        # MN's PBU armed here before is gone: its OFFER comes up, and the daemon sends
        # that PBU (RelayOffload.offered). Were the kernel sending that PBU from here in
        # this very instant, it could leave torn: the LMA's raw socket drops it for its
        # checksum, and the daemon sends it again when no PBA comes.
        _write_slot(self._armed, armed_slot(mac) * _ARMED_SIZE, value)

    def arm_offer(
        self,
        sequence: int,
        frame: bytes,
        at: tuple[int, ...],
        access_if: int,
        lease_max: int,
        lmaa: bytes,
    ) -> None:
        """The OFFER (`offer_frame`) that the PBA answering PBU ``sequence`` from
        ``lmaa`` is to become, sent on ``access_if``, with the PBA's values at ``at``
        (offsets in the BOOTP message, `codec.ReplyTemplate.at`), within relay.c's
        ARMED_NS: relay.c, send_offer. `take_offer` says whether it went."""
        if len(frame) > OFFER_MAX:
            raise ValueError(f"an OFFER of {len(frame)} octets is too long to arm")
        value = _OFFER_HEAD.pack(
            ARMED, sequence, len(frame), access_if, min(lease_max, 0xFFFFFFFF),
            *(BOOTP_AT + a for a in at), time.clock_gettime_ns(time.CLOCK_MONOTONIC), lmaa,
        ) + frame  # fmt: skip
        # The kernel sends only an ARMED entry of this sequence number (relay.c, pba_in).
        # A PBA coming in the instant of the write could read a torn frame, whose
        # checksum the MN would then refuse.
        _write_slot(self._offers, (sequence % OFFER_SLOTS) * _OFFER_SIZE, value)

    def take_offer(self, sequence: int) -> bool:
        """True if the kernel sent the OFFER armed for PBU ``sequence``; either way it
        leaves the kernel, which will not send it from here on."""
        slot = (sequence % OFFER_SLOTS) * _OFFER_SIZE
        state, armed_for = _STATE.unpack_from(self._offers, slot)
        if armed_for != sequence or not state:
            return False
        self._offers[slot : slot + 4] = bytes(4)
        return state == ARMED_SENT

    def _armed_at(self, mac: bytes) -> int | None:
        """Where this MN's PBU is armed, if its slot is still its own."""
        at = armed_slot(mac) * _ARMED_SIZE
        (owner,) = _ARMED_MAC.unpack_from(self._armed, at + _ARMED_MAC_AT)
        return at if owner == mac_key(mac) else None

    def disarm(self, mac: bytes) -> None:
        at = self._armed_at(mac)
        if at is not None:
            self._armed[at : at + 4] = bytes(4)

    def take_armed(self, mac: bytes) -> bytes | None:
        """This MN's armed PBU, out of the kernel: the address it was sent with, or None
        if it was not sent (and now will not be)."""
        at = self._armed_at(mac)
        if at is None:
            return None
        mem = self._armed
        (state,) = struct.unpack_from("=I", mem, at)
        mem[at : at + 4] = bytes(4)
        if state != ARMED_SENT:
            return None
        return mem[at + _ARMED_HOA_AT : at + _ARMED_HOA_AT + 4]

    def released(self, mac: bytes, xid: bytes) -> bool:
        """True when the kernel already sent this MN the server's ACK with this xid, on
        the PBA that granted it (relay.c, release). Either way a held copy of that ACK
        leaves the kernel's held map: the daemon's copy is the only one from here on."""
        key = ctypes.c_uint64(mac_key(mac))
        value = _Held()
        fd = self._maps["held"]
        if self._bpf.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)):
            return False  # ENOENT: the kernel holds nothing for this MN
        if bytes(value.xid) != xid:
            return False  # another exchange's
        self._bpf.lib.bpf_map_delete_elem(fd, ctypes.byref(key))
        return value.state == HELD_RELEASED

    def stats(self) -> dict[str, int]:
        """The programs' counters, summed over CPUs."""
        lib = self._bpf.lib
        ncpu = _possible_cpus()
        out: dict[str, int] = {}
        for slot, name in enumerate(STATS):
            key = ctypes.c_uint32(slot)
            values = (ctypes.c_uint64 * ncpu)()
            if lib.bpf_map_lookup_elem(self._maps["stats"], ctypes.byref(key), values) != 0:
                raise OSError(ctypes.get_errno(), "kernel relay: cannot read its counters")
            out[name] = sum(values)
        return out

    # --- tc -------------------------------------------------------------------------

    def _program_fd(self, program: str) -> int:
        lib = self._bpf.lib
        found = lib.bpf_object__find_program_by_name(self._obj, program.encode())
        return int(lib.bpf_program__fd(found))

    def attach(self, ifname: str, upstream: bool = False, pbus: bool = False) -> None:
        """On ``ifname``'s ingress (again, when the link was re-created): ``upstream``, a
        link toward the server or an LMA. ``pbus``: a link toward an LMA, whose PBUs are
        read on its egress too (uplink_out)."""
        program = "uplink_in" if upstream else "access_in"
        index = socket.if_nametoindex(ifname)
        filters = [(TC_INGRESS, program, self._program_fd(program))]
        if pbus:
            filters.append((TC_EGRESS, "uplink_out", self._program_fd("uplink_out")))

        def tc() -> None:
            from pyroute2 import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError

            with IPRoute() as ipr:
                try:
                    ipr.tc("add", "clsact", index)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
                for parent, name, fd in filters:
                    ipr.tc(
                        "replace-filter",
                        "bpf",
                        index,
                        1,
                        fd=fd,
                        name=name,
                        parent=parent,
                        prio=PRIO,
                        protocol=ETH_P_ALL,
                        classid=1,
                        direct_action=True,
                    )

        _in_thread(tc)
        self.attached[ifname] = (index, program)
        if pbus:
            self.egress.add(ifname)

    def detach(self, ifname: str) -> None:
        """Our filter only: another user's filters and the clsact qdisc stay."""
        found = self.attached.pop(ifname, None)
        if found is None:
            return
        index = found[0]
        parents = [TC_INGRESS]
        if ifname in self.egress:
            self.egress.discard(ifname)
            parents.append(TC_EGRESS)

        def tc() -> None:
            from pyroute2 import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError

            with IPRoute() as ipr:
                for parent in parents:
                    try:
                        ipr.tc("del-filter", "bpf", index, 1, parent=parent, prio=PRIO,
                               protocol=ETH_P_ALL)  # fmt: skip
                    except NetlinkError as exc:
                        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                            raise

        _in_thread(tc)

    def close(self) -> None:
        for ifname in list(self.attached):
            with contextlib.suppress(OSError):  # the link went away with its filter
                self.detach(ifname)
        self._offers.close()
        self._armed.close()
        self._bpf.lib.bpf_object__close(self._obj)


def remove_stale(ifnames: list[str]) -> list[str]:
    """Take off the filters a daemon that was killed left behind (their programs would
    go on relaying beside a daemon that no longer reads their copies); the links where
    there were some."""

    def tc() -> list[str]:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        removed = []
        with IPRoute() as ipr:
            for ifname in ifnames:
                found = False
                for parent in (TC_INGRESS, TC_EGRESS):
                    try:
                        index = socket.if_nametoindex(ifname)
                        ipr.tc("del-filter", "bpf", index, 1, parent=parent, prio=PRIO,
                               protocol=ETH_P_ALL)  # fmt: skip
                    except (OSError, NetlinkError):
                        continue  # no such link, no clsact, or no filter of ours
                    found = True
                if found:
                    removed.append(ifname)
        return removed

    return _in_thread(tc)


def mac_of(ifname: str) -> bytes:
    """A link's own MAC: the source of what the kernel sends on it to an MN."""
    text = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    return bytes.fromhex(text.replace(":", ""))


def upstream_of(server: object) -> str:
    """The link the route to ``server`` leaves by: its replies come in there."""

    def get() -> str:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            routes = ipr.route("get", dst=str(server))
            oif = routes[0].get("RTA_OIF") if routes else None
        if oif is None:
            raise KernelRelayError(f"no route to the DHCP server {server}")
        return socket.if_indextoname(oif)

    return _in_thread(get)


def _possible_cpus() -> int:
    """CPUs a per-CPU map has a slot for (/sys/devices/system/cpu/possible: "0-1")."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def os_error(code: int) -> str:
    return f"{errno.errorcode.get(code, code)} ({code})"
