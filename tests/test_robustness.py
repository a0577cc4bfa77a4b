"""Robustness of the real daemons (issue 7, without IPsec): authorization reject paths,
overlapping pools, signalling loss, LMA kill -9 under load, NAT rebinding, fuzzing, and
MAG restart.

Every test builds its own namespaces (this run's prefix, removed even on failure), starts
the real ``pmip-agent`` daemons and looks at them the way an operator would: PBA statuses
on the wire, ``pmipctl`` state, metrics and logs. Crafted PBUs come from a namespace of
their own through a raw IPv6 socket of protocol 135 (IPV6_CHECKSUM=4) or UDP 5436.
Assertions are on outcomes, with generous timeouts: the machines are small and shared.
The long versions are in ``bench/fuzz_daemons.py`` and ``bench/loss_and_restart.py``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_lab import AGENT, LMA_V4, LMAA, MN_ID, NAT_OUTSIDE, PROXY_COA
from netns import Lab, wait_for
from robust_lab import (
    LOAD_MAGS,
    MAG2,
    MAG2_V4,
    ROGUE,
    ROGUE_V4,
    DaemonFuzzer,
    MhClient,
    RegistrationLoad,
    RobustTopology,
    Sniffer,
    UdpClient,
    conntrack_text,
    daemon_drops,
    daemon_pid,
    dedicated_mns,
    fuzz_state,
    fuzz_state_problems,
    fuzz_topology,
    load_topology,
    log_problems,
    loss_problems,
    loss_run,
    make_pbu,
    nat_rebind,
    pba_hoa,
    pool_accounting,
    vm_rss_kb,
    wait_rows,
)

from pmip_agent.wire import (
    BindingUpdate,
    Ipv4AddressAck,
    Status,
    Timestamp,
    decode,
)

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab(request.node.name[-4:])
    try:
        yield lab
    finally:
        lab.close()


def _active(rows: list[dict[str, Any]], mn: str = MN_ID) -> dict[str, Any] | None:
    return next((r for r in rows if r["mn_id"] == mn and r["state"] == "active"), None)


def _registered(rows: list[dict[str, Any]], mn: str = MN_ID) -> dict[str, Any] | None:
    return next((r for r in rows if r["mn_id"] == mn and r["registered"]), None)


def _same_binding(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("mn_id", "ipv4_hoa", "ipv6_hnps", "mag", "mag_ipv4", "mag_port", "transport")
    return all(a[k] == b[k] for k in (*keys, "state", "registered_at"))


# --- 1. authorization (seed §6) -------------------------------------------------------------

STATIC_MN, V6ONLY_MN, DHCP_MN, GHOST_MN = (
    "static@example.net",
    "v6only@example.net",
    "dhcp@example.net",
    "ghost@example.net",
)


def _auth_topology(lab: Lab, tmp: Path) -> RobustTopology:
    """MN1 through the real MAG, plus profiles that exist only to be refused, and a MAG
    profile (ghost) the LMA does not know; MAG2 and ROGUE send crafted PBUs."""
    topo = RobustTopology(
        lab,
        tmp,
        "ipv6",
        lma_nodes=[
            {
                "mn_id": STATIC_MN,
                "ipv6": False,
                "ipv4": {"mode": "static", "address": "10.20.0.5/24"},
            },
            {"mn_id": V6ONLY_MN, "ipv6": True},
            {
                "mn_id": DHCP_MN,
                "ipv6": False,
                "ipv4": {"mode": "dhcp-server", "prefix": "10.30.1.0/24"},
            },
        ],
        mag_nodes=[{"mn_id": GHOST_MN, "lma": "lma1", "ipv4": {"mode": "lma"}}],
        mag_access=[{"name": "acc2", "mn_id": GHOST_MN}],
    )
    topo.build(
        lma_extra={
            "allowed_mags": [PROXY_COA, MAG2, MAG2_V4],
            "dhcp_server_pools": ["10.30.0.0/16"],
        }
    )
    topo.add_mag2()
    topo.add_dedicated_links([("acc2", "eth2", "02:00:00:00:00:02")])
    return topo


REJECTS = [
    # (case, MN, source, transport, pbu options, status, IPv4 status in the PBA)
    ("unknown MN", "nobody@example.net", MAG2, "mh", {}, 153, 128),
    ("MAG not allowed", MN_ID, ROGUE, "mh", {}, 154, 128),
    ("MAG not allowed, IPv4", MN_ID, ROGUE_V4, "udp-bare", {}, 154, 128),
    ("static HoA mismatch", STATIC_MN, MAG2, "mh", {"hoa": "10.20.0.9"}, 171, 129),
    (
        "static HoA mismatch, draft",
        STATIC_MN,
        MAG2,
        "mh",
        {"hoa": "10.20.0.9", "draft": True},
        129,
        130,
    ),
    ("IPv4 not allowed", V6ONLY_MN, MAG2, "mh", {"hnp": True}, 170, 129),
    ("IPv4 not allowed, IPv4-only request", V6ONLY_MN, MAG2, "mh", {}, 170, 129),
    ("DHCP HoA outside prefix", DHCP_MN, MAG2, "mh", {"hoa": "10.40.0.7"}, 171, 129),
    ("DHCP HoA in an LMA pool", DHCP_MN, MAG2, "mh", {"hoa": "10.10.0.77"}, 171, 129),
    (
        "DHCP HoA outside prefix, draft",
        DHCP_MN,
        MAG2,
        "mh",
        {"hoa": "10.30.2.1", "draft": True},
        129,
        130,
    ),
    ("DHCP HoA outside prefix, IPv4", DHCP_MN, MAG2_V4, "udp-seed", {"hoa": "10.40.0.7"}, 171, 129),
]


def test_authorization_reject_paths(lab: Lab, tmp_path: Path) -> None:
    """Seed §6: every reject path of the LMA's authorization, driven by crafted PBUs from
    another namespace, over raw IPv6 and IPv4/UDP. Each gets the right PBA status (and
    IPv4 HoA Reply/Ack status), is logged and counted, and leaves no binding and no
    address behind; the bound MN is untouched. The real MAG's MN unknown to the LMA is
    refused with 153 too. Positive controls show the same sender is accepted when right."""
    topo = _auth_topology(lab, tmp_path)
    topo.lma.start()
    topo.mag.start()
    topo.mn_link(True)
    topo.set_mn_links(["eth2"], True)
    bound = wait_rows(topo.lma_rows, _active, 15, "MN1 bound")
    mn1 = _active(bound)
    pools_before = topo.lma.ctl_json("pools")
    mh = MhClient(topo.ns_mag2, LMAA)
    udp_rogue = UdpClient(topo.ns_mag2, (ROGUE_V4, 0), (LMA_V4, 5436))
    udp_mag2 = UdpClient(topo.ns_mag2, (MAG2_V4, 0), (LMA_V4, 5436))
    try:
        for seq, (case, mn, src, transport, opts, status, v4_status) in enumerate(REJECTS, 100):
            pbu = make_pbu(mn, seq, **opts)
            if transport == "mh":
                pba = mh.exchange(pbu, src)
            else:
                client = udp_rogue if src == ROGUE_V4 else udp_mag2
                client.send(pbu, *((MAG2, LMAA) if transport == "udp-seed" else (None, None)))
                pba = client.wait_pba(mn, seq, 5.0)
                assert pba is not None, f"{case}: no PBA"
            got = pba_hoa(pba)
            assert (pba.status, got[0]) == (status, v4_status), f"{case}: {pba}"
            assert pba.lifetime == 0, case
        # Nothing was bound or allocated by any of them, and MN1 is as it was.
        rows = topo.lma_rows()
        assert [r["mn_id"] for r in rows] == [MN_ID], rows
        assert _same_binding(_active(rows), mn1)  # type: ignore[arg-type]
        assert topo.lma.ctl_json("pools") == pools_before
        metrics = topo.lma.metrics()
        counted = Counter(str(s) for *_, s, _ in REJECTS)
        for status, n in counted.items():
            key = f'pmip_pbu_total{{direction="received",status="{status}"}}'
            assert metrics.get(key, 0) >= n, (key, metrics.get(key))
        lines = topo.lma.log_text().splitlines()
        for case, mn, src, transport, _opts, status, _ in REJECTS:
            shown = {"mh": src, "udp-seed": MAG2}.get(transport) or str(
                IPv6Address(f"::ffff:{src}")
            )
            said = f"PBU rejected: mn={mn} from {shown}"
            assert any(said in line and f"status={status} " in line for line in lines), case
        # The real MAG's MN that the LMA does not know: refused, never registered.
        wait_for(
            lambda: "registration rejected: mn=ghost@example.net status=153" in topo.mag.log_text(),
            15,
            what="the MAG told 153 for its unknown MN",
        )
        ghost = next(r for r in topo.mag_rows() if r["mn_id"] == GHOST_MN)
        assert not ghost["registered"] and ghost["ipv4_hoa"] is None
        # Positive controls: the same sender, right this time.
        for seq, (mn, opts, want) in enumerate(
            [
                (STATIC_MN, {"hoa": "10.20.0.5"}, "10.20.0.5"),
                (DHCP_MN, {"hoa": "10.30.1.7"}, "10.30.1.7"),
                (V6ONLY_MN, {"hnp": True, "hoa": None}, None),
            ],
            200,
        ):
            pba = mh.exchange(make_pbu(mn, seq, **opts), MAG2)
            assert pba.status == Status.ACCEPTED, (mn, pba)
            assert pba_hoa(pba)[1] == (IPv4Address(want) if want else None)
        # The draft profile refuses IPv4 inside an accepted PBA when IPv6 is granted.
        pba = mh.exchange(make_pbu(V6ONLY_MN, 300, hnp=True, draft=True), MAG2)
        assert pba.status == Status.ACCEPTED and pba.find(Ipv4AddressAck).status == 129  # type: ignore[union-attr]
        rows = topo.lma_rows()
        assert {r["mn_id"] for r in rows} == {MN_ID, STATIC_MN, DHCP_MN, V6ONLY_MN}
        assert not pool_accounting(rows, topo.lma.ctl_json("pools"))
        assert not log_problems(topo.lma.log_text())
    finally:
        mh.close()
        udp_rogue.close()
        udp_mag2.close()


def test_hijack_with_stale_or_replayed_timestamp_is_refused(lab: Lab, tmp_path: Path) -> None:
    """RFC 5213 §5.5: another (allowed) MAG claims a bound MN by replaying the PBU the
    serving MAG sent (captured on the wire: 156), with a timestamp older than the last
    accepted one (157), or from the future (156), over raw IPv6 and IPv4/UDP; the same
    replays come from the serving MAG's own address too (an attacker on its link); and it tries
    to deregister the MN (ignored: not the serving MAG). The binding stays with the first
    MAG. A fresh PBU from the same MAG is accepted as a handover, which shows the refusals
    were the timestamp's doing (and why issue 7 wants IPsec as well)."""
    topo = RobustTopology(lab, tmp_path, "ipv6")
    topo.build(lma_extra={"allowed_mags": [PROXY_COA, MAG2, MAG2_V4]})
    topo.add_mag2()
    sniffer = Sniffer(topo.ns_lma, "tr0")
    mh = MhClient(topo.ns_mag2, LMAA)
    udp = UdpClient(topo.ns_mag2, (MAG2_V4, 0), (LMA_V4, 5436))
    own = MhClient(topo.ns_mag, LMAA)
    try:
        topo.lma.start()
        topo.mag.start()
        topo.mn_link(True)
        before = _active(wait_rows(topo.lma_rows, _active, 15, "MN1 bound"))
        assert before is not None and before["mag"] == PROXY_COA
        pbus = [
            m
            for src, dst, m in sniffer.mobility_headers()
            if str(src) == PROXY_COA and str(dst) == LMAA and m[2] == 5
        ]
        assert pbus, "no PBU of the serving MAG captured"
        captured = pbus[-1]
        last_ts = decode(captured).find(Timestamp).value  # type: ignore[union-attr]
        time.sleep(0.5)  # the captured timestamp is now also outside the 300 ms window

        def claim(pbu: bytes | BindingUpdate, over: str = "mh") -> Any:
            msg = decode(pbu) if isinstance(pbu, bytes) else pbu
            if over in ("mh", "own"):
                client, src = (mh, MAG2) if over == "mh" else (own, PROXY_COA)
                client.recv_all()  # e.g. the MAG's own PBAs, which `own` sees too
                client.send(pbu, src)
                return client.wait_pba(MN_ID, msg.sequence, 5.0)
            udp.send(msg, MAG2, LMAA)
            return udp.wait_pba(MN_ID, msg.sequence, 5.0)

        one_s = 1 << 16
        stamp = last_ts.to_bytes(8, "big")
        older = captured.replace(stamp, (last_ts - 1).to_bytes(8, "big"))
        assert older != captured
        attempts = [
            ("replayed PBU", captured, "mh", 156),
            ("stale timestamp", make_pbu(MN_ID, 7, timestamp=last_ts - one_s), "mh", 157),
            ("stale by 1/65536 s", make_pbu(MN_ID, 8, timestamp=last_ts - 1), "mh", 157),
            ("future timestamp", make_pbu(MN_ID, 9, ts=time.time() + 10), "mh", 156),
            ("stale timestamp, IPv4", make_pbu(MN_ID, 10, timestamp=last_ts - one_s), "udp", 157),
            ("replayed timestamp, IPv4", make_pbu(MN_ID, 11, timestamp=last_ts), "udp", 156),
            # The same from the serving MAG's own address (an attacker on its link), the
            # second byte for byte the accepted PBU but for an older timestamp.
            ("replayed from the serving MAG", captured, "own", 156),
            ("stale from the serving MAG", older, "own", 157),
        ]
        for case, pbu, over, status in attempts:
            pba = claim(pbu, over)
            assert pba is not None, f"{case}: no PBA"
            assert pba.status == status, (case, pba)
            answered = pba.find(Timestamp)  # §5.5: the LMA's current time, for resync
            assert answered is not None and abs(answered.seconds - time.time()) < 5, case
            now = _active(topo.lma_rows())
            assert now is not None and _same_binding(now, before), (case, now)
        # A de-registration from a MAG that does not serve the MN is ignored (§5.3.5).
        mh.send(make_pbu(MN_ID, 20, lifetime_units=0), MAG2)
        wait_for(
            lambda: daemon_drops(topo.lma.metrics()).get("dereg-from-non-serving-mag", 0) >= 1,
            10,
            what="the de-registration dropped",
        )
        assert _same_binding(_active(topo.lma_rows()), before)  # type: ignore[arg-type]
        assert _registered(topo.mag_rows()) is not None
        log = topo.lma.log_text()
        from_mag2 = sum(1 for a in attempts if a[2] != "own")
        assert log.count(f"PBU rejected: mn={MN_ID} from {MAG2}") == from_mag2, log
        assert log.count(f"PBU rejected: mn={MN_ID} from {PROXY_COA}") == len(attempts) - from_mag2
        assert "binding moved" not in log
        # Control: a fresh timestamp from MAG2 is a handover, and it is accepted.
        pba = claim(make_pbu(MN_ID, 30, hoa=before["ipv4_hoa"]))
        assert pba is not None and pba.status == Status.ACCEPTED
        moved = _active(topo.lma_rows())
        assert (
            moved is not None and moved["mag"] == MAG2 and moved["ipv4_hoa"] == before["ipv4_hoa"]
        )
    finally:
        sniffer.close()
        mh.close()
        udp.close()
        own.close()


