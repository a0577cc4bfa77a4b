"""The address-plan filters (plugins/filter/pmip_plan.py) and the restart-keys filter
(plugins/filter/pmip_agent.py).

The filters are plain Python: these tests import them from their files, without Ansible.
The tests at the end load the real inventories with Ansible's own inventory and variable
managers (skipped when Ansible is not installed; `make ansible-venv` installs it).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Read before Ansible is first imported: the project's roles, plugins and filters.
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))


def _load(name: str):
    path = ROOT / "plugins" / "filter" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_test_filter_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


plan_mod = _load("pmip_plan")
agent_mod = _load("pmip_agent")
problems = plan_mod.pmip_plan_problems


def lab_plan() -> dict:
    """Seed Figure 1's plan, as the lab inventory describes it."""
    nodes = [
        {"mn_id": "mn1", "lma": "lma1", "ipv6": False, "ipv4": {"mode": "lma", "pool": "home1"}},
        {
            "mn_id": "mn2",
            "lma": "lma2",
            "ipv6": True,
            "ipv4": {"mode": "static", "address": "10.200.0.5/24", "default_router": "10.200.0.1"},
        },
        {
            "mn_id": "mn3",
            "lma": "lma1",
            "ipv6": False,
            "ipv4": {"mode": "dhcp-server", "prefix": "10.150.0.0/24"},
        },
    ]
    return {
        "lmas": {
            "lma1": {
                "lmaa": "2001:db8:12::2",
                "ipv4_lmaa": "198.18.1.2",
                "ipv4_address": "10.1.0.2",
                "udp_port": 5436,
                "ipv4_pools": [{"name": "home1", "prefix": "10.100.0.0/24"}],
                "hnp_pool": None,
                "dhcp_server_pools": ["10.150.0.0/24"],
                "allowed_mags": ["2001:db8:1::2", "2001:db8:2::2", "198.18.2.2"],
                "mobile_nodes": [nodes[0], nodes[2]],
            },
            "lma2": {
                "lmaa": "2001:db8:3::2",
                "ipv4_lmaa": "198.18.3.2",
                "ipv4_address": "198.18.3.2",
                "udp_port": 5436,
                "ipv4_pools": [{"name": "home2", "prefix": "10.201.0.0/24"}],
                "hnp_pool": {"prefix": "2001:db8:200::/48", "length": 64},
                "dhcp_server_pools": [],
                "allowed_mags": ["2001:db8:1::2", "2001:db8:2::2", "198.18.2.2"],
                "mobile_nodes": [nodes[1]],
            },
        },
        "mags": {
            "mag1": {
                "proxy_coa": "2001:db8:1::2",
                "ipv4_proxy_coa": None,
                "lmas": [
                    {
                        "name": "lma1",
                        "lmaa": "2001:db8:12::2",
                        "ipv4_lmaa": "198.18.1.2",
                        "transport": "ipv6",
                    },
                    {
                        "name": "lma2",
                        "lmaa": "2001:db8:3::2",
                        "ipv4_lmaa": "198.18.3.2",
                        "transport": "ipv6",
                    },
                ],
                "dhcp": {"mode": "server", "servers": []},
                "mobile_nodes": nodes[:2],
            },
            "mag2": {
                "proxy_coa": "2001:db8:2::2",
                "ipv4_proxy_coa": "10.2.0.2",
                "lmas": [
                    {
                        "name": "lma1",
                        "lmaa": "2001:db8:12::2",
                        "ipv4_lmaa": "198.18.1.2",
                        "transport": "ipv4",
                    },
                    {
                        "name": "lma2",
                        "lmaa": "2001:db8:3::2",
                        "ipv4_lmaa": "198.18.3.2",
                        "transport": "ipv4",
                    },
                ],
                "dhcp": {"mode": "relay", "servers": ["192.0.2.66"]},
                "mobile_nodes": nodes,
            },
        },
        "nats": {
            "nat1": {
                "public_addresses": ["198.18.1.2"],
                "dnat": [
                    {
                        "proto": "udp",
                        "ports": [5436, 5437],
                        "address": "198.18.1.2",
                        "to": "10.1.0.2",
                    }
                ],
            },
            "nat2": {"public_addresses": ["198.18.2.2"], "dnat": []},
        },
        "dhcp_servers": {
            "kea": {
                "addresses": ["192.0.2.66"],
                "subnets": [{"subnet": "10.150.0.0/24", "pools": ["10.150.0.100 - 10.150.0.199"]}],
            }
        },
    }


