"""A user who may read the index but not write in its folder (the group of the 0750/0640
state modes): `status`, `groups` and `events` work once the daemon has stopped, and what
cannot work says why at once. Run for real: root without the capabilities that bypass
file modes (`setpriv`), on a state folder owned by another user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsa110_ingest.db import open_index_at

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to drop the capabilities that bypass file modes",
)
DROP = "-dac_override,-dac_read_search,-fowner"


def _as_group_reader(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--bounding-set={DROP}", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _state(tmp_path: Path, files: int) -> Path:
    """An index written and closed by its owner (a clean stop: no -wal, no -shm left)."""
    state = tmp_path / "state"
    db = open_index_at(state / "hdf5.sqlite3")
    lid = db.ensure_location("in", str(tmp_path / "in"), "incoming", "", node="n")
    with db.transaction("test rows"):
        for i in range(files):
            db.reject(f"/in/x{i}.hdf5", "misnamed", "test", 1, 1, lid, 1.0)
    db.close()
    return state


def _hand_to_another_user(state: Path) -> None:
    for p in [state, *state.iterdir()]:
        os.chown(p, 65534, 0)  # nobody, group root: this user reads through the group
    state.chmod(0o750)


READ = (
    "from dsa110_ingest.db import open_index_at\n"
    "db = open_index_at({path!r}, readonly=True)\n"
    "print(len(db.rejected()))\n"
)


def test_a_stopped_daemons_index_is_readable_without_write_access(tmp_path: Path) -> None:
    state = _state(tmp_path, files=3)
    assert sorted(p.name for p in state.iterdir()) == ["hdf5.sqlite3"]
    _hand_to_another_user(state)
    r = _as_group_reader(READ.format(path=str(state / "hdf5.sqlite3")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_a_wal_left_over_says_how_to_read_it(tmp_path: Path) -> None:
    state = _state(tmp_path, files=1)
    # a writer that stopped without folding its WAL in (its -shm gone with it)
    live = open_index_at(state / "hdf5.sqlite3")
    with live.transaction("a row the WAL holds"):
        live.reject("/in/late.hdf5", "misnamed", "test", 1, 1, 1, 2.0)
    for name in ("hdf5.sqlite3", "hdf5.sqlite3-wal"):
        shutil.copy(state / name, tmp_path / name)
    live.close()
    for name in ("hdf5.sqlite3", "hdf5.sqlite3-wal"):
        shutil.copy(tmp_path / name, state / name)
    (state / "hdf5.sqlite3-shm").unlink(missing_ok=True)
    _hand_to_another_user(state)
    r = _as_group_reader(READ.format(path=str(state / "hdf5.sqlite3")))
    assert r.returncode != 0
    assert "without folding hdf5.sqlite3-wal into it" in r.stderr
    assert "Start the daemon" in r.stderr


def test_a_writer_in_a_folder_it_cannot_write_fails_at_once_naming_the_folder(
    tmp_path: Path,
) -> None:
    state = _state(tmp_path, files=1)
    _hand_to_another_user(state)
    (state / "hdf5.sqlite3").chmod(0o660)  # the file is writable, its folder is not
    db = str(state / "hdf5.sqlite3")
    # before: 60 s of retries as if the DB were busy, then "unable to open database file"
    r = _as_group_reader(f"from dsa110_ingest.db import open_index_at\nopen_index_at({db!r})")
    assert r.returncode != 0
    assert f"its folder {state} is not writable by this user" in r.stderr
