"""DHCPv4 messages (RFC 2131/2132) as small typed values, on top of dpkt's DHCP codec.

A library rather than a hand-written codec: dpkt is maintained, pure Python and keeps
options as (code, bytes) pairs, so relay agent information (RFC 3046) passes through
untouched. It replaced scapy here because it is about 40 times faster (6 us to parse and
17 us to build a message, against 174 us and some 700 us), and the MAG parses and builds
DHCP messages on the path of every attach; scapy remains the tests' independent builder.
dpkt's parser is lenient, so `parse` adds the strict checks a server needs and turns any
failure into one typed error.

What the relay passes on is the message as received, edited in place (RFC 3046 §2.1: the
agent adds option 82 "as the last option", and takes it out of the server's reply), not
decoded and built again: every other octet goes through unchanged, and the relay's path
stays short. A message whose options are not packed end to end (pad octets between them)
takes the decode-and-build way, which leaves the pads out.

`peek` is the relay's look at a message before any decoding: the few fields it passes a
message on by (type, xid, the client identifier, where END and option 82 sit), read in
one strict walk over the options. It answers None for anything unusual, which then goes
the decoded way; a message it accepts, `parse` accepts too, with the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import NamedTuple

import dpkt

MAGIC_COOKIE = b"c\x82Sc"
ZERO = IPv4Address(0)
MIN_LEN = 240  # fixed BOOTP header plus the magic cookie
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_NAMES = {
    DISCOVER: "DISCOVER",
    OFFER: "OFFER",
    REQUEST: "REQUEST",
    DECLINE: "DECLINE",
    ACK: "ACK",
    NAK: "NAK",
    RELEASE: "RELEASE",
    INFORM: "INFORM",
}


class DhcpError(ValueError):
    """Malformed or unusable DHCP bytes; ``reason`` is a short stable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    op: int  # 1 request, 2 reply
    xid: int
    flags: int
    ciaddr: IPv4Address
    yiaddr: IPv4Address
    giaddr: IPv4Address
    chaddr: bytes  # the client's 6-octet hardware address
    message_type: int
    client_id: bytes | None = None  # option 61
    requested_ip: IPv4Address | None = None  # option 50
    server_id: IPv4Address | None = None  # option 54
    lease_time: int | None = None  # option 51
    subnet_mask: IPv4Address | None = None  # option 1
    router: IPv4Address | None = None  # option 3
    relay_agent_info: bytes | None = None  # option 82, raw sub-options
    raw: bytes = b""
    # Where the END option and option 82 sit in ``raw``, when the options are packed end
    # to end from offset 240; else -1 (see `relayed` and `without_relay_info`).
    end_at: int = -1
    relay_info_at: int = -1

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, str(self.message_type))


# Option codes (RFC 2132, RFC 3046).
OPT_SUBNET_MASK, OPT_ROUTER, OPT_REQUESTED_IP, OPT_LEASE_TIME = 1, 3, 50, 51
OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_RENEWAL, OPT_REBINDING, OPT_CLIENT_ID = 53, 54, 58, 59, 61
OPT_RELAY_AGENT_INFO = 82
BOOTP_MIN_LEN = 300  # RFC 1542 §3.4: some clients drop shorter replies


def _addr(value: int) -> IPv4Address:
    return IPv4Address(value) if value else ZERO  # most of these fields are 0.0.0.0


def _ip(value: bytes | None) -> IPv4Address | None:
    return IPv4Address(value) if value is not None and len(value) == 4 else None