def checks(found: list[str]) -> list[str]:
    return sorted({p.split(":", 1)[0] for p in found})


def test_figure1_plan_is_consistent():
    assert problems(lab_plan()) == []


def test_lma_pools_overlapping_across_lmas():
    plan = lab_plan()
    plan["lmas"]["lma2"]["ipv4_pools"].append({"name": "extra", "prefix": "10.100.0.128/25"})
    found = problems(plan)
    assert checks(found) == ["lma-pools"]
    assert "10.100.0.128/25 overlaps pool home1 10.100.0.0/24 of lma1" in found[0]


def test_lma_pool_overlapping_a_dhcp_server_subnet_of_another_host():
    plan = lab_plan()
    # lma2 does not list 10.150/24 itself: only Kea's subnet reveals the clash (seed §6).
    plan["lmas"]["lma2"]["ipv4_pools"] = [{"name": "home2", "prefix": "10.150.0.0/23"}]
    found = problems(plan)
    assert checks(found) == ["dhcp-pools"]
    assert any("kea subnet" in p for p in found)
    assert any("lma1 dhcp_server_pools" in p for p in found)


def test_kea_pool_outside_its_subnet():
    plan = lab_plan()
    plan["dhcp_servers"]["kea"]["subnets"][0]["pools"] = ["10.151.0.1 - 10.151.0.9"]
    assert checks(problems(plan)) == ["dhcp-pools"]


def test_hnp_aggregates_overlap():
    plan = lab_plan()
    plan["lmas"]["lma1"]["hnp_pool"] = {"prefix": "2001:db8:200:8000::/49"}
    assert checks(problems(plan)) == ["hnp-pools"]


def test_duplicate_lmaa_and_ipv4_lmaa():
    plan = lab_plan()
    plan["lmas"]["lma2"]["lmaa"] = "2001:db8:12::2"
    found = problems(plan)
    assert "lma-addresses" in checks(found)
    assert any("lmaa 2001:db8:12::2 is also lma1's" in p for p in found)


def test_ipv4_lmaa_changed_on_the_lma_but_not_on_the_nat():
    """The addressing-change case done halfway: LMA1's IPv4-LMAA (NAT1's public address)
    moved, NAT1 still publishes the old one."""
    plan = lab_plan()
    plan["lmas"]["lma1"]["ipv4_lmaa"] = "198.18.1.3"
    for peers in (m["lmas"] for m in plan["mags"].values()):
        peers[0]["ipv4_lmaa"] = "198.18.1.3"
    found = problems(plan)
    assert checks(found) == ["nat"]
    assert any("no NAT forwards udp/5436 of 198.18.1.3" in p for p in found)
    assert any("whose IPv4-LMAA is 198.18.1.3" in p for p in found)


def test_addressing_change_done_everywhere_is_consistent():
    plan = lab_plan()
    plan["lmas"]["lma1"]["ipv4_lmaa"] = "198.18.1.3"
    for peers in (m["lmas"] for m in plan["mags"].values()):
        peers[0]["ipv4_lmaa"] = "198.18.1.3"
    plan["nats"]["nat1"]["public_addresses"] = ["198.18.1.3"]
    plan["nats"]["nat1"]["dnat"][0]["address"] = "198.18.1.3"
    plan["nats"]["nat2"]["public_addresses"] = ["198.18.2.3"]
    for lma in plan["lmas"].values():
        lma["allowed_mags"][2] = "198.18.2.3"
    plan["lmas"]["lma2"]["ipv4_pools"][0]["prefix"] = "10.202.0.0/24"
    assert problems(plan) == []


def test_nat_forwarding_to_the_wrong_host():
    plan = lab_plan()
    plan["nats"]["nat1"]["dnat"][0]["to"] = "10.1.0.9"
    found = problems(plan)
    assert checks(found) == ["nat"]
    assert any("10.1.0.9, which is no LMA's own IPv4 address" in p for p in found)


def test_dnat_on_an_address_the_nat_does_not_have():
    plan = lab_plan()
    plan["nats"]["nat1"]["dnat"][0]["address"] = "198.18.9.9"
    assert "nat" in checks(problems(plan))


