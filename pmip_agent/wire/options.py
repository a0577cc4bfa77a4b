"""Mobility options: one frozen dataclass per option, and one table from type to class.

Each class knows its type, its alignment rule (RFC 6275 §6.2: the type octet sits at an
offset ``x*n + y`` from the start of the Mobility Header), whether it may appear more than
once, how to build its body and how to parse one strictly. ``Len`` never counts the Type
and Len octets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar

from .constants import OptionType
from .errors import WireError

_U16 = struct.Struct("!H")
_HOA = struct.Struct("!H4s")  # 16-bit word with bit fields, then an IPv4 address
_ACK = struct.Struct("!BB4s")  # status, prefix-len << 2, IPv4 address
_NATD = struct.Struct("!HI")


def _need_len(body: bytes, expected: int, name: str) -> None:
    if len(body) != expected:
        raise WireError("bad-option-length", f"{name}: length {len(body)}, expected {expected}")


def _ipv4_plen(plen: int, name: str) -> int:
    if plen > 32:
        raise WireError("bad-prefix-length", f"{name}: IPv4 prefix length {plen} > 32")
    return plen


class Option:
    """Base of every mobility option."""

    __slots__ = ()
    TYPE: ClassVar[int]
    ALIGN: ClassVar[tuple[int, int]] = (1, 0)  # (x, y): no requirement
    REPEATABLE: ClassVar[bool] = False

    def body(self) -> bytes:
        raise NotImplementedError

    def tlv(self) -> bytes:
        """Type, Len and body: the option as it goes on the wire (without padding)."""
        body = self.body()
        if len(body) > 255:
            raise ValueError(f"option {type(self).__name__} body longer than 255 octets")
        return bytes((self.TYPE, len(body))) + body

    @classmethod
    def parse(cls, body: bytes) -> Option:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class MnIdentifier(Option):
    """Mobile Node Identifier, RFC 4283 §3. Subtype 1 is an NAI."""

    identifier: bytes
    subtype: int = 1
    TYPE: ClassVar[int] = OptionType.MN_IDENTIFIER

    def body(self) -> bytes:
        if not self.identifier or len(self.identifier) > 254:
            raise ValueError("MN identifier must be 1..254 octets")
        return bytes((self.subtype,)) + self.identifier

    @classmethod
    def parse(cls, body: bytes) -> MnIdentifier:
        if len(body) < 2:
            raise WireError("bad-option-length", "MN identifier shorter than 2 octets")
        return cls(body[1:], body[0])


@dataclass(frozen=True, slots=True)
class HomeNetworkPrefix(Option):
    """RFC 5213 §8.3. In a PBU, ``::/0`` asks the LMA to assign a prefix."""

    prefix: IPv6Address
    prefix_len: int
    TYPE: ClassVar[int] = OptionType.HOME_NETWORK_PREFIX
    ALIGN: ClassVar[tuple[int, int]] = (8, 4)
    REPEATABLE: ClassVar[bool] = True  # one option per prefix (RFC 5213 §5.3.1)

    def body(self) -> bytes:
        if not 0 <= self.prefix_len <= 128:
            raise ValueError("IPv6 prefix length out of range")
        return bytes((0, self.prefix_len)) + self.prefix.packed

    @classmethod
    def parse(cls, body: bytes) -> HomeNetworkPrefix:
        _need_len(body, 18, "home network prefix")
        if body[1] > 128:
            raise WireError("bad-prefix-length", f"home network prefix length {body[1]}")
        return cls(IPv6Address(body[2:]), body[1])


@dataclass(frozen=True, slots=True)
class HandoffIndicatorOption(Option):
    """RFC 5213 §8.4."""

    value: int
    TYPE: ClassVar[int] = OptionType.HANDOFF_INDICATOR

    def body(self) -> bytes:
        return bytes((0, self.value))

    def tlv(self) -> bytes:
        return bytes((OptionType.HANDOFF_INDICATOR, 2, 0, self.value))

    @classmethod
    def parse(cls, body: bytes) -> HandoffIndicatorOption:
        _need_len(body, 2, "handoff indicator")
        return cls(body[1])


@dataclass(frozen=True, slots=True)
class AccessTechTypeOption(Option):
    """RFC 5213 §8.5."""

    value: int
    TYPE: ClassVar[int] = OptionType.ACCESS_TECH_TYPE

    def body(self) -> bytes:
        return bytes((0, self.value))

    def tlv(self) -> bytes:
        return bytes((OptionType.ACCESS_TECH_TYPE, 2, 0, self.value))

    @classmethod
    def parse(cls, body: bytes) -> AccessTechTypeOption:
        _need_len(body, 2, "access technology type")
        return cls(body[1])


@dataclass(frozen=True, slots=True)
class MnLinkLayerId(Option):
    """RFC 5213 §8.6: 16 reserved bits, then the link-layer identifier."""

    identifier: bytes
    TYPE: ClassVar[int] = OptionType.MN_LINK_LAYER_ID
    # RFC 5213 §8.6 sets no fixed xn+y rule ("aligned appropriately"), so none is enforced.

    def body(self) -> bytes:
        if not self.identifier or len(self.identifier) > 253:
            raise ValueError("link-layer identifier must be 1..253 octets")
        return b"\0\0" + self.identifier

    @classmethod
    def parse(cls, body: bytes) -> MnLinkLayerId:
        if len(body) < 3:
            raise WireError("bad-option-length", "link-layer identifier shorter than 3 octets")
        return cls(body[2:])


@dataclass(frozen=True, slots=True)
class LinkLocalAddress(Option):
    """RFC 5213 §8.7."""

    address: IPv6Address
    TYPE: ClassVar[int] = OptionType.LINK_LOCAL_ADDRESS
    ALIGN: ClassVar[tuple[int, int]] = (8, 6)

    def body(self) -> bytes:
        return self.address.packed

    @classmethod
    def parse(cls, body: bytes) -> LinkLocalAddress:
        _need_len(body, 16, "link-local address")
        return cls(IPv6Address(body))


def timestamp_value(seconds: float) -> int:
    """The Timestamp option's 64-bit value for a POSIX time (RFC 5213 §8.8)."""
    return int(seconds * 65536) & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class Timestamp(Option):
    """RFC 5213 §8.8: 48 bits of seconds since 1970-01-01 UTC, 16 bits of 1/65536 s."""

    value: int
    TYPE: ClassVar[int] = OptionType.TIMESTAMP
    ALIGN: ClassVar[tuple[int, int]] = (8, 2)

    @classmethod
    def from_seconds(cls, seconds: float) -> Timestamp:
        return cls(timestamp_value(seconds))

    @property
    def seconds(self) -> float:
        return self.value / 65536

    def body(self) -> bytes:
        return self.value.to_bytes(8, "big")

    def tlv(self) -> bytes:
        return b"\x1b\x08" + self.value.to_bytes(8, "big")

    @classmethod
    def parse(cls, body: bytes) -> Timestamp:
        _need_len(body, 8, "timestamp")
        return cls(int.from_bytes(body, "big"))


