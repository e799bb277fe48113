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


REMOTE = (
    'hdf5_db = "postgresql://ingest:S3cretPW@db.example.org,db2.example.org:5433/dsa110_index'
    '?target_session_attrs=read-write"\n'
    'products_db = "postgresql://ingest@10.0.0.5:5433/dsa110_products"\n'
)
DASK = '[convert]\noutput_dir = "/data/out"\nexecutor = "dask"\ndask_scheduler = "{}"\n'


def _verify(tmp_path: Path, text: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    unit = tmp_path / "dsa110-ingest.service"
    unit.write_text(text)
    v = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


def _text(conf: Path, capsys: pytest.CaptureFixture[str]) -> str:
    cfg = load_config(conf, {"HOME": str(conf.parent)})
    systemd_unit.run(cfg, argparse.Namespace(executable="/usr/bin/true"))
    return capsys.readouterr().out


def test_remote_hosts_by_name_drop_the_ip_filter_and_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(REMOTE + DASK.format("tcp://head-node:8786"))
    text = _text(conf, capsys)
    assert "IPAddressDeny" not in _unit(conf, capsys)
    for host in ("hdf5_db db.example.org", "hdf5_db db2.example.org", "dask_scheduler head-node"):
        assert f"# {host}\n" in text or f"# [convert] {host}\n" in text
    assert "IPAddressAllow= takes only addresses" in text
    assert "S3cretPW" not in text
    _verify(tmp_path, text)


def test_remote_hosts_by_address_are_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        'hdf5_db = "postgresql://ingest@[fd00::5]/dsa110_index"\n'
        'products_db = "postgresql:///dsa110_products?host=10.0.0.6"\n'
        'metrics_listen = "0.0.0.0:9464"\n' + DASK.format("tcp://192.168.1.9:8786")
    )
    text = _text(conf, capsys)
    unit = _unit(conf, capsys)
    assert unit["IPAddressDeny"] == "any"
    assert unit["IPAddressAllow"].split() == ["localhost", "fd00::5", "10.0.0.6", "192.168.1.9"]
    assert "# metrics_listen 0.0.0.0:9464 serves other hosts" in text
    _verify(tmp_path, text)


def test_local_databases_and_scheduler_keep_the_shipped_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        'hdf5_db = "postgresql:///dsa110_index?host=/run/postgresql"\n'
        'products_db = "postgresql://localhost/dsa110_products"\n'
        + DASK.format("tcp://127.0.0.1:8786")
    )
    unit = _unit(conf, capsys)
    assert (unit["IPAddressDeny"], unit["IPAddressAllow"]) == ("any", "localhost")


def test_paths_under_home_relax_protect_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        'state_dir = "/home/op/state"\n[[storage_locations]]\nname = "incoming"\n'
        'path = "/home/op/in"\n[convert]\noutput_dir = "/data/out"\n'
    )
    text = _text(conf, capsys)
    unit = _unit(conf, capsys)
    assert unit["ProtectHome"] == "read-only"
    assert "# location incoming /home/op/in\n" in text and "# state_dir /home/op/state\n" in text
    assert "-/home/op/state" in unit["ReadWritePaths"].split()
    # the config file is under /tmp here: PrivateTmp=yes would hide it
    assert unit["PrivateTmp"] == "no" and f"# the config file {conf}\n" in text
    _verify(tmp_path, text)


def test_doctor_warns_when_the_installed_unit_blocks_what_the_config_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dsa110_ingest.doctor import Context, check_systemd_unit

    conf = tmp_path / "c.toml"
    conf.write_text(REMOTE + DASK.format("tcp://192.168.1.9:8786"))
    cfg = load_config(conf, {"HOME": str(tmp_path)})
    shipped = tmp_path / "shipped" / "dsa110-ingest.service"
    shipped.parent.mkdir()
    systemd_unit.run(None, argparse.Namespace(executable="/usr/bin/true"))
    shipped.write_text(capsys.readouterr().out)
    checks = list(check_systemd_unit(cfg, Context(tmp_path, units=(shipped,))))
    details = "\n".join(c.detail for c in checks)
    assert {c.level for c in checks} == {"WARN"}
    for blocked in ("hdf5_db db.example.org", "products_db 10.0.0.5", "dask_scheduler 192.168.1.9"):
        assert f"blocks {blocked}" in details or f"blocks [convert] {blocked}" in details
    assert "PrivateTmp=yes hides the config file" in details
    assert "regenerate the unit" in details and "S3cretPW" not in details
    # a drop-in naming the address clears that one; the generated unit clears all
    dropin = Path(f"{shipped}.d") / "net.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nIPAddressAllow=10.0.0.0/24\n")
    details = "\n".join(
        c.detail for c in check_systemd_unit(cfg, Context(tmp_path, units=(shipped,)))
    )
    assert "products_db 10.0.0.5" not in details and "db.example.org" in details
    fitted = tmp_path / "fitted.service"
    fitted.write_text(_text(conf, capsys))
    (ok,) = check_systemd_unit(cfg, Context(tmp_path, units=(fitted,)))
    assert ok.level == "OK"
    assert list(check_systemd_unit(cfg, Context(tmp_path, units=(tmp_path / "none",)))) == []
