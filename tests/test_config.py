"""The YAML configuration: the examples validate, every class of mistake is a ConfigError
naming the field path, and the engine values built from a valid file are right."""

from __future__ import annotations

import copy
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from pmip_agent.config import (
    DEFAULT_SOCKET_DIR,
    AgentConfig,
    ConfigError,
    load_config,
    parse_config,
    parse_yaml,
)
from pmip_agent.core.policy import Ipv4Mode, LmaSettings, MagSettings
from pmip_agent.core.pools import PoolSet, PrefixPool
from pmip_agent.wire.constants import WireProfile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LMA_YAML = EXAMPLES / "lma.yaml"
MAG_YAML = EXAMPLES / "mag.yaml"

Data = dict[str, Any]


def example(name: str) -> Data:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(data, dict)
    return data


def minimal_lma(**extra: Any) -> Data:
    data: Data = {
        "role": "lma",
        "node_name": "lma1",
        "lma": {"lmaa": "2001:db8:1::1", "hnp_pool": {"prefix": "2001:db8:100::/48"}},
    }
    data.update(extra)
    return data


def minimal_mag(**extra: Any) -> Data:
    data: Data = {
        "role": "mag",
        "node_name": "mag1",
        "mag": {
            "proxy_coa": "2001:db8:2::1",
            "lmas": [{"name": "lma1", "lmaa": "2001:db8:1::1"}],
        },
    }
    data.update(extra)
    return data


def errors_of(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    # Every line is `<path>: <reason>`.
    for line in text.splitlines():
        path, sep, reason = line.partition(": ")
        assert sep and path and reason, line
    return text


def mutated(name: str, change: Callable[[Data], None]) -> Data:
    data = copy.deepcopy(example(name))
    change(data)
    return data


def yaml_errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "test.yaml")
    return str(info.value)


def replaced(path: Path, old: str, new: str) -> str:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {path.name}"
    return text.replace(old, new)


# --- the examples -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [LMA_YAML, MAG_YAML], ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, AgentConfig)
    assert config.role == path.stem
    modes = {n.ipv4.mode for n in config.mobile_nodes}
    assert modes == set(Ipv4Mode), "the examples show every IPv4 mode"


def test_lma_example_builds_engine_values() -> None:
    config = load_config(LMA_YAML)
    settings = config.lma_settings()
    assert isinstance(settings, LmaSettings)
    assert settings.lmaa == IPv6Address("2001:db8:1::1")
    assert settings.ipv4_lmaa == IPv4Address("10.1.0.1")
    pools = config.pools()
    assert isinstance(pools, PoolSet)
    assert list(pools.pools) == ["home", "corp"]
    assert pools.default is pools.pools["home"]
    assert pools.pools["home"].default_router == IPv4Address("10.10.0.1")
    hnp = config.hnp_pool()
    assert isinstance(hnp, PrefixPool)
    assert hnp.network == IPv6Network("2001:db8:100::/48") and hnp.prefix_len == 64
    assert len(config.profiles()) == 4


def test_mag_example_has_one_lma_over_ipv6_and_one_over_ipv4() -> None:
    config = load_config(MAG_YAML)
    settings = config.mag_settings()
    assert isinstance(settings, MagSettings)
    assert {p.transport for p in settings.lmas.values()} == {"ipv4", "ipv6"}
    assert settings.ipv4_proxy_coa == IPv4Address("198.51.100.2")
    assert settings.profiles == config.profiles()
    assert config.socket_path == DEFAULT_SOCKET_DIR / "mag1.sock"
    assert config.mag is not None and config.mag.dhcp.mode == "relay"


# --- each class of error names its field --------------------------------------------------


def test_bad_ipv6_address() -> None:
    text = errors_of(minimal_lma(lma={"lmaa": "2001:db8::zz"}))
    assert "lma.lmaa: not a valid IPv6 address: '2001:db8::zz'" in text


def test_unknown_key_is_a_typo_with_a_hint() -> None:
    data = minimal_lma()
    data["lma"]["accept_forced_upd"] = False
    text = errors_of(data)
    assert "lma.accept_forced_upd: unknown key" in text
    assert "did you mean 'accept_forced_udp'" in text


