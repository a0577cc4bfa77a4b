"""The MAG's PBU templates (pmip_agent/core/templates.py, PbuTemplate) must be invisible:
byte for byte the PBUs of a MAG that runs every PBU through the option encoders, over
either transport, in either wire profile, with or without timestamps, through first
registrations, refreshes, retransmissions, address reports and de-registrations."""

from __future__ import annotations

from engine_helpers import (
    MN_LMA,
    T0,
    history_profiles,
    make_lma,
    make_mag,
    random_mag_step,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmip_agent.core.policy import Ipv4Mode, MnProfile
from pmip_agent.core.templates import PbuTemplate
from pmip_agent.wire import BindingUpdate, MnIdentifier, WireProfile, decode, encode


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_templated_pbus_are_the_encoders_pbus(data: st.DataObject) -> None:
    transport = data.draw(st.sampled_from(["ipv6", "ipv4"]))
    kw = {
        "transport": transport,
        "force_udp": transport == "ipv4" and data.draw(st.booleans()),
        "wire_profile": data.draw(st.sampled_from(list(WireProfile))),
        "timestamps": data.draw(st.booleans()),
        "sequence_start": data.draw(st.sampled_from([0, 65530])),
    }
    pairs = []
    for templated in (True, False):
        mag = make_mag(history_profiles(), **kw)  # type: ignore[arg-type]
        mag.pbu_templates = templated
        lma = make_lma(history_profiles(), timestamp_window_s=1e9)
        pairs.append((mag, lma))
    now = T0
    for _step in range(data.draw(st.integers(5, 30))):
        now += data.draw(st.sampled_from([0.001, 1.0, 30.0, 400.0]))
        results = random_mag_step(data, pairs, now)
        assert results[0] == results[1]


def test_pbus_of_one_key_come_from_one_checked_template() -> None:
    """New MNs whose PBUs differ only in per-MN values share a key: the first PBU teaches
    the template, the second checks it, and the rest are built from it; all of them are
    the encoders' bytes."""
    same_length = [f"mn-{i:03d}@example.net".encode() for i in range(6)]
    profiles = {mn: MnProfile(mn, Ipv4Mode.LMA, lma="lma1") for mn in same_length}
    templated, full = make_mag(profiles), make_mag(profiles)
    full.pbu_templates = False
    for i, mn in enumerate(same_length):
        for mag in (templated, full):
            mag.attach(mn, T0 + i, link_layer_id=bytes([2, 0, 0, 0, 0, i]))
        assert templated.datagrams_to_send() == full.datagrams_to_send()
    [(template, checked)] = templated._templates.values()
    assert template is not None and checked
    assert full._templates == {}


def _pbu(mn_id: bytes, sequence: int = 7) -> bytes:
    return encode(BindingUpdate(sequence, 100, 0, (MnIdentifier(mn_id),)))


def test_a_template_fills_in_only_values_that_fit() -> None:
    template = PbuTemplate.derive(_pbu(b"mn-1@example.net"))
    assert template is not None
    seq = (9).to_bytes(2, "big")
    assert template.build(seq, b"mn-2@example.net", None, None, None, None) == _pbu(
        b"mn-2@example.net", 9
    )
    assert template.build(seq, b"mn-22@example.net", None, None, None, None) is None
    assert template.build(seq, b"mn-2@example.net", bytes(16), None, None, None) is None
    assert template.build(seq, b"mn-2@example.net", None, b"\x02" * 6, None, None) is None
    assert template.build(seq, b"mn-2@example.net", None, None, bytes(8), None) is None
    assert template.build(seq, b"mn-2@example.net", None, None, None, bytes(4)) is None
    assert PbuTemplate.derive(b"\0" * 12) is None  # no options: nothing to key it by


def test_a_template_the_encoders_disagree_with_is_dropped() -> None:
    """A template is checked against the option encoders the second time its key comes
    up, and a wrong one is never used: the PBU is encoded in full, then and after."""
    mag = make_mag(history_profiles())
    mag.attach(MN_LMA, T0)
    first = mag.datagrams_to_send()[0].data
    [key] = mag._templates
    wrong = PbuTemplate.derive(first)
    assert wrong is not None
    wrong.pieces = (b"\xff", *wrong.pieces[1:])
    mag._templates[key] = (wrong, False)
    same_length = [b"mn-lmb@example.net", b"mn-lmc@example.net"]
    assert all(len(mn) == len(MN_LMA) for mn in same_length)
    for mn in same_length:
        mag.settings.profiles[mn] = MnProfile(mn, Ipv4Mode.LMA, lma="lma1")
    for i, mn in enumerate(same_length):
        mag.attach(mn, T0 + 1 + i)  # the key of MN_LMA's: built, checked, refused; then none
        pbu = decode(mag.datagrams_to_send()[0].data)
        assert isinstance(pbu, BindingUpdate) and pbu.find(MnIdentifier) == MnIdentifier(mn)
        assert mag._templates[key] == (None, True)
