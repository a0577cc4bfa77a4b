"""The armed PBUs of the kernel relay (pmip_agent/dhcp/kernel_relay.py): written in place
into relay.c's mmap'ed ``armed`` array, one slot per MN by a hash of its MAC, the state
last; read back and freed by the daemon. The kernel's side (relay.c, armed_pbu: finding
the PBU by the same hash and sending it) is tested with real traffic in
tests/test_dhcp_kernel_relay.py, test_the_pbu_leaves_with_the_offer_from_the_kernel.

Loading relay.c needs root, clang and the libbpf headers (`make deps`)."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmip_agent.dhcp import kernel_relay as kr

NEEDS = "the kernel relay needs clang and libbpf-dev (make deps installs them)"
SLOT = struct.Struct("=IIIII4sQQ")  # relay.c's struct armed up to its frame
PACKET = bytes(range(40)) + bytes(range(100, 140))  # an IPv6 header and a Mobility Header


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kr.KernelRelay]:
    assert shutil.which("clang") and Path("/usr/include/bpf/bpf_helpers.h").exists(), NEEDS
    relay = kr.KernelRelay(tmp_path_factory.mktemp("kernel-relay"))
    yield relay
    relay.close()


def slot_of(relay: kr.KernelRelay, mac: bytes) -> tuple[tuple[object, ...], bytes]:
    at = kr.armed_slot(mac) * kr._ARMED_SIZE
    head = SLOT.unpack_from(relay._armed, at)
    frame = relay._armed[at + SLOT.size : at + SLOT.size + head[1]]
    return head, frame


def mac(i: int) -> bytes:
    return bytes((2, 0, 0, 0, i >> 8, i & 0xFF))


def sharing_a_slot() -> tuple[bytes, bytes]:
    seen: dict[int, bytes] = {}
    for i in range(1, 70000):
        m = mac(i) if i < 65536 else bytes((6, 1, 2, 3, (i >> 8) & 0xFF, i & 0xFF))
        slot = kr.armed_slot(m)
        if slot in seen:
            return seen[slot], m
        seen[slot] = m
    raise AssertionError("no two MACs share a slot")


def test_macs_in_a_row_get_slots_of_their_own() -> None:
    """MNs attaching one after another (a fleet's MACs, often in a row) do not take each
    other's slot."""
    slots = {kr.armed_slot(mac(i)) for i in range(1, 241)}
    assert len(slots) == 240
    assert all(0 <= s < kr.ARMED_SLOTS for s in slots)


def test_a_pbu_is_armed_in_its_macs_slot(relay: kr.KernelRelay) -> None:
    m = mac(7)
    relay.arm(m, PACKET, hoa_at=60, uplink_if=3)
    (state, length, hoa_at, csum_at, uplink, hoa, at_ns, owner), frame = slot_of(relay, m)
    assert (state, length, hoa_at, csum_at, uplink) == (kr.ARMED, 14 + 80, 74, 58, 3)
    assert hoa == bytes(4) and at_ns > 0
    assert owner == kr.mac_key(m)
    assert frame == bytes(12) + b"\x86\xdd" + PACKET


def test_taking_a_pbu_the_kernel_did_not_send_frees_its_slot(relay: kr.KernelRelay) -> None:
    m = mac(8)
    relay.arm(m, PACKET, hoa_at=60, uplink_if=3)
    assert relay.take_armed(m) is None
    assert slot_of(relay, m)[0][0] == 0  # the kernel sends only an ARMED slot
    assert relay.take_armed(m) is None


def test_taking_a_sent_pbu_gives_its_address(relay: kr.KernelRelay) -> None:
    m = mac(9)
    relay.arm(m, PACKET, hoa_at=60, uplink_if=3)
    # What relay.c does as the OFFER passes: state SENT (armed_pbu), the address (uplink_in).
    at = kr.armed_slot(m) * kr._ARMED_SIZE
    relay._armed[at : at + 4] = kr.ARMED_SENT.to_bytes(4, "little")
    relay._armed[at + 20 : at + 24] = bytes((10, 50, 0, 17))
    assert relay.take_armed(m) == bytes((10, 50, 0, 17))
    assert slot_of(relay, m)[0][0] == 0
    assert relay.take_armed(m) is None


def test_an_mn_sharing_a_slot_takes_it_over(relay: kr.KernelRelay) -> None:
    first, second = sharing_a_slot()
    relay.arm(first, PACKET, hoa_at=60, uplink_if=3)
    relay.arm(second, PACKET[:60] + bytes(20), hoa_at=60, uplink_if=4)
    # The first MN's PBU is gone: its OFFER will come up and the daemon sends that PBU.
    assert relay.take_armed(first) is None
    relay.disarm(first)
    (state, _len, _hoa_at, _csum_at, uplink, *_rest, owner), frame = slot_of(relay, second)
    assert (state, uplink, owner) == (kr.ARMED, 4, kr.mac_key(second))
    assert frame.endswith(PACKET[:60] + bytes(20))
    relay.disarm(second)
    assert slot_of(relay, second)[0][0] == 0


def test_revoke_disarms(relay: kr.KernelRelay) -> None:
    m = mac(10)
    relay.arm(m, PACKET, hoa_at=60, uplink_if=3)
    relay.revoke(m)
    assert slot_of(relay, m)[0][0] == 0


def test_a_pbu_too_long_for_its_slot_is_refused(relay: kr.KernelRelay) -> None:
    with pytest.raises(ValueError, match="too long to arm"):
        relay.arm(mac(11), bytes(kr.ARMED_MAX), hoa_at=60, uplink_if=3)
