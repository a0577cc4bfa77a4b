#!/usr/bin/python
# Copyright: the pmip_agent project. BSD-2-Clause.
# ruff: noqa: E402  (Ansible modules put DOCUMENTATION before the imports)
"""Ansible module: build the agent's wheelhouse on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pmip_wheelhouse
short_description: Build a wheelhouse of pmip-agent and its pinned dependencies
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)). Builds the
    project's wheel from a clean copy of its sources, and downloads the wheels of its
    dependencies at the versions pinned in O(constraints), for the hosts' Python and
    platform rather than the controller's. Fleet hosts then install from this directory
    with C(pip --no-index); they need no package index.
  - The project wheel is built reproducibly (C(SOURCE_DATE_EPOCH)), so an unchanged
    source tree gives a byte-identical wheel and the module reports no change.
  - Dependencies are downloaded only when the pins, the project's declared dependencies,
    O(extra_packages) or the target change (a stamp file records them); otherwise the
    module works offline.
  - Writes C(requirements.txt) in O(dest) with one C(name==version) per wheel, for the
    hosts' C(pip install --no-index -r), and C(wheelhouse.tar) holding the wheels and
    that file, byte-identical for identical content (one file to copy to each host, and
    unchanged hosts cost one checksum).
options:
  project_dir:
    description: The project's source tree (where C(pyproject.toml) is).
    type: path
    required: true
  sources:
    description: Files and directories of O(project_dir) that make up the package.
    type: list
    elements: str
    default: [pyproject.toml, README.md, pmip_agent]
  dest:
    description: The wheelhouse directory on the controller.
    type: path
    required: true
  constraints:
    description: A pip constraints file pinning every dependency (C(requirements.txt)).
    type: path
  extra_packages:
    description: Runtime dependencies that the package metadata does not declare.
    type: list
    elements: str
    default: []
  python_version:
    description: The hosts' Python version, C(major.minor).
    type: str
    default: '3.11'
  glibc:
    description: The hosts' glibc version; manylinux wheels up to it are accepted.
    type: str
    default: '2.36'
  arch:
    description: The hosts' machine architecture.
    type: str
    default: x86_64
  source_date_epoch:
    description: Timestamp of every file in the project wheel.
    type: int
    default: 315532800
  build_isolation:
    description:
      - Build in an isolated environment (fetches setuptools from the index). Off, the
        controller's own setuptools (>= 68) builds it, offline.
    type: bool
    default: false
author: the pmip_agent project
"""

EXAMPLES = r"""
- name: Build the wheelhouse
  pmip_wheelhouse:
    project_dir: "{{ playbook_dir }}/.."
    dest: "{{ playbook_dir }}/../build/wheelhouse"
    constraints: "{{ playbook_dir }}/../requirements.txt"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
project_wheel:
  description: File name of the project's wheel.
  type: str
  returned: always
project_sha256:
  description: SHA-256 of the project's wheel.
  type: str
  returned: always
wheels:
  description: Every wheel in the wheelhouse.
  type: list
  returned: always
requirements:
  description: C(name==version) of every wheel, the project's included.
  type: list
  returned: always
archive:
  description: Path of C(wheelhouse.tar) on the controller.
  type: str
  returned: always
archive_sha256:
  description: SHA-256 of C(wheelhouse.tar).
  type: str
  returned: always
"""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from ansible.module_utils.basic import AnsibleModule

STAMP = ".deps-stamp.json"
SOURCE_STAMP = ".source-stamp.json"


