"""mobile_nodes_file: the CSV profile source for large fleets. Same rules as the YAML
mobile_nodes list, problems named by file, line and column, shared profile objects."""

from __future__ import annotations

import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from pmip_agent.config import ConfigError, load_config
from pmip_agent.core.policy import Ipv4Mode

LMA_HEAD = """\
role: lma
node_name: lma1
lma:
  lmaa: 2001:db8:1::1
  hnp_pool: {prefix: 2001:db8:100::/48}
  ipv4_pools:
    - {name: home, prefix: 10.10.0.0/16}
    - {name: corp, prefix: 10.11.0.0/24}
  dhcp_server_pools: [10.20.0.0/16]
"""

MAG_HEAD = """\
role: mag
node_name: mag1
mag:
  proxy_coa: 2001:db8:2::1
  lmas: [{name: lma1, lmaa: 2001:db8:1::1}]
"""


def write(tmp: Path, csv: str, head: str = LMA_HEAD, extra: str = "") -> Path:
    (tmp / "mns.csv").write_text(csv)
    cfg = tmp / "agent.yaml"
    cfg.write_text(head + "mobile_nodes_file: mns.csv\n" + extra)
    return cfg


def problems(cfg: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    return [str(p) for p in info.value.problems]


def test_every_mode_and_shared_profiles(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "# the fleet\n"
        "mn_id, ipv6, ipv4.mode, ipv4.address, ipv4.default_router, ipv4.pool, ipv4.prefix,"
        " link_layer_ids\n"
        "\n"
        "a@x,false,lma,,,corp,,\n"
        "b@x,false,lma,,,corp,,\n"
        "c@x,true,static,10.9.0.5/24,10.9.0.1,,,02:00:00:00:00:01 02:00:00:00:00:02\n"
        "d@x,false,dhcp-server,,10.20.1.1,,10.20.1.0/24,\n"
        "e@x,,,,,,,\n",
        extra="mobile_nodes: [{mn_id: y@x, ipv6: true}]\n",
    )
    config = load_config(cfg)
    assert config.summary() == "lma lma1, 6 mobile nodes"
    profiles = config.profiles()
    assert set(profiles) == {b"a@x", b"b@x", b"c@x", b"d@x", b"e@x", b"y@x"}
    a, b, c, d, e = (profiles[m] for m in (b"a@x", b"b@x", b"c@x", b"d@x", b"e@x"))
    assert a is b  # one object per distinct policy
    assert (a.ipv4_mode, a.ipv4_pool, a.ipv6) == (Ipv4Mode.LMA, "corp", False)
    assert (c.ipv4_mode, c.ipv4_hoa, c.ipv4_prefix_len) == (
        Ipv4Mode.STATIC,
        IPv4Address("10.9.0.5"),
        24,
    )
    assert c.ipv4_default_router == IPv4Address("10.9.0.1")
    assert c.link_layer_ids == (bytes.fromhex("020000000001"), bytes.fromhex("020000000002"))
    assert (d.ipv4_mode, d.dhcp_prefix) == (Ipv4Mode.DHCP_SERVER, IPv4Network("10.20.1.0/24"))
    assert (e.ipv4_mode, e.ipv6) == (Ipv4Mode.NONE, True)  # empty cells: YAML defaults
    assert profiles[b"y@x"].mn_id == b"y@x"


def test_policy_problems_name_file_line_and_column(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "mn_id,ipv6,ipv4.mode,ipv4.pool,ipv4.address\n"
        "a@x,false,lma,nowhere,\n"
        "b@x,maybe,lma,,\n"
        "c@x,false,static,,10.10.0.9/24\n"
        "d@x,false,none,,\n",
    )
    found = problems(cfg)
    text = "\n".join(found)
    assert f"{tmp_path}/mns.csv:2: ipv4.pool: no pool named 'nowhere'" in text
    assert f"{tmp_path}/mns.csv:3: ipv6:" in text
    assert f"{tmp_path}/mns.csv:4: ipv4.address: 10.10.0.9 is inside 10.10.0.0/16" in text
    assert f"{tmp_path}/mns.csv:5: ipv6: false while ipv4.mode is none" in text
    assert len(found) == 4


def test_duplicates_within_the_file_and_with_the_yaml_list(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "mn_id,ipv6,ipv4.mode,ipv4.address,link_layer_ids\n"
        "a@x,true,,,\n"
        "a@x,true,,,\n"
        "y@x,true,,,\n"
        "s1@x,false,static,10.9.0.5/24,02:00:00:00:00:01\n"
        "s2@x,false,static,10.9.0.5/24,\n"
        "m@x,true,,,02:00:00:00:00:01\n",
        extra="mobile_nodes: [{mn_id: y@x, ipv6: true}]\n",
    )
    text = "\n".join(problems(cfg))
    assert "mns.csv:3: mn_id: duplicate mn_id 'a@x' (also in an earlier line)" in text
    assert "mns.csv:4: mn_id: duplicate mn_id 'y@x' (also in mobile_nodes)" in text
    assert "mns.csv:6: ipv4.address: duplicate static address '10.9.0.5' (line 5)" in text
    assert "mns.csv:7: link_layer_ids: duplicate link-layer id '02:00:00:00:00:01' (line 5)" in (
        text
    )


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("mn_id,ipv6,color\na@x,true,red\n", "mns.csv:1: color: unknown column"),
        ("ipv6\ntrue\n", "mns.csv:1: mn_id: required column missing"),
        ("mn_id,ipv6\na@x,true,extra\n", "mns.csv:2: (row): 3 cells where the header has 2"),
        ("mn_id,ipv6\nhas space@x,true\n", "mns.csv:2: mn_id: "),
        ("mn_id,ipv6\n" + "x" * 255 + ",true\n", "mns.csv:2: mn_id: must be 1 to 254 bytes"),
        ("mn_id\n\x00@x\n", "mns.csv:2: mn_id: "),
    ],
)
def test_format_problems(tmp_path: Path, csv: str, expected: str) -> None:
    assert any(expected in p for p in problems(write(tmp_path, csv)))


