# Copyright: the pmip_agent project. BSD-2-Clause.
"""Filters for the pmip_agent role.

``pmip_agent_restart_keys(config)``
    The part of an agent configuration (the mapping the role renders) that a reload
    (SIGHUP, ``pmipctl reload``) does not apply, so a change in it needs a restart.

    What a reload applies is decided by ``pmip_agent/daemon.py``: ``LmaService`` and
    ``MagService.apply_config`` hand the new settings, profiles and pools to the engine;
    the sockets (bound to the LMAA / Proxy-CoA and the UDP port), the store (node name,
    state directory), the control socket, logging, metrics, the MAG's DHCP agent and the
    data plane are set up once at start. This list mirrors that code; if a key moves
    from one side to the other there, it moves here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def pmip_agent_restart_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``config`` that only a restart applies."""
    role = config.get("role")
    keys: dict[str, Any] = {
        key: _plain(config.get(key))
        for key in ("role", "node_name", "state_dir", "control_socket", "log", "metrics")
    }
    # The signalling sockets (ingress interface) and the SA watcher are set up at start.
    keys["require_ipsec"] = bool(config.get("require_ipsec", False))
    # ipsec.exempt_peers is reloaded.
    ipsec = {k: v for k, v in (config.get("ipsec") or {}).items() if k != "exempt_peers"}
    keys["ipsec"] = _plain(ipsec)
    keys["dataplane"] = _plain(config.get("dataplane") or {})
    if role == "lma":
        lma = config.get("lma") or {}
        keys["lma"] = {
            "lmaa": _plain(lma.get("lmaa")),
            "udp_port": _plain(lma.get("udp_port", 5436)),
            # The signalling socket listens on every address, but the data plane binds
            # its raw sockets to the IPv4-LMAA.
            "ipv4_lmaa": _plain(lma.get("ipv4_lmaa")),
        }
    elif role == "mag":
        mag = config.get("mag") or {}
        transports = set()
        for peer in mag.get("lmas") or []:
            transport = peer.get("transport", "auto")
            if transport == "auto":
                transport = "ipv4" if peer.get("ipv4_lmaa") is not None else "ipv6"
            transports.add(transport)
        keys["mag"] = {
            "proxy_coa": _plain(mag.get("proxy_coa")),
            "ipv4_proxy_coa": _plain(mag.get("ipv4_proxy_coa")),
            "udp_port": _plain(mag.get("udp_port", 5436)),
            # A socket per transport in use is opened at start.
            "transports": sorted(transports),
            "dhcp": _plain(mag.get("dhcp") or {}),
        }
    return keys


class FilterModule:
    """pmip_agent_restart_keys"""

    def filters(self) -> dict[str, Any]:
        return {"pmip_agent_restart_keys": pmip_agent_restart_keys}