def test_unknown_key_in_a_list_item() -> None:
    data = mutated("mag.yaml", lambda d: d["mobile_nodes"][1].update(link_layer_id=[]))
    text = errors_of(data)
    assert "mobile_nodes[1].link_layer_id: unknown key" in text
    assert "did you mean 'link_layer_ids'" in text


def test_overlapping_pools_name_both_prefixes() -> None:
    def change(d: Data) -> None:
        d["lma"]["ipv4_pools"][1]["prefix"] = "10.10.128.0/17"

    text = errors_of(mutated("lma.yaml", change))
    assert "lma.ipv4_pools[1].prefix:" in text
    assert "10.10.128.0/17" in text and "10.10.0.0/16" in text


def test_pool_overlapping_dhcp_server_prefix_names_both() -> None:
    def change(d: Data) -> None:
        d["lma"]["dhcp_server_pools"] = ["10.11.0.0/23"]

    text = errors_of(mutated("lma.yaml", change))
    assert "lma.dhcp_server_pools[0]:" in text
    assert "10.11.0.0/23" in text and "10.11.0.0/24" in text


def test_static_router_outside_the_address_prefix() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][0]["ipv4"]["default_router"] = "10.8.0.1"

    text = errors_of(mutated("lma.yaml", change))
    assert "mobile_nodes[0].ipv4.default_router:" in text
    assert "10.8.0.1" in text and "10.9.0.0/24" in text


def test_static_needs_prefix_notation() -> None:
    node = {"mn_id": "mn1@example.net", "ipv4": {"mode": "static", "address": "10.9.0.5"}}
    text = errors_of(minimal_lma(mobile_nodes=[node]))
    assert "mobile_nodes[0].ipv4.address:" in text and "prefix length" in text


def test_static_address_inside_an_lma_pool() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][0]["ipv4"] = {"mode": "static", "address": "10.11.0.9/24"}

    text = errors_of(mutated("lma.yaml", change))
    assert "mobile_nodes[0].ipv4.address: 10.11.0.9 is inside 10.11.0.0/24" in text


def test_pool_name_that_does_not_exist() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][1]["ipv4"]["pool"] = "hmoe"

    text = errors_of(mutated("lma.yaml", change))
    assert "mobile_nodes[1].ipv4.pool: no pool named 'hmoe'" in text


def test_pool_names_are_not_checked_on_a_mag() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][1]["ipv4"]["pool"] = "anything"

    parse_config(mutated("mag.yaml", change))


def test_transport_ipv4_without_ipv4_lmaa() -> None:
    def change(d: Data) -> None:
        del d["mag"]["lmas"][0]["ipv4_lmaa"]

    text = errors_of(mutated("mag.yaml", change))
    assert "mag.lmas[0].ipv4_lmaa: required when transport is ipv4" in text


def test_ipv4_transport_needs_ipv4_proxy_coa() -> None:
    def change(d: Data) -> None:
        del d["mag"]["ipv4_proxy_coa"]

    text = errors_of(mutated("mag.yaml", change))
    assert "mag.ipv4_proxy_coa: required" in text and "lma1" in text


def test_force_udp_needs_ipv4_transport() -> None:
    data = minimal_mag()
    data["mag"]["lmas"][0]["force_udp"] = True
    assert "mag.lmas[0].force_udp:" in errors_of(data)


def test_unknown_lma_name_on_a_mag() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][0]["lma"] = "lma9"

    assert "mobile_nodes[0].lma: no LMA named 'lma9'" in errors_of(mutated("mag.yaml", change))


def test_access_interface_for_an_unknown_mn() -> None:
    def change(d: Data) -> None:
        d["mag"]["access_interfaces"][1]["mn_id"] = "ghost@example.net"

    text = errors_of(mutated("mag.yaml", change))
    assert "mag.access_interfaces[1].mn_id: 'ghost@example.net' is not in mobile_nodes" in text