def test_an_unlisted_ipv4_sender_cannot_claim_an_allowed_proxy_coa(
    lab: Lab, tmp_path: Path
) -> None:
    """allowed_mags over IPv4 transport: a host whose IPv4 address is on no list sends a
    seed-framed PBU (IPv4/UDP 5436, inner IPv6 header) whose inner source is the serving
    MAG's Proxy-CoA. It must be refused (154) like the same host using RFC 5844's bare MH
    is, and MN1's binding must stay on the MAG's IPv6 transport.

    The inner source is whatever the sender wrote, so over UDP the LMA also requires the
    observed outer IPv4 source (the MAG's address, or its NAT's public one) to be listed,
    as the ::ffff:a.b.c.d that IPv4 entries stand for."""
    topo = RobustTopology(lab, tmp_path, "ipv6")
    topo.build(lma_extra={"allowed_mags": [PROXY_COA, MAG2]})
    topo.add_mag2()
    topo.lma.start()
    topo.mag.start()
    topo.mn_link(True)
    before = _active(wait_rows(topo.lma_rows, _active, 15, "MN1 bound"))
    assert before is not None and before["mag_ipv4"] is None
    udp = UdpClient(topo.ns_mag2, (ROGUE_V4, 0), (LMA_V4, 5436))
    try:
        udp.send(make_pbu(MN_ID, 77, hnp=True), None, None)  # bare MH: ::ffff:ROGUE_V4
        bare = udp.wait_pba(MN_ID, 77, 5.0)
        assert bare is not None and bare.status == 154, bare
        udp.send(make_pbu(MN_ID, 78, hnp=True), PROXY_COA, LMAA)  # seed framing
        seed = udp.wait_pba(MN_ID, 78, 5.0)
        after = _active(topo.lma_rows())
    finally:
        udp.close()
    assert seed is not None and seed.status == 154, (seed, after)
    assert after is not None and _same_binding(after, before), after


