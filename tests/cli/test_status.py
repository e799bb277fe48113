"""`status` as text: names cannot forge lines, an empty index says so, and a stopped
daemon's last conversions are not shown as running."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
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


@pytest.mark.parametrize("max_attempts", [4, 1])
def test_a_stopped_daemon_conversions_are_not_shown_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], max_attempts: int
) -> None:
    """A SIGKILLed daemon's last heartbeat lists the conversion it ran a beat ago (since
    converted) and not the one it started after (still running in the index). Nothing
    holds the lock: `status` names only the one the index has unfinished under that
    daemon's lease, as converted again when the daemon runs (OPERATOR3 defect 5), or,
    its attempts used up, as failed by the next daemon (OPERATOR5 defect 2)."""
    import dataclasses

    from dsa110_ingest.tools.simulate import simulate

    from ..conftest import SMALL, converter_script
    from ..convert.conftest import command_site

    site = command_site(tmp_path, converter_script(tmp_path / "ok"))
    simulate(site.incoming, 2, params=SMALL)
    site.cli("run", "--rescan", "--no-convert")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a real pid of this host, gone
    owner = f"{socket.gethostname()}:{dead.pid}:n0nce"
    now = time.time()
    with site.db() as db:
        first = db.claim_job(owner, now - 20, 600.0, False)
        assert first is not None
        with db.transaction("converted"):
            assert db.finish_job(
                first.group_id,
                owner,
                "converted",
                now - 10,
                ms_path="x.ms",
                token=first.attempt_token,
            )
        second = db.claim_job(owner, now - 5, 600.0, False)
        assert second is not None and second.group_id != first.group_id
        executor = {"executor": "local", "running": [first.group_id], "waiting": None}
        db.write_heartbeat(
            site.cfg.node,
            dead.pid,
            socket.gethostname(),
            now - 60,
            now - 12,
            {"executor": executor, "version": "x"},
        )
    cfg = dataclasses.replace(
        site.cfg, convert=dataclasses.replace(site.cfg.convert, max_attempts=max_attempts)
    )
    code = status.run(cfg, argparse.Namespace(json=False))
    lines = capsys.readouterr().out.splitlines()
    assert code == status.EXIT_STOPPED
    (line,) = [line for line in lines if line.startswith("executor:")]
    assert "1 running" not in line and first.group_id not in line
    assert f"was converting {second.group_id} when the daemon stopped" in line
    if max_attempts > 1:
        assert "converted again when the daemon runs" in line
    else:  # its one attempt is used up: the next daemon fails it, never converts it
        assert "converted again" not in line
        assert f"{second.group_id}: attempts used up (max_attempts 1)" in line
        assert "failed by the next daemon; `dsa110-ingest retry GROUP`" in line
    js = status.status_dict(cfg)["running_conversions"]
    assert js == [{"group_id": second.group_id, "lease_owner": owner, "attempts": 1}]


def test_json_status_is_unchanged_by_the_text_escapes(site: Site, tmp_path: Path) -> None:
    (site.incoming / "a\nb.hdf5").write_bytes(b"x")
    _reconcile(site)
    (r,) = status.status_dict(site.cfg)["rejected_files"]
    assert r["path"] == f"{site.incoming}/a\nb.hdf5"


def test_a_name_that_is_not_utf8_is_escaped_once_in_the_rejection(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """OPERATOR3 defect 7: the path showed `\\xff\\xfe`, the quoted name `\\\\xff`."""
    with open(os.fsencode(site.incoming) + b"/\xff\xfe_sb07.hdf5", "wb") as f:
        f.write(b"x")
    _reconcile(site)
    _, lines = _text(site, capsys)
    (line,) = [line for line in lines if line.startswith("  rejected")]
    assert f"{site.incoming}/\\xff\\xfe_sb07.hdf5: name '\\xff\\xfe_sb07.hdf5' is not" in line
    assert "\\\\" not in line
