"""The DHCPv4 codec wrapper: strict checks over scapy's lenient parser (RFC 2131 §2)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest
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
            codec.parse(bytes(data))
            outcomes["ok"] += 1
        except codec.DhcpError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100, outcomes
