"""IPsec lab for the namespace tests: real charon daemons configured by roles/strongswan.

Each charon runs in its test namespace and in a private mount namespace where its own
directory is bind-mounted over /run (charon's pidfile is fixed at /var/run/charon.pid and
its vici socket defaults to /var/run/charon.vici), so several run side by side and the
agents reach each one's vici socket at ``<dir>/run/charon.vici``. strongswan.conf and
swanctl.conf are the role's templates rendered for the lab mode (kernel-libipsec, tunnel);
a small wrapper adds a log file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jinja2
import yaml
from netns import Lab, wait_for

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "strongswan"
CHARON = "/usr/lib/ipsec/charon"
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"
PSK = "lab-only-key-0123456789abcdef0123456789"  # a test key, >= 32 characters


def require_strongswan() -> None:
    """Fail loudly when strongSwan is missing (make deps installs it)."""
    missing = [p for p in (CHARON, SWANCTL) if not os.access(p, os.X_OK)]
    if missing:
        raise RuntimeError(f"strongSwan is not installed ({', '.join(missing)}): run make deps")


def render_role(host: str, peers: list[dict[str, Any]], mode: str = "libipsec-tunnel") -> dict:
    """swanctl.conf, its secrets and strongswan.conf as roles/strongswan writes them."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    context = {
        **defaults,
        **role_vars,
        "ansible_managed": "rendered by tests/ipsec_lab.py",
        "inventory_hostname": host,
        "strongswan_local_id": host,
        "strongswan_mode": mode,
        "strongswan_auth": "psk",
        "strongswan_psk": PSK,
        "strongswan_peers": peers,
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return {
        name: env.get_template(f"{name}.j2").render(context)
        for name in ("strongswan.conf", "swanctl.conf", "swanctl.secrets.conf")
    }


class Charon:
    """One charon in namespace ``ns``, configured in ``directory``."""

    def __init__(self, lab: Lab, ns: str, directory: Path, host: str, peers: list[dict]) -> None:
        self.lab, self.ns, self.dir, self.host = lab, ns, directory, host
        self.run_dir = directory / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        files = render_role(host, peers)
        for name, text in files.items():
            (directory / name).write_text(text)
        (directory / "swanctl.secrets.conf").chmod(0o600)
        self.log = directory / "charon.log"
        # The role's file plus a log file (settings of several files are merged).
        self.conf = directory / "charon.conf"
        self.conf.write_text(
            f"include {directory / 'strongswan.conf'}\n"
            "charon {\n  filelog {\n    lab {\n"
            f"      path = {self.log}\n      time_format = %s\n"
            "      default = 1\n      ike = 2\n      knl = 1\n"
            "    }\n  }\n}\n"
        )
        self.vici = self.run_dir / "charon.vici"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for stale in ("charon.pid", "charon.vici"):
            (self.run_dir / stale).unlink(missing_ok=True)
        script = f"mount --bind {self.run_dir} /run && exec {CHARON}"
        self.proc = self.lab.spawn(
            self.ns,
            [
                "env",
                f"STRONGSWAN_CONF={self.conf}",
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            self.dir / "charon.out",
        )
        wait_for(self.vici.exists, 10, what=f"{self.host}: vici socket {self.vici}")
        self.swanctl("--load-all", "--file", str(self.dir / "swanctl.conf"))

    def kill(self) -> None:
        """SIGKILL: no IKE delete is sent; libipsec's TUN device goes with the process."""
        assert self.proc is not None
        self.lab.kill(self.proc, 9)
        self.proc = None

    def swanctl(self, *args: str, timeout: float = 20) -> str:
        out = subprocess.run(
            [SWANCTL, *args, "--uri", f"unix://{self.vici}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "STRONGSWAN_CONF": str(self.conf)},
        )
        if out.returncode != 0:
            raise AssertionError(
                f"swanctl {' '.join(args)} on {self.host}: {out.stdout}{out.stderr}"
            )
        return out.stdout

    def installed(self) -> list[str]:
        """Names of this charon's INSTALLED child SAs."""
        import socket

        import vici

        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        try:
            sock.connect(str(self.vici))
            sas = list(vici.Session(sock).list_sas())
        finally:
            sock.close()
        return [
            child["name"].decode()
            for ike in (v for m in sas for v in m.values())
            for child in (ike.get("child-sas") or {}).values()
            if child.get("state") == b"INSTALLED"
        ]

    def wait_installed(self, timeout: float = 20) -> float:
        """Seconds until a child SA is INSTALLED."""
        t0 = time.monotonic()
        wait_for(self.installed, timeout, 0.05, what=f"{self.host}: an INSTALLED child SA")
        return time.monotonic() - t0


def sa_pair(
    lab: Lab, ns_lma: str, ns_mag: str, tmp: Path, lma_addr: str, mag_addr: str
) -> tuple[Charon, Charon]:
    """Charon on the LMA (responder, conn "mag1") and on the MAG (initiator, conn "lma1")
    between ``lma_addr`` and ``mag_addr``, started, with their child SAs installed."""
    lma = Charon(
        lab,
        ns_lma,
        tmp / "ike-lma",
        "lma1",
        [
            {
                "name": "mag1",
                "local_addrs": [lma_addr],
                "remote_addrs": [mag_addr],
                "initiate": False,
            }
        ],
    )
    mag = Charon(
        lab,
        ns_mag,
        tmp / "ike-mag",
        "mag1",
        [{"name": "lma1", "local_addrs": [mag_addr], "remote_addrs": [lma_addr], "initiate": True}],
    )
    lma.start()
    mag.start()
    mag.wait_installed()
    lma.wait_installed()
    return lma, mag
