"""The DHCPv4 codec wrapper: strict checks over dpkt's lenient parser (RFC 2131 §2), and
the relay's in-place edits (RFC 3046 §2.1)."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP

from pmip_agent.dhcp import codec

MAC = bytes.fromhex("020000000001")


def _discover(**opts: object) -> bytes:
    options = [("message-type", "discover"), *opts.items(), "end"]
    return bytes(BOOTP(chaddr=MAC + bytes(10), xid=0x1234) / DHCP(options=options))


def test_parse_discover_fields() -> None:
    msg = codec.parse(_discover(requested_addr="10.1.0.7", client_id=b"\x01" + MAC))
    assert msg.message_type == codec.DISCOVER and msg.name == "DISCOVER"
    assert msg.op == 1 and msg.xid == 0x1234 and msg.chaddr == MAC
    assert msg.requested_ip == IPv4Address("10.1.0.7")
    assert codec.client_mac(msg) == MAC


def test_client_mac_prefers_hardware_client_identifier() -> None:
    """RFC 2132 §9.14: a client identifier of type 1 carries the hardware address."""
    other = bytes.fromhex("02aabbccddee")
    assert codec.client_mac(codec.parse(_discover(client_id=b"\x01" + other))) == other
    assert codec.client_mac(codec.parse(_discover(client_id=b"\x00opaque"))) == MAC


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b[:100], "short"),
        (lambda b: b[:236] + b"XXXX" + b[240:], "no-magic-cookie"),
        (lambda b: b"\x03" + b[1:], "not-ethernet-bootp"),
        (lambda b: b[:1] + b"\x06" + b[2:], "not-ethernet-bootp"),
        (lambda b: b[:240] + b"\xff", "no-message-type"),
        (lambda b: b[:240] + bytes([53, 1, 42, 255]), "no-message-type"),
    ],
)
def test_malformed_is_one_typed_error(mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(codec.DhcpError) as err:
        codec.parse(mangle(_discover()))
    assert err.value.reason == reason


def test_fuzz_only_dhcp_error_escapes() -> None:
    """Mutated messages parse or raise DhcpError; never anything else."""
    rng = random.Random(5436)
    base = bytearray(_discover(requested_addr="10.1.0.7", client_id=b"\x01" + MAC))
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            msg = codec.parse(bytes(data))
            outcomes["ok"] += 1
        except codec.DhcpError:
            outcomes["error"] += 1
            continue
        # What parses, the relay can pass on either way without an exception.
        codec.relayed(msg, RELAY, INFO)
        codec.without_relay_info(msg)
    assert outcomes["ok"] > 100 and outcomes["error"] > 100, outcomes


def test_peek_accepts_only_what_parse_accepts_and_agrees_with_it() -> None:
    """The relay passes messages on from `peek` before `parse` has seen them: anything
    peek accepts must parse, with the same type, xid, client identifier and option 82,
    and the in-place relaying from peek's offsets must equal the decoded way's. Mutated
    and random messages, with pads, several option 82s and bytes after END."""
    rng = random.Random(3046)
    seen_ok = 0
    bases = [_message(rng, rng.choice([1, 2]), i % 3, bool(i % 2)) for i in range(40)]
    for i in range(4000):
        data = bytearray(bases[i % len(bases)])
        for _ in range(rng.randrange(4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        raw = bytes(data)
        seen = codec.peek(raw)
        if seen is None:
            continue
        seen_ok += 1
        msg = codec.parse(raw)  # raises if peek accepted something parse does not
        assert (seen.op, seen.message_type, seen.xid) == (msg.op, msg.message_type, msg.xid)
        assert seen.client_mac() == codec.client_mac(msg)
        assert (IPv4Address(seen.ciaddr), IPv4Address(seen.yiaddr)) == (msg.ciaddr, msg.yiaddr)
        assert _address(seen.server_id) == msg.server_id
        assert _address(seen.subnet_mask) == msg.subnet_mask
        assert codec.relay_info_of(raw, seen.relay_info_at) == msg.relay_agent_info
        assert raw[seen.end_at] == 255
        if seen.relay_info_at < 0:
            _same(
                codec.relayed_at(raw, seen.end_at, RELAY.packed, INFO),
                codec.relayed(_decoded_way(msg), RELAY, INFO),
            )
        else:
            _same(
                codec.without_relay_info_at(raw, seen.relay_info_at),
                codec.without_relay_info(_decoded_way(msg)),
            )
    assert seen_ok > 1000, seen_ok


def test_peek_declines_what_the_relay_should_not_pass_by_offset() -> None:
    base = _discover(client_id=b"\x01" + MAC)
    assert codec.peek(base) is not None
    two_82 = base[:-1] + bytes([82, 1, 7, 82, 1, 8, 255])
    assert codec.parse(two_82).relay_agent_info == bytes([7])
    assert codec.peek(two_82) is None  # only one may be cut out in place
    assert codec.peek(base[:-1]) is None  # no END
    assert codec.peek(base[:240] + bytes([53, 2, 1, 1, 255])) is None  # type is not 1 octet
    assert codec.peek(b"\x03" + base[1:]) is None  # neither request nor reply
    assert codec.peek(base[:200]) is None


RELAY = IPv4Address("198.51.100.1")
INFO = codec.relay_agent_info(b"mag1:acc1", b"mn@example.net", IPv4Address("10.50.0.0"))


def _message(rng: random.Random, op: int, with_info: int, pads: bool) -> bytes:
    """A message with random options, ``with_info`` copies of option 82 among them, pad
    octets between options if ``pads``, and random octets after END."""
    opts = [bytes([53, 1, rng.choice([1, 2, 3, 5])])]
    for _ in range(rng.randrange(6)):
        value = bytes(rng.randrange(256) for _ in range(rng.choice([4, rng.randrange(12)])))
        code = rng.choice([1, 12, 43, 50, 54, 60, 61, 77, 125])
        opts.append(bytes([code, len(value)]) + value)
    for _ in range(with_info):
        info = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
        opts.insert(rng.randrange(1, len(opts) + 1), bytes([82, len(info)]) + info)
    body = b"".join(o + (b"\0" * rng.randrange(1, 3) if pads else b"") for o in opts)
    header = bytearray(rng.randrange(256) for _ in range(236))
    header[0:4] = bytes([op, 1, 6, rng.randrange(4)])
    tail = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    return bytes(header) + codec.MAGIC_COOKIE + body + b"\xff" + tail


def _address(value: bytes | None) -> IPv4Address | None:
    return IPv4Address(value) if value is not None and len(value) == 4 else None


def _decoded_way(msg: codec.DhcpMessage) -> codec.DhcpMessage:
    """The same message without the offsets, so the relay decodes and builds it again."""
    return replace(msg, end_at=-1, relay_info_at=-1)


def _same(a: bytes, b: bytes) -> None:
    """Equal as DHCP: header, chaddr and the option list (pads and what follows END aside)."""
    x, y = dpkt.dhcp.DHCP(a), dpkt.dhcp.DHCP(b)
    assert a[:236] == b[:236] and x.opts == y.opts
    assert len(a) >= codec.BOOTP_MIN_LEN and len(b) >= codec.BOOTP_MIN_LEN


def test_relay_edits_in_place_what_decoding_and_building_would_give() -> None:
    """The relay's in-place edits (giaddr, hops, option 82 appended or removed) give the
    same message as decoding and building it again, for messages with no option 82, one
    or two of them, with and without pads between options; and they keep every octet
    the edit does not concern."""
    rng = random.Random(5844)
    took_fast = {"relayed": 0, "without": 0}
    for i in range(600):
        pads, infos = bool(i % 2), (i // 2) % 3
        client = codec.parse(_message(rng, 1, infos, pads))
        fast = codec.relayed(client, RELAY, INFO)
        _same(fast, codec.relayed(_decoded_way(client), RELAY, INFO))
        relayed = codec.parse(fast)
        assert relayed.giaddr == RELAY and relayed.relay_agent_info == INFO
        assert fast[3] == min(client.raw[3] + 1, 255)
        if client.end_at >= 0 and client.relay_agent_info is None:
            took_fast["relayed"] += 1
            assert fast[: client.end_at] == client.raw[:3] + fast[3:4] + client.raw[4:24] + (
                RELAY.packed + client.raw[28 : client.end_at]
            )
        reply = codec.parse(_message(rng, 2, infos, pads))
        out = codec.without_relay_info(reply)
        _same(out, codec.without_relay_info(_decoded_way(reply)))
        assert codec.parse(out).relay_agent_info is None
        if reply.relay_info_at >= 0:
            took_fast["without"] += 1
            at = reply.relay_info_at
            assert out.startswith(reply.raw[:at])
    # In place exactly for the packed messages without option 82 (client) or with one
    # (server): a third each of the 300 packed ones; the rest were decoded and built.
    assert took_fast == {"relayed": 100, "without": 100}


def test_offsets_only_for_options_packed_end_to_end() -> None:
    packed = codec.parse(_discover(client_id=b"\x01" + MAC))
    assert packed.end_at > 240 and packed.raw[packed.end_at] == 255
    assert packed.relay_info_at == -1
    raw = bytearray(_discover(client_id=b"\x01" + MAC))
    raw[240:240] = b"\0"  # one pad octet before the first option
    assert codec.parse(bytes(raw)).end_at == -1


@given(
    yiaddr=st.ip_addresses(v=4),
    router=st.ip_addresses(v=4),
    lease_s=st.integers(1, 2**32 - 1),
    prefix_len=st.integers(0, 32),
    flags=st.sampled_from([0, 0x8000]),
    kind=st.sampled_from([codec.OFFER, codec.ACK]),
    header=st.binary(min_size=236, max_size=236),
)
def test_a_reply_template_filled_is_the_reply_built_in_full(
    yiaddr: IPv4Address, router: IPv4Address, lease_s: int, prefix_len: int, flags: int,
    kind: int, header: bytes,
) -> None:  # fmt: skip
    """ReplyTemplate.fill gives build_reply's bytes, octet for octet, for any grant that
    has a router (the server identifier is then the router, as DhcpAgent sets it), and
    any request: the template copies only the fields build_reply takes from it."""
    raw = bytearray(_discover())
    raw[3:236] = header[3:]  # any hops, xid, secs, addresses, chaddr, sname and file
    raw[10:12] = flags.to_bytes(2, "big")
    request = codec.parse(bytes(raw))
    template = codec.ReplyTemplate.of(request, kind)
    assert template is not None
    full = codec.build_reply(request, kind, router, yiaddr, lease_s=lease_s,
                             prefix_len=prefix_len, router=router)  # fmt: skip
    assert template.fill(router, yiaddr, lease_s, prefix_len, router) == full
