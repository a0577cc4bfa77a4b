"""Prometheus metrics, fed by the same engine events the other adapters consume."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .core import events as ev


class Metrics:
    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pbu = Counter(
            "pmip_pbu_total",
            "Proxy Binding Updates by direction and outcome status.",
            ["direction", "status"],
            registry=r,
        )
        self.pba = Counter(
            "pmip_pba_total",
            "Proxy Binding Acknowledgements by direction and status.",
            ["direction", "status"],
            registry=r,
        )
        self.dropped = Counter(
            "pmip_messages_dropped_total",
            "Input not processed (malformed or unexpected).",
            ["reason"],
            registry=r,
        )
        self.retransmissions = Counter(
            "pmip_pbu_retransmissions_total", "PBUs sent again after a timeout.", registry=r
        )
        self.state = StateCollector()
        r.register(self.state)
        self.role = role
        # Children looked up once: labels() costs more than the increment on a hot path.
        self._pbu_in_ok = self.pbu.labels("received", "0")
        self._pba_out_ok = self.pba.labels("sent", "0")

    def serve(self, address: str, port: int) -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def observe(self, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.BindingUp:
            self._pbu_in_ok.inc()
            self._pba_out_ok.inc()
        elif kind is ev.PbuRejected:
            status = str(event.status)  # type: ignore[union-attr]
            self.pbu.labels("received", status).inc()
            self.pba.labels("sent", status).inc()
        elif kind is ev.MessageDropped:
            self.dropped.labels(event.reason).inc()  # type: ignore[union-attr]
        elif kind is ev.TunnelNeeded:
            self.pba.labels("received", "0").inc()
        elif kind is ev.RegistrationRejected:
            self.pba.labels("received", str(event.status)).inc()  # type: ignore[union-attr]


@dataclass
class State:
    bindings: int = 0
    nat_bindings: int = 0
    pools: list[tuple[str, int, int]] = field(default_factory=list)  # name, used, free


class StateCollector(Collector):
    """Gauges of the service's state, read only when Prometheus scrapes: counting NAT
    bindings walks the whole cache, which must not happen once per packet batch."""

    def __init__(self) -> None:
        self.read: Callable[[], State] = State

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.read()
        yield GaugeMetricFamily(
            "pmip_bindings", "Bindings (LMA) or registered MNs (MAG).", value=state.bindings
        )
        yield GaugeMetricFamily(
            "pmip_nat_bindings",
            "Bindings whose signalling and data traverse a NAT.",
            value=state.nat_bindings,
        )
        pools = GaugeMetricFamily(
            "pmip_pool_addresses", "IPv4 home address pool use.", labels=["pool", "state"]
        )
        for name, used, free in state.pools:
            pools.add_metric([name, "used"], used)
            pools.add_metric([name, "free"], free)
        yield pools
