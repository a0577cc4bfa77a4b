# Copyright: the pmip_agent project. BSD-2-Clause.
"""Filters that check a PMIPv6 fleet's address plan as a whole, before anything is pushed.

``pmip-agent check`` validates one node's file; it cannot see that two LMAs hand out the
same addresses, or that a MAG sends its PBUs to an address no NAT forwards. These filters
look at every host of the inventory at once:

``pmip_fleet_plan(hostvars, lmas, mags, nats=[], dhcp_servers=[])``
    Reads the role variables of those hosts (``pmip_lma_*``, ``pmip_mag_*``, ``nat_*``,
    ``kea_*``, with the roles' defaults) into a plain "plan" dictionary.
``pmip_plan_problems(plan)``
    Every inconsistency found, as a list of ``"<check>: <host>: <reason>"`` strings.
``pmip_plan_check(plan)``
    The plan unchanged when it has no problem; otherwise fails the task listing them all.
``pmip_ipsec_peers(hostvars, host, lmas, mags)``
    The strongswan role's ``strongswan_peers`` of ``host`` in a fleet: a MAG initiates to
    each LMA it registers with (to the LMAA over IPv6 transport, to the IPv4-LMAA over
    IPv4), an LMA responds to each MAG that names it (over IPv4 from any address, since a
    MAG may sit behind a NAT).
``pmip_mag_peers(peers, hostvars)``
    A MAG's ``lmas`` list with ``lmaa`` and ``ipv4_lmaa`` filled in from the LMA host's
    variables, so an address is written once, on the LMA.

Checks (the names prefix each problem):

- ``lma-pools``: IPv4 home address pools are pairwise disjoint across all LMAs.
- ``dhcp-pools``: no LMA pool overlaps a prefix handed out by a DHCP server, either one of
  an LMA's ``dhcp_server_pools`` or a subnet of a DHCP server host (seed §6).
- ``hnp-pools``: IPv6 home network prefix aggregates are disjoint across LMAs.
- ``lma-addresses``: LMAAs and IPv4-LMAAs are unique across LMAs.
- ``mag-peers``: each MAG peer names a known LMA, with that LMA's LMAA and IPv4-LMAA, and
  the LMA admits the MAG (``allowed_mags``: its Proxy-CoA, and over IPv4 transport the
  address its PBUs come from, its own IPv4 address or a NAT's public address).
- ``nat``: an IPv4-LMAA that is not the LMA's own address is the public address of a NAT
  that forwards the LMA's UDP signalling port to the LMA's own address; every DNAT rule
  forwards a public address the NAT has to a known address, and public addresses are
  unique.
- ``mobile-nodes``: MAG and LMA agree on each mobile node (anchor and IPv4 service);
  static home addresses are unique and outside every pool; dhcp-server prefixes are
  inside the anchor's ``dhcp_server_pools`` and served by a DHCP server; such nodes sit
  on MAGs that relay to a known DHCP server.

This file imports nothing from Ansible at module level beyond an optional error class,
so the checks can be unit-tested without Ansible (tests/test_ansible_filters.py).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

try:  # inside Ansible: a filter error fails the task with the message
    from ansible.errors import AnsibleFilterError as _FilterError
except ImportError:  # pragma: no cover - unit tests without Ansible
    _FilterError = ValueError

PlanError = _FilterError

DEFAULT_UDP_PORT = 5436

# --- reading the inventory ----------------------------------------------------------------


def _get(hv: Mapping[str, Any], key: str, default: Any = None) -> Any:
    try:
        value = hv[key]
    except KeyError:
        return default
    # HostVars returns an undefined object for missing keys in some versions.
    if type(value).__name__.startswith("AnsibleUndefined") or value is None:
        return default
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping):
        return [value]
    return list(value)


def pmip_mag_peers(peers: Iterable[Mapping[str, Any]], hostvars: Mapping[str, Any]) -> list:
    """Complete a MAG's peer list from the LMA hosts' variables.

    A peer ``{name: lma1}`` whose ``name`` is an inventory host gets that host's
    ``pmip_lma_lmaa`` and ``pmip_lma_ipv4_lmaa`` unless it sets them itself. Keys with a
    null value are dropped, so the agent's defaults apply.
    """
    out = []
    for peer in _list(peers):
        entry = {k: v for k, v in dict(peer).items() if v is not None}
        name = entry.get("name")
        if name is not None and name in hostvars:
            hv = hostvars[name]
            if "lmaa" not in entry and _get(hv, "pmip_lma_lmaa") is not None:
                entry["lmaa"] = str(_get(hv, "pmip_lma_lmaa"))
            if "ipv4_lmaa" not in entry and _get(hv, "pmip_lma_ipv4_lmaa") is not None:
                entry["ipv4_lmaa"] = str(_get(hv, "pmip_lma_ipv4_lmaa"))
        out.append(entry)
    return out


def _default_mobile_nodes(hv: Mapping[str, Any], host: str) -> list:
    """pmip_lma role default: the fleet's nodes anchored at this LMA."""
    return [dict(n) for n in _list(_get(hv, "pmip_mobile_nodes", [])) if dict(n).get("lma") == host]


