"""`systemd-unit --config FILE`: the unit runs that file and may write the folders it
names; without --config the shipped defaults stay."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsa110_ingest.cli import systemd_unit
from dsa110_ingest.config import load_config


def _unit(cfg_file: Path | None, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    cfg = load_config(cfg_file, {"HOME": str(cfg_file.parent if cfg_file else "/nonexistent")})
    args = argparse.Namespace(executable="/usr/bin/true")
    systemd_unit.run(cfg if cfg_file else None, args)
    out = capsys.readouterr().out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_unit_uses_the_given_config_and_its_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "etc" / "c.toml"
    conf.parent.mkdir()
    conf.write_text(
        'state_dir = "/srv/ingest/state"\nlog_file = "/var/log/dsa110/ingest.log"\n'
        'events_jsonl = "/srv/ingest/state/events.jsonl"\nhdf5_db = "/fast/index/h.sqlite3"\n'
        '[convert]\noutput_dir = "../ms"\n'
    )
    unit = _unit(conf, capsys)
    assert unit["ExecStart"] == f"/usr/bin/true --config {conf} run"
    # the events mirror is inside state_dir: not listed twice
    assert unit["ReadWritePaths"].split() == [
        "-/srv/ingest/state",
        "-/fast/index",
        f"-{tmp_path / 'ms'}",
        "-/var/log/dsa110",
    ]


def test_without_a_configured_state_dir_systemd_provides_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """StateDirectory= is the service's state_dir: this shell's default is not listed."""
    conf = tmp_path / "c.toml"
    conf.write_text('[convert]\noutput_dir = "/data/out"\n')
    assert _unit(conf, capsys)["ReadWritePaths"] == "-/data/out"


def test_paths_with_spaces_are_quoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "my conf.toml"
    conf.write_text('state_dir = "/srv/my state"\n[convert]\noutput_dir = "/srv/ms"\n')
    unit = _unit(conf, capsys)
    assert unit["ExecStart"] == f'/usr/bin/true --config "{conf}" run'
    assert unit["ReadWritePaths"] == '"-/srv/my state" -/srv/ms'


def test_without_config_the_shipped_defaults_stay(capsys: pytest.CaptureFixture[str]) -> None:
    unit = _unit(None, capsys)
    assert unit["ExecStart"] == "/usr/bin/true --config /etc/dsa110-ingest/ingest.toml run"
    assert unit["ReadWritePaths"] == "-/data/ms"


def test_the_command_line_config_reaches_the_unit_and_systemd_accepts_it(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'state_dir = "{tmp_path / "st"}"\n[convert]\noutput_dir = "/data/out"\n')
    p = subprocess.run(
        [sys.executable, "-m", "dsa110_ingest", "--config", str(conf), "systemd-unit"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert f"--config {conf} run" in p.stdout
    assert f"ReadWritePaths=-{tmp_path / 'st'} -/data/out\n" in p.stdout
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    unit = tmp_path / "dsa110-ingest.service"
    unit.write_text(p.stdout)
    v = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
