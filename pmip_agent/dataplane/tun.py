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


class Tun:
    """One TUN device; its ``fd`` is read by one thread and written by another."""

    def __init__(self, name: str, vnet: bool, tso: bool) -> None:
        self.vnet = vnet or tso
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if self.vnet else 0)
            ifr = struct.pack("16sH22x", name.encode(), flags)
            self.name = fcntl.ioctl(self.fd, TUNSETIFF, ifr)[:16].rstrip(b"\0").decode()
            if self.vnet:
                fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", pk.VNET_HDR_LEN))
                offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 if tso else 0
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, offload)
        except OSError:
            os.close(self.fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class UdpTunnelTap:
    """A TAP device for UDP tunnel GSO writes (see the module's docstring). Raises
    OSError where the kernel has no such offload (before 6.17)."""

    def __init__(self, name: str) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            self.name = fcntl.ioctl(self.fd, TUNSETIFF, ifr)[:16].rstrip(b"\0").decode()
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", pk.VNET_TNL_HDR_LEN))
            offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
            offload |= TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, offload)
        except OSError:
            os.close(self.fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
