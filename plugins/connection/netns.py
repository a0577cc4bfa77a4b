# Copyright: the pmip_agent project. BSD-2-Clause.
# ruff: noqa: E402  (Ansible plugins put DOCUMENTATION before the imports)
"""Connection plugin: a host that is a Linux network namespace on the controller,
optionally chrooted into its own root file system."""

from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a network namespace (optionally chrooted) on the controller
description:
  - Reaches a "host" that is a network namespace made with C(ip netns add) on the
    Ansible controller. Every command runs as
    C(ip netns exec NAME [chroot ROOT] /bin/sh -c CMD).
  - Without a chroot the host shares the controller's file system (as seen through
    C(ip netns exec), which bind-mounts C(/etc/netns/NAME/*) over C(/etc)); give such
    hosts their own directories for everything they write.
  - With a chroot the host has its own root file system (for example an overlay
    mount of a debootstrap'd Debian tree), and files are put and fetched inside it.
  - Files are always moved through the host's own view (a C(cat) inside the namespace
    and chroot), so symbolic links inside a chroot resolve as they would on the host.
  - Commands run with a clean environment by default, as after a fresh login on a real
    host; the controller's C(PIP_*), C(VIRTUAL_ENV), proxy or locale variables do not
    leak into the host.
  - Needs root on the controller (network namespaces and chroot).
options:
  netns_name:
    description:
      - Name of the network namespace (as listed by C(ip netns list)).
      - Defaults to the host's address (C(ansible_host), else the inventory name).
    type: string
    vars:
      - name: ansible_netns_name
  remote_addr:
    description: Fallback for O(netns_name).
    type: string
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  netns_chroot:
    description:
      - Root file system to chroot into inside the namespace. Empty for none.
    type: string
    default: ''
    vars:
      - name: ansible_netns_chroot
  netns_ip_exe:
    description: The C(ip) command of iproute2 on the controller.
    type: string
    default: ip
    vars:
      - name: ansible_netns_ip_exe
  netns_clean_env:
    description:
      - Run commands with only C(PATH), C(HOME), C(LANG) and C(LC_ALL) set (true), or
        with the controller's whole environment (false).
    type: bool
    default: true
    vars:
      - name: ansible_netns_clean_env
  executable:
    description: Shell that runs each command inside the host.
    type: string
    default: /bin/sh
    vars:
      - name: ansible_executable
"""

EXAMPLES = r"""
# inventory
all:
  hosts:
    lma1:
      ansible_connection: netns
      ansible_netns_name: pl-lma1
      ansible_python_interpreter: /usr/bin/python3
    mag1:
      ansible_connection: netns
      ansible_netns_name: m123-mag1
      ansible_netns_chroot: /work/build/molecule/m123/mag1/root
      ansible_python_interpreter: /usr/bin/python3
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.process import get_bin_path
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import BUFSIZE, ConnectionBase
from ansible.utils.display import Display

display = Display()

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Connection(ConnectionBase):
    """ip netns exec NAME [chroot ROOT] /bin/sh -c CMD"""

    transport = "netns"
    has_pipelining = True
    has_tty = False
    default_user = "root"

    def __init__(self, play_context, new_stdin, *args, **kwargs):
        super().__init__(play_context, new_stdin, *args, **kwargs)
        self._ip = None
        self._netns = None
        self._chroot = None

    # --- connection ---------------------------------------------------------------

    def _connect(self):
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("the netns connection needs root on the controller")
        self._netns = self.get_option("netns_name") or self.get_option("remote_addr")
        if not self._netns or "/" in self._netns:
            raise AnsibleConnectionFailure(f"invalid network namespace name {self._netns!r}")
        if not os.path.exists(os.path.join("/run/netns", self._netns)):
            raise AnsibleConnectionFailure(f"no network namespace {self._netns!r}")
        chroot = self.get_option("netns_chroot") or ""
        if chroot:
            if not os.path.isabs(chroot):
                raise AnsibleConnectionFailure(f"chroot {chroot!r} must be an absolute path")
            sh = os.path.join(chroot, self.get_option("executable").lstrip("/"))
            if not os.path.lexists(sh):
                raise AnsibleConnectionFailure(f"{chroot} has no {self.get_option('executable')}")
        self._chroot = chroot or None
        ip = self.get_option("netns_ip_exe")
        try:
            self._ip = ip if os.path.isabs(ip) else get_bin_path(ip)
        except ValueError as exc:
            raise AnsibleConnectionFailure(str(exc)) from exc
        if not self._connected:
            where = self._netns + (f" chroot {self._chroot}" if self._chroot else "")
            display.vvv(f"NETNS {where}", host=self._play_context.remote_addr)
            self._connected = True
        return self

    def _argv(self, cmd):
        argv = [self._ip, "netns", "exec", self._netns]
        if self._chroot:
            argv += ["chroot", self._chroot]
        return [*argv, self.get_option("executable"), "-c", cmd]

    def _env(self):
        if not self.get_option("netns_clean_env"):
            return None
        return {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    def _popen(self, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE):
        if not self._connected:
            self._connect()
        argv = self._argv(cmd)
        display.vvvv(f"EXEC {shlex.join(argv)}", host=self._play_context.remote_addr)
        return subprocess.Popen(
            [to_bytes(a, errors="surrogate_or_strict") for a in argv],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=self._env(),
        )

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        p = self._popen(cmd)
        stdout, stderr = p.communicate(in_data)
        return p.returncode, stdout, stderr

    # --- files --------------------------------------------------------------------

    @staticmethod
    def _host_path(path):
        path = to_text(path, errors="surrogate_or_strict")
        if not path.startswith("/"):
            path = "/" + path
        return os.path.normpath(path)

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        out_path = self._host_path(out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._play_context.remote_addr)
        try:
            src = open(to_bytes(in_path, errors="surrogate_or_strict"), "rb")  # noqa: SIM115
        except OSError as exc:
            raise AnsibleError(f"cannot read {in_path}: {exc}") from exc
        with src:
            p = self._popen(f"cat > {shlex.quote(out_path)}", stdin=src)
            _, stderr = p.communicate()
        if p.returncode != 0:
            raise AnsibleError(
                f"failed to put {in_path} to {out_path} in {self._netns}: "
                f"{to_text(stderr, errors='surrogate_or_replace').strip()}"
            )

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        in_path = self._host_path(in_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._play_context.remote_addr)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as dst:
            p = self._popen(f"cat {shlex.quote(in_path)}", stdin=subprocess.DEVNULL)
            while chunk := p.stdout.read(BUFSIZE):
                dst.write(chunk)
            _, stderr = p.communicate()
        if p.returncode != 0:
            raise AnsibleError(
                f"failed to fetch {in_path} from {self._netns}: "
                f"{to_text(stderr, errors='surrogate_or_replace').strip()}"
            )

    def close(self):
        super().close()
        self._connected = False
