"""`config` prints a TOML file that loads back to the same settings; `--json` carries the
same; `--example` is the shipped example, which the config model accepts."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

from dsa110_ingest import data
from dsa110_ingest.cli.config_cmd import render_toml, settings
from dsa110_ingest.config import load_config

from ..conftest import Site

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsa110_ingest", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_printed_toml_loads_back_to_the_same_config(site: Site, tmp_path: Path) -> None:
    site.config_path.write_text(
        "events_jsonl = \"ev.jsonl\"\npattern = '(?P<timestamp>\\S+)_sb(?P<index>\\d\\d)\\.h5$'\n"
        + site.config_path.read_text().replace(
            "[convert]\nenabled = false\n",
            '[convert]\nenabled = false\nbackend = "command"\n'
            'command = ["/bin/echo", "{output}", "{inputs}"]\n',
        )
        + "[read]\nbatch_size = 17\n"
    )
    env = {"HOME": str(tmp_path), "HDF5_DB_PATH": str(tmp_path / "h é.sqlite3")}
    p = _run("--config", str(site.config_path), "config", env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "frozen.toml"
    out.write_text(p.stdout)
    tomllib.loads(p.stdout)  # valid TOML
    original = load_config(site.config_path, env)
    frozen = load_config(out, env)
    assert replace(frozen, config_file=original.config_file) == original
    assert "    # env HDF5_DB_PATH" in p.stdout and "batch_size = 17    # file " in p.stdout
    assert 'command = ["/bin/echo", "{output}", "{inputs}"]' in p.stdout


def test_json_carries_values_and_sources(site: Site, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    p = _run("config", "--json", "--config", str(site.config_path), env=env, cwd=tmp_path)
    doc = json.loads(p.stdout)
    cfg = load_config(site.config_path, env)
    assert doc["settings"] == json.loads(json.dumps(settings(cfg)))
    assert doc["config_file"] == str(site.config_path)
    assert doc["sources"]["watch.settle_seconds"] == f"file {site.config_path}"
    assert doc["settings"]["storage_locations"][0]["path"] == str(site.incoming)


def test_render_of_the_built_in_defaults_is_valid_toml(tmp_path: Path) -> None:
    cfg = load_config(env={"HOME": str(tmp_path)})
    text = render_toml(cfg)
    assert tomllib.loads(text)["groups"]["expected_subbands"] == 16
    f = tmp_path / "d.toml"
    f.write_text(text)
    assert replace(load_config(f, {"HOME": "/x"}), config_file=None) == cfg


def test_example_is_the_shipped_file_and_the_config_model_accepts_it(tmp_path: Path) -> None:
    p = _run("config", "--example", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == data.read(data.EXAMPLE_CONFIG)
    f = tmp_path / "ingest.toml"
    f.write_text(p.stdout)
    cfg = load_config(f, env={})
    assert cfg.storage_locations and cfg.groups.expected_subbands == 16
    # the repository path is the same file, not a copy that can drift
    assert (REPO / "config" / "ingest.toml").read_text() == p.stdout


def test_example_needs_no_valid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is not toml")
    p = _run("--config", str(bad), "config", "--example", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert p.returncode == 0 and "[[storage_locations]]" in p.stdout
    p = _run("--config", str(bad), "config", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert p.returncode == 1 and "not valid TOML" in p.stderr


def test_missing_config_points_at_config_example(tmp_path: Path) -> None:
    p = _run(
        "--config", str(tmp_path / "no.toml"), "status", env={"HOME": str(tmp_path)}, cwd=tmp_path
    )
    assert p.returncode == 1
    assert "dsa110-ingest config --example >" in p.stderr and "config/ingest.toml" not in p.stderr


def test_systemd_unit_is_the_shipped_one_with_this_executable(tmp_path: Path) -> None:
    p = _run("systemd-unit", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    shipped = data.read(data.SYSTEMD_UNIT)
    exe = Path(sys.executable).with_name("dsa110-ingest")
    assert p.stdout == shipped.replace("/opt/dsa110-ingest/.venv/bin/dsa110-ingest", str(exe))
    p = _run("systemd-unit", "--exec", "/usr/bin/x", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert "ExecStart=/usr/bin/x --config /etc/dsa110-ingest/ingest.toml run" in p.stdout
    assert (REPO / "systemd" / "dsa110-ingest.service").read_text() == shipped