def pmip_fleet_plan(
    hostvars: Mapping[str, Any],
    lmas: Iterable[str],
    mags: Iterable[str],
    nats: Iterable[str] = (),
    dhcp_servers: Iterable[str] = (),
) -> dict[str, Any]:
    """The address plan of these hosts, read from their role variables."""
    plan: dict[str, Any] = {"lmas": {}, "mags": {}, "nats": {}, "dhcp_servers": {}}
    for host in _list(lmas):
        hv = hostvars[host]
        ipv4_lmaa = _get(hv, "pmip_lma_ipv4_lmaa")
        plan["lmas"][host] = {
            "lmaa": _get(hv, "pmip_lma_lmaa"),
            "ipv4_lmaa": ipv4_lmaa,
            "ipv4_address": _get(hv, "pmip_lma_ipv4_address", ipv4_lmaa),
            "udp_port": _get(hv, "pmip_lma_udp_port", DEFAULT_UDP_PORT),
            "ipv4_pools": [dict(p) for p in _list(_get(hv, "pmip_lma_ipv4_pools", []))],
            "hnp_pool": _get(hv, "pmip_lma_hnp_pool"),
            "dhcp_server_pools": _list(_get(hv, "pmip_lma_dhcp_server_pools", [])),
            "allowed_mags": _get(hv, "pmip_lma_allowed_mags"),
            "mobile_nodes": [
                dict(n)
                for n in _list(
                    _get(hv, "pmip_lma_mobile_nodes", None) or _default_mobile_nodes(hv, host)
                )
            ],
        }
    for host in _list(mags):
        hv = hostvars[host]
        dhcp = dict(_get(hv, "pmip_mag_dhcp", {}) or {})
        plan["mags"][host] = {
            "proxy_coa": _get(hv, "pmip_mag_proxy_coa"),
            "ipv4_proxy_coa": _get(hv, "pmip_mag_ipv4_proxy_coa"),
            "ipv4_public": _get(hv, "pmip_mag_ipv4_public"),
            "lmas": pmip_mag_peers(_get(hv, "pmip_mag_lmas", []), hostvars),
            "dhcp": {
                "mode": dhcp.get("mode", "server"),
                "servers": _list(dhcp.get("servers")),
                "relay_address": dhcp.get("relay_address"),
            },
            "mobile_nodes": [
                dict(n)
                for n in _list(
                    _get(hv, "pmip_mag_mobile_nodes", None) or _get(hv, "pmip_mobile_nodes", [])
                )
            ],
        }
    for host in _list(nats):
        hv = hostvars[host]
        public = _get(hv, "nat_public_address")
        plan["nats"][host] = {
            "public_addresses": [
                a for a in [public, *_list(_get(hv, "nat_extra_public_addresses", []))] if a
            ],
            "dnat": [
                {
                    "proto": r.get("proto", "udp"),
                    "ports": [int(p) for p in _list(r.get("ports"))],
                    "address": r.get("address", public),
                    "to": r.get("to"),
                }
                for r in (dict(x) for x in _list(_get(hv, "nat_dnat", [])))
            ],
        }
    for host in _list(dhcp_servers):
        hv = hostvars[host]
        plan["dhcp_servers"][host] = {
            "addresses": _list(_get(hv, "kea_server_addresses", [])),
            "subnets": [
                {"subnet": s.get("subnet"), "pools": [p.get("pool") for p in _list(s.get("pools"))]}
                for s in (dict(x) for x in _list(_get(hv, "kea_subnets", [])))
            ],
        }
    return plan