def test_dhcp_server_mode_needs_relay_on_a_mag() -> None:
    def change(d: Data) -> None:
        d["mag"]["dhcp"] = {"mode": "server"}

    text = errors_of(mutated("mag.yaml", change))
    assert "mobile_nodes[2].ipv4.mode: dhcp-server needs mag.dhcp.mode relay" in text


def test_dhcp_relay_needs_servers() -> None:
    data = minimal_mag()
    data["mag"]["dhcp"] = {"mode": "relay"}
    assert "mag.dhcp.servers: relay mode needs at least one DHCP server" in errors_of(data)


def test_metrics_on_a_non_loopback_address() -> None:
    text = errors_of(minimal_lma(metrics={"enabled": True, "address": "0.0.0.0"}))
    assert "metrics.address: 0.0.0.0 is not a loopback address" in text


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1"])
def test_metrics_on_loopback(address: str) -> None:
    config = parse_config(minimal_lma(metrics={"enabled": True, "address": address}))
    assert str(config.metrics.address) == address
    assert config.metrics.port == 9436


def test_duplicate_mn_id() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][2]["mn_id"] = "mn1@example.net"

    text = errors_of(mutated("lma.yaml", change))
    assert "mobile_nodes[2].mn_id: duplicate mn_id 'mn1@example.net'" in text
    assert "mobile_nodes[0].mn_id" in text


def test_duplicate_static_address_and_link_layer_id() -> None:
    nodes = [
        {
            "mn_id": f"mn{i}@example.net",
            "link_layer_ids": ["02:00:00:00:00:01"],
            "ipv4": {"mode": "static", "address": f"10.9.0.5/{24 + i}"},
        }
        for i in range(2)
    ]
    text = errors_of(minimal_lma(mobile_nodes=nodes))
    assert "mobile_nodes[1].ipv4.address: duplicate static address '10.9.0.5'" in text
    assert "mobile_nodes[1].link_layer_ids[0]: duplicate link-layer id" in text


def test_mn_id_length_is_bytes_of_utf8() -> None:
    ok = "é" * 127  # 254 bytes
    parse_config(minimal_lma(mobile_nodes=[{"mn_id": ok}]))
    text = errors_of(minimal_lma(mobile_nodes=[{"mn_id": ok + "x"}]))
    assert "mobile_nodes[0].mn_id: must be 1 to 254 bytes of UTF-8, got 255" in text
    assert "mobile_nodes[0].mn_id:" in errors_of(minimal_lma(mobile_nodes=[{"mn_id": ""}]))


def test_role_section_required_and_exclusive() -> None:
    data = minimal_lma()
    data["role"] = "mag"
    text = errors_of(data)
    assert "mag: required when role is mag" in text
    assert "lma: only allowed when role is lma" in text


def test_timer_range_checks() -> None:
    text = errors_of(minimal_lma(timers={"refresh_fraction": 1.5, "max_lifetime_s": 300000}))
    assert "timers.refresh_fraction:" in text and "1.5" in text
    assert "timers.max_lifetime_s:" in text
    text = errors_of(
        minimal_lma(timers={"initial_bindack_timeout_s": 8, "max_bindack_timeout_s": 4})
    )
    assert "timers.max_bindack_timeout_s:" in text


def test_network_with_host_bits_suggests_the_network() -> None:
    data = minimal_lma()
    data["lma"]["ipv4_pools"] = [{"name": "p", "prefix": "10.10.0.1/16"}]
    assert "did you mean 10.10.0.0/16?" in errors_of(data)


def test_every_problem_is_listed() -> None:
    data = minimal_lma(log={"level": "loud"}, metrics={"address": "192.0.2.1"})
    data["lma"]["lmaa"] = "nope"
    lines = errors_of(data).splitlines()
    assert [line.split(":")[0] for line in lines] == ["log.level", "metrics.address", "lma.lmaa"]