def test_missing_file_and_a_cap_on_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(LMA_HEAD + "mobile_nodes_file: /nonexistent/mns.csv\n")
    assert problems(cfg) == [
        "/nonexistent/mns.csv: cannot read mobile_nodes_file: No such file or directory"
    ]
    many = "mn_id,ipv4.mode\n" + "".join(f"m{i}@x,bogus{i}\nm{i}@x,none\n" for i in range(100))
    found = problems(write(tmp_path, many))
    assert len(found) == 51
    assert found[-1].endswith("more than 50 problems; stopped")


def test_an_empty_file_is_no_nodes(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing yet\n")).summary() == "lma lma1, 0 mobile nodes"


def test_mag_rules_and_access_interfaces(tmp_path: Path) -> None:
    head = MAG_HEAD + "  access_interfaces: [{name: acc0, mn_id: b@x}, {name: acc1, mn_id: z@x}]\n"
    csv = "mn_id,lma,ipv4.mode,ipv4.prefix\na@x,lma9,,\nb@x,,dhcp-server,10.20.1.0/24\n"
    text = "\n".join(problems(write(tmp_path, csv, head=head)))
    assert "mns.csv:2: lma: no LMA named 'lma9'" in text
    assert "mns.csv:3: ipv4.mode: dhcp-server needs mag.dhcp.mode relay" in text
    ok = write(tmp_path, "mn_id,lma\nb@x,lma1\nz@x,\n", head=head)
    settings = load_config(ok).mag_settings()
    assert set(settings.profiles) == {b"b@x", b"z@x"}
    missing = write(tmp_path, "mn_id\nb@x\n", head=head)
    assert problems(missing) == [
        "mag.access_interfaces[1].mn_id: 'z@x' is not in mobile_nodes or mobile_nodes_file"
    ]


def test_check_command_exit_status(tmp_path: Path) -> None:
    cfg = write(tmp_path, "mn_id,ipv4.mode\na@x,lma\nb@x,nope\n")
    run = subprocess.run(
        [sys.executable, "-m", "pmip_agent.cli", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "mns.csv:3: ipv4.mode:" in run.stderr
    (tmp_path / "mns.csv").write_text("mn_id,ipv4.mode,ipv6\na@x,lma,false\n")
    run = subprocess.run(
        [sys.executable, "-m", "pmip_agent.cli", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert (run.returncode, run.stdout.strip()) == (0, "OK: lma lma1, 1 mobile node")


def test_a_hundred_thousand_nodes_load_fast(tmp_path: Path) -> None:
    rows = "".join(
        f"mn{i:07d}@fleet.example.net,false,lma,{('home', 'corp')[i % 2]}\n" for i in range(100_000)
    )
    cfg = write(tmp_path, "mn_id,ipv6,ipv4.mode,ipv4.pool\n" + rows)
    t = time.perf_counter()
    config = load_config(cfg)
    elapsed = time.perf_counter() - t
    profiles = config.profiles()
    assert len(profiles) == 100_000
    assert len({id(p) for p in profiles.values()}) == 2
    # A loose bound on a shared machine (measured about 0.3 s idle): the YAML list of the
    # same nodes takes about 30 s.
    assert elapsed < 15, elapsed


def test_the_example_file(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    text = (examples / "lma.yaml").read_text()
    assert "# mobile_nodes_file: mobile-nodes.csv\n" in text
    (tmp_path / "mobile-nodes.csv").write_text((examples / "mobile-nodes.csv").read_text())
    cfg = tmp_path / "lma.yaml"
    cfg.write_text(text.replace("# mobile_nodes_file:", "mobile_nodes_file:"))
    config = load_config(cfg)
    assert config.summary() == "lma lma1, 10 mobile nodes"
    assert {p.ipv4_mode for p in config.profiles().values()} == set(Ipv4Mode)
