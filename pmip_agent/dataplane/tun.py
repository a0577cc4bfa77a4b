"""A TUN device (Linux ``/dev/net/tun``): layer-3 packets in and out of the kernel.

``vnet`` opens it with IFF_VNET_HDR: every packet carries a virtio-net header, so a write
may hand the kernel a 64 KB TCP super-packet (GSO) to forward as one. ``tso`` also
announces checksum offload and TSO (TUNSETOFFLOAD: TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6),
so the kernel hands over such super-packets on read, checksums not computed. Without
``tso`` the kernel segments and checksums (in C) before a read, and every read is one
complete packet. UDP segmentation offload (TUN_F_USO4/6) is not announced: the kernel
cuts UDP GSO sends itself, and the forwarder sees datagrams.

:class:`UdpTunnelTap` is a TAP device that only takes writes: frames carrying a whole
IPv4-UDP encapsulated TCP burst with a UDP tunnel GSO header (TUN_F_UDP_TUNNEL_GSO,
Linux 6.17), which the kernel forwards as one packet and cuts into datagrams where it
must, in C. The TAP kind is required: the kernel checks the tunnel header's offsets
against an Ethernet header.
"""

from __future__ import annotations

import fcntl
import os
import struct

from . import packet as pk

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_UDP_TUNNEL_GSO = 0x080
TUN_F_UDP_TUNNEL_GSO_CSUM = 0x100
# The kernel's TUN keeps at most this much per packet (64 KB IP packet + virtio header).
MAX_READ = 65535 + pk.VNET_HDR_LEN


def _open_device(name: str, flags: int, vnet_len: int, offload: int) -> tuple[int, str]:
    """Create (or attach to) the TUN/TAP device ``name``: its fd and its actual name.
    ``vnet_len`` > 0: with a virtio-net header of that size and ``offload``."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), flags | IFF_NO_PI)
        actual = fcntl.ioctl(fd, TUNSETIFF, ifr)[:16].rstrip(b"\0").decode()
        if vnet_len:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", vnet_len))
            fcntl.ioctl(fd, TUNSETOFFLOAD, offload)
    except OSError:
        os.close(fd)
        raise
    return fd, actual


class _Device:
    fd: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Tun(_Device):
    """One TUN device; its ``fd`` is read by one thread and written by another."""

    def __init__(self, name: str, vnet: bool, tso: bool) -> None:
        self.vnet = vnet or tso
        offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 if tso else 0
        flags = IFF_TUN | (IFF_VNET_HDR if self.vnet else 0)
        vnet_len = pk.VNET_HDR_LEN if self.vnet else 0
        self.fd, self.name = _open_device(name, flags, vnet_len, offload)


class UdpTunnelTap(_Device):
    """A TAP device for UDP tunnel GSO writes (see the module's docstring). Raises
    OSError where the kernel has no such offload (before 6.17)."""

    def __init__(self, name: str) -> None:
        offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        offload |= TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM
        flags = IFF_TAP | IFF_VNET_HDR
        self.fd, self.name = _open_device(name, flags, pk.VNET_TNL_HDR_LEN, offload)
        self.mac = b""  # the frames' destination; the owner reads it once the device is up