def test_duplicate_nat_public_address():
    plan = lab_plan()
    plan["nats"]["nat2"]["public_addresses"] = ["198.18.1.2"]
    found = problems(plan)
    assert any("public address 198.18.1.2 is also nat1's" in p for p in found)


def test_mag_peer_with_a_stale_ipv4_lmaa():
    plan = lab_plan()
    plan["mags"]["mag2"]["lmas"][1]["ipv4_lmaa"] = "198.18.3.9"
    found = problems(plan)
    assert checks(found) == ["mag-peers"]
    assert "mag2" in found[0] and "198.18.3.9" in found[0]


def test_mag_not_admitted_by_its_lma():
    plan = lab_plan()
    plan["lmas"]["lma2"]["allowed_mags"] = ["2001:db8:1::2"]
    found = problems(plan)
    assert checks(found) == ["mag-peers"]
    assert "mag2" in found[0]


def test_ipv4_mag_needs_its_source_admitted():
    """Over IPv4 the LMA checks the PBU's real source too (NAT2's public address here)."""
    plan = lab_plan()
    plan["lmas"]["lma2"]["allowed_mags"] = ["2001:db8:1::2", "2001:db8:2::2"]
    found = problems(plan)
    assert checks(found) == ["mag-peers"]
    assert "admits no IPv4 source" in found[0] and "mag2" in found[0]


def test_ipv4_allowed_mag_means_ipv4_mapped():
    plan = lab_plan()
    plan["lmas"]["lma1"]["allowed_mags"] = ["2001:db8:1::2", "203.0.113.7", "198.18.2.2"]
    plan["lmas"]["lma2"]["allowed_mags"] = None  # admits any MAG
    plan["mags"]["mag2"]["proxy_coa"] = "::ffff:203.0.113.7"
    assert "mag-peers" not in checks(problems(plan))
    plan["lmas"]["lma1"]["allowed_mags"] = ["2001:db8:1::2", "203.0.113.8", "198.18.2.2"]
    found = problems(plan)
    assert any("::ffff:203.0.113.7 is not in its allowed_mags" in p for p in found)


def test_unknown_lma_peer():
    plan = lab_plan()
    plan["mags"]["mag1"]["lmas"].append({"name": "lma9", "lmaa": "2001:db8:9::1"})
    assert checks(problems(plan)) == ["mag-peers"]


def test_mobile_node_missing_on_its_anchor():
    plan = lab_plan()
    plan["lmas"]["lma2"]["mobile_nodes"] = []
    found = problems(plan)
    assert checks(found) == ["mobile-nodes"]
    assert any("mn2 is anchored at lma2, which has no profile" in p for p in found)


def test_mobile_node_ipv4_service_disagrees():
    plan = lab_plan()
    plan["mags"]["mag1"]["mobile_nodes"] = copy.deepcopy(plan["mags"]["mag1"]["mobile_nodes"])
    plan["mags"]["mag1"]["mobile_nodes"][1]["ipv4"]["address"] = "10.200.0.6/24"
    found = problems(plan)
    assert any("mn2: ipv4.address" in p for p in found)


def test_static_home_address_inside_a_pool_of_another_lma():
    plan = lab_plan()
    plan["lmas"]["lma2"]["mobile_nodes"][0]["ipv4"]["address"] = "10.100.0.7/24"
    found = problems(plan)
    assert any("static home address 10.100.0.7 is inside pool home1" in p for p in found)


def test_dhcp_server_node_without_relay_or_server():
    plan = lab_plan()
    plan["mags"]["mag2"]["dhcp"]["servers"] = ["192.0.2.99"]
    found = problems(plan)
    assert any("none of which is a DHCP server host's address" in p for p in found)
    plan["mags"]["mag2"]["dhcp"]["mode"] = "server"
    assert any("needs dhcp mode relay" in p for p in problems(plan))


def test_dhcp_server_prefix_outside_the_lma():
    plan = lab_plan()
    plan["lmas"]["lma1"]["dhcp_server_pools"] = ["10.160.0.0/24"]
    found = problems(plan)
    assert any("is not inside this LMA's dhcp_server_pools" in p for p in found)


