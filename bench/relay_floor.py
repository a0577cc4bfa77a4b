"""What this machine allows flow 3 (seed Figure 3): a relay that does nothing else, beside a
direct Kea lease, in the same run. The reference for bench/dhcp_attach.py's flow3-relay.

    sudo .venv/bin/python bench/relay_floor.py --quick    # 20 attaches each, ~10 s
    sudo .venv/bin/python bench/relay_floor.py            # 100 attaches each

The lab of bench/dhcp_attach.py (the same namespaces, links, addresses and Kea config),
with no pmip-agent at all. In MAG1's namespace runs the least a flow-3 MAG must do, in
plain Python with one blocking ``select`` loop (``relay`` below):

* an MN's message: giaddr set, hops incremented, a fixed option 82 appended; to Kea;
* Kea's reply: option 82 cut out; to the MN. With an OFFER it also sends a 4-octet
  datagram (the xid) to an echo in the LMA's namespace, over the same IPv6 transport link
  a PBU takes; Kea's ACK leaves only once that echo is back (the MAG holds the ACK for
  the PBA).

No parsing beyond the option walk, no MN lookup, no registration, no state on disk, no
logging, no event loop: what remains is the machine's part (wakes, the network stack, the
two cores shared by the MN, the relay, Kea and the "LMA"). ``--no-hold`` leaves out the
echo and the hold. The MN client and the timing are those of bench/dhcp_attach.py.

``--lma`` puts the real LMA (``pmip-agent``, configured as in bench/dhcp_attach.py) in
place of the echo: with each OFFER the relay sends a real PBU from MAG1's proxy CoA,
reporting the offered address for the MN its MAC names (built from a
``pmip_agent.core.templates.PbuTemplate``, as the MAG builds its PBUs), and Kea's ACK
leaves only once a PBA with an accepting status has come back for that PBU's sequence
number. What is then left between this and bench/dhcp_attach.py's flow 3 is the MAG
daemon's own work per message.

``--bpf`` puts the relay in the kernel (with ``--no-hold`` or ``--lma``): tc programs on
MAG1's acc1 and k0 (``relay_floor_bpf.c``, compiled with clang at start and loaded through
libbpf) do the relay's edits and send each message on, so no process wakes up for it.
With ``--lma``, each OFFER also goes up, unchanged, to a process that sends the PBU; once
the PBA is in, it puts the address in a map that lets Kea's ACK through in the kernel,
and an ACK that came first waits in that process for the PBA. What is then left is what
the MN, Kea and the LMA take. It needs clang and libbpf-dev.

``--breakdown B`` (20) adds B attaches per flow with packet capture on MAG1's acc1 and
k0 and on Kea's d0, split into dhcp_attach's segments (but the PBU and PBA ones: the
echo's datagrams are plain UDP), so the two benches compare step by step.

Writes build/bench/relay_floor.json (``--quick``: relay_floor.quick.json). Needs root.
"""

from __future__ import annotations

import ctypes
import gc
import select
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for extra in (ROOT, ROOT / "tests", HERE):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

NAME = "relay_floor"
BPF_SOURCE = HERE / "relay_floor_bpf.c"
BPF_INCLUDE = ROOT / "pmip_agent" / "dhcp" / "bpf"  # bootp.h, shared with the kernel relay
BPF_HEADERS = Path("/usr/include/bpf/bpf_helpers.h")
TC_INGRESS = "ffff:fff2"
ECHO_PORT = 5555
IPPROTO_MH = 135
IPV6_CHECKSUM = 7  # <netinet/in.h>; Python's socket module does not name it
TO_MN = ("255.255.255.255", 68)
T = TypeVar("T")

# dhcp_attach's flow-3 and direct segments, but the PBU and PBA: the echo's datagrams are
# plain UDP. (iface, outgoing, kind) pairs, as there.
_RELAYED = [
    ("relay: DISCOVER in -> relayed", ("acc1", False, "DISCOVER"), ("k0", True, "DISCOVER")),
    ("Kea: DISCOVER -> OFFER", ("k0", True, "DISCOVER"), ("k0", False, "OFFER")),
    ("relay: OFFER in -> OFFER out", ("k0", False, "OFFER"), ("acc1", True, "OFFER")),
    ("MN: OFFER out -> REQUEST in", ("acc1", True, "OFFER"), ("acc1", False, "REQUEST")),
    ("relay: REQUEST in -> relayed", ("acc1", False, "REQUEST"), ("k0", True, "REQUEST")),
    ("Kea: REQUEST -> ACK", ("k0", True, "REQUEST"), ("k0", False, "ACK")),
    ("relay: ACK in -> ACK out (held: echo, PBA)", ("k0", False, "ACK"), ("acc1", True, "ACK")),
    ("relay view: DISCOVER in -> ACK out", ("acc1", False, "DISCOVER"), ("acc1", True, "ACK")),
]


