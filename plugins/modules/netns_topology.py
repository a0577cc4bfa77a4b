#!/usr/bin/python
# Copyright: the pmip_agent project. BSD-2-Clause.
# ruff: noqa: E402  (Ansible modules put DOCUMENTATION before the imports)
"""Ansible module: converge a topology of network namespaces and veth links."""

from __future__ import annotations

DOCUMENTATION = r"""
module: netns_topology
short_description: Network namespaces joined by veth links, with addresses, routes, sysctls
description:
  - Converges a set of network namespaces on the host it runs on (the controller, for a
    lab) to a declared topology, and reports C(changed) only when it changed something.
  - Every namespace is named C(PREFIX-NAME), so runs with different prefixes never touch
    each other; O(state=absent) kills the processes inside every namespace with the prefix
    and deletes those namespaces, declared or not.
  - A veth link is recreated when either end is missing or the two ends are not each
    other's peer (for example after a mobile node was moved to another access router).
  - On an interface that declares addresses, global addresses that are not declared are
    removed, except those a daemon installed with its own routing protocol number
    (anything but C(kernel_lo), C(kernel_ll), C(kernel_ra) or none), such as the PMIPv6
    data plane's. Routes are added or replaced, never purged.
  - Needs root and iproute2 (C(ip -json)).
options:
  prefix:
    description: Name prefix of every namespace (C(PREFIX-NAME)); letters, digits, C(-).
    type: str
    required: true
  state:
    description: C(present) builds or repairs; C(absent) removes every namespace with the prefix.
    type: str
    choices: [present, absent]
    default: present
  namespaces:
    description: Namespace names without the prefix. Loopback is brought up in each.
    type: list
    elements: str
    default: []
  sysctls:
    description: Sysctls set in every namespace, such as C(net.ipv4.conf.all.forwarding=1).
    type: dict
    default: {}
  links:
    description:
      - veth pairs. Keys C(a), C(b) (namespace names), C(a_if), C(b_if) (interface names),
        optional C(a_mac), C(b_mac), C(a_addresses), C(b_addresses) (lists of
        C(address/len)) and C(mtu).
    type: list
    elements: dict
    default: []
  addresses:
    description:
      - More addresses on existing interfaces (such as C(lo)). Keys C(ns), C(dev),
        C(addresses) (list of C(address/len)).
    type: list
    elements: dict
    default: []
  routes:
    description:
      - Routes of the main table. Keys C(ns), C(to) (prefix or C(default)), C(via) and/or
        C(dev); IPv6 when C(to) or C(via) is IPv6 (C(family=6) for an IPv6 default).
    type: list
    elements: dict
    default: []
  kill_timeout:
    description: With O(state=absent), seconds to wait for processes after SIGTERM before SIGKILL.
    type: float
    default: 3
author: the pmip_agent project
"""

EXAMPLES = r"""
- name: Two namespaces joined by a veth
  netns_topology:
    prefix: t1
    namespaces: [a, b]
    sysctls: {net.ipv4.conf.all.forwarding: 1}
    links:
      - {a: a, a_if: eth0, b: b, b_if: eth0, a_addresses: [10.0.0.1/24], b_addresses: [10.0.0.2/24]}
    routes:
      - {ns: b, to: default, via: 10.0.0.1}

- name: Remove every namespace of the run
  netns_topology:
    prefix: t1
    state: absent
"""

RETURN = r"""
namespaces:
  description: Full names of the namespaces with the prefix after the run.
  type: list
  returned: always
actions:
  description: What was changed, one line each.
  type: list
  returned: always
"""

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

_KEEP_PROTOS = {None, "kernel_lo", "kernel_ll", "kernel_ra", "kernel", "boot"}