def test_ipv6_needs_an_hnp_pool_on_the_lma() -> None:
    data = minimal_lma(mobile_nodes=[{"mn_id": "mn@example.net"}])
    del data["lma"]["hnp_pool"]
    assert "mobile_nodes[0].ipv6: true, but lma.hnp_pool" in errors_of(data)


def test_a_node_without_any_service_is_an_error() -> None:
    data = minimal_lma(mobile_nodes=[{"mn_id": "mn@example.net", "ipv6": False}])
    assert "mobile_nodes[0].ipv6: false while ipv4.mode is none" in errors_of(data)


def test_keys_of_another_ipv4_mode_are_errors() -> None:
    node = {"mn_id": "mn@example.net", "ipv4": {"mode": "lma", "address": "10.0.0.5/24"}}
    text = errors_of(minimal_lma(mobile_nodes=[node]))
    assert "mobile_nodes[0].ipv4.address: only used when mode is static (mode is lma)" in text


def test_dhcp_server_prefix_must_be_owned_by_the_lma() -> None:
    def change(d: Data) -> None:
        d["mobile_nodes"][2]["ipv4"]["prefix"] = "10.30.0.0/24"
        d["mobile_nodes"][2]["ipv4"]["default_router"] = "10.30.0.1"

    text = errors_of(mutated("lma.yaml", change))
    assert "mobile_nodes[2].ipv4.prefix: 10.30.0.0/24 is not inside any of" in text


def test_allowed_mags_null_is_not_any_mag() -> None:
    data = minimal_lma()
    data["lma"]["allowed_mags"] = None
    assert "lma.allowed_mags: empty value" in errors_of(data)


# --- file-level errors --------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(replaced(LMA_YAML, "  level: info ", "  level: info: nested "))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    assert text.startswith(f"{bad}: YAML syntax error")
    lines = bad.read_text().splitlines()
    line = next(i for i, s in enumerate(lines, 1) if "level: info: nested" in s)
    assert f"line {line}, column" in text


def test_field_errors_carry_the_yaml_line() -> None:
    text = replaced(LMA_YAML, "lmaa: 2001:db8:1::1 ", "lmaa: 2001:db8:1::zz")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "2001:db8:1::zz" in s)
    assert f"lma.lmaa: not a valid IPv6 address: '2001:db8:1::zz' (line {line})" in (
        yaml_errors(text)
    )


def test_duplicate_yaml_keys_are_errors() -> None:
    text = "role: lma\nnode_name: a\nnode_name: b\n"
    assert "duplicate key 'node_name' (first at line 2) at line 3" in yaml_errors(text)


def test_yaml_12_scalars() -> None:
    # YAML 1.1 would read `off` as False and 12:00:00:00:00:01 as a base-60 integer.
    text = (
        "role: mag\nnode_name: m\n"
        "mag: {proxy_coa: '2001:db8::2', lmas: [{name: l, lmaa: '2001:db8::1'}],\n"
        "      dhcp: {mode: off}}\n"
        "mobile_nodes: [{mn_id: a@b, link_layer_ids: [12:00:00:00:00:01]}]\n"
    )
    config = parse_yaml(text)
    assert config.mag is not None and config.mag.dhcp.mode == "off"
    assert config.mobile_nodes[0].link_layer_ids == [bytes.fromhex("120000000001")]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml: cannot read: No such file or directory" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "is empty"), ("- a\n", "the top level must be a mapping"), ("42\n", "mapping")],
)
def test_not_a_mapping(text: str, expected: str) -> None:
    assert expected in yaml_errors(text)


def test_config_error_from_a_string() -> None:
    err = ConfigError("role: cannot change from lma to mag")
    assert str(err) == "role: cannot change from lma to mag"
    assert err.problems[0].path == "role"


# --- conversions --------------------------------------------------------------------------


def test_allowed_mags_ipv4_are_mapped() -> None:
    data = minimal_lma()
    data["lma"]["allowed_mags"] = ["2001:db8:2::1", "192.0.2.7"]
    settings = parse_config(data).lma_settings()
    assert settings.allowed_mags == frozenset(
        {IPv6Address("2001:db8:2::1"), IPv6Address("::ffff:192.0.2.7")}
    )
    assert IPv6Address("::ffff:192.0.2.7").ipv4_mapped == IPv4Address("192.0.2.7")


