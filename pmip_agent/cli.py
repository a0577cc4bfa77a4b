"""``pmip-agent``: the command-line front end of the LMA/MAG daemon.

``pmip-agent run --config FILE`` validates the file and hands it to
:func:`pmip_agent.daemon.run`; ``pmip-agent check --config FILE`` only validates it. The
help texts are written as the agent's manual page.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from .config import (
    DEFAULT_METRICS_PORT,
    DEFAULT_SOCKET_DIR,
    DEFAULT_STATE_DIR,
    ConfigError,
    load_config,
)

if TYPE_CHECKING:
    from .config import AgentConfig

PROG = "pmip-agent"

EXIT_OK = 0
EXIT_FAILURE = 1  # runtime failure
EXIT_USAGE = 2  # bad configuration or command line

_DESCRIPTION = """\
Proxy Mobile IPv6 agent with IPv4 support (draft-ietf-netlmm-pmip6-ipv4-support,
RFC 5844). One process runs one node of a PMIPv6 domain: a local mobility anchor (LMA)
or a mobile access gateway (MAG), as the configuration file's `role` says.

A MAG detects mobile nodes on its access links and registers them with their LMA with
Proxy Binding Updates; the LMA answers with Proxy Binding Acknowledgements, assigns IPv6
home network prefixes and IPv4 home addresses (static, from an LMA pool, or from an
external DHCP server), and both ends set up the bi-directional tunnel. Signalling runs
over IPv6, or over IPv4/UDP port 5436 with NAT detection and keepalives when the
transport network between MAG and LMA is IPv4."""

_EXIT_STATUS = """\
EXIT STATUS
  0  success: `check` found the file valid, or `run` stopped cleanly (SIGTERM)
  1  runtime failure: the agent could not start or stopped on an error
  2  bad configuration or bad command line; the problems are printed on stderr,
     one per line, as `<field.path>: <reason> (line N)`"""

_FILES = f"""\
FILES
  {DEFAULT_STATE_DIR}/
      default state directory (`state_dir`): the binding cache and sequence
      numbers, kept across restarts. An LMA keeps <node_name>.lma.sqlite, its
      journal, <node_name>.lma.sqlite.log0 and .log1, and the rows written
      before each PBA and not yet in the journal, <node_name>.lma.sqlite.pending;
      a MAG keeps <node_name>.mag.sqlite. Each SQLite file has its -wal and -shm
      beside it. Back them up together, or stop the agent first (a clean stop
      folds the pending rows and the journal into the database).
  {DEFAULT_SOCKET_DIR}/<node_name>.sock
      default control socket (`control_socket`), used by pmipctl
  examples/lma.yaml, examples/mag.yaml
      commented example configurations; every key is documented in
      pmip_agent/config.py"""

_SIGNALS = """\
SIGNALS
  SIGHUP   reload the configuration file. The new file is validated first; if it
           has problems they are logged and the running configuration is kept. The
           role cannot change. Bindings the new policy still authorizes are kept,
           the others are torn down.
  SIGTERM  stop cleanly and exit with status 0; the state in `state_dir` is kept
           for the next start."""

_IPSEC = """\
IPSEC
  With `require_ipsec: true` signalling is trusted only under IPsec (RFC 5213 §4).
  The SAs are strongSwan's; the agent reads them from charon's vici socket
  (`ipsec.vici_socket`, every `ipsec.poll_interval_s`). The LMA drops a PBU that
  no INSTALLED child SA covers (and, with `ipsec.ingress_interface`, e.g. ipsec0
  of kernel-libipsec, one that did not come in through that device): counted in
  pmip_messages_dropped_total{reason="ipsec-unprotected"} and logged. The MAG
  sends PBUs to an LMA only while an SA covers its address, and keeps its
  registered MNs while it waits. See examples/*.yaml and roles/strongswan."""

_DATAPLANE = """\
DATA PLANE
  With `dataplane.enabled`, the MAG-LMA tunnels run in this process, over one
  TUN device (`dataplane.tun_name`, default pmip0) into which the kernel routes
  the mobile nodes' traffic. Offloads (`dataplane.offload`) let it work a 64 KB
  burst at a time. With tso and gso on a host with an IPv4 transport address and
  Linux 6.17 or later, a second device, a TAP named <tun_name>-gso (tun_name cut
  to 11 characters), takes whole IPv4-UDP tunnel bursts (UDP tunnel GSO): the
  kernel forwards each as one packet from this node's own address and cuts it
  into datagrams where a link needs it. The agent sets accept_local=1 and
  rp_filter=0 on that device and turns IPv6 off on it. A firewall's forward
  chain must let this node's UDP port `dataplane.data_port` out of it. When
  net.ipv4.conf.all.rp_filter is 1 (strict), or the kernel is older, there is
  no TAP device and the forwarder cuts the bursts itself (slower); the startup
  log line "data plane: ... udp tunnel gso" says which."""

_SEE_ALSO = """\
SEE ALSO
  pmipctl(8): query and control a running agent through its control socket.
  RFC 5213 (Proxy Mobile IPv6), RFC 5844 (IPv4 support for Proxy Mobile IPv6),
  RFC 5555 (the DSMIPv6 options of the seed draft)."""

_MAIN_EPILOG = f"""\
{_EXIT_STATUS}

{_FILES}

{_SIGNALS}

{_IPSEC}

{_DATAPLANE}

EXAMPLES
  Validate a file before installing it or before sending SIGHUP:
      pmip-agent check --config /etc/pmip/lma.yaml

  Run an LMA in the foreground:
      pmip-agent run --config /etc/pmip/lma.yaml

  Reload a running agent after editing its file:
      pmip-agent check --config /etc/pmip/mag.yaml && kill -HUP <PID>

  Metrics (when `metrics.enabled`), on loopback only:
      curl http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics

{_SEE_ALSO}"""

_RUN_DESCRIPTION = """\
Validate the configuration file, then run the agent in the foreground: an LMA or a MAG
as its `role` says. Nothing is started when the file has a problem (exit status 2).
Logs go to stderr as `log.level` and `log.format` say; run it under systemd or another
supervisor for a background service."""

_RUN_EPILOG = f"""\
{_EXIT_STATUS}

{_SIGNALS}

{_FILES}

EXAMPLES
  pmip-agent run --config /etc/pmip/lma.yaml
  pmip-agent run --config examples/mag.yaml

{_SEE_ALSO}"""

_CHECK_DESCRIPTION = """\
Validate the configuration file and exit, changing nothing. On success print
`OK: <role> <node_name>, N mobile nodes`. Otherwise print every problem found on stderr,
one per line, as `<field.path>: <reason> (line N)`, and exit with status 2. Use it before
starting the agent and before sending SIGHUP to a running one."""

_CHECK_EPILOG = f"""\
{_EXIT_STATUS}

SIGHUP
  A running agent rereads its file on SIGHUP. Check the file first:
      pmip-agent check --config /etc/pmip/mag.yaml && kill -HUP <PID>

EXAMPLES
  $ pmip-agent check --config examples/lma.yaml
  OK: lma lma1, 4 mobile nodes

  $ pmip-agent check --config broken.yaml
  pmip-agent: broken.yaml: invalid configuration
  lma.ipv4_pools[1].prefix: 10.10.128.0/17 (pool corp) overlaps 10.10.0.0/16 (pool home) (line 51)
  $ echo $?
  2

{_SEE_ALSO}"""


def _version() -> str:
    try:
        return metadata.version("pmip-agent")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the manual page as its help texts."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print version"
    )
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        title="commands",
        description="`pmip-agent COMMAND --help` shows the manual of each command.",
    )
    for name, summary, description, epilog in (
        (
            "run",
            "validate the configuration, then run the agent (LMA or MAG) in the foreground "
            "until SIGTERM",
            _RUN_DESCRIPTION,
            _RUN_EPILOG,
        ),
        (
            "check",
            "validate the configuration and exit, changing nothing",
            _CHECK_DESCRIPTION,
            _CHECK_EPILOG,
        ),
    ):
        cmd = sub.add_parser(
            name, help=summary, description=description, epilog=epilog, formatter_class=fmt
        )
        cmd.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            required=True,
            help="the YAML configuration file (see examples/lma.yaml and examples/mag.yaml)",
        )
    return parser


def _load(path: str) -> AgentConfig | None:
    """The validated configuration, or None after printing its problems to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{PROG}: {path}: invalid configuration", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    print(f"OK: {config.summary()}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        # Imported here: the daemon pulls in sockets, netlink and the data plane, none of
        # which `check` or `--help` need.
        from . import daemon

        # The daemon rereads the file on SIGHUP, so it is told where it is.
        return int(daemon.run(config, config_path=Path(args.config).absolute()))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:
        print(f"{PROG}: {config.summary()}: failed:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pmip-agent``; returns the exit status (also for --help, --version
    and usage errors, which argparse would otherwise raise as SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required (run or check)", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _cmd_run(args)
    return _cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
