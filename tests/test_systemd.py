"""The shipped unit: ``systemd-analyze verify`` and ``security`` where systemd is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "dsa110-ingest.service"
analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")


def _local_copy(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists: point it at this checkout's entry point
    exe = Path(sys.executable).with_name("dsa110-ingest")
    text = UNIT.read_text().replace("/opt/dsa110-ingest/.venv/bin/dsa110-ingest", str(exe))
    out = tmp_path / UNIT.name
    out.write_text(text)
    return out


def test_unit_has_what_operations_rely_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=",
        "User=",
        "EnvironmentFile=-",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "LimitNOFILE=",
    ):
        assert line in text, line


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    r = subprocess.run(
        [analyze, "verify", str(_local_copy(tmp_path))], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_systemd_analyze_security_exposure_below_5(tmp_path: Path) -> None:
    r = subprocess.run(
        [analyze, "security", "--offline=yes", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    print(f"systemd-analyze security exposure: {m.group(1)}")
    assert float(m.group(1)) < 5.0
