"""tests/netns.py itself: a run stopped by a signal leaves no namespace behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netns import require_root_netns, sh

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from netns import Lab
lab = Lab("sig")
print(lab.ns("a"), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_run_killed_by_a_signal_deletes_its_namespaces(sig: signal.Signals) -> None:
    require_root_netns()
    code = CHILD.format(tests=str(Path(__file__).resolve().parent))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    name = child.stdout.readline().strip()
    try:
        assert name and name in sh("ip netns list").stdout
        child.send_signal(sig)
        assert child.wait(20) == -sig  # still ended by that signal
        assert name not in sh("ip netns list").stdout
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        if name:
            sh(f"ip netns del {name}", check=False)
