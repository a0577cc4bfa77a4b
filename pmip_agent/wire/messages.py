"""Proxy Binding Update and Acknowledgement: dataclasses, encode and strict decode.

Mobility Header layout (RFC 6275 §6.1): Payload Proto, Header Len (8-octet units not
counting the first 8), MH Type, Reserved, Checksum, then the message data. Both messages
here have 6 octets of fixed data, so options start at offset 12. The whole header is a
multiple of 8 octets; options are padded to their alignment with Pad1/PadN.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TypeVar

from .constants import IPPROTO_MH, IPPROTO_NONE, BaFlags, BuFlags, MhType
from .errors import WireError
from .options import OPTION_CLASSES, Option, UnknownOption

_HEAD = struct.Struct("!BBBBH")  # payload proto, header len, MH type, reserved, checksum
_BU = struct.Struct("!HHH")  # sequence, flags, lifetime
_BA = struct.Struct("!BBHH")  # status, flags, sequence, lifetime
OPTIONS_OFFSET = 12
_BU_P = int(BuFlags.P)
MAX_MH_LEN = 2048  # (255 + 1) * 8: the largest Header Len can express

OptT = TypeVar("OptT", bound=Option)


class _Message:
    __slots__ = ()
    options: tuple[Option, ...]

    def find(self, cls: type[OptT]) -> OptT | None:
        """The first option of this class, or None."""
        for opt in self.options:
            if type(opt) is cls:
                return opt  # type: ignore[return-value]
        return None

    def find_all(self, cls: type[OptT]) -> list[OptT]:
        return [opt for opt in self.options if type(opt) is cls]  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class BindingUpdate(_Message):
    """A (Proxy) Binding Update. ``lifetime`` is in 4-second units; 0 deregisters."""

    sequence: int
    lifetime: int
    flags: int = BuFlags.A | BuFlags.P  # BuFlags bits; decode gives a plain int (cheaper)
    options: tuple[Option, ...] = ()

    @property
    def is_proxy(self) -> bool:
        return bool(self.flags & _BU_P)


@dataclass(frozen=True, slots=True)
class BindingAck(_Message):
    """A (Proxy) Binding Acknowledgement. ``sequence`` echoes the PBU's."""

    status: int
    sequence: int
    lifetime: int
    flags: int = BaFlags.P  # BaFlags bits
    options: tuple[Option, ...] = ()


Message = BindingUpdate | BindingAck


