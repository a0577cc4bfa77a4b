"""DHCPv4 messages (RFC 2131/2132) as small typed values, on top of scapy's BOOTP/DHCP.

scapy is used rather than a hand-written codec: it is actively maintained, knows every
option including the relay agent information of RFC 3046, and already serves the tests.
Its parser is lenient, so `parse` adds the strict checks a server needs and turns any
failure into one typed error.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from scapy.layers.dhcp import BOOTP, DHCP

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

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, str(self.message_type))


def _ip(value: object) -> IPv4Address | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return IPv4Address(value) if len(value) == 4 else None
    return IPv4Address(str(value))


def parse(data: bytes) -> DhcpMessage:
    if len(data) < MIN_LEN:
        raise DhcpError("short", f"{len(data)} octets")
    if data[236:240] != MAGIC_COOKIE:
        raise DhcpError("no-magic-cookie")
    if data[0] not in (1, 2) or data[1] != 1 or data[2] != 6:
        raise DhcpError("not-ethernet-bootp", f"op {data[0]} htype {data[1]} hlen {data[2]}")
    try:
        pkt = BOOTP(data)
        options = pkt[DHCP].options if DHCP in pkt else []
        found: dict[str, object] = {}
        for opt in options:
            if isinstance(opt, tuple) and len(opt) >= 2:
                found.setdefault(str(opt[0]), opt[1])
        message_type = found.get("message-type")
        if not isinstance(message_type, int) or message_type not in MESSAGE_NAMES:
            raise DhcpError("no-message-type")
        client_id = found.get("client_id")
        lease = found.get("lease_time")
        relay = found.get("relay_agent_information")
        return DhcpMessage(
            op=pkt.op,
            xid=pkt.xid,
            flags=int(pkt.flags),
            ciaddr=IPv4Address(pkt.ciaddr),
            yiaddr=IPv4Address(pkt.yiaddr),
            giaddr=IPv4Address(pkt.giaddr),
            chaddr=bytes(pkt.chaddr)[:6],
            message_type=message_type,
            client_id=client_id if isinstance(client_id, bytes) else None,
            requested_ip=_ip(found.get("requested_addr")),
            server_id=_ip(found.get("server_id")),
            lease_time=lease if isinstance(lease, int) else None,
            subnet_mask=_ip(found.get("subnet_mask")),
            router=_ip(found.get("router")),
            relay_agent_info=relay if isinstance(relay, bytes) else None,
            raw=bytes(data),
        )
    except DhcpError:
        raise
    except Exception as exc:  # scapy may raise anything on hostile bytes
        raise DhcpError("unparseable", repr(exc)) from exc


def client_mac(msg: DhcpMessage) -> bytes:
    """The MN's link-layer address: option 61 of hardware type 1 if present, else chaddr."""
    cid = msg.client_id
    if cid is not None and len(cid) == 7 and cid[0] == 1:
        return cid[1:]
    return msg.chaddr


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
    options: list[object] = [("message-type", message_type), ("server_id", str(server_id))]
    if lease_s is not None:
        options += [
            ("lease_time", lease_s),
            ("renewal_time", lease_s // 2),
            ("rebinding_time", lease_s * 7 // 8),
        ]
    if prefix_len is not None:
        mask = IPv4Address((0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF if prefix_len else 0)
        options.append(("subnet_mask", str(mask)))
    if router is not None:
        options.append(("router", str(router)))
    options.append("end")
    reply = BOOTP(
        op=2,
        xid=request.xid,
        flags=request.flags,
        ciaddr=str(request.ciaddr) if message_type != NAK else "0.0.0.0",
        yiaddr=str(yiaddr),
        giaddr=str(request.giaddr),
        chaddr=request.raw[28:44],
    ) / DHCP(options=options)
    return bytes(reply)


def relayed(msg: DhcpMessage, giaddr: IPv4Address, info: bytes) -> bytes:
    """The client's message as a relay agent forwards it to a server (RFC 2131 §4.1,
    RFC 3046 §2.1): giaddr set, hops incremented, option 82 added before `end`."""
    pkt = BOOTP(msg.raw)
    pkt.giaddr = str(giaddr)
    pkt.hops = min(pkt.hops + 1, 255)
    options = [o for o in pkt[DHCP].options if o not in ("end", "pad")]
    options = [
        o for o in options if not (isinstance(o, tuple) and o[0] == "relay_agent_information")
    ]
    pkt[DHCP].options = [*options, ("relay_agent_information", info), "end"]
    return bytes(pkt)


def without_relay_info(msg: DhcpMessage) -> bytes:
    """A server's reply as the relay passes it on to the client: option 82 removed
    (RFC 3046 §2.1.1)."""
    pkt = BOOTP(msg.raw)
    options = [o for o in pkt[DHCP].options if o not in ("end", "pad")]
    options = [
        o for o in options if not (isinstance(o, tuple) and o[0] == "relay_agent_information")
    ]
    pkt[DHCP].options = [*options, "end"]
    return bytes(pkt)
