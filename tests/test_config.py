from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsa110_ingest.config import load_config
from dsa110_ingest.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_embedded_default_uses_systemd_state_directory(tmp_path: Path) -> None:
    cfg = load_config(env={"STATE_DIRECTORY": str(tmp_path / "s"), "HOME": "/nonexistent"})
    assert cfg.hdf5_db == tmp_path / "s" / "hdf5.sqlite3"
    assert cfg.products_db == tmp_path / "s" / "products.sqlite3"
    assert cfg.sources["state_dir"] == "env STATE_DIRECTORY"


def test_default_state_dir_falls_back_to_xdg_then_home(tmp_path: Path) -> None:
    assert load_config(env={"XDG_STATE_HOME": str(tmp_path)}).state_dir == (
        tmp_path / "dsa110-ingest"
    )
    assert load_config(env={"HOME": str(tmp_path)}).state_dir == (
        tmp_path / ".local/state/dsa110-ingest"
    )


def test_relative_paths_are_relative_to_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "ingest.toml"
    f.write_text(
        'state_dir = "st"\nhdf5_db = "in.sqlite3"\n'
        '[[storage_locations]]\nname = "a"\npath = "../data"\n'
    )
    monkeypatch.chdir("/")
    cfg = load_config(f, env={})
    assert cfg.state_dir == tmp_path / "etc" / "st"
    assert cfg.hdf5_db == tmp_path / "etc" / "st" / "in.sqlite3"  # DB names live in state_dir
    assert cfg.storage_locations[0].path == tmp_path / "data"  # normalised, no ".."