def parse(data: bytes) -> DhcpMessage:
    if len(data) < MIN_LEN:
        raise DhcpError("short", f"{len(data)} octets")
    if data[236:240] != MAGIC_COOKIE:
        raise DhcpError("no-magic-cookie")
    if data[0] not in (1, 2) or data[1] != 1 or data[2] != 6:
        raise DhcpError("not-ethernet-bootp", f"op {data[0]} htype {data[1]} hlen {data[2]}")
    try:
        pkt = dpkt.dhcp.DHCP(data)
        found: dict[int, bytes] = {}
        at, relay_info_at = MIN_LEN, -1
        for code, value in pkt.opts:
            if code == OPT_RELAY_AGENT_INFO:  # only one may be cut out in place
                relay_info_at = at if code not in found else -2
            found.setdefault(code, value)
            at += 2 + len(value)
    except Exception as exc:  # dpkt raises several kinds on hostile bytes
        raise DhcpError("unparseable", repr(exc)) from exc
    kind = found.get(OPT_MESSAGE_TYPE)
    if kind is None or len(kind) != 1 or kind[0] not in MESSAGE_NAMES:
        raise DhcpError("no-message-type")
    lease = found.get(OPT_LEASE_TIME)
    # dpkt stops after END and keeps what follows; no pads before it iff END is at ``at``.
    packed = at == len(data) - len(pkt.data) - 1 and data[at] == 255
    return DhcpMessage(
        op=pkt.op,
        xid=pkt.xid,
        flags=pkt.flags,
        ciaddr=_addr(pkt.ciaddr),
        yiaddr=_addr(pkt.yiaddr),
        giaddr=_addr(pkt.giaddr),
        chaddr=bytes(data[28:34]),
        message_type=kind[0],
        client_id=found.get(OPT_CLIENT_ID),
        requested_ip=_ip(found.get(OPT_REQUESTED_IP)),
        server_id=_ip(found.get(OPT_SERVER_ID)),
        lease_time=int.from_bytes(lease, "big") if lease is not None and len(lease) == 4 else None,
        subnet_mask=_ip(found.get(OPT_SUBNET_MASK)),
        router=_ip(found.get(OPT_ROUTER)),
        relay_agent_info=found.get(OPT_RELAY_AGENT_INFO),
        raw=bytes(data),
        end_at=at if packed else -1,
        relay_info_at=relay_info_at if packed and relay_info_at >= 0 else -1,
    )


class Peek(NamedTuple):
    """What the relay passes a message on by, read without decoding it (see `peek`). A
    NamedTuple: one is built per DHCP message the MAG takes in, and with the MAG idle
    between messages that was 18 us against 23-31 us as a frozen dataclass (median,
    caches evicted before each call)."""

    op: int
    message_type: int
    xid: int
    end_at: int  # the END option's offset
    relay_info_at: int  # option 82's offset, or -1
    client_id: bytes | None
    chaddr: bytes
    ciaddr: bytes
    yiaddr: bytes
    server_id: bytes | None  # option 54's content
    subnet_mask: bytes | None  # option 1's content

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, str(self.message_type))

    def client_mac(self) -> bytes:
        """As `client_mac` for a parsed message."""
        return _mac_of(self.client_id, self.chaddr)


def peek(data: bytes) -> Peek | None:
    """The relay's fields of ``data`` (RFC 2131 §2, RFC 2132 §2-3), or None when the
    message should be decoded instead: too short, no magic cookie, not Ethernet BOOTP, an
    option running past the end, no END, no single-octet message type first, or more than
    one option 82."""
    n = len(data)
    if n <= MIN_LEN or data[236:240] != MAGIC_COOKIE or data[1] != 1 or data[2] != 6:
        return None
    op = data[0]
    if op != 1 and op != 2:
        return None
    i, kind, client_id, info_at = MIN_LEN, -1, None, -1
    server_id = mask = None
    while True:
        if i >= n:
            return None  # no END
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= n:
            return None
        j = i + 2 + data[i + 1]
        if j > n:
            return None
        if code == OPT_MESSAGE_TYPE and kind < 0:
            kind = data[i + 2] if j == i + 3 else 0
        elif code == OPT_CLIENT_ID and client_id is None:
            client_id = data[i + 2 : j]
        elif code == OPT_SERVER_ID and server_id is None:
            server_id = data[i + 2 : j]
        elif code == OPT_SUBNET_MASK and mask is None:
            mask = data[i + 2 : j]
        elif code == OPT_RELAY_AGENT_INFO:
            if info_at >= 0:
                return None
            info_at = i
        i = j
    if kind not in MESSAGE_NAMES:
        return None
    xid = int.from_bytes(data[4:8], "big")
    return Peek(
        op, kind, xid, i, info_at, client_id, data[28:34], data[12:16], data[16:20], server_id, mask
    )


def relay_info_of(data: bytes, at: int) -> bytes | None:
    """Option 82's content in ``data`` at offset ``at`` (a `Peek.relay_info_at`)."""
    return data[at + 2 : at + 2 + data[at + 1]] if at >= 0 else None


def client_mac(msg: DhcpMessage) -> bytes:
    """The MN's link-layer address: option 61 of hardware type 1 if present, else chaddr."""
    return _mac_of(msg.client_id, msg.chaddr)


def _mac_of(client_id: bytes | None, chaddr: bytes) -> bytes:
    if client_id is not None and len(client_id) == 7 and client_id[0] == 1:
        return client_id[1:]
    return chaddr


# --- building ---------------------------------------------------------------------------