# --- the two stand-ins, run in the lab's namespaces as `relay_floor.py relay|echo ...` ---


def _options_walk(data: bytes) -> tuple[int, int]:
    """Offsets of END and of option 82 (-1 if none)."""
    i, at82 = 240, -1
    while data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if data[i] == 82:
            at82 = i
        i += 2 + data[i + 1]
    return i, at82


def _relay_sockets(relay_ip: str) -> tuple[socket.socket, socket.socket]:
    """Port 67 on acc1 (to and from the MN) and on the relay's address (Kea's side)."""
    access = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    access.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    access.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    access.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_BINDTODEVICE", 25), b"acc1")
    access.bind(("0.0.0.0", 67))
    servers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    servers.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    servers.bind((relay_ip, 67))
    return access, servers


def _mh_socket(lmaa: str, coa: str) -> socket.socket:
    """The MAG's raw Mobility Header socket, connected to the LMA."""
    lma = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
    lma.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 4)  # the kernel sums the MH
    lma.bind((coa, 0))
    lma.connect((lmaa, 0))
    return lma


def _answered_pbu(pba: bytes, sent: dict[int, T]) -> T | None:
    """What ``sent`` holds for the PBU that ``pba`` accepts (MH type 6, status < 128,
    sequence number at 8), taken out of it; None for anything else."""
    if len(pba) < 10 or pba[2] != 6 or pba[6] >= 128:
        return None
    return sent.pop(int.from_bytes(pba[8:10], "big"), None)


def _without_option_82(data: bytes) -> bytes:
    _, at = _options_walk(data)
    return data[:at] + data[at + 2 + data[at + 1] :] if at >= 0 else data


class _AckHold:
    """Kea's ACKs held for their PBAs, by xid: whichever of the two comes second sends
    the ACK on to the MN."""

    def __init__(self, access: socket.socket) -> None:
        self.access = access
        self.held: dict[bytes, bytes] = {}  # xid -> an ACK that came before its PBA
        self.answered: set[bytes] = set()  # xids whose PBA came first

    def reply(self, xid: bytes, data: bytes, kind: int, holding: bool = True) -> None:
        """A server's reply (not an OFFER), option 82 cut: an ACK whose PBA has not come
        waits for it; the rest goes on."""
        if kind == 5 and holding and xid not in self.answered:
            self.held[xid] = data
        else:
            self.answered.discard(xid)
            self.access.sendto(data, TO_MN)

    def pba(self, xid: bytes) -> None:
        ack = self.held.pop(xid, None)
        if ack is None:
            self.answered.add(xid)
        else:
            self.access.sendto(ack, TO_MN)