def tree_digest(root: str, epoch: int) -> str:
    """SHA-256 over the relative paths, modes and contents of every file under root."""
    h = hashlib.sha256(str(epoch).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            h.update(oct(os.stat(path).st_mode & 0o777).encode())
            h.update(sha256(path).encode())
    return h.hexdigest()


ARCHIVE = "wheelhouse.tar"


def archive_bytes(dest: str, names: list[str]) -> bytes:
    """A tar of ``names`` in ``dest`` that depends on their content only."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(names):
            info = tarfile.TarInfo(name)
            with open(os.path.join(dest, name), "rb") as fh:
                data = fh.read()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_pin(filename: str) -> str:
    name, version = filename.split("-")[:2]
    return f"{name.replace('_', '-').lower()}=={version}"


def requires_dist(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    return sorted(line for line in text.splitlines() if line.startswith("Requires-Dist:"))


def platform_args(p: dict) -> list[str]:
    major, minor = (int(x) for x in p["glibc"].split(".")[:2])
    arch = p["arch"]
    args = []
    for m in range(minor, 4, -1):
        args += ["--platform", f"manylinux_{major}_{m}_{arch}"]
    args += ["--platform", f"manylinux2014_{arch}", "--platform", f"manylinux2010_{arch}"]
    pyver = p["python_version"].replace(".", "")
    args += ["--python-version", p["python_version"], "--implementation", "cp"]
    args += ["--abi", f"cp{pyver}", "--abi", "abi3", "--abi", "none"]
    return args


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "project_dir": {"type": "path", "required": True},
            "sources": {
                "type": "list",
                "elements": "str",
                "default": ["pyproject.toml", "README.md", "pmip_agent"],
            },
            "dest": {"type": "path", "required": True},
            "constraints": {"type": "path"},
            "extra_packages": {"type": "list", "elements": "str", "default": []},
            "python_version": {"type": "str", "default": "3.11"},
            "glibc": {"type": "str", "default": "2.36"},
            "arch": {"type": "str", "default": "x86_64"},
            "source_date_epoch": {"type": "int", "default": 315532800},
            "build_isolation": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not re.match(r"^\d+\.\d+$", p["python_version"]) or not re.match(r"^\d+\.\d+$", p["glibc"]):
        module.fail_json(msg="python_version and glibc are major.minor, e.g. 3.11 and 2.36")
    pip = [sys.executable, "-m", "pip"]
    dest = p["dest"]
    changes: list[str] = []
    tmp = tempfile.mkdtemp(prefix="pmip-wheelhouse-")
    try:
        # 1. The project wheel, from a clean copy of the sources (no stale build/ tree).
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for item in p["sources"]:
            path = os.path.join(p["project_dir"], item)
            if os.path.isdir(path):
                shutil.copytree(path, os.path.join(src, item), ignore=ignore)
            elif os.path.exists(path):
                shutil.copy(path, os.path.join(src, item))
            else:
                module.fail_json(msg=f"{path} does not exist")
        built = os.path.join(tmp, "built")
        os.makedirs(built)
        fingerprint = tree_digest(src, p["source_date_epoch"])
        cache_path = os.path.join(dest, SOURCE_STAMP)
        cache = {}
        if os.path.exists(cache_path):
            with open(cache_path) as fh:
                cache = json.load(fh)
        cached = os.path.join(dest, cache.get("wheel", "-"))
        if cache.get("sources") == fingerprint and os.path.exists(cached):
            # Same sources: the reproducible build would give the same bytes again.
            shutil.copy(cached, built)
        else:
            env = {**os.environ, "SOURCE_DATE_EPOCH": str(p["source_date_epoch"])}
            argv = [*pip, "wheel", "-q", "--no-deps", "-w", built, src]
            if not p["build_isolation"]:
                argv.insert(4, "--no-build-isolation")
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp)
            if proc.returncode != 0:
                module.fail_json(msg="building the project wheel failed", stderr=proc.stderr)
        (project_wheel,) = os.listdir(built)
        project_path = os.path.join(built, project_wheel)

        # 2. Dependencies, downloaded again only when what they depend on changed.
        constraints = ""
        if p["constraints"]:
            with open(p["constraints"]) as fh:
                constraints = fh.read()
        key = hashlib.sha256(
            json.dumps(
                [
                    constraints,
                    requires_dist(project_path),
                    sorted(p["extra_packages"]),
                    platform_args(p),
                ]
            ).encode()
        ).hexdigest()
        stamp_path = os.path.join(dest, STAMP)
        stamp = {}
        if os.path.exists(stamp_path):
            with open(stamp_path) as fh:
                stamp = json.load(fh)
        deps: list[str] = stamp.get("wheels", [])
        fresh = stamp.get("key") == key and all(os.path.exists(os.path.join(dest, w)) for w in deps)
        downloaded = os.path.join(tmp, "deps")
        if not fresh:
            argv = [*pip, "download", "-q", "--only-binary=:all:", *platform_args(p)]
            argv += ["-d", downloaded]
            if p["constraints"]:
                argv += ["-c", p["constraints"]]
            argv += [project_path, *p["extra_packages"]]
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp)
            if proc.returncode != 0:
                module.fail_json(msg="downloading the dependencies failed", stderr=proc.stderr)
            deps = sorted(w for w in os.listdir(downloaded) if w != project_wheel)

        # 3. Put everything in place, replacing only what differs.
        wanted = sorted([project_wheel, *deps])
        sources = {project_wheel: project_path}
        if not fresh:
            sources.update({w: os.path.join(downloaded, w) for w in deps})
        if not module.check_mode:
            os.makedirs(dest, exist_ok=True)
        for name, path in sorted(sources.items()):
            target = os.path.join(dest, name)
            if os.path.exists(target) and sha256(target) == sha256(path):
                continue
            changes.append(f"wheel {name}")
            if not module.check_mode:
                shutil.copyfile(path, target + ".tmp")
                os.replace(target + ".tmp", target)
        if os.path.isdir(dest):
            for name in sorted(os.listdir(dest)):
                if name.endswith(".whl") and name not in wanted:
                    changes.append(f"removed {name}")
                    if not module.check_mode:
                        os.unlink(os.path.join(dest, name))
        pins = sorted(wheel_pin(w) for w in wanted)
        req_text = "# Written by the pmip_wheelhouse module: every wheel of this directory.\n"
        req_text += "".join(f"{pin}\n" for pin in pins)
        req_path = os.path.join(dest, "requirements.txt")
        old = None
        if os.path.exists(req_path):
            with open(req_path) as fh:
                old = fh.read()
        if old != req_text:
            changes.append("requirements.txt")
            if not module.check_mode:
                with open(req_path, "w") as fh:
                    fh.write(req_text)
        if not fresh and not module.check_mode:
            with open(stamp_path, "w") as fh:
                json.dump({"key": key, "wheels": deps}, fh, indent=1)
        if not module.check_mode:
            with open(cache_path, "w") as fh:
                json.dump({"sources": fingerprint, "wheel": project_wheel}, fh, indent=1)
        digest = sha256(project_path)
        archive = os.path.join(dest, ARCHIVE)
        archive_sha = None
        if not module.check_mode:
            data = archive_bytes(dest, [*wanted, "requirements.txt"])
            archive_sha = hashlib.sha256(data).hexdigest()
            if not os.path.exists(archive) or sha256(archive) != archive_sha:
                changes.append(ARCHIVE)
                with open(archive + ".tmp", "wb") as fh:
                    fh.write(data)
                os.replace(archive + ".tmp", archive)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    module.exit_json(
        changed=bool(changes),
        changes=changes,
        project_wheel=project_wheel,
        project_sha256=digest,
        wheels=wanted,
        requirements=pins,
        dest=dest,
        archive=archive,
        archive_sha256=archive_sha,
    )


if __name__ == "__main__":
    main()
