"""The MAG's PBA shapes (pmip_agent/core/templates.py, AckShape) must be invisible: a MAG
that reads PBAs in known shapes from their bytes sends and reports exactly what one that
decodes every PBA does, and a shape only ever matches bytes the strict decoder accepts,
with the same facts."""

from __future__ import annotations

from engine_helpers import (
    HISTORY_MNS,
    MAG1,
    T0,
    events,
    history_profiles,
    make_lma,
    make_mag,
    of,
    random_mag_step,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmip_agent.core.events import Ipv4Granted, MessageDropped, TunnelNeeded
from pmip_agent.core.lma import LmaEngine
from pmip_agent.core.mag import MagEngine, _facts
from pmip_agent.core.policy import Ipv4Mode, MnProfile
from pmip_agent.wire import BindingAck, WireError, WireProfile, decode

SAME_LENGTH = [f"mn-{i:03d}@example.net".encode() for i in range(6)]


def _profiles() -> dict[bytes, MnProfile]:
    profiles = history_profiles()
    for mn in SAME_LENGTH:
        profiles[mn] = MnProfile(mn, Ipv4Mode.LMA, lma="lma1")
    return profiles


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_shaped_reading_changes_nothing(data: st.DataObject) -> None:
    kw = {
        "wire_profile": data.draw(st.sampled_from(list(WireProfile))),
        "timestamps": data.draw(st.booleans()),
        "sequence_start": data.draw(st.sampled_from([0, 65530])),
    }
    pairs = []
    for shaped in (True, False):
        mag = make_mag(_profiles(), **kw)  # type: ignore[arg-type]
        mag.pba_shapes = shaped
        pairs.append((mag, make_lma(_profiles(), timestamp_window_s=1e9)))
    now = T0
    for _step in range(data.draw(st.integers(5, 40))):
        now += data.draw(st.sampled_from([0.001, 1.0, 30.0, 400.0]))
        results = random_mag_step(data, pairs, now, HISTORY_MNS + tuple(SAME_LENGTH))
        assert results[0] == results[1]
        views = [[mag._view(e) for e in mag._bul.values()] for mag, _ in pairs]
        assert views[0] == views[1]
    assert pairs[1][0].pbas_read == 0


def _pba_for(mag: MagEngine, lma: LmaEngine, mn: bytes, now: float) -> bytes:
    """Attach ``mn`` at ``mag`` and hand its PBU to ``lma``: the PBA's bytes."""
    assert mag.attach(mn, now, link_layer_id=b"\x02\0\0\0\0" + mn[5:6])
    [pbu] = mag.datagrams_to_send()
    lma.receive_ipv6(pbu.data, MAG1, now)
    [pba] = lma.datagrams_to_send()
    return pba.data


def test_first_pba_teaches_the_shape_second_checks_it_the_rest_are_read() -> None:
    shaped, full = make_mag(_profiles()), make_mag(_profiles())
    full.pba_shapes = False
    lma = make_lma(_profiles())
    for i, mn in enumerate(SAME_LENGTH):
        pba = _pba_for(shaped, lma, mn, T0 + i)
        assert full.attach(mn, T0 + i, link_layer_id=b"\x02\0\0\0\0" + mn[5:6])
        full.datagrams_to_send()
        shaped.receive_ipv6(pba, lma.settings.lmaa, T0 + i)
        full.receive_ipv6(pba, lma.settings.lmaa, T0 + i)
        got = events(shaped)
        assert got == events(full)
        assert [e.mn_id for e in of(got, Ipv4Granted)] == [mn]
        assert [e.mn_id for e in of(got, TunnelNeeded)] == [mn]
    assert shaped.pbas_read == len(SAME_LENGTH) - 2
    assert shaped._ack_shapes.count == 1 and full._ack_shapes.count == 0
    # The same bytes again: read by the shape, and dropped as the decoded way drops them.
    shaped.receive_ipv6(pba, lma.settings.lmaa, T0 + 9)
    [dropped] = events(shaped)
    assert isinstance(dropped, MessageDropped) and dropped.reason == "pba-unexpected-sequence"


def test_a_shape_matches_only_what_the_decoder_reads_the_same() -> None:
    """Every one-octet change of a PBA in a trusted shape either leaves the shape (and is
    decoded) or is in a masked field, and then the decoder accepts it with the facts the
    shape reads."""
    mag, lma_engine = make_mag(_profiles()), make_lma(_profiles())
    pbas = [_pba_for(mag, lma_engine, mn, T0 + i) for i, mn in enumerate(SAME_LENGTH[:3])]
    for pba in pbas:
        mag.receive_ipv6(pba, lma_engine.settings.lmaa, T0 + 5)
    shape = mag._ack_shapes.find(pbas[2])
    assert shape is not None and shape.trusted
    matched = 0
    for i in range(len(pbas[2])):
        for value in (0x00, 0x01, 0x80, 0xFF, pbas[2][i] ^ 0x10):
            changed = pbas[2][:i] + bytes((value,)) + pbas[2][i + 1 :]
            found = mag._ack_shapes.find(changed)
            if found is None:
                continue
            matched += 1
            msg = decode(changed)  # raises WireError if a shape ever took bad bytes
            assert isinstance(msg, BindingAck)
            assert mag._read(found, changed) == _facts(msg)
    # Sequence, checksum, the MN-ID's 18 octets, the LLID, the timestamp and the address.
    assert matched > 5 * 20


def test_a_reading_the_decoder_disagrees_with_drops_the_shape() -> None:
    mag, lma = make_mag(_profiles()), make_lma(_profiles())
    first = _pba_for(mag, lma, SAME_LENGTH[0], T0)
    mag.receive_ipv6(first, lma.settings.lmaa, T0)
    shape = mag._ack_shapes.find(first)
    assert shape is not None and not shape.trusted
    shape.facts = shape.facts._replace(lifetime=1)  # a reading that would be wrong
    second = _pba_for(mag, lma, SAME_LENGTH[1], T0 + 1)
    mag.receive_ipv6(second, lma.settings.lmaa, T0 + 1)
    assert mag._ack_shapes.find(second) is None and mag._ack_shapes.count == 0
    assert mag.pbas_read == 0
    [entry] = [v for v in mag.entries() if v.mn_id == SAME_LENGTH[1]]
    assert entry.registered and entry.lifetime_s == _facts(decode_ack(second)).lifetime * 4


def decode_ack(mh: bytes) -> BindingAck:
    msg = decode(mh)
    assert isinstance(msg, BindingAck)
    return msg


def test_bad_bytes_in_no_shape_are_still_refused() -> None:
    mag, lma = make_mag(_profiles()), make_lma(_profiles())
    pbas = [_pba_for(mag, lma, mn, T0 + i) for i, mn in enumerate(SAME_LENGTH[:2])]
    for pba in pbas:
        mag.receive_ipv6(pba, lma.settings.lmaa, T0 + 2)
    events(mag)
    truncated = pbas[1][:-8]
    try:
        decode(truncated)
    except WireError as exc:
        reason = exc.reason
    else:
        raise AssertionError("the decoder took a truncated PBA")
    mag.receive_ipv6(truncated, lma.settings.lmaa, T0 + 3)
    [dropped] = events(mag)
    assert isinstance(dropped, MessageDropped) and dropped.reason == reason
