"""`status` as text: names cannot forge lines, an empty index says so, and a stopped
daemon's last conversions are not shown as running."""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

import pytest

from dsa110_ingest.cli import status
from dsa110_ingest.ingest.indexer import Indexer

from ..conftest import Site


def _text(site: Site, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = status.run(site.cfg, argparse.Namespace(json=False))
    return code, capsys.readouterr().out.splitlines()


def _reconcile(site: Site) -> None:
    with site.db() as db:
        idx = Indexer(db, site.cfg)
        idx.register_locations()
        try:
            idx.reconcile()
        finally:
            idx.close()


def test_an_empty_index_says_no_files(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.db().close()
    code, lines = _text(site, capsys)
    assert code == status.EXIT_STOPPED
    assert "files:       none indexed" in lines and "groups:      none" in lines
    assert not any("0 rejected" in line for line in lines)


def test_a_file_name_cannot_forge_a_status_line(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = "x\n  rejected (ok) fake_sb01.hdf5"
    (site.incoming / forged).write_bytes(b"not hdf5")
    (site.incoming / "2025-10-02T00:00:00_SB01.HDF5").write_bytes(b"not hdf5")
    _reconcile(site)
    _, lines = _text(site, capsys)
    rejected = [line for line in lines if line.startswith("  rejected")]
    assert len(rejected) == 2, lines
    (fake,) = [line for line in rejected if "fake_sb01" in line]
    assert fake.startswith("  rejected (misnamed, 1x) ")
    assert f"{site.incoming}/x\\n  rejected (ok) fake_sb01.hdf5: " in fake
    (upper,) = [line for line in rejected if "_SB01.HDF5" in line]
    assert "writes `_sb<NN>.hdf5` in lower case" in upper
    assert all(line.isprintable() for line in lines)


def test_a_stopped_daemon_conversions_are_not_shown_running(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last heartbeat of a SIGKILLed daemon lists a running conversion; nothing holds
    the lock, so it is not running now and is taken up again at the next start."""
    executor = {"executor": "local", "running": ["2025-10-02T00:00:00"], "waiting": None}
    now = time.time()
    with site.db() as db:
        db.write_heartbeat(
            site.cfg.node,
            os.getpid() + 100000,
            socket.gethostname(),
            now - 60,
            now - 30,
            {"executor": executor, "version": "x"},
        )
    code, lines = _text(site, capsys)
    assert code == status.EXIT_STOPPED
    (line,) = [line for line in lines if line.startswith("executor:")]
    assert "1 running" not in line
    assert "was converting 2025-10-02T00:00:00 when the daemon stopped" in line
    assert "converted again when the daemon runs" in line


def test_json_status_is_unchanged_by_the_text_escapes(site: Site, tmp_path: Path) -> None:
    (site.incoming / "a\nb.hdf5").write_bytes(b"x")
    _reconcile(site)
    (r,) = status.status_dict(site.cfg)["rejected_files"]
    assert r["path"] == f"{site.incoming}/a\nb.hdf5"