# --- checksum ---------------------------------------------------------------------------


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum, summed in native order and swapped once."""
    if len(data) & 1:
        data += b"\0"
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    if sys.byteorder == "little":
        total = ((total & 0xFF) << 8) | (total >> 8)
    return total


def _pseudo_header(src: IPv6Address, dst: IPv6Address, length: int) -> bytes:
    # RFC 8200 §8.1, next header 135 (RFC 6275 §6.1.1).
    return src.packed + dst.packed + length.to_bytes(4, "big") + b"\0\0\0" + bytes((IPPROTO_MH,))


def mh_checksum(mh: bytes, src: IPv6Address, dst: IPv6Address) -> int:
    """Checksum of ``mh`` with its checksum field taken as zero."""
    zeroed = mh[:4] + b"\0\0" + mh[6:]
    return internet_checksum(_pseudo_header(src, dst, len(mh)) + zeroed)


# --- encode -----------------------------------------------------------------------------


# Per-class and per-type tables, built once: the hot loops below then do one lookup per
# option instead of several attribute reads and calls.
_ALIGN: dict[type[Option], tuple[int, int]] = {
    cls: cls.ALIGN for cls in OPTION_CLASSES.values() if cls.ALIGN != (1, 0)
}
_DECODERS: list[tuple[object, int, int, bool] | None] = [None] * 256
for _type, _cls in OPTION_CLASSES.items():
    _DECODERS[_type] = (_cls.parse, *_cls.ALIGN, _cls.REPEATABLE)
_PADS = [b"", b"\0"] + [bytes((1, n - 2)) + bytes(n - 2) for n in range(2, 8)]  # Pad1 / PadN


def _encode_options(options: tuple[Option, ...]) -> bytes:
    parts: list[bytes] = []
    offset = OPTIONS_OFFSET
    for opt in options:
        align = _ALIGN.get(type(opt))
        if align is not None:
            pad = (align[1] - offset) % align[0]
            if pad:
                parts.append(_PADS[pad])
                offset += pad
        tlv = opt.tlv()
        parts.append(tlv)
        offset += len(tlv)
    parts.append(_PADS[-offset % 8])
    return b"".join(parts)


def encode(msg: Message, src: IPv6Address | None = None, dst: IPv6Address | None = None) -> bytes:
    """Encode to Mobility Header bytes. With ``src``/``dst`` the checksum is filled in (needed
    inside IPv4/UDP); without, it is left zero for a raw socket with IPV6_CHECKSUM set."""
    if isinstance(msg, BindingUpdate):
        mh_type = MhType.BINDING_UPDATE
        fixed = _BU.pack(msg.sequence, int(msg.flags), msg.lifetime)
    else:
        mh_type = MhType.BINDING_ACK
        fixed = _BA.pack(msg.status, int(msg.flags), msg.sequence, msg.lifetime)
    opts = _encode_options(msg.options)
    total = OPTIONS_OFFSET + len(opts)
    if total > MAX_MH_LEN:
        raise ValueError("mobility header longer than 2048 octets")
    mh = _HEAD.pack(IPPROTO_NONE, total // 8 - 1, mh_type, 0, 0) + fixed + opts
    if src is not None and dst is not None:
        mh = mh[:4] + mh_checksum(mh, src, dst).to_bytes(2, "big") + mh[6:]
    return mh


# --- decode -----------------------------------------------------------------------------


def _decode_options(data: bytes) -> tuple[Option, ...]:
    options: list[Option] = []
    seen = 0  # bit n set: option type n seen
    offset = OPTIONS_OFFSET
    end = len(data)
    decoders = _DECODERS
    while offset < end:
        otype = data[offset]
        if otype == 0:  # Pad1
            offset += 1
            continue
        if offset + 2 > end:
            raise WireError("option-overrun", f"option type {otype} at {offset} has no length")
        body_end = offset + 2 + data[offset + 1]
        if body_end > end:
            raise WireError("option-overrun", f"option type {otype} at {offset} runs past end")
        if otype != 1:  # PadN content is ignored
            decoder = decoders[otype]
            if decoder is None:
                options.append(UnknownOption(otype, data[offset + 2 : body_end]))
            else:
                parse, x, y, repeatable = decoder
                if offset % x != y:
                    raise WireError(
                        "misaligned-option", f"option type {otype} at {offset}, needs {x}n+{y}"
                    )
                if not repeatable:
                    if seen >> otype & 1:
                        raise WireError("duplicate-option", f"option type {otype} repeated")
                    seen |= 1 << otype
                options.append(parse(data[offset + 2 : body_end]))  # type: ignore[operator]
        offset = body_end
    return tuple(options)


def decode(data: bytes, src: IPv6Address | None = None, dst: IPv6Address | None = None) -> Message:
    """Decode Mobility Header bytes into a BindingUpdate or BindingAck.

    With ``src``/``dst`` the checksum is verified. Raises only :class:`WireError`.
    """
    try:
        return _decode(bytes(data), src, dst)
    except WireError:
        raise
    except Exception as exc:  # a decoder bug must still surface as the one typed error
        raise WireError("decoder-fault", repr(exc)) from exc


def _decode(data: bytes, src: IPv6Address | None, dst: IPv6Address | None) -> Message:
    if len(data) < 8:
        raise WireError("short-header", f"{len(data)} octets")
    _proto, hdr_len, mh_type, _reserved, _cksum = _HEAD.unpack_from(data)
    if (hdr_len + 1) * 8 != len(data):
        raise WireError("bad-header-length", f"Header Len {hdr_len} for {len(data)} octets")
    if mh_type not in (MhType.BINDING_UPDATE, MhType.BINDING_ACK):
        raise WireError("unsupported-mh-type", str(mh_type))
    if len(data) < OPTIONS_OFFSET:
        raise WireError("short-message", f"MH type {mh_type} needs {OPTIONS_OFFSET} octets")
    if src is not None and dst is not None and mh_checksum(data, src, dst) != _cksum:
        raise WireError("bad-checksum")
    options = _decode_options(data)
    if mh_type == MhType.BINDING_UPDATE:
        seq, flags, lifetime = _BU.unpack_from(data, 6)
        return BindingUpdate(seq, lifetime, flags, options)
    status, flags, seq, lifetime = _BA.unpack_from(data, 6)
    return BindingAck(status, seq, lifetime, flags, options)
