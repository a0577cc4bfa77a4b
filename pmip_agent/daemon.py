"""Wires the adapters to the engines: the one module that knows them all.

Each service reads a batch from its sockets, feeds the engine with the wall clock, then
*persists the resulting events before sending anything* (so a binding is durable before
its PBA leaves: group commit per batch), sends, and hands the events to the observers
(logs, metrics, data plane). Timers are one asyncio handle armed at ``engine.get_timer()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from . import quiet_gc
from .config import AgentConfig, ConfigError, load_config
from .control.server import ControlServer
from .core import events as ev
from .core.lma import LmaEngine
from .core.mag import MagEngine
from .core.templates import accepted_ipv4
from .dataplane import LmaDataPlane, MagDataPlane
from .dhcp import codec as dhcp
from .dhcp.agent import DhcpAgent, DhcpSend
from .dhcp.offload import RelayOffload
from .dhcp.sockets import DhcpInterfaceSocket, DhcpRelaySocket
from .metrics import Metrics, State
from .net.access_link import LinkMonitor, RouterSolicitationListener
from .net.hot_selector import HotSelector
from .net.ipsec import SaTable, SaWatcher
from .net.mh_socket import MhSocket
from .net.ratelimit import RateLimitedLog
from .net.udp4 import Udp4Socket
from .store.errors import StoreError
from .store.serialize import binding_to_json, bul_to_json
from .store.sqlite import LmaStore, MagStore
from .wire.constants import MhType

log = logging.getLogger("pmip")
Observer = Callable[[ev.Event], None]
# How long the MAG may hold back commits, logs and tunnel setup while an MN that was just
# sent a DHCP OFFER is about to REQUEST (seed Figures 2 and 3: tunnel setup and the
# OFFER/REQUEST/ACK exchange run in parallel). A bound, not a wait: the ACK ends it.
DHCP_EXCHANGE_S = 0.05
# ... and how long it holds them back once it has answered an MN. That answer wakes the
# MN, most likely onto the MAG's own CPU (a socket wake-up pulls its reader to the waker),
# so work started at once would keep the MN from reading it.
MN_TURN_S = 0.001
# The LMA's staged rows go into its journal this long after the first of them (or at
# once past SETTLE_ROWS): after the DHCP exchange its PBA answers (about a millisecond),
# and a few flushes per transaction under load, each short enough not to stall the loop.
SETTLE_S = 0.005
SETTLE_ROWS = 4096
SETTLE_RETRY_S = 1.0
# The LMA's logs, metrics and data plane for new bindings run this long after their PBAs
# (see LmaService.notify); refreshes, and anything that changes a data path, at once.
OBSERVE_NEW_S = 0.003


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        mn_id = getattr(record, "mn_id", None)
        if mn_id is not None:
            entry["mn_id"] = mn_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pyroute2", "asyncio"):  # their debug output would drown ours
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _rss_mib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    except (OSError, ValueError, IndexError):
        return 0


def _mn(mn_id: bytes) -> str:
    return mn_id.decode("utf-8", "backslashreplace")


def _ipsec_at_start(config: AgentConfig) -> dict[str, object]:
    """The ipsec settings only a restart applies (all but the exemptions)."""
    return config.ipsec.model_dump(exclude={"exempt_peers"})


class Service:
    """What the LMA and MAG services share: timer, flush loop, control, metrics, logs."""

    role = ""

    def __init__(
        self, config: AgentConfig, config_path: Path | None, hot: HotSelector | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.loop = asyncio.get_running_loop()
        self.hot = hot  # the loop's selector, when it is one: sockets' handlers run from it
        self.metrics = Metrics(self.role)
        self.observers: list[Observer] = [self.metrics.observe, self._log_event]
        self.drops = RateLimitedLog(logging.getLogger(f"pmip.{self.role}.drop"))
        self.started_at = time.time()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # what _timer is armed for
        self._stopped = asyncio.Event()
        self.control = ControlServer(Path(config.control_socket), self.handle_command)
        self.log = logging.getLogger(f"pmip.{self.role}")
        # require_ipsec: the SA table from strongSwan, and what is checked against it.
        self.ipsec: SaWatcher | None = None
        self.sa_table = SaTable(ingress_required=True)  # nothing passes before the first read
        self.ipsec_exempt = frozenset(config.ipsec.exempt_peers if config.require_ipsec else ())
        self._ifnames: dict[int | None, str] = {}

    engine: LmaEngine | MagEngine
    mh: MhSocket | None
    udp: Udp4Socket | None

    # --- the loop -----------------------------------------------------------------

    def flush(self) -> None:
        engine = self.engine
        events: list[ev.Event] = []
        while (event := engine.next_event()) is not None:
            events.append(event)
        if events or self.unsaved_state():
            self.persist(events)
        for tx in engine.datagrams_to_send():
            self.send(tx)
        self.notify(events)
        self._arm_timer()

    def notify(self, events: list[ev.Event]) -> None:
        """Hand ``events`` to the observers (metrics, logs, data plane), in order."""
        for event in events:
            for observer in self.observers:
                observer(event)

    # --- signalling in: the same for both roles; with require_ipsec, the *_ipsec pair ---

    def _on_mh(self) -> None:
        assert self.mh is not None
        now = time.time()
        for data, src in self.mh.recv_batch():
            self.engine.receive_ipv6(data, src, now)
        self.flush()

    def _on_udp(self) -> None:
        assert self.udp is not None
        now = time.time()
        for data, src, port in self.udp.recv_batch():
            self.engine.receive_udp(data, src, port, now)
        self.flush()

    def _on_mh_ipsec(self) -> None:
        assert self.mh is not None
        now = time.time()
        for data, src, ifindex in self.mh.recv_batch_ifindex():
            if not self.unprotected(src, ifindex, now):
                self.engine.receive_ipv6(data, src, now)
        self.flush()

    def _on_udp_ipsec(self) -> None:
        assert self.udp is not None
        now = time.time()
        for data, src, port, ifindex in self.udp.recv_batch_ifindex():
            if not self.unprotected(src, ifindex, now):
                self.engine.receive_udp(data, src, port, now)
        self.flush()

    def _arm_timer(self) -> None:
        deadline = self.engine.get_timer()
        if deadline == self._deadline and self._timer is not None:
            return  # most flushes leave the next deadline where it was
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_later(max(0.0, deadline - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.engine.handle_timer(time.time())
        self.flush()

    def persist(self, events: list[ev.Event]) -> None:
        raise NotImplementedError

    def unsaved_state(self) -> bool:
        """True when state outside the events must be saved before anything is sent."""
        return False

    def send(self, tx: ev.Transmit) -> None:
        raise NotImplementedError

    # --- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        self.start()
        if self.config.require_ipsec:
            ic = self.config.ipsec
            self.ipsec = SaWatcher(
                Path(ic.vici_socket), ic.poll_interval_s, ic.ingress_interface, self._on_sa_table
            )
            await self.ipsec.start()
            for peer in sorted(self.ipsec_exempt, key=str):
                self.log.warning("IPsec: signalling with %s is exempt (ipsec.exempt_peers)", peer)
        await self.start_async()
        await self.control.start()
        mc = self.config.metrics
        if mc.enabled:
            self.metrics.serve(str(mc.address), mc.port)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        self.loop.add_signal_handler(signal.SIGINT, self._stopped.set)
        self.log.info("%s %s started", self.role, self.config.node_name)
        quiet_gc.take_over()
        self.flush()
        await self._stopped.wait()
        self.log.info("%s %s stopping", self.role, self.config.node_name)
        await self.control.close()
        if self.ipsec is not None:
            await self.ipsec.close()
        await self.stop_async()
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    async def start_async(self) -> None:
        """Start-up steps that need the event loop."""

    def stop(self) -> None:
        raise NotImplementedError

    async def stop_async(self) -> None:
        """Shut-down steps that need the event loop."""

    def reload(self) -> str:
        if self.config_path is None:
            return "no configuration file to reload"
        try:
            new = load_config(self.config_path)
            if new.role != self.config.role:
                raise ConfigError(f"role: cannot change from {self.config.role} to {new.role}")
            # The sockets and the SA watcher are set up at start; the exemptions are not.
            if new.require_ipsec != self.config.require_ipsec:
                raise ConfigError("require_ipsec: changed, which only a restart applies")
            if _ipsec_at_start(new) != _ipsec_at_start(self.config):
                raise ConfigError("ipsec: changed, which only a restart applies")
            self.apply_config(new)
        except (ConfigError, ValueError) as exc:
            self.log.error("reload refused, keeping the running configuration:\n%s", exc)
            raise ValueError(f"reload refused: {exc}") from exc
        self.config = new
        self.log.info("configuration reloaded from %s", self.config_path)
        exempt = frozenset(new.ipsec.exempt_peers if new.require_ipsec else ())
        if exempt != self.ipsec_exempt:
            self.ipsec_exempt = exempt
            self.log.warning(
                "IPsec: exempt peers now %s", ", ".join(sorted(map(str, exempt))) or "none"
            )
            self.ipsec_changed()
        self.flush()
        return "reloaded"

    def apply_config(self, new: AgentConfig) -> None:
        raise NotImplementedError

    # --- IPsec (require_ipsec) ---------------------------------------------------------

    def _on_sa_table(self, table: SaTable) -> None:
        self.sa_table = table
        self.log.info(
            "IPsec child SAs installed: %s (ingress ifindex %s)",
            ", ".join(table.peers) or "none",
            table.ingress_ifindex if table.ingress_required else "any",
        )
        self.ipsec_changed()
        self.flush()

    def ipsec_changed(self) -> None:
        """The SA table changed (the MAG holds or releases its LMAs)."""

    def unprotected(self, src: object, ifindex: int | None, now: float) -> bool:
        """True (and counted and logged) when signalling from ``src`` that came in on
        ``ifindex`` was not carried by an IPsec SA: it must be dropped."""
        if self.sa_table.protected(src, ifindex) or src in self.ipsec_exempt:  # type: ignore[arg-type]
            return False
        self.metrics.dropped.labels("ipsec-unprotected").inc()
        name = self._ifnames.get(ifindex)
        if name is None:
            try:
                name = socket.if_indextoname(ifindex) if ifindex else "?"
            except OSError:
                name = "?"
            self._ifnames = {**self._ifnames, ifindex: name} if len(self._ifnames) < 64 else {}
        self.drops.warning(
            "ipsec-unprotected",
            now,
            "dropped signalling from %s on %s: not protected by an IPsec SA",
            src,
            name,
        )
        return True

    def _watch(self, sock: Any, on_readable: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                on_readable()
            except Exception:  # an adapter bug must not stop the service
                self.log.exception("error while handling input")

        if self.hot is not None:
            self.hot.watch(sock.fileno(), guarded)
        else:
            self.loop.add_reader(sock.fileno(), guarded)

    def _unwatch(self, sock: Any) -> None:
        if self.hot is not None:
            self.hot.unwatch(sock.fileno())
        else:
            self.loop.remove_reader(sock.fileno())

    # --- operator interface -------------------------------------------------------

    async def handle_command(self, request: dict[str, Any]) -> Any:
        cmd = request.get("cmd")
        if cmd == "reload":
            return self.reload()
        if cmd == "status":
            return self.status()
        if cmd == "bindings":
            return self.binding_list()
        if cmd == "show":
            mn = str(request.get("mn_id", ""))
            found = [b for b in self.binding_list() if b["mn_id"] == mn]
            if not found:
                raise ValueError(f"no binding for {mn!r}")
            return found[0]
        if cmd == "pools":
            return self.pool_list()
        raise ValueError(f"unknown command {cmd!r}")

    def status(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "node": self.config.node_name,
            "uptime_s": round(time.time() - self.started_at, 1),
            "bindings": len(self.engine),
        }

    def binding_list(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def pool_list(self) -> list[dict[str, Any]]:
        raise ValueError(f"pools are kept by the LMA; this is a {self.role}")

    # --- logs ---------------------------------------------------------------------

    def _log_event(self, event: ev.Event) -> None:
        kind = type(event)
        if (
            kind is ev.BindingUp
            and event.change == "refreshed"  # type: ignore[union-attr]
            and not self.log.isEnabledFor(logging.DEBUG)
        ):
            return  # the commonest event: not even looked at unless DEBUG is on
        if kind is ev.MessageDropped:
            e: Any = event
            self.drops.warning(
                e.reason, time.time(), "dropped message from %s: %s %s", e.peer, e.reason, e.detail
            )
            return
        if kind is ev.PbuRejected:
            # Senders choose what gets rejected, so these are rate-limited like bad input,
            # keyed by status (the MN and the peer are the sender's choice too).
            r: Any = event
            mn = _mn(r.mn_id) if r.mn_id else "?"
            self.drops.warning(
                f"pbu-rejected-{r.status}",
                time.time(),
                "PBU rejected: mn=%s from %s status=%s (%s)%s",
                mn,
                r.peer,
                r.status,
                r.reason,
                f" ipv4_status={r.ipv4_status}" if r.ipv4_status is not None else "",
            )
            return
        mn_id = getattr(event, "mn_id", None) or getattr(
            getattr(event, "binding", None), "mn_id", None
        )
        extra = {"mn_id": _mn(mn_id)} if mn_id is not None else {}
        level, text = self.describe(event)
        if text:
            self.log.log(level, text, extra=extra)

    def describe(self, event: ev.Event) -> tuple[int, str]:
        return logging.DEBUG, ""


class LmaService(Service):
    role = "lma"

    def start(self) -> None:
        cfg = self.config
        started = time.perf_counter()
        self.engine = LmaEngine(cfg.lma_settings(), cfg.profiles(), cfg.pools(), cfg.hnp_pool())
        state_dir = Path(cfg.state_dir)
        self.store = LmaStore(state_dir / f"{cfg.node_name}.lma.sqlite")
        self._settle_handle: asyncio.Handle | None = None
        self._settle_failing = False
        self._settle_due = False  # rows staged, their settle not scheduled yet
        self._unobserved: list[ev.Event] = []
        self._observe_handle: asyncio.TimerHandle | None = None
        self.metrics.state.read = self._state
        self.dataplane: LmaDataPlane | None = None
        if cfg.dataplane.enabled:  # tunnels and routes follow the binding events
            self.dataplane = LmaDataPlane(cfg, self.loop.call_soon)
            self.dataplane.start()
            self.observers.append(self.dataplane.observe)
        self._restore(started)
        guarded = cfg.require_ipsec
        self.mh = MhSocket(cfg.lma.lmaa, pktinfo=guarded)
        self._watch(self.mh, self._on_mh_ipsec if guarded else self._on_mh)
        self.udp: Udp4Socket | None = None
        if cfg.lma.ipv4_lmaa is not None:
            self.udp = Udp4Socket(None, cfg.lma.udp_port, pktinfo=guarded)
            self._watch(self.udp, self._on_udp_ipsec if guarded else self._on_udp)

    def _restore(self, started: float) -> None:
        """Bring the stored bindings back, a batch at a time. A restored binding is no
        news to the logs or the PBU counters (nothing was received): its event goes to the
        data plane only, and one line sums them up. Lapsed entries are purged, and those
        events take the ordinary path (store, logs, metrics) once the load is done."""
        engine, dataplane = self.engine, self.dataplane
        now = time.time()
        restored = 0
        later: list[ev.Event] = []
        t = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a million long-lived objects, no cycles: nothing for it to find
        try:
            for views in self.store.load_batches():
                engine.restore(views, now)
                del views
                while (event := engine.next_event()) is not None:
                    if type(event) is ev.BindingUp and event.change == "restored":
                        restored += 1
                        if dataplane is not None:
                            dataplane.observe(event)
                    else:
                        later.append(event)
                if dataplane is not None:
                    dataplane.push()  # this batch's routes, while the next one decodes
        finally:
            if gc_was_enabled:
                gc.enable()
        # What survives start-up lives until shutdown: keep the cyclic GC from walking it
        # at every full collection (seconds each with a million bindings).
        gc.freeze()
        self.log.info(
            "restored %d bindings from %s in %.1f s (start-up %.1f s, RSS %d MiB)",
            restored,
            self.store.path,
            time.perf_counter() - t,
            time.perf_counter() - started,
            _rss_mib(),
        )
        if later:
            self.persist(later)
            if self._settle_due:
                self._schedule_settle()
            super().notify(later)

    def notify(self, events: list[ev.Event]) -> None:
        """Service.notify, with the observers (logs, metrics, data plane) of new bindings
        OBSERVE_NEW_S after their PBAs, several flushes at a time. The MAG answering the
        PBA, and then its MN, need the CPU just then: on two cores the LMA's logging and
        route setup for a new binding delayed a DHCP attach's OFFER -> REQUEST by 0.1 ms.
        A new binding carries no traffic yet (its MN learns its address from this PBA).
        Any other binding event (refreshed, moved, updated, down, purged) runs the
        observers at once, after those waiting, in order. Refreshes are the bulk of a
        loaded LMA's events; with them held back too, the refresh-rate benchmark
        (bench/lma_daemon_load.py) gave a median of 38k PBU/s against 46k over three
        alternating pairs of runs, so they are not."""
        if self._settle_due:
            self._schedule_settle()
        if not events:
            return
        self._unobserved += events
        if all(_may_wait(e) for e in events):
            if self._observe_handle is None:
                self._observe_handle = self.loop.call_later(OBSERVE_NEW_S, self._observe)
        else:
            self._observe()

    def _observe(self) -> None:
        if self._observe_handle is not None:
            self._observe_handle.cancel()
            self._observe_handle = None
        events, self._unobserved = self._unobserved, []
        super().notify(events)

    def stop(self) -> None:
        self._observe()  # the logs and the data plane of the last PBAs
        self.mh.close()
        if self.udp is not None:
            self.udp.close()
        if self._settle_handle is not None:
            self._settle_handle.cancel()
        self.store.close()  # settles what is staged
        if self.dataplane is not None:
            self.dataplane.close()

    def persist(self, events: list[ev.Event]) -> None:
        # Restored bindings never come through here (see _restore): writing them back
        # would rewrite the whole database at every start. Staged: durable now in one
        # write(); the journal's transaction runs once the PBAs are out (_settle).
        if self.store.stage(events) and not self._settle_failing:  # else the retry will do
            self._settle_due = True  # scheduled by notify, once the PBAs are sent

    def _schedule_settle(self) -> None:
        self._settle_due = False
        if self.store.staged_rows >= SETTLE_ROWS:  # once this flush is done
            if self._settle_handle is not None:
                self._settle_handle.cancel()
            self._settle_handle = self.loop.call_soon(self._settle)
        elif self._settle_handle is None:
            self._settle_handle = self.loop.call_later(SETTLE_S, self._settle)

    def _settle(self) -> None:
        self._settle_handle = None
        try:
            self.store.settle()
        except StoreError as exc:  # the rows stay staged, in the pending file too
            self.log.error("store: %s; retrying in %.0f s", exc, SETTLE_RETRY_S)
            self._settle_failing = True
            self._settle_handle = self.loop.call_later(SETTLE_RETRY_S, self._settle)
        else:
            if self._settle_failing:
                self.log.info("store: the journal takes the staged rows again")
            self._settle_failing = False
        quiet_gc.collect_if_due()  # the PBAs are out: the quiet moment for the collector

    def send(self, tx: ev.Transmit) -> None:
        try:
            if tx.peer.v4 is None:
                self.mh.send(tx.data, tx.peer.v6)
            elif self.udp is not None:
                self.udp.send(tx.data, tx.peer.v4, tx.peer.port)
        except OSError as exc:
            self.drops.warning("send-failed", time.time(), "cannot send to %s: %s", tx.peer, exc)

    def _state(self) -> State:
        engine = self.engine
        return State(
            len(engine),
            engine.nat_count(),
            [(p.name, p.used, p.size - p.used) for p in engine.pools.pools.values()],
        )

    def apply_config(self, new: AgentConfig) -> None:
        self.engine.reconfigure(
            new.lma_settings(), new.profiles(), new.pools(), new.hnp_pool(), time.time()
        )

    def binding_list(self) -> list[dict[str, Any]]:
        now = time.time()
        return [binding_to_json(b, now) for b in self.engine.bindings()]

    def pool_list(self) -> list[dict[str, Any]]:
        out = [
            {
                "name": p.name,
                "prefix": str(p.network),
                "default_router": str(p.default_router),
                "size": p.size,
                "used": p.used,
                "free": p.size - p.used,
            }
            for p in self.engine.pools.pools.values()
        ]
        if self.engine.hnp_pool is not None:
            h = self.engine.hnp_pool
            out.append(
                {
                    "name": "hnp",
                    "prefix": str(h.network),
                    "default_router": None,
                    "size": h.size,
                    "used": h.used,
                    "free": h.size - h.used,
                }
            )
        return out

    def describe(self, event: ev.Event) -> tuple[int, str]:
        e: Any = event
        kind = type(event)
        if kind is ev.BindingUp:
            b = e.binding
            level = logging.DEBUG if e.change == "refreshed" else logging.INFO
            moved = f" from {e.previous_mag}" if e.previous_mag else ""
            hnps = ",".join(f"{p}/{n}" for p, n in b.hnps) or "-"
            return level, (
                f"binding {e.change}{moved}: mn={b.mn_name} hoa={b.ipv4_hoa or '-'} hnps={hnps} "
                f"mag={b.mag} transport={b.encapsulation} nat={b.nat} lifetime={b.lifetime_s}s"
            )
        if kind is ev.BindingDown:
            return (
                logging.INFO,
                f"binding down ({e.reason}): mn={e.binding.mn_name} "
                f"hoa={e.binding.ipv4_hoa or '-'}",
            )
        if kind is ev.BindingPurged:
            return (
                logging.INFO,
                f"binding deleted: mn={_mn(e.mn_id)} hoa={e.ipv4_hoa or '-'} released",
            )
        return logging.DEBUG, ""


class MagService(Service):
    role = "mag"

    def start(self) -> None:
        cfg = self.config
        state_dir = Path(cfg.state_dir)
        self.store = MagStore(state_dir / f"{cfg.node_name}.mag.sqlite")
        sequence, saved = self.store.load()
        self.engine = MagEngine(cfg.mag_settings(), sequence)
        self._sa_up: dict[str, bool] = {}  # per LMA, as last logged
        if cfg.require_ipsec:  # no signalling until the SA table says an LMA is protected
            for name in self.engine.settings.lmas:
                self.engine.hold(name)
        self._retransmissions_seen = 0
        self._saved_sequence = sequence
        self.metrics.state.read = lambda: State(
            sum(1 for e in self.engine.entries() if e.registered),
            sum(1 for e in self.engine.entries() if e.registered and e.nat),
        )
        self._dirty: set[bytes] = set()
        self._removed: set[bytes] = set()
        self._unsaved: list[ev.Event] = []  # handled, sent, not yet committed
        self._unobserved: list[ev.Event] = []  # not yet seen by logs, metrics, data plane
        self._attach_notes: list[tuple[bytes, str, str]] = []
        self._catch_up_handle: asyncio.TimerHandle | None = None
        self._answered = False  # a DHCP message went to an MN since the last _settle
        self._settle_soon = False  # _settle is scheduled
        self.iface_mn = {i.name: i.mn_id.encode() for i in cfg.mag.access_interfaces if i.mn_id}
        lmas = cfg.mag_settings().lmas.values()
        guarded = cfg.require_ipsec
        self.mh = (
            MhSocket(cfg.mag.proxy_coa, pktinfo=guarded)
            if any(p.transport == "ipv6" for p in lmas)
            else None
        )
        self.udp = (
            Udp4Socket(cfg.mag.ipv4_proxy_coa, cfg.mag.udp_port, pktinfo=guarded)
            if any(p.transport == "ipv4" for p in lmas)
            else None
        )
        if self.mh is not None:
            self._watch(self.mh, self._on_mh_ipsec if guarded else self._on_mh)
        if self.udp is not None:
            self._watch(self.udp, self._on_udp_ipsec if guarded else self._on_udp)
        access = [i.name for i in cfg.mag.access_interfaces]
        self.by_mac = {
            mac: mn_id for mn_id, p in cfg.profiles().items() for mac in p.link_layer_ids
        }
        self.links = LinkMonitor(access, self._on_link)
        self.solicits = RouterSolicitationListener(access, self._on_solicit)
        self._watch(self.solicits, self.solicits.on_readable)
        self.dataplane: MagDataPlane | None = None
        if cfg.dataplane.enabled:  # per-MN routing into the tunnels, RAs on access links
            self.dataplane = MagDataPlane(cfg, self.loop.call_later)
            self.dataplane.start()
            self.observers.append(self.dataplane.observe)
            self.solicits.subscribers.append(self.dataplane.on_solicit)
        self.dhcp_sockets: dict[str, tuple[int, DhcpInterfaceSocket]] = {}
        self.dhcp_relay: DhcpRelaySocket | None = None
        self.dhcp_agent: DhcpAgent | None = None
        self.kernel: RelayOffload | None = None  # mag.dhcp.kernel_relay
        # PBU sequence number -> (MN, the offered address it reports, the LMA), for _on_mh.
        self._expected: dict[int, tuple[bytes, bytes, IPv6Address]] = {}
        if cfg.mag.dhcp.mode != "off":
            self.dhcp_agent = DhcpAgent(
                self.engine,
                node_name=cfg.node_name,
                lease_s=cfg.mag.dhcp.lease_s,
                servers=list(cfg.mag.dhcp.servers),
                relay_address=cfg.mag.relay_address,
                fallback_server_id=cfg.mag.relay_address,
                clock=time.time,
            )
            # Not in self.observers: the MAG's flush hands it events first (replies first).
            if cfg.mag.dhcp.mode == "relay" and cfg.mag.relay_address is not None:
                lmas = self.engine.settings.lmas.values()
                if cfg.mag.dhcp.kernel_relay:
                    self.kernel = RelayOffload.start(
                        state_dir,
                        cfg.mag.relay_address,
                        cfg.mag.dhcp.servers[0],
                        cfg.mag.proxy_coa,
                        lmas,
                        self.dhcp_agent,
                        self.drops,
                        self._profile_macs,
                        pbus=not cfg.require_ipsec,  # a PBU sent by tc would bypass the SA
                    )
                    self.dhcp_agent.kernel_relay = self.kernel is not None
                if self.kernel is None:
                    RelayOffload.remove_stale(
                        access, [cfg.mag.dhcp.servers[0], *(lma.lmaa for lma in lmas)]
                    )
                self.dhcp_relay = DhcpRelaySocket(
                    cfg.mag.relay_address, self._on_dhcp_server, marks=self.kernel is not None
                )
                self._watch(self.dhcp_relay, self.dhcp_relay.on_readable)
            for name in access:
                with contextlib.suppress(OSError):  # not there yet: opened when it comes up
                    self._open_access(name)
        self._saved = saved

    def _on_mh(self) -> None:
        """Service._on_mh, with a server's ACK held for its PBA passed on first: read
        from the PBA's bytes (`accepted_ipv4`), ahead of the PBA's intake. (With
        require_ipsec, PBAs take _on_mh_ipsec, and such an ACK waits for the intake.)"""
        assert self.mh is not None
        now = time.time()
        batch = self.mh.recv_batch()
        agent = self.dhcp_agent
        kernel = self.kernel
        if kernel is not None and kernel.armed:  # PBAs to PBUs the kernel sent, maybe
            for data, _src in batch:
                if len(data) >= 10 and data[2] == MhType.BINDING_ACK:
                    kernel.answered(int.from_bytes(data[8:10], "big"))
        if self._expected and agent is not None and agent.holds_replies():
            self._release_early(agent, batch)
        for data, src in batch:
            self.engine.receive_ipv6(data, src, now)
        self.flush()

    def _release_early(self, agent: DhcpAgent, batch: list[tuple[bytes, IPv6Address]]) -> None:
        for data, src in batch:
            seen = accepted_ipv4(data)
            if seen is None:
                continue
            expected = self._expected.get(seen[0])
            if expected is not None and expected[1] == seen[1] and expected[2] == src:
                del self._expected[seen[0]]
                agent.release_early(expected[0], seen[1])
        self._send_dhcp(agent.datagrams_to_send())

    def _note_reports(self, reported: list[bytes]) -> None:
        """The PBUs about to leave for these MNs' offered addresses, by sequence number:
        what _on_mh recognises their PBAs by. (The kernel relay reads the PBUs as they
        leave: relay.c, uplink_out.)"""
        expected = self._expected
        if len(expected) > 1024:  # PBAs lost or refused: sequence numbers come round
            expected.clear()
        for mn_id in reported:
            pending = self.engine.reporting_ipv4(mn_id)
            if pending is not None:
                sequence, hoa, lmaa = pending
                expected[sequence] = (mn_id, hoa.packed, lmaa)

    def _profile_macs(self, mn_id: bytes) -> tuple[bytes, ...]:
        profile = self.engine.settings.profiles.get(mn_id)
        return tuple(profile.link_layer_ids) if profile is not None else ()

    async def start_async(self) -> None:
        up = await self.links.start()
        now = time.time()
        attached_now = {self.iface_mn[i] for i, is_up in up.items() if is_up and i in self.iface_mn}
        # A restart re-registers the MNs it served, asking for the same addresses.
        for view in self._saved:
            if view.mn_id in attached_now or view.mn_id not in self.iface_mn.values():
                self.engine.attach(view.mn_id, now, ipv4_hint=view.ipv4_hoa, hnp_hints=view.hnps)
                self.log.info("re-registering %s with hoa %s", _mn(view.mn_id), view.ipv4_hoa)
        for name, is_up in up.items():
            if is_up:
                self._on_link(name, True)

    def stop(self) -> None:
        self._catch_up()  # nothing held back is lost on a clean stop
        if self.kernel is not None:
            self.kernel.close()
        for sock in (
            self.mh,
            self.udp,
            self.solicits,
            self.dhcp_relay,
            *self.dhcp_sockets.values(),
        ):
            if sock is not None:
                sock.close()
        self.store.close()
        if self.dataplane is not None:
            self.dataplane.close()

    async def stop_async(self) -> None:
        await self.links.close()

    # --- attach and detach (seed §1: a point-to-point access link per MN) -----------

    def _identify(self, ifname: str, mac: bytes | None) -> bytes | None:
        """The MN on this link (`_known_mn`); warns, rate-limited, when there is none."""
        mn_id = self._known_mn(ifname, mac)
        if mn_id is None:
            self.drops.warning(
                f"unknown-mn-{ifname}",
                time.time(),
                "MN on %s (link-layer address %s) has no policy profile: no service",
                ifname,
                mac.hex(":") if mac else "unknown",
            )
        return mn_id

    def _known_mn(self, ifname: str, mac: bytes | None) -> bytes | None:
        """The link's own MN, else the profile naming this MAC, else None."""
        mn_id = self.iface_mn.get(ifname)
        if mn_id is None and mac is not None:
            mn_id = self.by_mac.get(mac)
        return mn_id

    def _attach(self, ifname: str, mac: bytes | None, how: str) -> bytes | None:
        mn_id = self._identify(ifname, mac)
        if mn_id is None:
            return None
        known = self.engine.entry(mn_id) is not None
        if self.dataplane is not None:  # on a shared link only this tells where the MN is
            self.dataplane.locate(mn_id, ifname)
        if not self.engine.attach(mn_id, time.time(), link_layer_id=mac):
            self.log.warning("attach on %s: MN %s has no LMA to serve it", ifname, _mn(mn_id))
            return None
        if not known:  # logged once the PBU is out (flush)
            self._attach_notes.append((mn_id, ifname, how))
        return mn_id

    def _open_access(self, ifname: str) -> None:
        """Listen for RS and DHCP on an access link, once per incarnation of the link:
        a socket bound to a device follows its index, so a re-created link needs a new one."""
        index = socket.if_nametoindex(ifname)
        self.solicits.join(ifname)
        if self.config.mag.dhcp.mode == "off":
            return
        current = self.dhcp_sockets.get(ifname)
        if current is not None:
            if current[0] == index:
                return
            self._unwatch(current[1])
            current[1].close()
        sock = DhcpInterfaceSocket(ifname, self._on_dhcp, marks=self.kernel is not None)
        self._watch(sock, sock.on_readable)
        self.dhcp_sockets[ifname] = (index, sock)
        if self.kernel is not None:
            self.kernel.link_up(ifname, self.iface_mn, self.by_mac)

    def _on_link(self, ifname: str, up: bool) -> None:
        if up:
            try:
                self._open_access(ifname)
            except OSError as exc:
                self.log.warning("cannot listen on access link %s: %s", ifname, exc)
        elif self.dataplane is not None:
            self.dataplane.link_gone(ifname)
        mn_id = self.iface_mn.get(ifname)
        if mn_id is None:
            return  # a shared link: MNs are found by their RS or DHCP messages
        if up:
            self._attach(ifname, None, "link up")
        else:
            self.engine.detach(mn_id, time.time())
        self.flush()

    def _on_solicit(self, ifname: str, mac: bytes | None) -> None:
        self._attach(ifname, mac, "router solicitation")
        self.flush()

    def _on_dhcp(self, ifname: str, data: bytes, addr: tuple[str, int], copy: bool) -> None:
        agent = self.dhcp_agent
        attached_early, attached = False, None
        seen = dhcp.peek(data)
        if copy:
            self._kernel_copy(ifname, seen)
            return
        if seen is not None and seen.op == 1:
            mac = seen.client_mac()
            mn_id = self._known_mn(ifname, mac)
            if mn_id is not None and agent is not None and agent.forward(ifname, mn_id, data, seen):
                if self.kernel is not None:
                    self.kernel.note_mac(mn_id, mac)
                self._relay_first(agent, ifname, mac, seen)
                return
            if mn_id is not None and seen.message_type != dhcp.RELEASE:
                # Attached, and its PBU sent, before the message is decoded: in Figure 2
                # the LMA's round trip is what the MN waits for (steps 2-3).
                attached = self._attach(ifname, mac, f"DHCP {seen.name}")
                attached_early = True
                if attached is not None and self.kernel is not None:
                    # Its OFFER, sent by the kernel with the PBA: armed before the PBU
                    # leaves, which wakes the LMA, which may take this CPU until then.
                    self.kernel.arm_offer(attached, ifname, data, seen)
                self.flush()
        try:
            msg = dhcp.parse(data)
        except dhcp.DhcpError as exc:
            self.metrics.dropped.labels(f"dhcp-{exc.reason}").inc()
            self.drops.warning(
                f"dhcp-{exc.reason}", time.time(), "dropped DHCP on %s: %s", ifname, exc
            )
            return
        if msg.op != 1:
            return
        mac = dhcp.client_mac(msg)
        now = time.time()
        if msg.message_type == dhcp.RELEASE:
            mn_id = self._identify(ifname, mac)
            if mn_id is not None and self.dhcp_agent is not None:
                self.dhcp_agent.from_client(ifname, mn_id, msg, now)
            if mn_id is not None:
                self.log.info(
                    "DHCP RELEASE: mn=%s on %s", _mn(mn_id), ifname, extra={"mn_id": _mn(mn_id)}
                )
                self.engine.detach(mn_id, time.time())
        else:
            mn_id = attached if attached_early else self._attach(ifname, mac, f"DHCP {msg.name}")
            if mn_id is not None and agent is not None:
                agent.from_client(ifname, mn_id, msg, now)
        self.flush()

    def _kernel_copy(self, ifname: str, seen: dhcp.Peek | None) -> None:
        """The kernel relayed this DISCOVER (its copy is marked): attach the MN. Or it
        ACKed this REQUEST (the MAG's own server's, relay.c's send_ack): note it."""
        kernel, agent = self.kernel, self.dhcp_agent
        if kernel is None or agent is None or seen is None or seen.op != 1:
            return
        kernel.copies += 1
        mac = seen.client_mac()
        mn_id = self._known_mn(ifname, mac)
        if mn_id is not None and agent.forward(ifname, mn_id, b"", seen, copy=True):
            kernel.note_mac(mn_id, mac)
            if self._attach(ifname, mac, f"DHCP {seen.name}") is not None:
                kernel.arm(mn_id, mac, time.time())  # the PBU its OFFER will send
            self.flush()
        elif mn_id is not None and seen.message_type == dhcp.REQUEST:
            agent.acked_in_kernel(mn_id)  # of the OFFER the kernel sent with the PBA
            self._answered = True
            self.flush()

    def _relay_first(self, agent: DhcpAgent, ifname: str, mac: bytes, seen: dhcp.Peek) -> None:
        """The relay's path (DhcpAgent.forward took the message): what goes to the servers
        leaves before the MN is attached, and the message is never decoded with dpkt. Each
        of those steps costs about 0.1 ms when the MAG has been idle, as it mostly is
        between attaches, and the server can work meanwhile."""
        self._send_dhcp(agent.datagrams_to_send())
        self._attach(ifname, mac, f"DHCP {seen.name}")
        self.flush()

    def _on_dhcp_server(self, data: bytes, addr: tuple[str, int], copy: bool) -> None:
        agent = self.dhcp_agent
        seen = dhcp.peek(data) if agent is not None else None
        kernel = self.kernel
        if copy:  # the kernel passed this OFFER on (and not its PBU): the address, for one
            if kernel is not None:
                kernel.copies += 1
                if seen is not None:
                    kernel.offered(seen.client_mac())
            if agent is not None and seen is not None:
                agent.forward_reply(data, seen, time.time(), copy=True)
                self.flush()
            return
        if kernel is not None and kernel.armed and seen is not None:
            kernel.confirm(seen.client_mac())  # its PBU may have gone with the OFFER
        if agent is not None and seen is not None and agent.forward_reply(data, seen, time.time()):
            # As _relay_first: never decoded, and the reply leaves before any other work
            # (for an OFFER: the PBU with its address, which flush has reported).
            self._send_dhcp(agent.datagrams_to_send())
            self.flush()
            return
        try:
            msg = dhcp.parse(data)
        except dhcp.DhcpError as exc:
            self.metrics.dropped.labels(f"dhcp-{exc.reason}").inc()
            self.drops.warning(
                f"dhcp-{exc.reason}", time.time(), "dropped DHCP from %s: %s", addr, exc
            )
            return
        if self.dhcp_agent is not None and msg.op == 2:
            self.dhcp_agent.from_server(msg, time.time())
        self.flush()

    def _send_dhcp(self, outs: Iterable[DhcpSend]) -> None:
        for out in outs:
            try:
                if out.ifname is None:
                    if self.dhcp_relay is not None:
                        self.dhcp_relay.send(out.data, out.dest)
                elif out.ifname in self.dhcp_sockets:
                    self._answered = True
                    if self.kernel is not None and self.kernel.sent_already(out.data):
                        continue  # its PBA released it in the kernel
                    self.dhcp_sockets[out.ifname][1].send(out.data, out.dest)
            except OSError as exc:
                self.drops.warning(
                    "dhcp-send-failed", time.time(), "cannot send DHCP to %s: %s", out.dest, exc
                )

    def ipsec_changed(self) -> None:
        # Each LMA is signalled to only while an SA covers the address PBUs go to.
        now = time.time()
        engine = self.engine
        for name, lma in engine.settings.lmas.items():
            address = lma.ipv4_lmaa if lma.over_ipv4 else lma.lmaa
            up = address in self.ipsec_exempt or self.sa_table.covers(address)  # type: ignore[arg-type]
            if self._sa_up.get(name) == up:
                continue
            self._sa_up[name] = up
            if up:
                self.log.info("IPsec SA with LMA %s (%s) up: signalling resumes", name, address)
                engine.release(name, now)
            else:
                self.log.warning(
                    "no IPsec SA with LMA %s (%s): signalling waits for it", name, address
                )
                engine.hold(name)

    def persist(self, events: list[ev.Event]) -> None:
        for event in events:
            mn_id = getattr(event, "mn_id", None)
            if mn_id is None:
                continue
            if type(event) is ev.Deregistered:
                self._removed.add(mn_id)
                self._dirty.discard(mn_id)
            else:
                self._dirty.add(mn_id)
        views = [v for m in self._dirty if (v := self.engine.entry(m)) is not None]
        self.store.save(views, self._removed, self.engine.sequence)
        self._saved_sequence = self.engine.sequence
        self._dirty.clear()
        self._removed.clear()

    def unsaved_state(self) -> bool:
        # Without timestamps the LMA checks sequence numbers (RFC 6275 §9.5.1), so a
        # restarted MAG must continue after the last one it sent. With timestamps (the
        # default) it need not, and a commit per PBU would only add latency.
        if self.engine.settings.timestamps:
            return False
        return self.engine.sequence != self._saved_sequence

    def send(self, tx: ev.Transmit) -> None:
        try:
            if tx.peer.v4 is None:
                if self.mh is not None:
                    self.mh.send(tx.data, tx.peer.v6)
            elif self.udp is not None:
                self.udp.send(tx.data, tx.peer.v4, tx.peer.port)
        except OSError as exc:
            self.drops.warning("send-failed", time.time(), "cannot send to %s: %s", tx.peer, exc)

    def flush(self) -> None:
        """Service.flush with the MN's answers first: the DHCP replies to MNs (OFFER/ACK
        straight from here), then the PBUs, then what is relayed to DHCP servers, and only
        then the commit, the logs, the metrics and the data plane; those wait (at most
        DHCP_EXCHANGE_S) while an MN that was just OFFERed is about to REQUEST, so its ACK
        does not queue behind tunnel setup, and MN_TURN_S after any answer to an MN, so
        that the MN it woke reads it first (on two cores, with the catch-up at once, one
        attach in five took 0.7 ms more from REQUEST to ACK at the MN). Seed Figures 2
        and 3 run tunnel setup and OFFER/REQUEST/ACK in parallel; one event loop can only
        interleave them, and the MN's step goes first.

        The order matters where the relay passes a server's OFFER on and reports its
        address in a PBU (Figure 3). Sent first, the PBU wakes the LMA, which takes the
        free core for its whole round trip while the woken MN queues behind it (on two
        cores the MN's OFFER -> REQUEST took 1.3 ms instead of 0.1 ms). So the OFFER
        leaves before this flush, and the address is only reported to the engine here
        (DhcpAgent.report_offered). A PBU still goes before a relayed request: the LMA's
        round trip is the longer one.

        Committing after sending is safe on the MAG: its store only lets a restarted MAG
        re-register the MNs it served. A crash before the commit loses what a crash between
        PBU and PBA loses anyway (the MAG never committed before its PBU): the MN's next
        DHCP or RS (or RENEW, unanswered, then DISCOVER) registers it again, and the LMA's
        binding meanwhile runs out or is replaced. The one exception is the sequence number
        without timestamps (unsaved_state): that is committed before any PBU leaves."""
        engine = self.engine
        agent = self.dhcp_agent
        reported = agent.report_offered(time.time()) if agent is not None else []
        events: list[ev.Event] = []
        while (event := engine.next_event()) is not None:
            events.append(event)
        self._unsaved += events
        if self.unsaved_state():
            self._commit()
        dhcp_out: list[DhcpSend] = []
        if agent is not None:
            for event in events:
                agent.observe(event)
            dhcp_out = agent.datagrams_to_send()
            self._send_dhcp(out for out in dhcp_out if out.ifname is not None)
            kernel = self.kernel
            if kernel is not None:  # after an ACK the PBA released, before the PBUs
                for event in events:
                    if kernel.observe(event):
                        self._answered = True  # its ACK is on its way: the MN reads it first
        if reported:  # before the PBUs: never behind their PBAs
            self._note_reports(reported)
        for tx in engine.datagrams_to_send():
            self.send(tx)
        self._send_dhcp(out for out in dhcp_out if out.ifname is None)
        self._unobserved += events
        if not self._settle_soon:
            self._settle_soon = True
            self.loop.call_soon(self._settle)

    def _settle(self) -> None:
        """The rest of the flushes of one wake-up, once every socket that woke the MAG has
        been handled: an ACK that came in beside the PBA granting it leaves first. The
        attach logs, when the catch-up runs, the engine's timer and the metrics."""
        self._settle_soon = False
        agent = self.dhcp_agent
        for mn_id, ifname, how in self._attach_notes:
            self.log.info(
                "attach: mn=%s on %s (%s)", _mn(mn_id), ifname, how, extra={"mn_id": _mn(mn_id)}
            )
        self._attach_notes.clear()
        answered, self._answered = self._answered, False
        handle = self._catch_up_handle
        delay = catch_up_delay(
            agent is not None and agent.exchange_open(time.time(), DHCP_EXCHANGE_S),
            answered,
            None if handle is None else handle.when() - self.loop.time(),
        )
        if delay == 0.0:
            self._catch_up()
        elif delay is not None and (self._unsaved or self._unobserved):
            if handle is not None:
                handle.cancel()
            self._catch_up_handle = self.loop.call_later(delay, self._caught_up_later)
        self._arm_timer()
        if self.engine.retransmissions != self._retransmissions_seen:
            self.metrics.retransmissions.inc(
                self.engine.retransmissions - self._retransmissions_seen
            )
            self._retransmissions_seen = self.engine.retransmissions

    def _catch_up(self) -> None:
        """The commit and the observers that the DHCP answers went ahead of, in order."""
        if self._catch_up_handle is not None:
            self._catch_up_handle.cancel()
            self._catch_up_handle = None
        if self._unsaved:
            self._commit()
        events, self._unobserved = self._unobserved, []
        self.notify(events)

    def _caught_up_later(self) -> None:
        """The catch-up held back for the MNs' DHCP answers, once they are out: the MAG's
        quiet moment, when the cyclic GC runs (quiet_gc). A catch-up that runs at once
        (nothing answered) may be in the middle of an exchange: a PBU just out, say."""
        self._catch_up()
        quiet_gc.collect_if_due()

    def _commit(self) -> None:
        events, self._unsaved = self._unsaved, []
        self.persist(events)

    def apply_config(self, new: AgentConfig) -> None:
        self.engine.settings = new.mag_settings()
        self.iface_mn = {i.name: i.mn_id.encode() for i in new.mag.access_interfaces if i.mn_id}
        self.by_mac = {mac: m for m, p in new.profiles().items() for mac in p.link_layer_ids}
        access = {i.name for i in new.mag.access_interfaces}
        self.links.watched = set(access)
        self.solicits.watched = set(access)
        for name in access:
            with contextlib.suppress(OSError):  # not there yet: opened when it comes up
                self._open_access(name)
        if self.kernel is not None:
            self.kernel.links_gone(access)
            self.kernel.sync(self.iface_mn, self.by_mac)
        # MNs whose profile is gone get no more service.
        for view in list(self.engine.entries()):
            if view.mn_id not in self.engine.settings.profiles:
                self.engine.detach(view.mn_id, time.time())

    def binding_list(self) -> list[dict[str, Any]]:
        now = time.time()
        return [bul_to_json(v, now) for v in self.engine.entries()]

    def status(self) -> dict[str, Any]:
        status = super().status()
        if self.config.mag.dhcp.kernel_relay:
            kernel = self.kernel
            status["dhcp_kernel_relay"] = (
                kernel.status() if kernel is not None else {"active": False}
            )
        return status

    def describe(self, event: ev.Event) -> tuple[int, str]:
        e: Any = event
        kind = type(event)
        if kind is ev.Ipv4Granted:
            return (
                logging.INFO,
                f"IPv4 granted: mn={_mn(e.mn_id)} hoa={e.hoa}/{e.prefix_len} "
                f"router={e.default_router}",
            )
        if kind is ev.Ipv4Denied:
            return logging.WARNING, f"IPv4 denied: mn={_mn(e.mn_id)} status={e.status}"
        if kind is ev.TunnelNeeded:
            hnps = ",".join(f"{p}/{n}" for p, n in e.hnps) or "-"
            return logging.INFO, (
                f"registered: mn={_mn(e.mn_id)} lma={e.lma} transport={e.encapsulation} "
                f"nat={e.nat} hoa={e.ipv4_hoa or '-'} hnps={hnps} lifetime={e.lifetime_s}s"
            )
        if kind is ev.RegistrationRejected:
            return logging.WARNING, f"registration rejected: mn={_mn(e.mn_id)} status={e.status}"
        if kind is ev.BindingLost:
            return logging.WARNING, f"binding lost: mn={_mn(e.mn_id)} ({e.reason})"
        if kind is ev.Deregistered:
            return logging.INFO, f"deregistered: mn={_mn(e.mn_id)}"
        return logging.DEBUG, ""