def test_syntax_errors_are_problems_not_exceptions():
    plan = lab_plan()
    plan["lmas"]["lma1"]["ipv4_pools"][0]["prefix"] = "10.100.0.1/24"  # host bits set
    plan["dhcp_servers"]["kea"]["subnets"][0]["pools"] = ["not a range"]
    assert checks(problems(plan)) == ["syntax"]


def test_plan_check_raises_with_every_problem():
    plan = lab_plan()
    plan["lmas"]["lma2"]["ipv4_pools"][0]["prefix"] = "10.100.0.0/25"
    plan["nats"]["nat1"]["dnat"][0]["to"] = "10.1.0.9"
    with pytest.raises(plan_mod.PlanError) as exc:
        plan_mod.pmip_plan_check(plan)
    text = str(exc.value)
    assert "problem(s)" in text and "lma-pools" in text and "nat:" in text
    assert plan_mod.pmip_plan_check(lab_plan()) == lab_plan()


def test_mag_peers_take_the_lma_hosts_addresses():
    hostvars = {
        "lma1": {"pmip_lma_lmaa": "2001:db8:12::2", "pmip_lma_ipv4_lmaa": "198.18.1.2"},
        "lma2": {"pmip_lma_lmaa": "2001:db8:3::2"},
    }
    peers = plan_mod.pmip_mag_peers(
        [
            {"name": "lma1", "transport": "ipv4"},
            {"name": "lma2", "transport": "ipv6", "ipv4_lmaa": None},
            {"name": "other", "lmaa": "2001:db8:9::1"},
        ],
        hostvars,
    )
    assert peers == [
        {"name": "lma1", "transport": "ipv4", "lmaa": "2001:db8:12::2", "ipv4_lmaa": "198.18.1.2"},
        {"name": "lma2", "transport": "ipv6", "lmaa": "2001:db8:3::2"},
        {"name": "other", "lmaa": "2001:db8:9::1"},
    ]


def test_fleet_plan_reads_role_variables_with_role_defaults():
    hostvars = {
        "lma1": {
            "pmip_lma_lmaa": "2001:db8:12::2",
            "pmip_lma_ipv4_lmaa": "198.18.1.2",
            "pmip_lma_ipv4_address": "10.1.0.2",
            "pmip_lma_ipv4_pools": [{"name": "home1", "prefix": "10.100.0.0/24"}],
            "pmip_mobile_nodes": [{"mn_id": "a", "lma": "lma1"}, {"mn_id": "b", "lma": "lma2"}],
        },
        "mag1": {
            "pmip_mag_proxy_coa": "2001:db8:1::2",
            "pmip_mag_lmas": [{"name": "lma1"}],
            "pmip_mobile_nodes": [{"mn_id": "a", "lma": "lma1"}],
        },
        "nat1": {
            "nat_public_address": "198.18.1.2",
            "nat_dnat": [{"ports": [5436], "to": "10.1.0.2"}],
        },
    }
    plan = plan_mod.pmip_fleet_plan(hostvars, ["lma1"], ["mag1"], ["nat1"], [])
    assert plan["lmas"]["lma1"]["udp_port"] == 5436
    assert [n["mn_id"] for n in plan["lmas"]["lma1"]["mobile_nodes"]] == ["a"]
    assert plan["mags"]["mag1"]["lmas"][0]["ipv4_lmaa"] == "198.18.1.2"
    assert plan["mags"]["mag1"]["dhcp"]["mode"] == "server"
    assert plan["nats"]["nat1"]["dnat"] == [
        {"proto": "udp", "ports": [5436], "address": "198.18.1.2", "to": "10.1.0.2"}
    ]
    assert problems(plan) == []


# --- restart keys -------------------------------------------------------------------------


def _lma_config(**lma):
    base = {
        "role": "lma",
        "node_name": "lma1",
        "state_dir": "/var/lib/pmip",
        "control_socket": "/run/pmip/lma1.sock",
        "log": {"level": "info", "format": "text"},
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": 9436},
        "timers": {},
        "dataplane": {},
        "lma": {"lmaa": "2001:db8::1", "ipv4_pools": [{"name": "a", "prefix": "10.0.0.0/24"}]},
        "mobile_nodes": [],
    }
    base["lma"].update(lma)
    return base


