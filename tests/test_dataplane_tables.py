"""The LMA data plane's bookkeeping, driven by binding events: shared tunnels counted by
bindings (RFC 5213 §5.6.1), routes moved in one step on a handover, nothing done for a
refresh. The backend here records calls instead of forwarding: these tests are about
which calls the events cause; the backend itself is exercised in test_dataplane.py."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest

from pmip_agent.config import AgentConfig, parse_config
from pmip_agent.core import events as ev
from pmip_agent.core.events import BindingView, Encapsulation, Peer
from pmip_agent.dataplane.lma import LmaDataPlane, tunnel_for
from pmip_agent.dataplane.tunnel import Prefix, TunnelKey

MAG_A = Peer(IPv6Address("2001:db8:f::2"))
MAG_B = Peer(IPv6Address("2001:db8:f::3"))


class RecordingBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.tunnels: set[TunnelKey] = set()
        self.routes: dict[Prefix, TunnelKey] = {}

    def add_tunnel(self, tunnel: TunnelKey) -> None:
        assert tunnel not in self.tunnels, "a tunnel added twice"
        self.tunnels.add(tunnel)
        self.calls.append(("add", tunnel))

    def remove_tunnel(self, tunnel: TunnelKey) -> None:
        assert tunnel in self.tunnels
        assert tunnel not in self.routes.values(), "a tunnel removed while routed into"
        self.tunnels.remove(tunnel)
        self.calls.append(("remove", tunnel))

    def route_to(self, prefix: Prefix, tunnel: TunnelKey) -> None:
        assert tunnel in self.tunnels, "routed into a tunnel that does not exist"
        self.routes[prefix] = tunnel
        self.calls.append(("route", prefix))

    def route_from(self, prefix: Prefix, iif: str, tunnel: TunnelKey) -> None:
        raise AssertionError("the LMA routes by destination")

    def unroute(self, prefix: Prefix, iif: str | None = None) -> None:
        del self.routes[prefix]
        self.calls.append(("unroute", prefix))

    def flush(self) -> bool:
        self.calls.append(("flush", None))
        return False

    def flush_in_background(self) -> None:
        self.calls.append(("flush", None))

    def close(self) -> None:
        pass


def _config() -> AgentConfig:
    return parse_config(
        {
            "role": "lma",
            "node_name": "lma1",
            "lma": {
                "lmaa": "2001:db8:f::1",
                "ipv4_pools": [{"name": "p", "prefix": "10.10.0.0/24"}],
                "hnp_pool": {"prefix": "2001:db8:100::/48", "length": 64},
            },
        }
    )


def _view(mn: int, mag: Peer, enc: Encapsulation = Encapsulation.IPV6) -> BindingView:
    return BindingView(
        f"mn{mn}".encode(),
        mag,
        "active",
        enc,
        False,
        IPv4Address(f"10.10.0.{mn + 1}"),
        24,
        IPv4Address("10.10.0.1"),
        "lma",
        "p",
        ((IPv6Address(f"2001:db8:100:{mn}::"), 64),),
        3600,
        0.0,
        0.0,
        0,
        0,
        "rfc5844",
        3,
        None,
    )


@pytest.fixture
def plane() -> tuple[LmaDataPlane, RecordingBackend, list[Callable[[], None]]]:
    deferred: list[Callable[[], None]] = []
    backend = RecordingBackend()
    return LmaDataPlane(_config(), deferred.append, backend), backend, deferred


def test_one_shared_tunnel_per_mag_counted_by_bindings(plane) -> None:  # type: ignore[no-untyped-def]
    dp, backend, deferred = plane
    a = tunnel_for(_view(1, MAG_A))
    dp.observe(ev.BindingUp(_view(1, MAG_A), "created"))
    dp.observe(ev.BindingUp(_view(2, MAG_A), "created"))
    assert [c for c in backend.calls if c[0] == "add"] == [("add", a)]
    assert backend.routes == {
        (IPv4Address("10.10.0.2"), 32): a,
        (IPv6Address("2001:db8:100:1::"), 64): a,
        (IPv4Address("10.10.0.3"), 32): a,
        (IPv6Address("2001:db8:100:2::"), 64): a,
    }
    assert len(deferred) == 1  # one flush for the batch of events
    dp.observe(ev.BindingDown(_view(1, MAG_A), "deregistered"))
    assert a in backend.tunnels  # MN2 still uses it
    dp.observe(ev.BindingDown(_view(2, MAG_A), "expired"))
    assert backend.tunnels == set() and backend.routes == {}


def test_handover_moves_every_route_then_drops_the_unused_tunnel(plane) -> None:  # type: ignore[no-untyped-def]
    dp, backend, _ = plane
    dp.observe(ev.BindingUp(_view(1, MAG_A), "created"))
    backend.calls.clear()
    dp.observe(ev.BindingUp(_view(1, MAG_B), "moved", MAG_A))
    b = tunnel_for(_view(1, MAG_B))
    # The new tunnel first, the routes re-pointed (never removed), then the old one goes.
    assert [c[0] for c in backend.calls] == ["add", "route", "route", "remove"]
    assert set(backend.routes.values()) == {b}


def test_refresh_changes_nothing(plane) -> None:  # type: ignore[no-untyped-def]
    dp, backend, _ = plane
    dp.observe(ev.BindingUp(_view(1, MAG_A), "created"))
    backend.calls.clear()
    dp.observe(ev.BindingUp(_view(1, MAG_A), "refreshed"))
    dp.observe(ev.BindingUp(_view(1, MAG_A), "updated"))  # same everything: no call either
    assert backend.calls == []


def test_new_encapsulation_is_a_new_tunnel(plane) -> None:  # type: ignore[no-untyped-def]
    """RFC 5213 §6.6 names a tunnel by the pair and the encapsulation: IPv4 and IPv4-UDP
    to one MAG are two tunnels."""
    dp, backend, _ = plane
    mag = Peer(MAG_A.v6, IPv4Address("192.0.2.2"), 5436)
    dp.observe(ev.BindingUp(_view(1, mag, Encapsulation.IPV4), "created"))
    dp.observe(ev.BindingUp(_view(2, mag, Encapsulation.IPV4), "created"))
    dp.observe(ev.BindingUp(_view(1, mag, Encapsulation.IPV4_UDP), "updated"))
    assert {t.mode for t in backend.tunnels} == {Encapsulation.IPV4, Encapsulation.IPV4_UDP}
    dp.observe(ev.BindingUp(_view(2, mag, Encapsulation.IPV4_UDP), "updated"))
    assert {t.mode for t in backend.tunnels} == {Encapsulation.IPV4_UDP}


def test_address_changes_route_the_new_and_unroute_the_old(plane) -> None:  # type: ignore[no-untyped-def]
    dp, backend, _ = plane
    view = _view(1, MAG_A)
    dp.observe(ev.BindingUp(view, "created"))
    dual = view._replace(ipv4_hoa=IPv4Address("10.10.0.9"), hnps=())
    dp.observe(ev.BindingUp(dual, "updated"))
    assert set(backend.routes) == {(IPv4Address("10.10.0.9"), 32)}