def test_env_overrides_db_paths_and_says_so(tmp_path: Path) -> None:
    cfg = load_config(
        env={"HOME": str(tmp_path), "HDF5_DB_PATH": "/x/h.sqlite3", "PRODUCTS_DB_PATH": "p.sqlite3"}
    )
    assert cfg.hdf5_db == Path("/x/h.sqlite3")
    assert cfg.products_db == cfg.state_dir / "p.sqlite3"
    assert cfg.sources["hdf5_db"] == "env HDF5_DB_PATH"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("stat_dir = 'x'", "unknown key(s) ['stat_dir']"),
        (
            "[groups]\nexpected_subbands = 'sixteen'",
            "[groups] expected_subbands must be an integer",
        ),
        ("[groups]\ncluster_tolerance = 5", "unknown key `cluster_tolerance` in [groups]"),
        ("hdf5_db = 'a.sqlite3'\nproducts_db = 'a.sqlite3'", "inputs and outputs must"),
        ("[[storage_locations]]\nname = 'a'", "storage_locations[0] needs a string `path`"),
        ("[[storage_locations]]\nname='a'\npath='/d'\nwatch='sometimes'", "watch must be one of"),
        ("[convert]\nbackend = 'command'", "needs `command`"),
        ("pattern = '(unclosed'", "not a valid regular expression"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key_and_the_fix(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, env={"HOME": str(tmp_path)})
    assert needle in str(e.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_shipped_example_config_loads() -> None:
    cfg = load_config(REPO / "config" / "ingest.toml", env={})
    assert cfg.storage_locations and cfg.groups.expected_subbands == 16
    assert cfg.groups.cluster_tolerance_seconds == 60


SHIPPED_TOML = sorted(
    {*(REPO / "config").glob("*.toml"), *(REPO / "src/dsa110_ingest/data").glob("*.toml")}
)


def test_the_shipped_configs_are_found() -> None:
    # the glob below must not go quietly empty after a move
    assert {p.name for p in SHIPPED_TOML} >= {"ingest.toml"}
    assert any("data" in p.parts for p in SHIPPED_TOML)


@pytest.mark.parametrize("path", SHIPPED_TOML, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path, env={})
    assert cfg.config_file == path.absolute()
    assert cfg.sources.get("groups.expected_subbands", "default") in ("default", f"file {path}")


@pytest.mark.parametrize("backend", ["native", "pyuvdata"])
def test_the_demo_config_loads(tmp_path: Path, backend: str) -> None:
    from dsa110_ingest.tools.demo import DEMO_TOML

    f = tmp_path / "demo.toml"
    f.write_text(DEMO_TOML.format(backend=backend))
    cfg = load_config(f, env={})
    assert cfg.convert.backend == backend
    assert cfg.storage_locations[0].path == tmp_path / "incoming"
    assert cfg.convert.output_dir == tmp_path / "ms"


def test_config_command_prints_values_and_sources(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HDF5_DB_PATH": str(tmp_path / "h.db")}
    out = subprocess.run(
        [sys.executable, "-m", "dsa110_ingest", "config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert f'hdf5_db = "{tmp_path / "h.db"}"    # env HDF5_DB_PATH' in out
    assert "\ncluster_tolerance_seconds = 60.0    # default" in out


def test_running_from_any_folder_creates_no_database_there(tmp_path: Path) -> None:
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(
        [sys.executable, "-m", "dsa110_ingest", "index-hdf5", str(data)],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "home/.local/state/dsa110-ingest/hdf5.sqlite3").exists()


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[watch]\nsettle_seconds = 0\n", "settle_seconds"),
        ("[watch]\nrescan_interval_seconds = -5\n", "rescan_interval_seconds"),
        ("[watch]\npoll_interval_seconds = nan\n", "poll_interval_seconds"),
        ("[read]\nbatch_size = 0\n", "batch_size"),
        ("[read]\nworkers = -1\n", "workers"),
        ("[groups]\nincomplete_timeout_seconds = 0\n", "incomplete_timeout_seconds"),
        ("[groups]\nexpected_subbands = 0\n", "expected_subbands"),
        ("[convert]\nlease_seconds = 0\n", "lease_seconds"),
        ("[convert]\ntimeout_seconds = -1.5\n", "timeout_seconds"),
        ("[convert]\nconvert_incomplete_after_seconds = -1\n", "convert_incomplete_after_seconds"),
        ("[convert]\nbackoff_initial_seconds = 60\nbackoff_max_seconds = 10\n", "backoff_max"),
        ("[convert]\nmin_subbands = 17\n", "min_subbands"),
        ("[convert]\nworkers = 0\n", "workers"),
    ],
)
def test_out_of_range_values_are_one_line_errors_naming_the_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_config(f, env={"HOME": str(tmp_path)})
    msg = str(e.value)
    assert key in msg and "\n" not in msg and str(f) in msg


def test_zero_where_zero_means_something_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[read]\nworkers = 0\n[convert]\nconvert_incomplete_after_seconds = 0\n")
    cfg = load_config(f, env={"HOME": str(tmp_path)})
    assert cfg.read.workers == 0


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('metrics_listen = "127.0.0.1:99999"\n', "metrics_listen"),
        ('metrics_listen = "127.0.0.1:0"\n', "metrics_listen"),
        ('metrics_listen = "localhost"\n', "metrics_listen"),
        ('metrics_listen = ":9000"\n', "metrics_listen"),
        ('state_dir = "afile"\n', "state_dir"),
        ('events_jsonl = "adir"\n', "events_jsonl"),
        ('log_file = "adir"\n', "log_file"),
        ('state_dir = "s"\nhdf5_db = "adir2"\n', "hdf5_db"),
        ('events_jsonl = "afile/events.jsonl"\n', "events_jsonl"),
    ],
)
def test_config_mistakes_that_gave_tracebacks_are_one_line_errors(
    tmp_path: Path, toml: str, key: str
) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "s" / "adir2").mkdir(parents=True)
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_config(f, env={"HOME": str(tmp_path)})
    assert f"`{key}`" in str(e.value) and "\n" not in str(e.value)


def test_config_mistakes_through_the_cli_print_one_line_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for toml in ('state_dir = "afile"\n', 'metrics_listen = "127.0.0.1:99999"\n'):
        f = tmp_path / "c.toml"
        f.write_text(toml)
        r = subprocess.run(
            [sys.executable, "-m", "dsa110_ingest", "--config", str(f), "run", "--rescan"],
            capture_output=True,
            text=True,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
        assert len(errors) == 1, r.stderr


def test_metrics_listen_from_the_command_line_is_checked_too(tmp_path: Path) -> None:
    cfg = load_config(env={"HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="metrics_listen"):
        cfg.with_overrides(metrics_listen="127.0.0.1:70000")
    assert cfg.with_overrides(metrics_listen="[::1]:11010").metrics_listen == "[::1]:11010"


def test_node_defaults_to_the_host_name(tmp_path: Path) -> None:
    import socket

    cfg = load_config(env={"HOME": str(tmp_path)})
    assert cfg.node == socket.gethostname()
    assert cfg.sources["node"] == "default (host name)"
    f = tmp_path / "c.toml"
    f.write_text('node = "ingest-2"\n')
    assert load_config(f, env={}).node == "ingest-2"


@pytest.mark.parametrize("value", ['""', '"  "', '" a"', '"a\\tb"', '"a\\nb"', "3"])
def test_bad_node_names_the_key(tmp_path: Path, value: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f"node = {value}\n")
    with pytest.raises(ConfigError, match="`node` must be a non-empty printable name"):
        load_config(f, env={})