def relay(relay_ip: str, kea_ip: str, lmaa: str, coa: str, info_hex: str, hold: str) -> None:
    """``hold``: "hold" (the echo), "no-hold", or "lma" (real PBUs and PBAs)."""
    info = bytes.fromhex(info_hex)
    tail = bytes((82, len(info))) + info + b"\xff"
    giaddr = socket.inet_aton(relay_ip)
    holding = hold != "no-hold"
    real = hold == "lma"
    access, servers = _relay_sockets(relay_ip)
    if real:
        lma = _mh_socket(lmaa, coa)
        pbu_for = _pbu_builder()
    else:
        lma = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        lma.bind((coa, 0))
        lma.connect((lmaa, ECHO_PORT))
    hold_acks = _AckHold(access)
    macs: dict[bytes, bytes] = {}  # xid -> the MN's MAC (--lma: it names the MN)
    xids: dict[int, bytes] = {}  # PBU sequence number -> xid (--lma)
    sequence = 0
    while True:
        ready, _, _ = select.select([access, servers, lma], [], [])
        for sock in ready:
            if sock is access:
                data = access.recv(4096)
                end, _ = _options_walk(data)
                out = bytearray(data[:end])
                out[3] += 1
                out[24:28] = giaddr
                servers.sendto(bytes(out) + tail, (kea_ip, 67))
                if real:
                    macs[data[4:8]] = data[28:34]
            elif sock is servers:
                data = _without_option_82(servers.recv(4096))
                kind = data[242] if data[240] == 53 else 0
                xid = data[4:8]
                if kind == 2:  # OFFER: on to the MN, and the "PBU"
                    access.sendto(data, TO_MN)
                    if real:
                        sequence = (sequence + 1) & 0xFFFF
                        xids[sequence] = xid
                        lma.send(pbu_for(sequence, macs.pop(xid, bytes(6)), data[16:20]))
                    elif holding:
                        lma.send(xid)
                else:
                    hold_acks.reply(xid, data, kind, holding)  # an ACK waits for the "PBA"
            else:
                if real:
                    found = _answered_pbu(lma.recv(4096), xids)
                    if found is None:
                        continue
                    xid = found
                else:
                    xid = lma.recv(64)
                hold_acks.pba(xid)


class _Libbpf:
    """The kernel relay's libbpf calls (pmip_agent/dhcp/kernel_relay.py), for an object
    compiled here with the lab's values."""

    def __init__(self) -> None:
        from pmip_agent.dhcp.kernel_relay import Libbpf

        self.lib = Libbpf().lib
        self.obj: int | None = None

    def load(self, path: Path) -> None:
        obj = self.lib.bpf_object__open_file(str(path).encode(), None)
        if not obj or self.lib.bpf_object__load(obj) != 0:
            raise SystemExit(f"libbpf could not load {path} (errno {ctypes.get_errno()})")
        self.obj = obj

    def program_fd(self, name: str) -> int:
        program = self.lib.bpf_object__find_program_by_name(self.obj, name.encode())
        return int(self.lib.bpf_program__fd(program))

    def map_fd(self, name: str) -> int:
        found = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        return int(self.lib.bpf_map__fd(found))

    def update(self, map_fd: int, key: int, value: int) -> None:
        k, v = ctypes.c_uint64(key), ctypes.c_uint32(value)
        if self.lib.bpf_map_update_elem(map_fd, ctypes.byref(k), ctypes.byref(v), 0) != 0:
            raise OSError(ctypes.get_errno(), "bpf_map_update_elem")


def _octets(data: bytes) -> str:
    return ",".join(str(b) for b in data)


def _mac_of(ifname: str) -> bytes:
    return bytes.fromhex(
        Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", "")
    )


def _as_u32(address: str) -> str:
    """An IPv4 address as the u32 it is in memory (network order, read little-endian)."""
    return hex(int.from_bytes(socket.inet_aton(address), "little"))