# --- 2. overlapping pools -------------------------------------------------------------------


def test_overlapping_pools_refuse_to_start(lab: Lab, tmp_path: Path) -> None:
    """Seed §6: an LMA whose ipv4_pools overlap its dhcp_server_pools does not start:
    `pmip-agent check` and `pmip-agent run` exit 2 naming both prefixes, nothing is
    listening afterwards, and a running LMA refuses such a file on reload."""
    topo = RobustTopology(lab, tmp_path, "ipv6").build(
        lma_extra={"dhcp_server_pools": ["10.10.0.0/16"]}
    )
    cfg = topo.lma.config_path
    check = subprocess.run([AGENT, "check", "--config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 2, check
    assert "10.10.0.0/16" in check.stderr and "10.10.0.0/24" in check.stderr, check.stderr
    assert "overlaps" in check.stderr and "dhcp_server_pools[0]" in check.stderr
    run = lab.run(topo.ns_lma, f"timeout 20 {AGENT} run --config {cfg}", check=False)
    assert run.returncode == 2, run
    assert "10.10.0.0/16" in run.stderr and "10.10.0.0/24" in run.stderr, run.stderr
    assert not topo.lma.socket.exists()
    raw = lab.run(topo.ns_lma, "cat /proc/net/raw6").stdout.splitlines()[1:]
    assert not [line for line in raw if line.split()[1].endswith(":0087")], raw
    # The other way round (a pool inside a DHCP prefix, among several) is caught too.
    data = yaml.safe_load(cfg.read_text())
    data["lma"]["dhcp_server_pools"] = ["10.30.0.0/16", "10.10.0.128/25"]
    cfg.write_text(yaml.safe_dump(data))
    check = subprocess.run([AGENT, "check", "--config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 2 and "10.10.0.128/25" in check.stderr, check
    assert "10.30.0.0/16" not in check.stderr  # the innocent one is not blamed
    # A running LMA given such a file on reload keeps its configuration.
    data["lma"]["dhcp_server_pools"] = ["10.30.0.0/16"]
    cfg.write_text(yaml.safe_dump(data))
    topo.lma.start()
    pid = daemon_pid(topo.lma)
    data["lma"]["dhcp_server_pools"] = ["10.10.0.0/16"]
    cfg.write_text(yaml.safe_dump(data))
    bad = topo.lma.ctl("reload")
    assert bad.returncode == 1 and "10.10.0.0/16" in bad.stderr, bad
    assert daemon_pid(topo.lma) == pid and topo.lma.ctl("status").returncode == 0
    assert "reload refused" in topo.lma.log_text()


# --- 3. signalling loss ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["ipv6", "ipv4"])
def test_every_mn_registers_through_30_percent_signalling_loss(
    lab: Lab, tmp_path: Path, transport: str
) -> None:
    """RFC 5213 §6.9.4: 30 % of the PBUs and of the PBAs between MAG and LMA are dropped
    (nftables numgen, both directions). 50 MNs attach at once on their own access links,
    and every one registers through retransmission with back-off; each gets one HoA, the
    same at the MAG and the LMA, given to no other MN, and the pool counts exactly them."""
    res = loss_run(lab, tmp_path, transport, 50)
    problems = loss_problems(res)
    assert not problems, problems
    c = res["counters"]
    lost = (c["dropped_out"] + c["dropped_in"]) / (c["seen_out"] + c["seen_in"])
    assert 0.15 < lost < 0.45, c  # numgen did drop about 30 %
    assert res["retransmissions"] >= c["dropped_out"] // 2, (res["retransmissions"], c)
    assert not log_problems(res["topo"].lma.log_text())
    assert not log_problems(res["topo"].mag.log_text())


# --- 4. LMA kill -9 under load --------------------------------------------------------------


def test_lma_kill9_under_load_loses_nothing(lab: Lab, tmp_path: Path) -> None:
    """200 MNs register through 8 MAGs, 32 PBUs outstanding at a time; the LMA is killed
    with SIGKILL once half have their PBA, the generator keeps retransmitting into the void,
    then the LMA restarts. Every binding whose PBA came back before the restart is there
    with the same HoA; then every MN finishes registering, and no HoA is held twice."""
    n = 200
    topo, ids = load_topology(lab, tmp_path, n)
    topo.lma.start()
    client = MhClient(topo.ns_mag, LMAA)
    try:
        load = RegistrationLoad(client, ids, LOAD_MAGS, window=32, timeout_s=1.0)
        load.run(stop=lambda g: len(g.granted) >= n // 2, limit_s=120)
        assert len(load.granted) >= n // 2, load.statuses
        time.sleep(0.005)  # the LMA is handling the burst of PBUs just sent
        in_flight = sum(1 for t in load.sent_at if t)
        topo.lma.stop(signal.SIGKILL)
        load.run(limit_s=1.5)  # PBAs the dead LMA sent; PBUs now go nowhere
        acked = dict(load.granted)
        topo.lma.start()
        restored = {r["mn_id"]: r for r in topo.lma_rows()}
        lost = [m.decode() for m in acked if m.decode() not in restored]
        changed = [
            m.decode()
            for m, g in acked.items()
            if m.decode() in restored and restored[m.decode()]["ipv4_hoa"] != str(g.hoa)
        ]
        assert not lost and not changed, (lost, changed)
        assert all(restored[m.decode()]["state"] == "active" for m in acked)
        load.run(limit_s=120)
        assert not load.pending, f"{len(load.pending)} MNs never registered"
        rows = topo.lma_rows()
        by_mn = {r["mn_id"]: r for r in rows}
        assert set(by_mn) == set(ids)
        assert all(by_mn[m.decode()]["ipv4_hoa"] == str(g.hoa) for m, g in load.granted.items())
        assert all(str(g.hoa) == by_mn[m.decode()]["ipv4_hoa"] for m, g in acked.items())
        hoas = [r["ipv4_hoa"] for r in rows]
        assert len(set(hoas)) == n and None not in hoas
        assert not pool_accounting(rows, topo.lma.ctl_json("pools"))
        assert set(load.statuses) == {0}, load.statuses
        assert "restored" in topo.lma.log_text()
        assert in_flight > 0  # the kill did land mid-load
    finally:
        client.close()


# --- 5. NAT rebinding -----------------------------------------------------------------------


def test_nat_rebinding_is_followed_within_one_keepalive(lab: Lab, tmp_path: Path) -> None:
    """Seed §4.3/§4.4: the NAT's masquerade is restarted (table replaced by one mapping to
    ports 20000-20100, conntrack flushed) so the MAG's public port changes. The next
    keepalive PBU reaches the LMA from the new port, and the binding follows it at once:
    no keepalive from the old port after that, the first from the new one is the update,
    its PBA reaches the MAG through the new mapping (no retransmission, no lost binding),
    and the MN stays registered with the same HoA."""
    refresh_s = 2
    keepalive_s = 0.9 * refresh_s
    topo = RobustTopology(lab, tmp_path, "nat").build(
        nat_refresh_s=refresh_s,
        # A PBA later than 1 s would count as a loss below; the lab default is 0.2 s.
        mag_timers={"initial_bindack_timeout_s": 1.0, "max_bindack_timeout_s": 2.0},
    )
    topo.lma.start()
    topo.mag.start()
    topo.mn_link(True)
    before = _active(wait_rows(topo.lma_rows, _active, 15, "MN1 bound through the NAT"))
    assert before is not None and before["nat"] and before["mag_ipv4"] == NAT_OUTSIDE
    old_port = before["mag_port"]
    mag_before = _registered(wait_rows(topo.mag_rows, _registered, 15, "MAG registered"))
    time.sleep(keepalive_s + 0.5)  # steady state: keepalives flowing
    retrans = topo.mag.metrics().get("pmip_pbu_retransmissions_total", 0.0)
    nat_rebind(topo.ns_nat)
    t0 = time.monotonic()

    def moved(rows: list[dict[str, Any]]) -> bool:
        b = _active(rows)
        return b is not None and b["mag_port"] != old_port

    after = _active(wait_rows(topo.lma_rows, moved, 15, "the LMA following the new port"))
    followed_s = time.monotonic() - t0
    assert after is not None and 20000 <= after["mag_port"] <= 20100, after
    assert after["mag_ipv4"] == NAT_OUTSIDE and after["nat"] is True
    assert (
        after["ipv4_hoa"] == before["ipv4_hoa"]
        and after["registered_at"] == before["registered_at"]
    )
    assert followed_s < 2 * keepalive_s + 3, followed_s  # generous; the order check is below
    time.sleep(3 * keepalive_s)  # three more keepalives through the new mapping
    ports = [
        (line, int(port))
        for line in topo.lma.log_text().splitlines()
        if f"mn={MN_ID}" in line and "pmip.lma: binding " in line
        for port in re.findall(rf"via {NAT_OUTSIDE}:(\d+)", line)
    ]
    seq = [p for _, p in ports]
    first_new = seq.index(after["mag_port"])
    assert set(seq[:first_new]) == {old_port} and set(seq[first_new:]) == {after["mag_port"]}
    assert "binding updated" in ports[first_new][0], ports[first_new][0]
    assert len(seq) - first_new >= 2, seq  # keepalives kept coming, all from the new port
    # Their PBAs came back through the new mapping: none was retransmitted, the NAT saw
    # replies on it, and the MAG lost nothing.
    assert topo.mag.metrics().get("pmip_pbu_retransmissions_total", 0.0) == retrans
    mapping = [
        line
        for line in conntrack_text(topo.ns_nat).splitlines()
        if f"dport={after['mag_port']} " in line and "sport=5436" in line
    ]
    assert mapping and "UNREPLIED" not in mapping[0] and "ASSURED" in mapping[0], mapping
    assert "binding lost" not in topo.mag.log_text()
    mag_after = _registered(topo.mag_rows())
    assert mag_after is not None and mag_after["ipv4_hoa"] == mag_before["ipv4_hoa"]  # type: ignore[index]
    assert _active(topo.lma_rows())["mag_port"] == after["mag_port"]  # type: ignore[index]


# --- 6. fuzzing the running daemons ---------------------------------------------------------


def test_fuzzing_running_daemons_slice(lab: Lab, tmp_path: Path) -> None:
    """20k mutated PBUs (raw MH and UDP 5436, both framings) at the LMA, PBAs at the MAG
    (raw MH and UDP) and DHCP messages on the MAG's shared access link. Both daemons
    survive with the same PID and keep answering pmipctl; MN1's binding is untouched on
    both sides, every other binding belongs to a fuzz MN (legitimately registered by a
    mutant that is valid), the pools account for exactly what is bound, nothing escaped a
    handler, and the LMA still answers a valid PBU. The 1M version is
    bench/fuzz_daemons.py."""
    topo = fuzz_topology(lab, tmp_path)
    topo.lma.start()
    topo.mag.start()
    topo.mn_link(True)
    wait_rows(topo.lma_rows, _active, 15, "MN1 bound")
    wait_rows(topo.mag_rows, _registered, 15, "MN1 registered at the MAG")
    before = fuzz_state(topo)
    pids = (daemon_pid(topo.lma), daemon_pid(topo.mag))
    rss = (vm_rss_kb(pids[0]), vm_rss_kb(pids[1]))
    fuzzer = DaemonFuzzer(topo, seed=20_000)
    try:
        stats = fuzzer.run(20_000)
    finally:
        fuzzer.close()
    assert stats.total == 20_000
    assert (daemon_pid(topo.lma), daemon_pid(topo.mag)) == pids
    assert topo.lma.ctl("status").returncode == 0 and topo.mag.ctl("status").returncode == 0
    after = fuzz_state(topo)
    problems = fuzz_state_problems(before, after)
    assert not problems, problems
    assert not log_problems(topo.lma.log_text()), log_problems(topo.lma.log_text())[:5]
    assert not log_problems(topo.mag.log_text()), log_problems(topo.mag.log_text())[:5]
    # The packets were processed, not dropped by the kernel: the daemons counted them.
    lma_m, mag_m = topo.lma.metrics(), topo.mag.metrics()
    lma_seen = sum(daemon_drops(lma_m).values()) + sum(
        v for k, v in lma_m.items() if k.startswith('pmip_pbu_total{direction="received"')
    )
    lma_sent = sum(v for k, v in stats.sent.items() if k.startswith("lma"))
    assert lma_seen >= 0.5 * lma_sent, (lma_seen, lma_sent)
    assert sum(daemon_drops(mag_m).values()) >= 0.3 * (stats.total - lma_sent), mag_m
    assert sum(n for k, n in stats.replies.items() if k.startswith("pba-")) > 100, stats.replies
    # Still serving: a valid PBU gets its answer (after any fuzzed timestamp accepted up
    # to 300 ms ahead of the clock has passed).
    time.sleep(0.5)
    mh = MhClient(topo.ns_mag2, LMAA)
    try:
        pba = mh.exchange(make_pbu("fz04@example.net", 5, hnp=True, hoa=None), MAG2)
        assert pba.status == Status.ACCEPTED, pba
    finally:
        mh.close()
    growth = (vm_rss_kb(pids[0]) - rss[0], vm_rss_kb(pids[1]) - rss[1])
    assert max(growth) < 64 * 1024, growth  # KiB; the bench reports the long-run figure


def test_a_flood_of_rejected_pbus_is_logged_at_a_limited_rate(lab: Lab, tmp_path: Path) -> None:
    """Bad input must not fill the disk: 3000 well-formed PBUs for unknown MNs from an
    allowed MAG are each answered (153) and counted, but logged at a limited rate, as
    malformed messages are (RateLimitedLog), keyed by status: otherwise the 1M-packet
    fuzz bench would leave ~120k WARNING lines behind."""
    topo = RobustTopology(lab, tmp_path, "ipv6")
    topo.build(lma_extra={"allowed_mags": [PROXY_COA, MAG2]})
    topo.add_mag2()
    topo.lma.start()
    mh = MhClient(topo.ns_mag2, LMAA)
    n = 3000
    try:
        for i in range(n):
            mh.send(make_pbu(f"intruder{i}@example.net", i), MAG2)
            if i % 200 == 199:
                time.sleep(0.05)  # paced: every PBU reaches the LMA and is answered
        key = 'pmip_pbu_total{direction="received",status="153"}'
        wait_for(lambda: topo.lma.metrics().get(key, 0) >= n, 30, what=f"{n} rejects counted")
    finally:
        mh.close()
    lines = topo.lma.log_text().count("PBU rejected")
    assert lines <= 200, f"{lines} 'PBU rejected' log lines for {n} rejected PBUs"


# --- 7. MAG restart -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "transport"),
    [(signal.SIGKILL, "ipv4"), (signal.SIGTERM, "ipv6")],
    ids=["kill9-ipv4", "sigterm-ipv6"],
)
def test_mag_restart_reregisters_its_mns_with_the_same_hoas(
    lab: Lab, tmp_path: Path, sig: int, transport: str
) -> None:
    """The MAG keeps its binding update list: after a restart (kill -9, or a clean stop)
    each of its 8 MNs is registered again with the HoA it had, the LMA keeps the same
    bindings (no new allocation: the pool count is unchanged) and nothing is lost."""
    n = 8
    lma_nodes, mag_nodes, access, links = dedicated_mns(n)
    topo = RobustTopology(
        lab, tmp_path, transport, lma_nodes=lma_nodes, mag_nodes=mag_nodes, mag_access=access
    )
    topo.build()
    topo.add_dedicated_links(links)
    topo.lma.start()
    topo.mag.start()
    topo.mn_link(True)
    topo.set_mn_links([eth for _, eth, _ in links], True)
    wanted = {m["mn_id"] for m in mag_nodes} | {MN_ID}

    def all_registered(rows: list[dict[str, Any]]) -> bool:
        return {r["mn_id"] for r in rows if r["registered"]} == wanted

    before = {
        r["mn_id"]: r["ipv4_hoa"] for r in wait_rows(topo.mag_rows, all_registered, 30, "all")
    }
    lma_before = {r["mn_id"]: r for r in topo.lma_rows()}
    pools_before = topo.lma.ctl_json("pools")
    topo.mag.stop(sig)
    topo.mag.start()
    after = {
        r["mn_id"]: r["ipv4_hoa"] for r in wait_rows(topo.mag_rows, all_registered, 30, "again")
    }
    assert after == before
    log = topo.mag.log_text()
    for mn, hoa in before.items():
        assert f"re-registering {mn} with hoa {hoa}" in log, mn
    lma_after = {r["mn_id"]: r for r in topo.lma_rows()}
    assert set(lma_after) == wanted
    for mn, row in lma_after.items():
        assert row["state"] == "active" and row["ipv4_hoa"] == before[mn], row
        assert row["registered_at"] == lma_before[mn]["registered_at"], row  # same binding
    assert topo.lma.ctl_json("pools") == pools_before
