"""Where the daemons' own time goes in a DHCP attach, function by function: the user-space
side of bench/kernel_steps.py.

    sudo .venv/bin/python bench/daemon_steps.py --n 100

Options it does not know go to bench/dhcp_attach.py, which it runs (``--breakdown 0``, its
JSON tagged ``daemon_steps``) with a ``sitecustomize.py`` on PYTHONPATH. In MAG1's and
LMA1's daemons only, that calls ``install``: it wraps the functions named in ``PROBES``
so that each call appends two marks, ``name>`` on entry and ``name<`` on return, each
with ``time.perf_counter_ns()``, to a list that a thread writes out every second. The
event loop's selector adds a ``wake`` mark each time it returns something. The sends are
named by what they carry: ``send-mn OFFER``, ``send-server DISCOVER`` (DHCP message
types), ``send-lma`` and ``send-mag`` (PBU and PBA).

Then, for each of ``SEGMENTS``: the wake-ups whose first mark is the segment's first, and
that reach its last mark before the next wake-up (and pass none of its ``without``
marks). Of those, it takes the most common sequence of marks (the usual path) and prints,
per mark, the p50 time from the mark before it and from the wake-up, in us.

A wrapper costs about 1 us a call, and more when the daemon's code is cold: the figures
are for comparing steps and runs of this tool, not for adding up to an untraced run's.
Writes build/bench/daemon_steps.json (``--tag T``: daemon_steps.T.json). Needs root.
"""

from __future__ import annotations

import atexit
import importlib
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402  (bench/ is on sys.path from here on)
    arg_parser,
    finish_machine_info,
    machine_info,
    percentile,
    write_json,
)

from pmip_agent.dhcp.codec import MESSAGE_NAMES  # noqa: E402

NAME = "daemon_steps"
# The config files of the daemons that get probes, and their roles.
ROLES = {"mag1.yaml": "mag", "lma1.yaml": "lma"}

# "module:attribute path" -> mark name. A send's name gets what it carries appended.
PROBES: dict[str, dict[str, str]] = {
    "mag": {
        "pmip_agent.dhcp.sockets:DhcpInterfaceSocket.on_readable": "access-read",
        "pmip_agent.dhcp.sockets:DhcpRelaySocket.on_readable": "server-read",
        "pmip_agent.daemon:MagService._on_mh": "mh-read",
        "pmip_agent.net.mh_socket:MhSocket.recv_batch": "recv_batch",
        "pmip_agent.dhcp.codec:peek": "peek",
        "pmip_agent.dhcp.agent:DhcpAgent.forward": "forward",
        "pmip_agent.dhcp.agent:DhcpAgent.forward_reply": "forward_reply",
        "pmip_agent.dhcp.agent:DhcpAgent.report_offered": "report_offered",
        "pmip_agent.dhcp.agent:DhcpAgent.observe": "observe",
        "pmip_agent.dhcp.agent:DhcpAgent._answer": "_answer",
        "pmip_agent.dhcp.agent:DhcpAgent._pass_to_client": "_pass_to_client",
        "pmip_agent.core.mag:decode": "decode",
        "pmip_agent.core.mag:MagEngine._read": "_read",
        "pmip_agent.core.mag:MagEngine._accepted": "_accepted",
        "pmip_agent.core.mag:MagEngine.learn_ipv4": "learn_ipv4",
        "pmip_agent.core.mag:MagEngine._encoded": "_encoded",
        "pmip_agent.daemon:MagService._attach": "_attach",
        "pmip_agent.daemon:MagService.flush": "flush",
        "pmip_agent.dhcp.sockets:DhcpInterfaceSocket.send": "send-mn",
        "pmip_agent.dhcp.sockets:DhcpRelaySocket.send": "send-server",
        "pmip_agent.net.mh_socket:MhSocket.send": "send-lma",
    },
    "lma": {
        "pmip_agent.daemon:LmaService._on_mh": "mh-read",
        "pmip_agent.net.mh_socket:MhSocket.recv_batch": "recv_batch",
        "pmip_agent.core.lma:LmaEngine._fast": "_fast",
        "pmip_agent.core.lma:decode": "decode",
        "pmip_agent.core.lma:LmaEngine._dispatch": "_dispatch",
        "pmip_agent.daemon:LmaService.flush": "flush",
        "pmip_agent.store.sqlite:_batch_of": "_batch_of",
        "pmip_agent.store.pending:PendingRows.write": "pending-write",
        "pmip_agent.daemon:LmaService.persist": "persist",
        "pmip_agent.daemon:LmaService.notify": "notify",
        "pmip_agent.net.mh_socket:MhSocket.send": "send-mag",
    },
}