def kernel_relay(
    relay_ip: str,
    kea_ip: str,
    kea_mac: str,
    lmaa: str,
    coa: str,
    info_hex: str,
    hold: str,
    ready: str,
) -> None:
    """``hold``: "no-hold" or "lma". Compiles and attaches relay_floor_bpf.c, touches
    ``ready``, then (``lma``) sends the PBUs and lets the ACKs through once granted."""
    from pyroute2 import IPRoute

    info = bytes.fromhex(info_hex)
    k0, acc = socket.if_nametoindex("k0"), socket.if_nametoindex("acc1")
    obj = Path(ready).with_suffix(".o")
    subprocess.run(
        [
            "clang", "-O2", "-g", "-target", "bpf",
            f"-I/usr/include/{sysconfig.get_config_var('MULTIARCH')}", f"-I{BPF_INCLUDE}",
            f"-DRELAY_IP={_as_u32(relay_ip)}", f"-DKEA_IP={_as_u32(kea_ip)}",
            f"-DK0_IF={k0}", f"-DACC_IF={acc}", f"-DHOLD={int(hold == 'lma')}",
            f"-DINFO_LEN={len(info)}", f"-DINFO={_octets(info)}",
            f"-DACC_MAC={_octets(_mac_of('acc1'))}", f"-DK0_MAC={_octets(_mac_of('k0'))}",
            f"-DKEA_MAC={_octets(bytes.fromhex(kea_mac.replace(':', '')))}",
            "-c", str(BPF_SOURCE), "-o", str(obj),
        ],
        check=True,
    )  # fmt: skip
    bpf = _Libbpf()
    bpf.load(obj)
    with IPRoute() as ipr:
        for index, program in ((acc, "acc_in"), (k0, "k0_in")):
            ipr.tc("add", "clsact", index)
            fd = bpf.program_fd(program)
            ipr.tc(
                "add-filter", "bpf", index, ":1", fd=fd, name=program, parent=TC_INGRESS,
                classid=1, direct_action=True,
            )  # fmt: skip
    access, servers = _relay_sockets(relay_ip)
    Path(ready).touch()
    if hold != "lma":
        while True:
            time.sleep(3600)
    grants = bpf.map_fd("grants")
    lma = _mh_socket(lmaa, coa)
    pbu_for = _pbu_builder()
    # The ACKs the kernel passes on never come up: their xids stay in hold_acks.answered,
    # a few hundred per run.
    hold_acks = _AckHold(access)
    xids: dict[int, tuple[bytes, bytes, bytes]] = {}  # PBU sequence number -> xid, MAC, address
    sequence = 0
    while True:
        ready_socks, _, _ = select.select([servers, lma], [], [])
        for sock in ready_socks:
            if sock is servers:  # an OFFER's copy (the kernel passed it on), or an ACK
                data = servers.recv(4096)
                kind = data[242] if data[240] == 53 else 0
                xid = data[4:8]
                if kind == 2:
                    sequence = (sequence + 1) & 0xFFFF
                    xids[sequence] = (xid, data[28:34], data[16:20])
                    lma.send(pbu_for(sequence, data[28:34], data[16:20]))
                    continue
                hold_acks.reply(xid, _without_option_82(data), kind)
            else:
                found = _answered_pbu(lma.recv(4096), xids)
                if found is None:
                    continue
                xid, mac, address = found
                bpf.update(grants, int.from_bytes(mac, "little"), int.from_bytes(address, "little"))
                hold_acks.pba(xid)


def _pbu_builder() -> Callable[[int, bytes, bytes], bytes]:
    """PBUs for bench/dhcp_attach.py's flow-3 MNs, from one template: (sequence number,
    MAC, offered address) -> the Mobility Header, checksum left to the kernel."""
    from dhcp_attach import mn_name

    from pmip_agent.core.templates import PbuTemplate
    from pmip_agent.wire.constants import BuFlags, HandoffIndicator
    from pmip_agent.wire.messages import BindingUpdate, encode
    from pmip_agent.wire.options import (
        AccessTechTypeOption,
        HandoffIndicatorOption,
        Ipv4HoaRequest,
        MnIdentifier,
        MnLinkLayerId,
        Timestamp,
        timestamp_value,
    )

    prefix_len = 24  # the bench's Kea subnet for flow 3
    sample = encode(
        BindingUpdate(
            1,
            3600 // 4,
            int(BuFlags.A | BuFlags.P),
            (
                MnIdentifier(mn_name("flow3-relay", 0).encode()),
                HandoffIndicatorOption(HandoffIndicator.NEW_INTERFACE),
                AccessTechTypeOption(3),
                MnLinkLayerId(bytes(6)),
                Timestamp.from_seconds(time.time()),
                Ipv4HoaRequest(IPv4Address(0), prefix_len),
            ),
        )
    )
    template = PbuTemplate.derive(sample)
    if template is None:
        raise SystemExit("no PBU template for the bench's PBU")

    def build(sequence: int, mac: bytes, address: bytes) -> bytes:
        mn_id = mn_name("flow3-relay", (mac[4] << 8) | mac[5]).encode()
        stamp = timestamp_value(time.time()).to_bytes(8, "big")
        pbu = template.build(sequence.to_bytes(2, "big"), mn_id, None, mac, stamp, address)
        if pbu is None:
            raise SystemExit(f"the PBU template does not fit {mn_id!r}")
        return pbu

    return build


def echo(address: str) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind((address, ECHO_PORT))
    while True:
        data, peer = sock.recvfrom(64)
        sock.sendto(data, peer)


# --- the run ------------------------------------------------------------------------------