RAI_CIRCUIT_ID = 1  # RFC 3046 §2.1
RAI_REMOTE_ID = 2  # RFC 3046 §2.2
RAI_LINK_SELECTION = 5  # RFC 3527


def relay_agent_info(circuit_id: bytes, remote_id: bytes, link_selection: IPv4Address) -> bytes:
    """Option 82 content: circuit-id, remote-id and link-selection sub-options."""
    out = b""
    for code, value in (
        (RAI_CIRCUIT_ID, circuit_id),
        (RAI_REMOTE_ID, remote_id),
        (RAI_LINK_SELECTION, link_selection.packed),
    ):
        out += bytes((code, len(value))) + value[:255]
    return out


def sub_option(info: bytes | None, code: int) -> bytes | None:
    """One sub-option of option 82 content, or None."""
    offset = 0
    while info is not None and offset + 2 <= len(info):
        kind, length = info[offset], info[offset + 1]
        if kind == code:
            return info[offset + 2 : offset + 2 + length]
        offset += 2 + length
    return None


def padded(data: bytes) -> bytes:
    """``data`` padded to the BOOTP minimum (RFC 1542 §3.4)."""
    return data + bytes(BOOTP_MIN_LEN - len(data)) if len(data) < BOOTP_MIN_LEN else data