@dataclass(frozen=True, slots=True)
class Ipv4HomeAddress(Option):
    """RFC 5555 §3.1.1, used by the seed (§3.3). 0.0.0.0 asks for dynamic assignment.
    Word layout: Prefix-len (6 bits), P flag (mask 0x0200), 9 reserved bits."""

    address: IPv4Address
    prefix_len: int = 0
    p_flag: bool = False
    TYPE: ClassVar[int] = OptionType.IPV4_HOME_ADDRESS
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)

    def body(self) -> bytes:
        _ipv4_plen(self.prefix_len, "IPv4 home address")
        return _HOA.pack(
            self.prefix_len << 10 | (0x0200 if self.p_flag else 0), self.address.packed
        )

    @classmethod
    def parse(cls, body: bytes) -> Ipv4HomeAddress:
        _need_len(body, 6, "IPv4 home address")
        word, addr = _HOA.unpack(body)
        return cls(
            IPv4Address(addr), _ipv4_plen(word >> 10, "IPv4 home address"), bool(word & 0x0200)
        )


@dataclass(frozen=True, slots=True)
class Ipv4AddressAck(Option):
    """RFC 5555 §3.2.1, used by the seed (§3.3): status, Pref-len (6 bits), 2 reserved bits."""

    status: int
    prefix_len: int
    address: IPv4Address
    TYPE: ClassVar[int] = OptionType.IPV4_ADDRESS_ACK
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)

    def body(self) -> bytes:
        _ipv4_plen(self.prefix_len, "IPv4 address ack")
        return _ACK.pack(self.status, self.prefix_len << 2, self.address.packed)

    @classmethod
    def parse(cls, body: bytes) -> Ipv4AddressAck:
        _need_len(body, 6, "IPv4 address ack")
        status, plen, addr = _ACK.unpack(body)
        return cls(status, _ipv4_plen(plen >> 2, "IPv4 address ack"), IPv4Address(addr))


@dataclass(frozen=True, slots=True)
class NatDetection(Option):
    """RFC 5555 §3.2.2: F flag (forced UDP encapsulation), 15 reserved bits, refresh time."""

    refresh_time: int
    forced: bool = False
    TYPE: ClassVar[int] = OptionType.NAT_DETECTION
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)

    def body(self) -> bytes:
        return _NATD.pack(0x8000 if self.forced else 0, self.refresh_time)

    @classmethod
    def parse(cls, body: bytes) -> NatDetection:
        _need_len(body, 6, "NAT detection")
        flags, refresh = _NATD.unpack(body)
        return cls(refresh, bool(flags & 0x8000))


@dataclass(frozen=True, slots=True)
class _ReservedThenIpv4(Option):
    """Shared shape: 16 reserved bits, then an IPv4 address."""

    address: IPv4Address
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)

    def body(self) -> bytes:
        return b"\0\0" + self.address.packed

    @classmethod
    def parse(cls, body: bytes) -> _ReservedThenIpv4:
        _need_len(body, 6, cls.__name__)
        return cls(IPv4Address(body[2:]))