def catch_up_delay(exchange_open: bool, answered: bool, due_in: float | None) -> float | None:
    """When the MAG's catch-up (MagService.flush) is to run: 0.0 at once, a delay in
    seconds to (re)schedule it, or None to leave it as it is (``due_in``: seconds until the
    one scheduled runs, None if none is). While an exchange is open it waits at most
    DHCP_EXCHANGE_S from the first flush that held it back; after an answer to an MN,
    MN_TURN_S, which only ever brings it forward, so answers that keep coming cannot
    starve the commit and the tunnel setup; else at once."""
    if exchange_open:
        return DHCP_EXCHANGE_S if due_in is None else None
    if answered:
        return MN_TURN_S if due_in is None or due_in > MN_TURN_S else None
    return 0.0


def _may_wait(event: ev.Event) -> bool:
    """The LMA's observers may see ``event`` a little later (see LmaService.notify)."""
    kind = type(event)
    if kind is ev.BindingUp:
        return event.change == "created"  # type: ignore[attr-defined]
    return kind is not ev.BindingDown and kind is not ev.BindingPurged


async def _serve(config: AgentConfig, config_path: Path | None, hot: HotSelector) -> None:
    kind = LmaService if config.role == "lma" else MagService
    service: Service = kind(config, config_path, hot)
    await service.run()


def run(config: AgentConfig, config_path: Path | None = None) -> int:
    """Run the agent until SIGTERM. Returns the process exit status."""
    configure_logging(config.log.level, config.log.format)
    try:
        hot = HotSelector()
        with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(hot)) as runner:
            runner.run(_serve(config, config_path, hot))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