@dataclass(frozen=True, slots=True)
class Segment:
    role: str
    title: str
    first: str  # the mark right after the wake-up
    last: str
    without: tuple[str, ...] = ()  # marks (by prefix) that rule a wake-up out


SEGMENTS = (
    Segment("mag", "DISCOVER read -> relayed", "access-read>", "send-server DISCOVER<"),
    Segment("mag", "REQUEST read -> relayed", "access-read>", "send-server REQUEST<"),
    Segment("mag", "OFFER from Kea -> to the MN, then the PBU", "server-read>", "send-lma<"),
    Segment("mag", "ACK from Kea -> to the MN", "server-read>", "send-mn ACK<"),
    Segment("mag", "PBA -> OFFER to the MN (flow 2)", "mh-read>", "send-mn OFFER<"),
    Segment("mag", "PBA -> ACK to the MN (flow 3, the ACK already in)", "mh-read>", "send-mn ACK<"),
    Segment("mag", "PBA, nothing for the MN yet (flow 3)", "mh-read>", "flush<", ("send-mn",)),
    Segment("lma", "PBU -> PBA sent", "mh-read>", "send-mag<"),
)


# --- in the daemons ------------------------------------------------------------------


def _carried(data: object) -> str:
    """What a send carries, for its mark: a DHCP message's type, if it is one whose
    first option is the message type (as the MAG and Kea send them)."""
    if isinstance(data, bytes | bytearray) and len(data) > 242 and data[240:242] == b"\x35\x01":
        return " " + MESSAGE_NAMES.get(data[242], str(data[242]))
    return ""


def _resolve(target: str) -> tuple[Any, str]:
    """("module:A.b") -> (the object holding ``b``, "b")."""
    module, _, path = target.partition(":")
    holder: Any = importlib.import_module(module)
    *outer, attr = path.split(".")
    for name in outer:
        holder = getattr(holder, name)
    if not hasattr(holder, attr):
        raise AttributeError(f"{target}: no such attribute")
    return holder, attr


def install(
    probes: dict[str, str], out: Path, every_s: float | None = 1.0
) -> tuple[list[tuple[int, str]], Callable[[], None]]:
    """Wrap each of ``probes`` and mark the selector's wake-ups. The marks go to ``out``
    every ``every_s`` seconds and at exit (None: only when the returned ``dump`` is
    called). Returns the list of marks and ``dump``."""
    marks: list[tuple[int, str]] = []
    add, clock = marks.append, time.perf_counter_ns

    def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        sends = name.startswith("send-")

        def probe(*args: Any, **kwargs: Any) -> Any:
            label = name + _carried(args[1]) if sends and len(args) > 1 else name
            add((clock(), label + ">"))
            try:
                return fn(*args, **kwargs)
            finally:
                add((clock(), label + "<"))

        return probe

    for target, name in probes.items():
        holder, attr = _resolve(target)
        setattr(holder, attr, wrap(getattr(holder, attr), name))

    select = selectors.EpollSelector.select

    def marked_select(self: Any, timeout: float | None = None) -> Any:
        ready = select(self, timeout)
        if ready:
            add((clock(), "wake"))
        return ready

    selectors.EpollSelector.select = marked_select  # type: ignore[method-assign]

    written = 0

    def dump() -> None:  # appends what is new: a short hold of the daemon's GIL
        nonlocal written
        end = len(marks)
        with out.open("a") as f:
            f.write("".join(f"{t} {m}\n" for t, m in marks[written:end]))
        written = end

    def keep_writing(period: float) -> None:
        while True:
            time.sleep(period)
            dump()

    if every_s is not None:
        writer = threading.Thread(target=keep_writing, args=(every_s,), daemon=True)
        writer.start()
        atexit.register(dump)
    return marks, dump