@dataclass(frozen=True, slots=True)
class Ipv4CareOfAddress(_ReservedThenIpv4):
    """RFC 5555 §3.1.2: the MAG's own IPv4 address, for NAT detection (seed §4.3)."""

    TYPE: ClassVar[int] = OptionType.IPV4_CARE_OF_ADDRESS


@dataclass(frozen=True, slots=True)
class Ipv4DefaultRouter(_ReservedThenIpv4):
    """RFC 5844 §3.3.3; the seed's IPv4-DRA (Figure 5)."""

    TYPE: ClassVar[int] = OptionType.IPV4_DEFAULT_ROUTER


@dataclass(frozen=True, slots=True)
class GreKey(Option):
    """RFC 5845 §3.1: 16 reserved bits and an optional 32-bit key. Parsed, never acted on."""

    key: int | None = None
    TYPE: ClassVar[int] = OptionType.GRE_KEY
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)  # RFC 5845 §6.1

    def body(self) -> bytes:
        return b"\0\0" if self.key is None else b"\0\0" + self.key.to_bytes(4, "big")

    @classmethod
    def parse(cls, body: bytes) -> GreKey:
        if len(body) == 2:
            return cls(None)
        _need_len(body, 6, "GRE key")
        return cls(int.from_bytes(body[2:], "big"))


@dataclass(frozen=True, slots=True)
class Ipv4HoaRequest(Option):
    """RFC 5844 §3.3.1: Prefix-len (6 bits), 10 reserved bits, address (0.0.0.0 = assign)."""

    address: IPv4Address
    prefix_len: int = 0
    TYPE: ClassVar[int] = OptionType.IPV4_HOA_REQUEST
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)
    # More than one is well-formed; the LMA answers it with status 173 (RFC 5844 §3.1.2.1).
    REPEATABLE: ClassVar[bool] = True

    def body(self) -> bytes:
        _ipv4_plen(self.prefix_len, "IPv4 HoA request")
        return _HOA.pack(self.prefix_len << 10, self.address.packed)

    @classmethod
    def parse(cls, body: bytes) -> Ipv4HoaRequest:
        _need_len(body, 6, "IPv4 HoA request")
        word, addr = _HOA.unpack(body)
        return cls(IPv4Address(addr), _ipv4_plen(word >> 10, "IPv4 HoA request"))


@dataclass(frozen=True, slots=True)
class Ipv4HoaReply(Option):
    """RFC 5844 §3.3.2: same layout as the IPv4 Address Acknowledgement."""

    status: int
    prefix_len: int
    address: IPv4Address
    TYPE: ClassVar[int] = OptionType.IPV4_HOA_REPLY
    ALIGN: ClassVar[tuple[int, int]] = (4, 0)

    def body(self) -> bytes:
        _ipv4_plen(self.prefix_len, "IPv4 HoA reply")
        return _ACK.pack(self.status, self.prefix_len << 2, self.address.packed)

    @classmethod
    def parse(cls, body: bytes) -> Ipv4HoaReply:
        _need_len(body, 6, "IPv4 HoA reply")
        status, plen, addr = _ACK.unpack(body)
        return cls(status, _ipv4_plen(plen >> 2, "IPv4 HoA reply"), IPv4Address(addr))


@dataclass(frozen=True, slots=True)
class Ipv4DhcpSupportMode(Option):
    """RFC 5844 §3.3.4, PBA only: S flag set tells the MAG to be a DHCP server, clear (or no
    option) a DHCP relay."""

    server: bool
    TYPE: ClassVar[int] = OptionType.IPV4_DHCP_SUPPORT_MODE

    def body(self) -> bytes:
        return _U16.pack(1 if self.server else 0)

    @classmethod
    def parse(cls, body: bytes) -> Ipv4DhcpSupportMode:
        _need_len(body, 2, "IPv4 DHCP support mode")
        return cls(bool(_U16.unpack(body)[0] & 1))


@dataclass(frozen=True, slots=True)
class UnknownOption(Option):
    """An option type this implementation does not know; skipped per RFC 6275 §6.2.1 but
    kept so a message re-encodes to the same bytes."""

    type: int
    data: bytes
    REPEATABLE: ClassVar[bool] = True

    def body(self) -> bytes:
        return self.data

    def tlv(self) -> bytes:
        if len(self.data) > 255:
            raise ValueError("unknown option body longer than 255 octets")
        return bytes((self.type, len(self.data))) + self.data


OPTION_CLASSES: dict[int, type[Option]] = {
    cls.TYPE: cls
    for cls in (
        MnIdentifier,
        HomeNetworkPrefix,
        HandoffIndicatorOption,
        AccessTechTypeOption,
        MnLinkLayerId,
        LinkLocalAddress,
        Timestamp,
        Ipv4HomeAddress,
        Ipv4AddressAck,
        NatDetection,
        Ipv4CareOfAddress,
        GreKey,
        Ipv4HoaRequest,
        Ipv4HoaReply,
        Ipv4DefaultRouter,
        Ipv4DhcpSupportMode,
    )
}


def option_type(option: Option) -> int:
    return option.type if isinstance(option, UnknownOption) else option.TYPE