def test_restart_keys_ignore_what_a_reload_applies():
    keys = agent_mod.pmip_agent_restart_keys
    before = keys(_lma_config())
    assert keys(_lma_config(ipv4_pools=[{"name": "b", "prefix": "10.9.0.0/24"}])) == before
    assert keys(_lma_config(allowed_mags=["2001:db8::2"])) == before
    config = _lma_config()
    config["mobile_nodes"] = [{"mn_id": "x"}]
    config["timers"] = {"max_lifetime_s": 60}
    assert keys(config) == before
    # The IPsec exemptions are reloaded (the agent swaps them in place).
    exempt = _lma_config()
    exempt["ipsec"] = {"exempt_peers": ["198.18.2.3"]}
    assert keys(exempt) == before
    exempt["ipsec"]["ingress_interface"] = "ipsec0"
    assert keys(exempt) != before


def test_restart_keys_catch_sockets_store_and_logging():
    keys = agent_mod.pmip_agent_restart_keys
    before = keys(_lma_config())
    assert keys(_lma_config(lmaa="2001:db8::9")) != before
    assert keys(_lma_config(udp_port=5438)) != before
    assert keys(_lma_config(ipv4_lmaa="10.1.0.2")) != before
    for key, value in (
        ("state_dir", "/srv/pmip"),
        ("log", {"level": "debug", "format": "text"}),
        ("dataplane", {"enabled": False}),
        ("require_ipsec", True),
        ("ipsec", {"ingress_interface": "ipsec0"}),
    ):
        config = _lma_config()
        config[key] = value
        assert keys(config) != before, key


def test_restart_keys_of_a_mag_follow_the_transports_in_use():
    keys = agent_mod.pmip_agent_restart_keys

    def mag(lmas, **extra):
        return {"role": "mag", "mag": {"proxy_coa": "2001:db8::2", "lmas": lmas, **extra}}

    v6 = keys(mag([{"name": "a", "lmaa": "2001:db8::1"}]))
    # Another IPv6 peer, or a new address for the same one: the same sockets.
    assert keys(mag([{"name": "a", "lmaa": "2001:db8::7"}, {"name": "b", "lmaa": "x"}])) == v6
    # An IPv4 peer needs the UDP socket: restart.
    assert keys(mag([{"name": "a", "lmaa": "2001:db8::1", "ipv4_lmaa": "192.0.2.1"}])) != v6
    relay = mag([{"name": "a", "lmaa": "x"}], dhcp={"mode": "relay", "servers": ["192.0.2.9"]})
    assert keys(relay) != v6


# --- the real inventories, through Ansible ------------------------------------------------


def _inventory_plan(inventory: str, extra_vars: dict | None = None):
    import ansible  # noqa: F401  (make test installs it: a missing Ansible fails here)
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecret
    from ansible.template import Templar, trust_as_template
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    password = ROOT / "inventories" / "lab" / "vault-password.txt"
    loader.set_vault_secrets([("lab", VaultSecret(password.read_bytes().strip()))])
    inv = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / inventory)])
    vm = VariableManager(loader=loader, inventory=inv)
    vm._hostvars = HostVars(inventory=inv, variable_manager=vm, loader=loader)  # as a play does
    if extra_vars:
        vm._extra_vars = extra_vars  # what -e sets
    play_vars = vm.get_vars(host=inv.get_host("localhost") if "localhost" in inv.hosts else None)
    templar = Templar(loader=loader, variables=play_vars)
    expr = (
        "{{ hostvars | pmip_fleet_plan(groups.pmip_lmas | default([]), "
        "groups.pmip_mags | default([]), groups.nat_boxes | default([]), "
        "groups.dhcp_servers | default([])) | pmip_plan_problems }}"
    )
    return templar.template(trust_as_template(expr))


@pytest.fixture
def ansible_config(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_lab_inventory_plan_is_consistent(ansible_config):
    assert _inventory_plan("lab") == []


def test_lab_inventory_plan_catches_a_pool_overlap(ansible_config):
    found = _inventory_plan(
        "lab", {"pmip_lma_ipv4_pools": [{"name": "x", "prefix": "10.150.0.0/24"}]}
    )
    # Both LMAs now use 10.150.0.0/24, which is also Kea's subnet and LMA1's DHCP prefix.
    assert "lma-pools" in checks(found) and "dhcp-pools" in checks(found)


def test_example_inventory_plan_is_consistent(ansible_config):
    assert (ROOT / "inventories" / "example" / "hosts.yml").exists()
    assert _inventory_plan("example") == []
