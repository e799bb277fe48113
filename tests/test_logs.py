"""With ``log_file`` set, an error that stops a command before it starts still reaches the
person (or systemd) that started it: one line on stderr, and the record in the file."""

from __future__ import annotations

import json
import os

import pytest

from dsa110_ingest.statedir import StateLock

from .conftest import Site


@pytest.fixture
def logged_site(site: Site) -> Site:
    site.config_path.write_text(
        site.config_path.read_text().replace(
            'log_level = "debug"\n', 'log_level = "debug"\nlog_file = "logs/ingest.log"\n'
        )
    )
    return site


def _error_lines(stderr: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all(r["level"] == "error" for r in lines), stderr
    return lines


@pytest.mark.parametrize("rescan", [False, True])
def test_refusing_to_start_beside_a_daemon_is_said_on_stderr(
    logged_site: Site, rescan: bool
) -> None:
    # this process holds the daemon's lock, as a running daemon would
    lock = StateLock(logged_site.cfg.hdf5_db)
    lock.acquire()
    try:
        p = logged_site.cli("run", "--no-convert", *(["--rescan"] if rescan else []), check=False)
    finally:
        lock.release()
    assert p.returncode == 1
    (line,) = _error_lines(p.stderr)
    assert f"another dsa110-ingest (pid {os.getpid()}) is running" in str(line["error"])
    assert line["log_file"] == str(logged_site.root / "logs" / "ingest.log")
    assert str(line["timestamp"]).endswith("Z")
    logged = (logged_site.root / "logs" / "ingest.log").read_text()
    assert f"another dsa110-ingest (pid {os.getpid()})" in logged


def test_a_converter_that_cannot_run_is_said_on_stderr(logged_site: Site) -> None:
    logged_site.config_path.write_text(
        logged_site.config_path.read_text().replace(
            "[convert]\nenabled = false\n",
            '[convert]\nbackend = "command"\ncommand = ["/nonexistent/convert", "{output}"]\n',
        )
    )
    p = logged_site.cli("run", check=False)
    assert p.returncode == 1
    (line,) = _error_lines(p.stderr)
    assert line["event"] == "cli.error" and "/nonexistent/convert" in str(line["error"])


def test_without_a_log_file_the_error_is_not_doubled(site: Site) -> None:
    lock = StateLock(site.cfg.hdf5_db)
    lock.acquire()
    try:
        p = site.cli("run", "--no-convert", check=False)
    finally:
        lock.release()
    assert p.returncode == 1
    lines = [json.loads(line) for line in p.stderr.splitlines() if line.strip()]
    refusals = [r for r in lines if "another dsa110-ingest" in str(r.get("error"))]
    assert len(refusals) == 1, p.stderr


def test_console_format_with_a_log_file_prints_one_text_line(logged_site: Site) -> None:
    lock = StateLock(logged_site.cfg.hdf5_db)
    lock.acquire()
    try:
        p = logged_site.cli("run", "--no-convert", "--log-format", "console", check=False)
    finally:
        lock.release()
    assert p.returncode == 1
    assert p.stderr.count("another dsa110-ingest") == 1, p.stderr
    assert p.stderr.startswith("dsa110-ingest: error: another dsa110-ingest"), p.stderr
