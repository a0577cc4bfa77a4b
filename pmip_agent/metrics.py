"""Prometheus metrics, fed by the same engine events the other adapters consume."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

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
        self.bindings = Gauge(
            "pmip_bindings", "Bindings (LMA) or registered MNs (MAG).", registry=r
        )
        self.nat_bindings = Gauge(
            "pmip_nat_bindings", "Bindings whose signalling and data traverse a NAT.", registry=r
        )
        self.pool_addresses = Gauge(
            "pmip_pool_addresses", "IPv4 home address pool use.", ["pool", "state"], registry=r
        )
        self.role = role

    def serve(self, address: str, port: int) -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def observe(self, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.BindingUp:
            self.pbu.labels("received", "0").inc()
            self.pba.labels("sent", "0").inc()
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
