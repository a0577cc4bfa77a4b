"""The frame the MAG's kernel relay completes into its own OFFER (kernel_relay.offer_frame,
relay.c's send_offer): its IPv4 and UDP checksums, computed with the router's address and
the grant's values still zero, agree with scapy's for that frame, whatever the BOOTP
message; the kernel then adds those values to both (tests/test_dhcp_kernel_relay.py has
tshark check the sent OFFER's)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pmip_agent.dhcp import codec
from pmip_agent.dhcp.kernel_relay import OFFER_FIELDS, OFFER_MAX, offer_frame


@given(
    mac=st.binary(min_size=6, max_size=6),
    bootp=st.integers(150, 250).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
)
def test_checksums_agree_with_scapy(mac: bytes, bootp: bytes) -> None:
    frame = offer_frame(mac, bootp)
    seen = Ether(frame)
    assert (seen.dst, seen.src) == ("ff:ff:ff:ff:ff:ff", mac.hex(":"))
    ip, udp = seen[IP], seen[UDP]
    assert (ip.src, ip.dst, udp.sport, udp.dport) == ("0.0.0.0", "255.255.255.255", 67, 68)
    assert bytes(udp.payload) == bootp
    sent = (ip.chksum, udp.chksum)
    del ip.chksum, udp.chksum
    again = Ether(bytes(seen))
    assert sent == (again[IP].chksum, again[UDP].chksum or 0xFFFF)


def test_an_offer_fits_where_the_kernel_keeps_it() -> None:
    """relay.c keeps OFFER_MAX octets of frame, and the values it writes must lie in it."""
    head = bytes((1, 1, 6)) + bytes(233) + codec.MAGIC_COOKIE
    bootp, at = codec.reply_template(codec.padded(head + b"\x35\x01\x01\xff"), codec.OFFER)
    frame = offer_frame(bytes(6), bootp)
    assert len(frame) == 14 + 20 + 8 + 300 <= OFFER_MAX
    assert len(at) == OFFER_FIELDS and all(a >= 240 and a + 4 <= len(bootp) for a in at)