def _lease_options(lease_s: int) -> list[tuple[int, bytes]]:
    """The lease time, T1 and T2 (RFC 2131 §4.4.5: 0.5 and 0.875 of the lease)."""
    return [
        (OPT_LEASE_TIME, lease_s.to_bytes(4, "big")),
        (OPT_RENEWAL, (lease_s // 2).to_bytes(4, "big")),
        (OPT_REBINDING, (lease_s * 7 // 8).to_bytes(4, "big")),
    ]


def _mask(prefix_len: int) -> bytes:
    return ((0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF if prefix_len else 0).to_bytes(4, "big")


def build_reply(
    request: DhcpMessage,
    message_type: int,
    server_id: IPv4Address,
    yiaddr: IPv4Address = ZERO,
    lease_s: int | None = None,
    prefix_len: int | None = None,
    router: IPv4Address | None = None,
) -> bytes:
    """A server reply to ``request`` (RFC 2131 §4.3.1, Table 3)."""
    opts: list[tuple[int, bytes]] = [
        (OPT_MESSAGE_TYPE, bytes((message_type,))),
        (OPT_SERVER_ID, server_id.packed),
    ]
    if lease_s is not None:
        opts += _lease_options(lease_s)
    if prefix_len is not None:
        opts.append((OPT_SUBNET_MASK, _mask(prefix_len)))
    if router is not None:
        opts.append((OPT_ROUTER, router.packed))
    reply = dpkt.dhcp.DHCP(
        op=2,
        xid=request.xid,
        flags=request.flags,
        ciaddr=int(request.ciaddr) if message_type != NAK else 0,
        yiaddr=int(yiaddr),
        giaddr=int(request.giaddr),
        chaddr=request.raw[28:44],
        opts=opts,
    )
    return padded(bytes(reply))


# The options whose values a ReplyTemplate fills in, each four octets, in this order.
_TEMPLATE_FIELDS = (OPT_SERVER_ID, OPT_LEASE_TIME, OPT_RENEWAL, OPT_REBINDING, OPT_SUBNET_MASK,
                    OPT_ROUTER)  # fmt: skip
# What build_reply copies from the request, as (start, end): xid; flags and ciaddr; giaddr
# and chaddr. Everything else in its replies is the same for every request.
_FROM_REQUEST = ((4, 8), (10, 16), (24, 44))


def _skeleton_of(message_type: int) -> tuple[bytes, tuple[int, ...]]:
    """build_reply's reply of this type with zeros for the request's fields and for the
    grant's values, and where the values of _TEMPLATE_FIELDS' options begin."""
    blank = bytes((1, 1, 6)) + bytes(233) + MAGIC_COOKIE + bytes((OPT_MESSAGE_TYPE, 1, 1, 255))
    request = parse(blank.ljust(BOOTP_MIN_LEN, b"\0"))
    data = build_reply(request, message_type, ZERO, ZERO, lease_s=0, prefix_len=0, router=ZERO)
    found: dict[int, int] = {}
    i = MIN_LEN
    while i + 1 < len(data) and data[i] != 255:
        found.setdefault(data[i], i + 2)
        i += 2 + data[i + 1]
    return data, tuple(found[code] for code in _TEMPLATE_FIELDS)


_SKELETONS = {kind: _skeleton_of(kind) for kind in (OFFER, ACK)}


def reply_template(raw: bytes, message_type: int) -> tuple[bytes, tuple[int, ...]]:
    """build_reply's OFFER or ACK (``message_type``) to the request ``raw`` (its bytes, at
    least MIN_LEN of them), with zeros for the grant's values (yiaddr, and the options of
    _TEMPLATE_FIELDS), and where those options' values begin: no decoding, no dpkt."""
    data, at = _SKELETONS[message_type]
    out = bytearray(data)
    for start, end in _FROM_REQUEST:
        out[start:end] = raw[start:end]
    return bytes(out), at


@dataclass(frozen=True, slots=True)
class ReplyTemplate:
    """A server reply to a request, as `build_reply` makes it, with placeholders for what
    only the LMA's grant says: `fill` then gives the bytes build_reply would give for the
    grant's values, by patching them in. It covers replies with all of them (a lease, a
    prefix length and a router): anything else is built in full."""

    data: bytes
    at: tuple[int, ...]  # where the values of _TEMPLATE_FIELDS' options begin

    @classmethod
    def of(cls, request: DhcpMessage, message_type: int) -> ReplyTemplate:
        return cls(*reply_template(request.raw, message_type))

    def fill(
        self,
        server_id: IPv4Address,
        yiaddr: IPv4Address,
        lease_s: int,
        prefix_len: int,
        router: IPv4Address,
    ) -> bytes:
        out = bytearray(self.data)
        out[16:20] = yiaddr.packed
        values = dict(  # what build_reply puts in these options
            [(OPT_SERVER_ID, server_id.packed), *_lease_options(lease_s),
             (OPT_SUBNET_MASK, _mask(prefix_len)), (OPT_ROUTER, router.packed)]
        )  # fmt: skip
        for code, at in zip(_TEMPLATE_FIELDS, self.at, strict=True):
            out[at : at + 4] = values[code]
        return bytes(out)


def _reencoded(msg: DhcpMessage, **fields: object) -> dpkt.dhcp.DHCP:
    pkt = dpkt.dhcp.DHCP(msg.raw)
    pkt.chaddr = msg.raw[28:44]  # dpkt keeps only hlen octets; keep all 16 as received
    for name, value in fields.items():
        setattr(pkt, name, value)
    return pkt


def relayed(msg: DhcpMessage, giaddr: IPv4Address, info: bytes) -> bytes:
    """The client's message as a relay agent forwards it to a server (RFC 2131 §4.1,
    RFC 3046 §2.1): giaddr set, hops incremented, option 82 added at the end."""
    if msg.end_at >= 0 and msg.relay_agent_info is None:
        return relayed_at(msg.raw, msg.end_at, giaddr.packed, info)
    pkt = _reencoded(msg, giaddr=int(giaddr))
    pkt.hops = min(pkt.hops + 1, 255)
    pkt.opts = [o for o in pkt.opts if o[0] != OPT_RELAY_AGENT_INFO] + [
        (OPT_RELAY_AGENT_INFO, info)
    ]
    return padded(bytes(pkt))


def relayed_at(raw: bytes, end_at: int, giaddr: bytes, info: bytes) -> bytes:
    """`relayed`, in place, for a message without option 82 whose END is at ``end_at``."""
    out = bytearray(raw[:end_at])
    out[3] = min(out[3] + 1, 255)
    out[24:28] = giaddr
    out += bytes((OPT_RELAY_AGENT_INFO, len(info))) + info + b"\xff"
    return padded(bytes(out))


def without_relay_info_at(raw: bytes, at: int) -> bytes:
    """`without_relay_info`, in place, for a message with option 82 at offset ``at``
    (-1, as `peek` gives it for a message without one: ``raw`` as it is, padded)."""
    if at < 0:
        return padded(raw)
    return padded(raw[:at] + raw[at + 2 + raw[at + 1] :])


def without_relay_info(msg: DhcpMessage) -> bytes:
    """A server's reply as the relay passes it on to the client: option 82 removed
    (RFC 3046 §2.1.1)."""
    raw, at = msg.raw, msg.relay_info_at
    if at >= 0:
        return without_relay_info_at(raw, at)
    if msg.relay_agent_info is None and msg.end_at >= 0:
        return padded(raw)
    pkt = _reencoded(msg)
    pkt.opts = [o for o in pkt.opts if o[0] != OPT_RELAY_AGENT_INFO]
    return padded(bytes(pkt))