# --- checking -----------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, check: str, where: str, reason: str) -> None:
        self.items.append(f"{check}: {where}: {reason}")


def _net4(value: Any, what: str, bad: _Problems, where: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        bad.add("syntax", where, f"{what} {value!r} is not an IPv4 prefix: {exc}")
        return None


def _net6(value: Any, what: str, bad: _Problems, where: str) -> ipaddress.IPv6Network | None:
    try:
        return ipaddress.IPv6Network(str(value), strict=True)
    except ValueError as exc:
        bad.add("syntax", where, f"{what} {value!r} is not an IPv6 prefix: {exc}")
        return None


def _addr(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if value is None:
        return None
    try:
        return ipaddress.ip_address(str(value).split("/")[0])
    except ValueError:
        return None


def _range_nets(text: str) -> list[ipaddress.IPv4Network]:
    """A Kea pool, ``a.b.c.d - e.f.g.h`` or a prefix, as a list of networks."""
    if "-" in text:
        first, last = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
        return list(ipaddress.summarize_address_range(first, last))
    return [ipaddress.IPv4Network(text.strip(), strict=False)]


def pmip_plan_problems(plan: Mapping[str, Any]) -> list[str]:
    """Every inconsistency of the plan (see the module docstring for the checks)."""
    bad = _Problems()
    lmas: Mapping[str, Any] = plan.get("lmas") or {}
    mags: Mapping[str, Any] = plan.get("mags") or {}
    nats: Mapping[str, Any] = plan.get("nats") or {}
    servers: Mapping[str, Any] = plan.get("dhcp_servers") or {}

    # LMA pools, pairwise, across the fleet.
    pools: list[tuple[str, str, ipaddress.IPv4Network]] = []
    for host, lma in lmas.items():
        for pool in lma.get("ipv4_pools") or []:
            net = _net4(pool.get("prefix"), f"pool {pool.get('name')}", bad, host)
            if net is not None:
                pools.append((host, str(pool.get("name")), net))
    for (h1, n1, p1), (h2, n2, p2) in itertools.combinations(pools, 2):
        if p1.overlaps(p2):
            bad.add(
                "lma-pools",
                h2,
                f"pool {n2} {p2} overlaps pool {n1} {p1} of {h1}: two LMAs would hand out "
                "the same home addresses",
            )

    # DHCP server prefixes: every LMA's dhcp_server_pools and every server's subnets.
    dhcp_prefixes: list[tuple[str, ipaddress.IPv4Network]] = []
    for host, lma in lmas.items():
        for value in lma.get("dhcp_server_pools") or []:
            net = _net4(value, "dhcp_server_pools entry", bad, host)
            if net is not None:
                dhcp_prefixes.append((f"{host} dhcp_server_pools", net))
    served: list[tuple[str, ipaddress.IPv4Network]] = []
    for host, srv in servers.items():
        for subnet in srv.get("subnets") or []:
            net = _net4(subnet.get("subnet"), "subnet", bad, host)
            if net is None:
                continue
            served.append((host, net))
            dhcp_prefixes.append((f"{host} subnet", net))
            for text in subnet.get("pools") or []:
                try:
                    ranges = _range_nets(str(text))
                except ValueError as exc:
                    bad.add("syntax", host, f"pool {text!r}: {exc}")
                    continue
                if not all(r.subnet_of(net) for r in ranges):
                    bad.add("dhcp-pools", host, f"pool {text} is not inside its subnet {net}")
    for host, name, pool in pools:
        for where, dnet in dhcp_prefixes:
            if pool.overlaps(dnet):
                bad.add(
                    "dhcp-pools",
                    host,
                    f"pool {name} {pool} overlaps {dnet} ({where}): the LMA and the DHCP "
                    "server would hand out the same addresses (seed §6)",
                )

    # IPv6 home network prefix aggregates.
    hnps = []
    for host, lma in lmas.items():
        hnp = lma.get("hnp_pool")
        if hnp:
            net = _net6(dict(hnp).get("prefix"), "hnp_pool prefix", bad, host)
            if net is not None:
                hnps.append((host, net))
    for (h1, p1), (h2, p2) in itertools.combinations(hnps, 2):
        if p1.overlaps(p2):
            bad.add("hnp-pools", h2, f"hnp_pool {p2} overlaps hnp_pool {p1} of {h1}")

    # LMA addresses.
    for key in ("lmaa", "ipv4_lmaa"):
        seen: dict[Any, str] = {}
        for host, lma in lmas.items():
            a = _addr(lma.get(key))
            if a is None:
                if key == "lmaa":
                    bad.add("lma-addresses", host, "pmip_lma_lmaa is not set or not an address")
                continue
            if a in seen:
                bad.add("lma-addresses", host, f"{key} {a} is also {seen[a]}'s")
            seen[a] = host

    # NATs: public addresses and DNAT rules.
    public_owner: dict[Any, str] = {}
    for host, nat in nats.items():
        for value in nat.get("public_addresses") or []:
            a = _addr(value)
            if a is None:
                bad.add("syntax", host, f"public address {value!r} is not an address")
            elif a in public_owner:
                bad.add("nat", host, f"public address {a} is also {public_owner[a]}'s")
            else:
                public_owner[a] = host
    known_targets = {_addr(lma.get("ipv4_address")): h for h, lma in lmas.items()}
    known_targets.pop(None, None)
    forwards: dict[tuple[Any, str, int], tuple[str, Any]] = {}
    for host, nat in nats.items():
        own = {_addr(a) for a in nat.get("public_addresses") or []}
        for rule in nat.get("dnat") or []:
            public, target = _addr(rule.get("address")), _addr(rule.get("to"))
            if public is None or public not in own:
                bad.add(
                    "nat",
                    host,
                    f"DNAT rule to {rule.get('to')} matches {rule.get('address')}, which is not "
                    f"a public address of this NAT ({', '.join(sorted(map(str, own))) or 'none'})",
                )
                continue
            if target is None:
                bad.add("nat", host, f"DNAT rule of {public} forwards to {rule.get('to')!r}")
                continue
            if target not in known_targets:
                bad.add(
                    "nat",
                    host,
                    f"DNAT rule of {public} forwards to {target}, which is no LMA's own IPv4 "
                    "address (pmip_lma_ipv4_address)",
                )
            for port in rule.get("ports") or []:
                forwards[(public, str(rule.get("proto", "udp")), int(port))] = (host, target)

    for host, lma in lmas.items():
        v4, own = _addr(lma.get("ipv4_lmaa")), _addr(lma.get("ipv4_address"))
        if v4 is None or v4 == own:
            continue
        port = int(lma.get("udp_port") or DEFAULT_UDP_PORT)
        fwd = forwards.get((v4, "udp", port))
        if fwd is None:
            bad.add(
                "nat",
                host,
                f"IPv4-LMAA {v4} is not this LMA's own address ({own}) and no NAT forwards "
                f"udp/{port} of {v4} to it",
            )
        elif fwd[1] != own:
            bad.add(
                "nat",
                host,
                f"IPv4-LMAA {v4} is NAT {fwd[0]}'s public address, but its udp/{port} goes to "
                f"{fwd[1]}, not to this LMA's {own}",
            )
    for (public, proto, port), (host, target) in forwards.items():
        if proto != "udp" or target not in known_targets:
            continue
        lma_host = known_targets[target]
        lma = lmas[lma_host]
        if (
            port == int(lma.get("udp_port") or DEFAULT_UDP_PORT)
            and _addr(lma.get("ipv4_lmaa")) != public
        ):
            bad.add(
                "nat",
                host,
                f"forwards signalling udp/{port} of {public} to {lma_host}, whose IPv4-LMAA is "
                f"{lma.get('ipv4_lmaa')}: MAGs would send to one address, the LMA answer as "
                "another",
            )

    # MAG peers.
    for host, mag in mags.items():
        coa = _addr(mag.get("proxy_coa"))
        for peer in mag.get("lmas") or []:
            name = peer.get("name")
            if name not in lmas:
                bad.add("mag-peers", host, f"peer {name!r} is not an LMA of the inventory")
                continue
            lma = lmas[name]
            if _addr(peer.get("lmaa")) != _addr(lma.get("lmaa")):
                bad.add(
                    "mag-peers",
                    host,
                    f"peer {name}: lmaa {peer.get('lmaa')} is not {name}'s LMAA {lma.get('lmaa')}",
                )
            transport = peer.get("transport", "auto")
            peer_v4 = _addr(peer.get("ipv4_lmaa"))
            if peer_v4 is not None and peer_v4 != _addr(lma.get("ipv4_lmaa")):
                bad.add(
                    "mag-peers",
                    host,
                    f"peer {name}: ipv4_lmaa {peer_v4} is not {name}'s IPv4-LMAA "
                    f"{lma.get('ipv4_lmaa')}",
                )
            if transport == "ipv4" and peer_v4 is None:
                bad.add("mag-peers", host, f"peer {name}: transport ipv4 without an IPv4-LMAA")
            allowed = lma.get("allowed_mags")
            if allowed is not None and coa is not None:
                admitted = set()
                for a in allowed:
                    addr = _addr(a)
                    if isinstance(addr, ipaddress.IPv4Address):
                        addr = ipaddress.IPv6Address(f"::ffff:{addr}")
                    admitted.add(addr)
                if coa not in admitted:
                    bad.add(
                        "mag-peers",
                        host,
                        f"peer {name} does not admit this MAG: {mag.get('proxy_coa')} is not "
                        "in its allowed_mags",
                    )
                over_ipv4 = transport == "ipv4" or (transport == "auto" and peer_v4 is not None)
                # Over IPv4 the LMA also checks the packet's real source: the MAG's own
                # IPv4 address, or the public address of the NAT it sits behind.
                sources = {
                    _addr(mag.get("ipv4_proxy_coa")),
                    _addr(mag.get("ipv4_public")),
                    *public_owner,
                }
                sources.discard(None)
                mapped = {ipaddress.IPv6Address(f"::ffff:{a}") for a in sources if a.version == 4}
                if over_ipv4 and not (mapped & admitted):
                    bad.add(
                        "mag-peers",
                        host,
                        f"peer {name} admits no IPv4 source this MAG's PBUs can come from "
                        f"(its {mag.get('ipv4_proxy_coa')}, pmip_mag_ipv4_public or a NAT's "
                        "public address) in its allowed_mags",
                    )

    # Mobile nodes.
    all_pools = [(h, n, p) for h, n, p in pools]
    statics: dict[Any, str] = {}
    server_addresses = {
        _addr(a): h for h, srv in servers.items() for a in srv.get("addresses") or []
    }
    for host, lma in lmas.items():
        for node in lma.get("mobile_nodes") or []:
            v4 = dict(node.get("ipv4") or {})
            mode = v4.get("mode", "none")
            mn = node.get("mn_id")
            if mode == "static" and v4.get("address"):
                try:
                    iface = ipaddress.IPv4Interface(str(v4["address"]))
                except ValueError:
                    bad.add("syntax", host, f"{mn}: static address {v4['address']!r}")
                    continue
                if iface.ip in statics and statics[iface.ip] != mn:
                    bad.add(
                        "mobile-nodes",
                        host,
                        f"{mn}: static {iface.ip} is also {statics[iface.ip]}'s",
                    )
                statics[iface.ip] = mn
                for h, n, p in all_pools:
                    if iface.ip in p:
                        bad.add(
                            "mobile-nodes",
                            host,
                            f"{mn}: static home address {iface.ip} is inside pool {n} {p} of {h}",
                        )
            elif mode == "dhcp-server" and v4.get("prefix"):
                net = _net4(v4["prefix"], f"{mn} prefix", bad, host)
                if net is None:
                    continue
                owned = [
                    d
                    for d in (
                        _net4(x, "dhcp_server_pools", _Problems(), host)
                        for x in lma.get("dhcp_server_pools") or []
                    )
                    if d is not None and net.subnet_of(d)
                ]
                if not owned:
                    bad.add(
                        "mobile-nodes",
                        host,
                        f"{mn}: dhcp-server prefix {net} is not inside this LMA's "
                        "dhcp_server_pools",
                    )
                if servers and not any(net.overlaps(s) for _, s in served):
                    bad.add(
                        "mobile-nodes",
                        host,
                        f"{mn}: no DHCP server host serves a subnet of {net}",
                    )
    lma_nodes = {
        (h, dict(n).get("mn_id")): dict(n)
        for h, lma in lmas.items()
        for n in lma.get("mobile_nodes") or []
    }
    for host, mag in mags.items():
        peers = [p.get("name") for p in mag.get("lmas") or []]
        for node in mag.get("mobile_nodes") or []:
            mn = node.get("mn_id")
            anchor = node.get("lma") or (peers[0] if peers else None)
            if anchor not in lmas:
                continue  # reported by mag-peers, or an LMA outside the inventory
            theirs = lma_nodes.get((anchor, mn))
            if theirs is None:
                bad.add(
                    "mobile-nodes",
                    host,
                    f"{mn} is anchored at {anchor}, which has no profile for it (status 153)",
                )
                continue
            mine4, their4 = dict(node.get("ipv4") or {}), dict(theirs.get("ipv4") or {})
            for key in ("mode", "address", "prefix"):
                if mine4.get(key, "none" if key == "mode" else None) != their4.get(
                    key, "none" if key == "mode" else None
                ):
                    bad.add(
                        "mobile-nodes",
                        host,
                        f"{mn}: ipv4.{key} is {mine4.get(key)!r} here but {their4.get(key)!r} "
                        f"on {anchor}",
                    )
            if mine4.get("mode") == "dhcp-server":
                dhcp = mag.get("dhcp") or {}
                if dhcp.get("mode") != "relay":
                    bad.add("mobile-nodes", host, f"{mn}: dhcp-server mode needs dhcp mode relay")
                elif servers and not any(
                    _addr(s) in server_addresses for s in dhcp.get("servers") or []
                ):
                    bad.add(
                        "mobile-nodes",
                        host,
                        f"{mn}: relays to {', '.join(map(str, dhcp.get('servers') or []))}, none "
                        "of which is a DHCP server host's address (kea_server_addresses)",
                    )
    return bad.items


def pmip_plan_check(plan: Mapping[str, Any]) -> Mapping[str, Any]:
    """The plan, or a filter error listing every problem."""
    problems = pmip_plan_problems(plan)
    if problems:
        raise PlanError(f"the address plan has {len(problems)} problem(s):\n" + "\n".join(problems))
    return plan


def _resolved(peer: Mapping[str, Any]) -> str:
    transport = peer.get("transport", "auto")
    if transport == "auto":
        return "ipv4" if peer.get("ipv4_lmaa") else "ipv6"
    return str(transport)


def pmip_ipsec_peers(
    hostvars: Mapping[str, Any], host: str, lmas: list[str], mags: list[str]
) -> list[dict[str, Any]]:
    """strongswan_peers of ``host`` (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if host in mags:
        hv = hostvars[host]
        for peer in pmip_mag_peers(hv.get("pmip_mag_lmas") or [], hostvars):
            transport = _resolved(peer)
            v6 = transport == "ipv6"
            out.append(
                {
                    "name": str(peer["name"]),
                    "local_addrs": [
                        str(hv.get("pmip_mag_proxy_coa" if v6 else "pmip_mag_ipv4_proxy_coa"))
                    ],
                    "remote_addrs": [str(peer.get("lmaa" if v6 else "ipv4_lmaa"))],
                    "transport": transport,
                    "initiate": True,
                }
            )
    if host in lmas:
        hv = hostvars[host]
        own_v4 = hv.get("pmip_lma_ipv4_address") or hv.get("pmip_lma_ipv4_lmaa")
        for mag in mags:
            mv = hostvars[mag]
            for peer in pmip_mag_peers(mv.get("pmip_mag_lmas") or [], hostvars):
                if peer.get("name") != host:
                    continue
                transport = _resolved(peer)
                v6 = transport == "ipv6"
                out.append(
                    {
                        "name": str(mag),
                        "local_addrs": [str(hv.get("pmip_lma_lmaa") if v6 else own_v4)],
                        "remote_addrs": [str(mv.get("pmip_mag_proxy_coa")) if v6 else "%any"],
                        "transport": transport,
                        "initiate": False,
                    }
                )
    return out


class FilterModule:
    """pmip_fleet_plan, pmip_plan_problems, pmip_plan_check, pmip_mag_peers, pmip_ipsec_peers"""

    def filters(self) -> dict[str, Any]:
        return {
            "pmip_fleet_plan": pmip_fleet_plan,
            "pmip_plan_problems": pmip_plan_problems,
            "pmip_plan_check": pmip_plan_check,
            "pmip_mag_peers": pmip_mag_peers,
            "pmip_ipsec_peers": pmip_ipsec_peers,
        }