_SITECUSTOMIZE = """\
import sys
from pathlib import Path
_config = next((a for a in sys.argv if a.endswith(".yaml")), "")
_role = {roles!r}.get(Path(_config).name) if "run" in sys.argv else None
if _role is not None:
    sys.path.insert(0, {bench!r})
    import daemon_steps
    daemon_steps.install(daemon_steps.PROBES[_role], Path({out!r}) / (_role + ".marks"))
"""


# --- reading the marks -----------------------------------------------------------------


def read_marks(path: Path) -> list[tuple[int, str]]:
    """The marks a daemon wrote; a last line cut short (the daemon killed while it wrote)
    is left out."""
    marks = []
    for line in path.read_text().splitlines():
        t, _, mark = line.partition(" ")
        if t.isdigit() and mark:
            marks.append((int(t), mark))
    return marks


def wakeups(marks: Sequence[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    """The marks of each wake-up, the ``wake`` mark first."""
    current: list[tuple[int, str]] | None = None
    for t, mark in marks:
        if mark == "wake":
            if current:
                yield current
            current = [(t, mark)]
        elif current is not None:
            current.append((t, mark))
    if current:
        yield current


def steps(marks: Sequence[tuple[int, str]], segment: Segment) -> dict[str, Any]:
    """The segment's usual path through the daemon, per mark: p50 us from the mark before
    and from the wake-up (see the module's docstring)."""
    paths = []
    for wake in wakeups(marks):
        if len(wake) < 2 or wake[1][1] != segment.first:
            continue
        names = [m for _, m in wake]
        if segment.last not in names:
            continue
        path = wake[: names.index(segment.last) + 1]
        if any(m.startswith(w) for _, m in path for w in segment.without):
            continue
        paths.append(path)
    if not paths:
        return {"matched": 0, "usual": 0, "steps": []}
    shaped = [(tuple(m for _, m in p), p) for p in paths]
    usual, count = Counter(shape for shape, _ in shaped).most_common(1)[0]
    same = [p for shape, p in shaped if shape == usual]
    rows = []
    for i, mark in enumerate(usual):
        step = [(p[i][0] - p[i - 1][0]) / 1000 if i else 0.0 for p in same]
        since = [(p[i][0] - p[0][0]) / 1000 for p in same]
        rows.append(
            {"mark": mark, "step_us": percentile(step, 50), "since_wake_us": percentile(since, 50)}
        )
    return {"matched": len(paths), "usual": count, "steps": rows}


# --- the run ---------------------------------------------------------------------------


def run(bench_args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pmip-daemon-steps-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        code = _SITECUSTOMIZE.format(roles=ROLES, bench=str(HERE), out=tmp)
        (site / "sitecustomize.py").write_text(code)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
        workload = [sys.executable, str(HERE / "dhcp_attach.py"), "--breakdown", "0"]
        done = subprocess.run([*workload, *bench_args], env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{NAME}: dhcp_attach exited {done.returncode}")
        found = {role: Path(tmp) / f"{role}.marks" for role in PROBES}
        missing = [str(p) for p in found.values() if not p.exists()]
        if missing:
            raise SystemExit(f"{NAME}: no marks from the daemons ({', '.join(missing)})")
        marks = {role: read_marks(path) for role, path in found.items()}
    return {s.title: {"role": s.role, **steps(marks[s.role], s)} for s in SEGMENTS}


def main() -> int:
    parser = arg_parser(__doc__)
    parser.epilog = (
        "Options it does not know go to bench/dhcp_attach.py, e.g. `--n 100`.\n"
        "Needs root. Details: bench/README.md, daemon_steps."
    )
    args, bench_args = parser.parse_known_args()
    if args.quick:
        bench_args.append("--quick")
    bench_args += ["--tag", f"{NAME}.{args.tag}" if args.tag else NAME]
    if os.geteuid() != 0:
        raise SystemExit(f"{NAME}: needs root (network namespaces)")
    info = machine_info()
    segments = run(bench_args)
    for title, seg in segments.items():
        print(f"\n{seg['role']}: {title}: usual path {seg['usual']} of {seg['matched']}, us")
        for row in seg["steps"]:
            print(f"  {row['mark']:28s} {row['step_us']:7.1f} {row['since_wake_us']:8.1f}")
    data = {"bench_args": bench_args, "segments": segments, "probes": PROBES}
    data["machine"] = finish_machine_info(info)
    write_json(NAME, data, quick=args.quick, tag=args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
