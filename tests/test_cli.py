"""The pmip-agent front end: `check` exit statuses and messages, in process and through the
installed console script, and the manual-page help texts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pmip_agent import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = ROOT / ".venv" / "bin" / "pmip-agent"


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    text = (EXAMPLES / "lma.yaml").read_text()
    old = "prefix: 10.11.0.0/24"
    assert text.count(old) == 1
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, "prefix: 10.10.128.0/17"))
    return path


@pytest.mark.parametrize(
    ("name", "summary"),
    [("lma.yaml", "OK: lma lma1, 4 mobile nodes"), ("mag.yaml", "OK: mag mag1, 4 mobile nodes")],
)
def test_check_good(name: str, summary: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(EXAMPLES / name)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == summary
    assert err == ""


def test_check_bad(bad_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(bad_config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{bad_config}: invalid configuration" in err
    assert "lma.ipv4_pools[1].prefix: 10.10.128.0/17 (pool corp) overlaps 10.10.0.0/16" in err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "-c", str(tmp_path / "none.yaml")]) == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_run_with_a_bad_config_does_not_start(
    bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--config", str(bad_config)]) == 2
    assert "lma.ipv4_pools[1].prefix" in capsys.readouterr().err


def test_run_calls_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    import pmip_agent.daemon as daemon

    seen = []

    def fake_run(config: object, config_path: Path | None = None) -> int:
        seen.append((config, config_path))
        return 0

    monkeypatch.setattr(daemon, "run", fake_run)
    path = EXAMPLES / "mag.yaml"
    assert cli.main(["run", "--config", str(path)]) == 0
    (config, config_path), *_ = seen
    assert getattr(config, "node_name", None) == "mag1"
    assert config_path == path


def test_run_reports_a_daemon_crash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pmip_agent.daemon as daemon

    def broken(config: object, config_path: object = None) -> int:
        raise RuntimeError("netlink said no")

    monkeypatch.setattr(daemon, "run", broken)
    assert cli.main(["run", "--config", str(EXAMPLES / "lma.yaml")]) == 1
    assert "netlink said no" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["check"], ["check", "--config"], ["run", "--bogus", "x"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pmip-agent ")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["check", "--help"]])
def test_help_is_a_manual_page(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    for needle in ("EXIT STATUS", "SIGHUP", "EXAMPLES", "pmipctl", "--config"):
        assert needle in text, f"{' '.join(argv)} lacks {needle}"
    assert "  2  bad configuration" in text


def test_main_help_sections(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--help"])
    text = capsys.readouterr().out
    for needle in ("FILES", "/var/lib/pmip", "/run/pmip/<node_name>.sock", "SIGTERM", "SEE ALSO"):
        assert needle in text
    assert "run" in text and "check" in text


# --- the installed console script ---------------------------------------------------------


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: install the package into .venv (make venv)"
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_script_check_good() -> None:
    result = run_script("check", "--config", str(EXAMPLES / "lma.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK: lma lma1, 4 mobile nodes"


def test_script_check_bad(bad_config: Path) -> None:
    result = run_script("check", "--config", str(bad_config))
    assert result.returncode == 2
    assert "lma.ipv4_pools[1].prefix:" in result.stderr
    assert result.stdout == ""


def test_script_usage_error() -> None:
    result = run_script("check")
    assert result.returncode == 2
    assert "--config" in result.stderr


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pmip_agent.cli", "check", "-c", str(EXAMPLES / "mag.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: mag mag1")