def test_allowed_mags_omitted_is_any_and_empty_is_none() -> None:
    assert parse_config(minimal_lma()).lma_settings().allowed_mags is None
    data = minimal_lma()
    data["lma"]["allowed_mags"] = []
    assert parse_config(data).lma_settings().allowed_mags == frozenset()


def test_link_layer_ids_are_six_bytes() -> None:
    node = {"mn_id": "mn@example.net", "link_layer_ids": ["02:AA:bb:00:00:01", "02-00-00-00-00-02"]}
    profile = parse_config(minimal_lma(mobile_nodes=[node])).profiles()[b"mn@example.net"]
    assert profile.link_layer_ids == (bytes.fromhex("02aabb000001"), bytes.fromhex("020000000002"))
    assert all(len(x) == 6 for x in profile.link_layer_ids)


@pytest.mark.parametrize("mac", ["02:00:00:00:01", "02:00:00:00:00:0g", "01:00:5e:00:00:01"])
def test_bad_link_layer_ids(mac: str) -> None:
    node = {"mn_id": "mn@example.net", "link_layer_ids": [mac]}
    assert "mobile_nodes[0].link_layer_ids[0]:" in errors_of(minimal_lma(mobile_nodes=[node]))


def test_profiles_per_ipv4_mode() -> None:
    profiles = load_config(LMA_YAML).profiles()
    static = profiles[b"mn1@example.net"]
    assert static.ipv4_mode is Ipv4Mode.STATIC
    assert static.ipv4_hoa == IPv4Address("10.9.0.5") and static.ipv4_prefix_len == 24
    assert static.ipv4_default_router == IPv4Address("10.9.0.1")
    assert static.ipv6 and static.link_layer_ids == (bytes.fromhex("020000000001"),)

    lma = profiles[b"mn2@example.net"]
    assert lma.ipv4_mode is Ipv4Mode.LMA and lma.ipv4_pool == "home"
    assert lma.ipv4_hoa is None and lma.dhcp_prefix is None

    dhcp = profiles[b"mn3@example.net"]
    assert dhcp.ipv4_mode is Ipv4Mode.DHCP_SERVER and not dhcp.ipv6
    assert dhcp.dhcp_prefix == IPv4Network("10.20.1.0/24")
    assert dhcp.ipv4_default_router == IPv4Address("10.20.1.1")

    none = profiles[b"mn4@example.net"]
    assert none.ipv4_mode is Ipv4Mode.NONE and none.ipv6 and none.ipv4_hoa is None


def test_ipv4_mode_defaults_to_none_and_pool_to_the_first() -> None:
    data = minimal_lma(mobile_nodes=[{"mn_id": "a@x"}, {"mn_id": "b@x", "ipv4": {"mode": "lma"}}])
    data["lma"]["ipv4_pools"] = [{"name": "p", "prefix": "10.0.0.0/24"}]
    profiles = parse_config(data).profiles()
    assert profiles[b"a@x"].ipv4_mode is Ipv4Mode.NONE
    assert profiles[b"b@x"].ipv4_pool is None  # the engine then uses the default pool


def test_mag_profile_names_its_lma() -> None:
    settings = load_config(MAG_YAML).mag_settings()
    assert settings.profiles[b"mn5@example.net"].lma == "lma2"
    assert settings.profiles[b"mn1@example.net"].lma == "lma1"


def test_timers_reach_the_settings() -> None:
    timers = {"timestamp_window_ms": 500, "max_lifetime_s": 600, "nat_refresh_s": 30}
    lma = parse_config(minimal_lma(timers=timers, wire_profile="draft", timestamps=False))
    settings = lma.lma_settings()
    assert settings.timestamp_window_s == 0.5 and settings.max_lifetime_s == 600
    assert settings.nat_refresh_s == 30 and not settings.timestamps
    assert settings.default_wire_profile is WireProfile.DRAFT

    timers = {"lifetime_s": 120, "max_transmissions": 3, "refresh_fraction": 0.5}
    mag = parse_config(minimal_mag(timers=timers)).mag_settings()
    assert (mag.lifetime_s, mag.max_transmissions, mag.refresh_fraction) == (120, 3, 0.5)
    assert mag.wire_profile is WireProfile.RFC5844 and mag.timestamps


