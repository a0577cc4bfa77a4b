"""Network namespaces for tests: a per-run name prefix, and teardown even on failure.

Every namespace a test makes carries this run's prefix, every process it starts is kept by
PID, and `Lab.close()` (called from a fixture finalizer and, as a last resort, at exit or
on SIGTERM or SIGHUP) kills those processes and deletes those namespaces. Traffic only
flows between them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

RUN_PREFIX = f"pt{os.getpid() % 100000}"
_open_labs: list[Lab] = []
CLONE_NEWNET = 0x4000_0000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(cmd), check=check, capture_output=True, text=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body in network namespace ``name`` (this thread only): sockets made here
    stay in it after we switch back."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(own)
        os.close(target)


def require_root_netns() -> None:
    """Fail loudly (not skip) when namespaces cannot be made: CI runs as root."""
    if os.geteuid() != 0:
        raise RuntimeError("these tests need root to create network namespaces")


class Lab:
    def __init__(self, name: str) -> None:
        require_root_netns()
        _sweep_on_signals()
        self.prefix = f"{RUN_PREFIX}{name}"[:12]
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        _open_labs.append(self)

    def ns(self, short: str) -> str:
        name = f"{self.prefix}-{short}"
        sh(f"ip netns add {name}")
        self.namespaces.append(name)
        self.run(name, "ip link set lo up")
        return name

    def run(self, ns: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(f"ip netns exec {ns} {cmd}", check=check)

    def link(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        tmp_a, tmp_b = (
            f"{self.prefix[-6:]}a{len(self.namespaces)}",
            f"{self.prefix[-6:]}b{len(self.namespaces)}",
        )
        sh(f"ip link add {tmp_a} type veth peer name {tmp_b}")
        sh(f"ip link set {tmp_a} netns {ns_a}")
        sh(f"ip link set {tmp_b} netns {ns_b}")
        self.run(ns_a, f"ip link set {tmp_a} name {if_a}")
        self.run(ns_b, f"ip link set {tmp_b} name {if_b}")
        self.run(ns_a, f"ip link set {if_a} up")
        self.run(ns_b, f"ip link set {if_b} up")

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        extra = " nodad" if ":" in cidr else ""
        self.run(ns, f"ip addr add {cidr} dev {ifname}{extra}")

    def spawn(
        self, ns: str, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for ns in reversed(self.namespaces):
            # Kill anything still inside (e.g. children), then delete the namespace.
            pids = sh(f"ip netns pids {ns}", check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh(f"ip netns del {ns}", check=False)
        self.namespaces.clear()
        if self in _open_labs:
            _open_labs.remove(self)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the predicate may fail until the thing is up
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f": {last_exc}" if last_exc else "")
    )


@atexit.register
def _sweep() -> None:
    for lab in list(_open_labs):
        lab.close()


def _swept_then_killed(sig: int, frame: object) -> None:
    _sweep()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)  # the exit status still says which signal ended the run


def _sweep_on_signals() -> None:
    """A run stopped by SIGTERM (a CI timeout, `kill`) or SIGHUP would skip atexit and
    leave its namespaces behind: sweep first. Only where nothing else handles them."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _swept_then_killed)
