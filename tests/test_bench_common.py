"""bench/common.py: the daemons a benchmark starts run the package it measures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOW = (
    "import sys; sys.path[:0] = [{root!r}, {bench!r}]; import common, os; "
    "print(os.environ['PYTHONPATH'])"
).format(root=str(ROOT), bench=str(ROOT / "bench"))


def pythonpath_after_import(pythonpath: str | None, tmp: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", SHOW], env=env, cwd=tmp, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_children_get_the_measured_package_first(tmp_path: Path) -> None:
    root = str(ROOT)
    assert pythonpath_after_import(None, tmp_path) == root
    assert pythonpath_after_import("/elsewhere", tmp_path) == os.pathsep.join([root, "/elsewhere"])
    already = os.pathsep.join(["/site", root])  # daemon_steps' sitecustomize, say
    assert pythonpath_after_import(already, tmp_path) == already


def test_a_script_outside_the_tree_then_imports_it(tmp_path: Path) -> None:
    """What the venv's pmip-agent script does: its own directory first on sys.path."""
    script = tmp_path / "agent.py"
    script.write_text("import pmip_agent; print(pmip_agent.__file__)")
    env = {**os.environ, "PYTHONPATH": pythonpath_after_import(None, tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert Path(done.stdout.strip()).resolve() == ROOT / "pmip_agent" / "__init__.py"