def test_auto_transport_follows_ipv4_lmaa() -> None:
    data = minimal_mag()
    data["mag"]["ipv4_proxy_coa"] = "198.51.100.2"
    data["mag"]["lmas"].append(
        {"name": "lma2", "lmaa": "2001:db8:4::1", "ipv4_lmaa": "192.0.2.4", "force_udp": True}
    )
    lmas = parse_config(data).mag_settings().lmas
    assert lmas["lma1"].transport == "ipv6"
    assert lmas["lma2"].transport == "ipv4" and lmas["lma2"].force_udp


def test_defaults() -> None:
    config = parse_config(minimal_lma())
    assert config.state_dir == Path("/var/lib/pmip")
    assert config.control_socket == Path("/run/pmip/lma1.sock")
    assert (config.log.level, config.log.format) == ("info", "text")
    assert not config.metrics.enabled and config.metrics.port == 9436
    assert config.wire_profile is WireProfile.RFC5844 and config.timestamps
    assert config.lma is not None and config.lma.udp_port == 5436
    assert config.lma.accept_forced_udp
    assert config.pools().default is None and config.hnp_pool() is not None
    t = config.timers
    assert (t.initial_bindack_timeout_s, t.max_bindack_timeout_s, t.max_transmissions) == (
        1.0,
        32,
        6,
    )
    assert (t.retry_after_failure_s, t.refresh_fraction, t.nat_keepalive_fraction) == (
        32,
        0.8,
        0.9,
    )
    assert (t.min_delay_before_bce_delete_s, t.timestamp_window_ms) == (10, 300)
    assert (t.max_lifetime_s, t.lifetime_s, t.nat_refresh_s) == (3600, 3600, 110)


def test_role_mismatched_builders_refuse() -> None:
    config = parse_config(minimal_mag())
    with pytest.raises(RuntimeError):
        config.lma_settings()
    with pytest.raises(RuntimeError):
        parse_config(minimal_lma()).mag_settings()


def test_pools_are_fresh_each_call() -> None:
    config = load_config(LMA_YAML)
    first = config.pools()
    assert first.pools["home"].allocate() is not None
    assert config.pools().pools["home"].used == 0


def test_relative_paths_are_rejected() -> None:
    text = errors_of(minimal_lma(state_dir="var/lib/pmip", control_socket="x.sock"))
    assert "state_dir: 'var/lib/pmip' must be an absolute path" in text
    assert "control_socket:" in text


def test_every_field_is_documented() -> None:
    from pydantic import BaseModel

    import pmip_agent.config as config_module

    models = [
        obj
        for obj in vars(config_module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == "pmip_agent.config"
    ]
    assert len(models) >= 12
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_duplicate_message_survives_braces_in_values() -> None:
    nodes = [{"mn_id": "a{0}{x}@example.net"}, {"mn_id": "a{0}{x}@example.net"}]
    text = errors_of(minimal_lma(mobile_nodes=nodes))
    assert "duplicate mn_id 'a{0}{x}@example.net' (also at mobile_nodes[0].mn_id)" in text


def test_require_ipsec_defaults_and_checks() -> None:
    assert not parse_config(minimal_lma()).require_ipsec
    config = parse_config(minimal_mag(require_ipsec=True, ipsec={"ingress_interface": "ipsec0"}))
    assert config.require_ipsec and config.ipsec.ingress_interface == "ipsec0"
    assert str(config.ipsec.vici_socket) == "/var/run/charon.vici"
    text = errors_of(minimal_lma(ipsec={"vici_socket": "charon.vici", "poll_interval_s": 0}))
    assert "ipsec.vici_socket:" in text and "ipsec.poll_interval_s:" in text
