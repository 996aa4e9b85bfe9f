"""deploy/systemd: the daemon's unit and the retrain timer parse, name commands and
options the CLI has, and pass ``systemd-analyze verify`` where systemd is installed."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from streamvae.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
UNITS = ROOT / "deploy" / "systemd"
EXE = "/opt/streamvae/bin/streamvae"  # where the units expect the installed entry point
NAMES = ("streamvae.service", "streamvae-retrain.service", "streamvae-retrain.timer")


def unit(name: str) -> configparser.ConfigParser:
    """A unit file as sections of keys (systemd's syntax is close enough to INI for this;
    repeated keys, which systemd allows, would fail here, and these units use none)."""
    p = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    p.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    p.read_string((UNITS / name).read_text(), source=name)
    return p


def exec_args(u: configparser.ConfigParser) -> list[str]:
    argv = shlex.split(u["Service"]["ExecStart"])
    assert argv[0] == EXE
    return argv[1:]


@pytest.mark.parametrize("name", NAMES)
def test_units_parse(name: str) -> None:
    u = unit(name)
    assert u["Unit"]["Description"]
    assert set(u.sections()) <= {"Unit", "Service", "Timer", "Install"}


def test_the_daemon_unit() -> None:
    s = unit("streamvae.service")["Service"]
    args = build_parser().parse_args(exec_args(unit("streamvae.service")))
    assert args.command == "run" and args.config == "/etc/streamvae/streamvae.toml"
    assert s["Restart"] == "on-failure" and s["KillSignal"] == "SIGTERM"
    # longer than the daemon's own worst case: broker acks (30 s), final commit (30 s), producer close (10 s)
    assert int(s["TimeoutStopSec"].removesuffix("s")) >= 70
    assert s["EnvironmentFile"].lstrip("-") == "/etc/streamvae/streamvae.env"
    assert s["User"] != "root"
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "CapabilityBoundingSet"):
        assert key in s, f"hardening option {key} missing"


def test_the_retrain_unit_and_its_timer() -> None:
    u = unit("streamvae-retrain.service")
    s = u["Service"]
    assert s["Type"] == "oneshot"
    args = build_parser().parse_args(exec_args(u))
    assert args.command == "retrain" and args.config == "/etc/streamvae/streamvae.toml" and args.quiet
    assert s["EnvironmentFile"] == unit("streamvae.service")["Service"]["EnvironmentFile"]
    t = unit("streamvae-retrain.timer")
    assert t["Timer"]["Unit"] == "streamvae-retrain.service" and t["Timer"]["OnCalendar"]
    assert t["Install"]["WantedBy"] == "timers.target"


def test_no_secret_in_a_unit() -> None:
    for name in NAMES:
        assert "PASSWORD=" not in (UNITS / name).read_text().replace("SASL_PASSWORD=...", "")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here "
                    "(only this check is skipped; the units are still parsed above)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify wants the ExecStart binary to exist: point the copies at this checkout's entry point
    exe = shutil.which("streamvae") or str(ROOT / ".venv" / "bin" / "streamvae")
    for name in NAMES:
        (tmp_path / name).write_text((UNITS / name).read_text().replace(EXE, exe))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *NAMES], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too, so any message is a failure
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
