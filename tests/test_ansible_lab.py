"""The lab's single address plan, and the netns connection plugin against a real namespace.

roles/lab_topology/defaults/main.yml is the lab's address plan: the topology, the lab
inventory (group_vars/all/topology.yml links to it) and every role read it. lab/figure1.py
keeps the same names for its scenario; these tests keep them equal.

The connection plugin test runs ad-hoc Ansible against a namespace made for it (root,
skipped without Ansible) with this run's prefix, removed even on failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "roles" / "lab_topology" / "defaults" / "main.yml"


def figure1():
    spec = importlib.util.spec_from_file_location("_figure1", ROOT / "lab" / "figure1.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inventory_reads_the_topology_defaults():
    link = ROOT / "inventories" / "lab" / "group_vars" / "all" / "topology.yml"
    assert link.is_symlink() and link.resolve() == DEFAULTS.resolve()


def test_figure1_and_the_topology_role_agree():
    d = yaml.safe_load(DEFAULTS.read_text())
    f = figure1()
    assert d["lab_topology_prefix"] == f.PREFIX
    assert d["lab_topology_namespaces"] == f.NAMESPACES
    assert (d["lab_topology_cn_v4"], d["lab_topology_cn_v6"]) == (f.CN_V4, f.CN_V6)
    assert (d["lab_topology_lmaa1"], d["lab_topology_lmaa2"]) == (f.LMAA1, f.LMAA2)
    assert (d["lab_topology_nat1_public"], d["lab_topology_lma2_v4"]) == (
        f.IPV4_LMAA1,
        f.IPV4_LMAA2,
    )
    assert (d["lab_topology_mag1_coa"], d["lab_topology_mag2_coa"]) == (f.MAG1_COA, f.MAG2_COA)
    assert d["lab_topology_mag2_v4"] == f.MAG2_PRIVATE
    for mn, spec in f.MNS.items():
        assert d["lab_topology_mobile_nodes"][mn] == {"mac": spec["mac"], "mag": spec["mag"]}


def test_lab_mobile_nodes_match_figure1():
    f = figure1()
    nodes = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/lab.yml").read_text())
    by_id = {n["mn_id"]: n for n in nodes["pmip_mobile_nodes"]}
    for spec in f.MNS.values():
        assert by_id[spec["mn_id"]]["lma"] == spec["lma"]
    flows = {"mn1": "lma", "mn2": "static", "mn3": "dhcp-server"}
    for mn, flow in flows.items():
        assert by_id[f.MNS[mn]["mn_id"]]["ipv4"]["mode"] == flow


# --- the connection plugin ----------------------------------------------------------------

ANSIBLE = Path(sys.executable).parent / "ansible"


@pytest.fixture
def namespace():
    if not ANSIBLE.exists():
        pytest.fail("Ansible is not installed: make test installs it (make ansible-venv)")
    if os.geteuid() != 0:
        raise RuntimeError("this test needs root to create a network namespace")
    name = f"pa{os.getpid() % 100000}-conn"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        ).stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)


def adhoc(ns: str, module: str, args: str, extra: dict | None = None) -> dict:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "PIP_FIND_LINKS": "/leaked/from/the/controller",
    }
    argv = [str(ANSIBLE), "-i", f"{ns},", "all", "-c", "netns", "-m", module, "-a", args]
    for key, value in (extra or {}).items():
        argv += ["-e", f"{key}={value}"]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    result = json.loads(out.stdout)
    return result["plays"][0]["tasks"][0]["hosts"][ns]


def test_netns_connection_runs_inside_the_namespace(namespace, tmp_path):
    # Commands see the namespace's interfaces (only lo), and a clean environment.
    res = adhoc(namespace, "ansible.builtin.shell", "ip -o link; env")
    assert res["rc"] == 0
    links = [line for line in res["stdout"].splitlines() if ": lo:" in line or "link/" in line]
    assert len(links) == 1 and ": lo:" in links[0]
    assert "PIP_FIND_LINKS" not in res["stdout"]
    # put_file and fetch_file go through the namespace's view of the file system.
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    dest = tmp_path / "out" / "copied.txt"
    dest.parent.mkdir()
    res = adhoc(namespace, "ansible.builtin.copy", f"src={src} dest={dest} mode=0600")
    assert res["changed"] and dest.read_text() == "hello\n"
    res = adhoc(namespace, "ansible.builtin.copy", f"src={src} dest={dest} mode=0600")
    assert not res["changed"]
    fetched = tmp_path / "fetched"
    res = adhoc(namespace, "ansible.builtin.fetch", f"src={dest} dest={fetched}/ flat=true")
    assert (fetched / "copied.txt").read_text() == "hello\n"


def test_netns_connection_into_a_chroot(namespace, tmp_path):
    """A minimal root file system: /bin/sh and cat are enough for raw commands and files."""
    root = tmp_path / "root"
    for tool in ("sh", "cat", "ls"):
        path = shutil.which(tool)
        assert path
        (root / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "bin" / tool)
    ldd = subprocess.run(["ldd", "/bin/sh", "/bin/cat", "/bin/ls"], capture_output=True, text=True)
    libs = {t for t in ldd.stdout.split() if t.startswith("/") and not t.endswith(":")}
    for lib in sorted(libs):
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, target)
    (root / "tmp").mkdir()
    extra = {"ansible_netns_chroot": str(root)}
    res = adhoc(namespace, "ansible.builtin.raw", "ls /; echo marker > /tmp/made-inside", extra)
    assert res["rc"] == 0 and "bin" in res["stdout"] and "proc" not in res["stdout"]
    # The file landed inside the chroot, not on the controller's /tmp.
    assert (root / "tmp" / "made-inside").read_text() == "marker\n"
    assert not Path("/tmp/made-inside").exists()


def test_netns_connection_reports_a_missing_namespace():
    if not ANSIBLE.exists():
        pytest.fail("Ansible is not installed: make test installs it (make ansible-venv)")
    res = adhoc(f"pa{os.getpid() % 100000}-absent", "ansible.builtin.ping", "")
    assert res.get("unreachable") and "no network namespace" in res["msg"]


# --- the systemd unit ---------------------------------------------------------------------


def test_systemd_unit_passes_systemd_analyze(tmp_path):
    """The unit the pmip_agent role installs on systemd hosts, rendered by Ansible from the
    role's own defaults, is accepted by `systemd-analyze verify` (this machine has no
    systemd as PID 1, so the unit is not started here)."""
    if not ANSIBLE.exists():
        pytest.fail("Ansible is not installed: make test installs it (make ansible-venv)")
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is not installed: make deps installs it (package systemd)")
    role = ROOT / "roles" / "pmip_agent"
    unit = tmp_path / "pmip-agent.service"
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    argv = [str(ANSIBLE), "localhost", "-m", "ansible.builtin.template"]
    argv += ["-a", f"src={role}/templates/pmip-agent.service.j2 dest={unit}"]
    argv += ["-e", f"@{role}/defaults/main.yml", "-e", f"@{role}/vars/main.yml"]
    # The venv of this project stands in for the host's, so the commands exist.
    argv += ["-e", f"role_path={role} pmip_agent_role=lma pmip_agent_node_name=lma1"]
    argv += ["-e", f"pmip_agent_venv={Path(sys.executable).parent.parent}"]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = unit.read_text()
    assert "ExecReload=" in text and "pmipctl --socket /run/pmip/lma1.sock reload" in text
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