def run(args: Any) -> dict[str, Any]:
    import dhcp_attach as da
    import dhcp_lab
    from frame_capture import Sniffer
    from netns import Lab, require_root_netns, wait_for

    by_flow_segments = {"floor-relay": _RELAYED, "direct-kea": da.SEGMENTS["direct-kea"]}

    from pmip_agent.dhcp import codec

    require_root_netns()
    n = args.n if args.n is not None else (20 if args.quick else 100)
    if args.warmup + n + args.breakdown > 240:
        raise SystemExit("at most 240 attaches per flow in all: the pools are /24s")
    tmp = Path(tempfile.mkdtemp(prefix="pmip-relay-floor-"))
    if args.lma:  # the LMA's profiles for the MNs the relay will name in its PBUs
        da.add_profiles(args.warmup + n + args.breakdown)
    lab = Lab("rf")
    clients: list[Any] = []
    try:
        env = da.BenchLab(lab, tmp)
        env.build(kea_pools={str(da.KEA_RELAY_NET): da.KEA_RELAY_POOL})
        ns_mn, ns_direct = env.add_mn_links()
        env.start_kea()
        info = codec.relay_agent_info(
            b"mag1:acc1", b"floor@bench.example.net", da.KEA_RELAY_NET.network_address
        )
        me = [sys.executable, str(Path(__file__).resolve())]
        hold = "lma" if args.lma else "no-hold" if args.no_hold else "hold"
        if args.lma:
            env.lma.start()
        else:
            lab.spawn(env.ns_lma, [*me, "echo", dhcp_lab.LMAA], tmp / "echo.log")
        addresses = [dhcp_lab.RELAY["mag1"], dhcp_lab.KEA["mag1"]]
        then = [dhcp_lab.LMAA, dhcp_lab.MAG_COA["mag1"], info.hex(), hold]
        if args.bpf:
            kea_mac = lab.run(env.ns_kea, "cat /sys/class/net/k0/address").stdout.strip()
            ready = tmp / "relay.ready"
            argv = [*me, "kernel-relay", *addresses, kea_mac, *then, str(ready)]
            proc = lab.spawn(env.ns_mag["mag1"], argv, tmp / "relay.log")
            wait_for(lambda: ready.exists() or proc.poll() is not None, 30, what="the relay")
            if not ready.exists():
                log = (tmp / "relay.log").read_text(errors="replace")
                raise SystemExit(f"the kernel relay failed:\n{log}")
        else:
            lab.spawn(env.ns_mag["mag1"], [*me, "relay", *addresses, *then], tmp / "relay.log")
        time.sleep(1.0)  # the stand-ins bind their sockets
        by_flow = {"floor-relay": da.MnClient(ns_mn), "direct-kea": da.MnClient(ns_direct)}
        clients += by_flow.values()
        samples: dict[str, list[Any]] = {flow: [] for flow in by_flow}
        split: dict[str, list[dict[str, float]]] = {flow: [] for flow in by_flow}
        order = list(by_flow)

        def rounds(first: int, count: int, sniffers: list[Any]) -> None:
            """Round-robin attaches, the order reversed every round; rounds before
            ``args.warmup`` are not counted, and with sniffers each attach is split."""
            for rnd in range(first, first + count):
                for flow in order:
                    if flow == "floor-relay":  # as dhcp_attach's flow-3 MN number rnd
                        mac = da.mac_of("flow3-relay", rnd)
                    else:
                        mac = bytes([0x02, 0, 0, 0x21, rnd >> 8, rnd & 0xFF])
                    wanted = "flow3-relay" if flow == "floor-relay" else "direct-kea"
                    for sniffer in sniffers:
                        sniffer.drain()
                    got = by_flow[flow].attach(wanted, rnd, mac, args.timeout)
                    if got.ok and IPv4Address(got.address) not in da.EXPECTED_NET[wanted]:
                        got.ok, got.error = False, f"address {got.address} outside the pool"
                    if sniffers:
                        seen = sorted(p for s in sniffers for p in s.drain())
                        seg = da.segments(flow, got.xid, seen, by_flow_segments) if got.ok else None
                        if seg is not None:
                            split[flow].append(seg)
                    elif rnd >= args.warmup:
                        samples[flow].append(got)
                    time.sleep(args.pause)
                order.reverse()

        gc.collect()
        gc.disable()
        rounds(0, args.warmup + n, [])
        if args.breakdown:
            sniffers = [
                Sniffer(env.ns_mag["mag1"], ("acc1", "k0")),
                Sniffer(env.ns_kea, ("d0",)),
            ]
            clients += sniffers
            rounds(args.warmup + n, args.breakdown, sniffers)
        gc.enable()
        for log in ("relay.log", "echo.log"):
            path = tmp / log
            text = path.read_text(errors="replace").strip() if path.exists() else ""
            if text:
                raise SystemExit(f"the {log[:-4]} stand-in failed:\n{text}")
        return {
            "n": n,
            "hold_for_echo": not args.no_hold and not args.lma,
            "real_lma": args.lma,
            "relay_in_kernel": args.bpf,
            "pause_s": args.pause,
            "results": {flow: da.summary(got) for flow, got in samples.items()},
            "breakdown_attaches": args.breakdown,
            "breakdown_ms": {
                flow: {
                    label: {
                        "p50": da.percentile([x[label] for x in split[flow]], 50),
                        "p90": da.percentile([x[label] for x in split[flow]], 90),
                    }
                    for label, _a, _b in by_flow_segments[flow]
                }
                | {"attaches": len(split[flow])}
                for flow in split
            },
        }
    finally:
        gc.enable()
        for c in clients:
            c.close()
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    from common import arg_parser, finish_machine_info, machine_info, print_table, write_json

    import pmip_agent.dhcp.codec  # noqa: F401  (loaded before machine_info() fingerprints it)

    parser = arg_parser(__doc__)
    parser.add_argument("--n", type=int, default=None, help="measured attaches per flow")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted rounds first (3)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between attaches")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per DHCP step")
    parser.add_argument(
        "--no-hold", action="store_true", help="no echo: the ACK is not held for a 'PBA'"
    )
    parser.add_argument(
        "--lma",
        action="store_true",
        help="the real LMA instead of the echo: real PBUs, and the ACK held for the PBA",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=20,
        help="more attaches per flow with packet capture, split into segments (20; 0: none)",
    )
    parser.add_argument(
        "--bpf",
        action="store_true",
        help="the relay in the kernel: tc programs on acc1 and k0 (with --no-hold or --lma; "
        "needs clang and libbpf-dev)",
    )
    args = parser.parse_args()
    if args.lma and args.no_hold:
        parser.error("--lma holds the ACK for the PBA: it does not go with --no-hold")
    if args.bpf and not (args.lma or args.no_hold):
        parser.error("--bpf goes with --no-hold or --lma (the echo's hold is not in it)")
    if args.bpf and (shutil.which("clang") is None or not BPF_HEADERS.exists()):
        parser.error("--bpf needs clang and libbpf-dev: apt-get install clang libbpf-dev")
    info = machine_info()
    data = run(args)
    data["machine"] = finish_machine_info(info)
    res = data["results"]
    base = res["direct-kea"]["ack_ms"]
    rows = []
    for flow, r in res.items():
        p50, p99 = r["ack_ms"]["p50"], r["ack_ms"]["p99"]
        rows.append(
            (
                flow,
                f"{r['ok']}/{r['attaches']}",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{p50 / base['p50']:.2f}x",
                f"{p99 / base['p99']:.2f}x",
            )
        )
    print_table(rows, ("flow", "ok", "p50 ms", "p99 ms", "p50/direct", "p99/direct"))
    if data["breakdown_attaches"]:
        print(
            f"\nWhere the time goes ({data['breakdown_attaches']} more attaches per flow, "
            "kernel timestamps of the frames on MAG1's acc1/k0 and Kea's d0; the segments "
            "of bench/dhcp_attach.py):"
        )
        seg_rows = []
        for flow, b in data["breakdown_ms"].items():
            for label, v in b.items():
                if label != "attaches":
                    seg_rows.append((flow, label, f"{v['p50']:.2f}", f"{v['p90']:.2f}"))
        print_table(seg_rows, ("flow", "segment", "p50 ms", "p90 ms"))
    write_json(NAME, data, quick=args.quick, tag=args.tag)
    return 1 if any(r["ok"] < r["attaches"] for r in res.values()) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        relay(*sys.argv[2:8])
    elif len(sys.argv) > 1 and sys.argv[1] == "kernel-relay":
        kernel_relay(*sys.argv[2:10])
    elif len(sys.argv) > 1 and sys.argv[1] == "echo":
        echo(sys.argv[2])
    else:
        sys.exit(main())