class Topology:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.prefix = module.params["prefix"]
        self.actions: list[str] = []
        self.check = module.check_mode

    # --- plumbing -----------------------------------------------------------------

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if check and proc.returncode != 0:
            self.module.fail_json(
                msg=f"{' '.join(argv)} failed: {proc.stderr.strip()}", actions=self.actions
            )
        return proc

    def change(self, what: str, argv: list[str] | None = None) -> None:
        self.actions.append(what)
        if argv is not None and not self.check:
            self.run(argv)

    def ipj(self, ns: str, *args: str) -> list[dict]:
        out = self.run(["ip", "-n", ns, "-j", *args]).stdout.strip()
        return json.loads(out) if out else []

    def existing(self) -> list[str]:
        out = self.run(["ip", "-j", "netns", "list"]).stdout.strip()
        names = [n["name"] for n in json.loads(out)] if out else []
        return sorted(n for n in names if n.startswith(f"{self.prefix}-"))

    # --- absent -------------------------------------------------------------------

    def remove_all(self) -> None:
        names = self.existing()
        pids: list[int] = []
        for name in names:
            out = self.run(["ip", "netns", "pids", name], check=False).stdout.split()
            pids += [int(p) for p in out if p.isdigit()]
        if self.check:
            self.actions += [f"delete {n}" for n in names]
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.module.params["kill_timeout"]
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for name in names:
            self.change(f"delete {name}", ["ip", "netns", "del", name])

    # --- present ------------------------------------------------------------------

    def converge(self) -> None:
        p = self.module.params
        have = set(self.existing())
        for name in p["namespaces"]:
            full = self.ns(name)
            if full not in have:
                self.change(f"add namespace {full}", ["ip", "netns", "add", full])
            if self.check and full not in have:
                continue
            self.ensure_up(full, "lo")
            self.ensure_sysctls(full, p["sysctls"])
        for link in p["links"]:
            self.ensure_link(link)
        wanted: dict[tuple[str, str], list[str]] = {}
        for link in p["links"]:
            for side in ("a", "b"):
                key = (self.ns(link[side]), link[f"{side}_if"])
                wanted.setdefault(key, []).extend(link.get(f"{side}_addresses") or [])
        for extra in p["addresses"]:
            wanted.setdefault((self.ns(extra["ns"]), extra["dev"]), []).extend(
                extra.get("addresses") or []
            )
        for (ns, dev), addrs in wanted.items():
            if addrs:
                self.ensure_addresses(ns, dev, addrs)
        for route in p["routes"]:
            self.ensure_route(route)

    def links_of(self, ns: str) -> dict[str, dict]:
        if self.check and ns not in self.existing():
            return {}
        return {link["ifname"]: link for link in self.ipj(ns, "-d", "link", "show")}

    def ensure_up(self, ns: str, dev: str) -> None:
        link = self.links_of(ns).get(dev)
        if link is not None and "UP" not in link.get("flags", []):
            self.change(f"{ns}: {dev} up", ["ip", "-n", ns, "link", "set", dev, "up"])

    def ensure_sysctls(self, ns: str, sysctls: dict) -> None:
        if not sysctls:
            return
        keys = sorted(sysctls)
        out = self.run(["ip", "netns", "exec", ns, "sysctl", "-n", *keys]).stdout.split("\n")
        for key, current in zip(keys, out, strict=False):
            want = str(sysctls[key])
            if current.strip() != want:
                self.change(
                    f"{ns}: {key}={want}",
                    ["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={want}"],
                )

    def ensure_link(self, spec: dict) -> None:
        for key in ("a", "b", "a_if", "b_if"):
            if not spec.get(key):
                self.module.fail_json(msg=f"link {spec} needs {key}")
        ns_a, ns_b = self.ns(spec["a"]), self.ns(spec["b"])
        if_a, if_b = spec["a_if"], spec["b_if"]
        la, lb = self.links_of(ns_a).get(if_a), self.links_of(ns_b).get(if_b)
        paired = (
            la is not None
            and lb is not None
            and la.get("link_index") == lb.get("ifindex")
            and lb.get("link_index") == la.get("ifindex")
        )
        if not paired:
            for ns, dev, found in ((ns_a, if_a, la), (ns_b, if_b, lb)):
                if found is not None:
                    self.change(f"{ns}: delete stale {dev}", ["ip", "-n", ns, "link", "del", dev])
            # Temporary names in the controller's namespace would collide between runs;
            # create the pair directly inside the namespaces.
            self.change(
                f"veth {ns_a}:{if_a} <-> {ns_b}:{if_b}",
                [
                    "ip", "-n", ns_a, "link", "add", if_a, "type", "veth",
                    "peer", "name", if_b, "netns", ns_b,
                ],
            )  # fmt: skip
            if self.check:
                return
            la, lb = self.links_of(ns_a).get(if_a), self.links_of(ns_b).get(if_b)
        for side, ns, dev, link in (("a", ns_a, if_a, la), ("b", ns_b, if_b, lb)):
            mac = spec.get(f"{side}_mac")
            if mac and link.get("address", "").lower() != mac.lower():
                self.change(
                    f"{ns}: {dev} address {mac}",
                    ["ip", "-n", ns, "link", "set", dev, "address", mac],
                )
            mtu = spec.get("mtu")
            if mtu and int(link.get("mtu", 0)) != int(mtu):
                self.change(
                    f"{ns}: {dev} mtu {mtu}", ["ip", "-n", ns, "link", "set", dev, "mtu", str(mtu)]
                )
            if "UP" not in link.get("flags", []):
                self.change(f"{ns}: {dev} up", ["ip", "-n", ns, "link", "set", dev, "up"])

    def ensure_addresses(self, ns: str, dev: str, addrs: list[str]) -> None:
        want = {str(ipaddress.ip_interface(a)) for a in addrs}
        if self.check and ns not in self.existing():
            self.actions += [f"{ns}: {dev} add {a}" for a in sorted(want)]
            return
        info = self.ipj(ns, "addr", "show", "dev", dev)
        have: dict[str, dict] = {}
        for entry in info:
            for a in entry.get("addr_info", []):
                have[str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))] = a
        # Stale ones first: deleting a primary address also deletes the secondaries of its
        # prefix (unless promote_secondaries is set), which may include a new one.
        for addr, a in sorted(have.items()):
            iface = ipaddress.ip_interface(addr)
            if addr in want or iface.ip.is_link_local or iface.ip.is_loopback:
                continue
            if a.get("protocol") not in _KEEP_PROTOS:
                continue  # installed by a daemon (e.g. the data plane): not ours
            self.change(
                f"{ns}: {dev} remove {addr}", ["ip", "-n", ns, "addr", "del", addr, "dev", dev]
            )
        for addr in sorted(want - set(have)):
            argv = ["ip", "-n", ns, "addr", "add", addr, "dev", dev]
            if ipaddress.ip_interface(addr).version == 6:
                argv.append("nodad")
            self.change(f"{ns}: {dev} add {addr}", argv)

    def ensure_route(self, spec: dict) -> None:
        ns = self.ns(spec["ns"])
        to, via, dev = spec.get("to", "default"), spec.get("via"), spec.get("dev")
        family = str(spec.get("family") or "")
        if not family:
            probe = via if to == "default" else to
            family = "6" if probe and ":" in str(probe) else "4"
        if to != "default":
            to = str(ipaddress.ip_network(to, strict=False))
        if self.check and ns not in self.existing():
            self.actions.append(f"{ns}: route {to} via {via or dev}")
            return
        routes = self.ipj(ns, f"-{family}", "route", "show", "table", "main")
        norm = re.sub(r"/(32|128)$", "", to)
        current = next((r for r in routes if r.get("dst") in (to, norm)), None)
        if current is not None:
            same_via = via is None or current.get("gateway") == str(via)
            same_dev = dev is None or current.get("dev") == dev
            if same_via and same_dev:
                return
        argv = ["ip", "-n", ns, f"-{family}", "route", "replace", to]
        if via:
            argv += ["via", str(via)]
        if dev:
            argv += ["dev", dev]
        self.change(f"{ns}: route {to} via {via or dev}", argv)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "prefix": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "namespaces": {"type": "list", "elements": "str", "default": []},
            "sysctls": {"type": "dict", "default": {}},
            "links": {"type": "list", "elements": "dict", "default": []},
            "addresses": {"type": "list", "elements": "dict", "default": []},
            "routes": {"type": "list", "elements": "dict", "default": []},
            "kill_timeout": {"type": "float", "default": 3.0},
        },
        supports_check_mode=True,
    )
    if os.geteuid() != 0:
        module.fail_json(msg="netns_topology needs root")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]{0,11}$", module.params["prefix"]):
        module.fail_json(
            msg="prefix: 1 to 12 letters, digits or '-', starting with one of the first"
        )
    topo = Topology(module)
    if module.params["state"] == "absent":
        topo.remove_all()
    else:
        topo.converge()
    module.exit_json(
        changed=bool(topo.actions),
        actions=topo.actions,
        namespaces=topo.existing() if not module.check_mode else [],
    )


if __name__ == "__main__":
    main()
