"""Bad input: hypothesis generates hostile files among valid ones. The indexer stays up,
names each problem, and the valid files around it are indexed as if alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_ingest.db.hdf5 import Hdf5DB
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.simulate import plan_groups, write_file
from dsa110_ingest.times import iso_to_unix, unix_to_iso

from ..conftest import SMALL, wait_for, write_site

T_BAD = iso_to_unix("2025-10-02T03:00:00")  # well away from the valid group
COUNTS: dict[str, int] = {}


def _template(d: Path, i: int) -> Path:
    ts = T_BAD + 1000 * (i % 50)
    return write_file(d, ts, i % 16, SMALL)


def _edit(path: Path, key: str, value: object) -> None:
    with h5py.File(path, "r+") as f:
        if key in f:
            del f[key]
        if value is not None:
            f[key] = value


KINDS = [
    "near_name",
    "zero",
    "truncated",
    "no_header",
    "wrong_type",
    "wrong_shape",
    "nan_time",
    "inf_freq",
    "time_mismatch",
    "duplicate",
    "huge_dims",
    "symlink_out",
    "symlink_in",
    "directory",
    "text_file",
]
LIVE_ONLY = ["unreadable"]  # needs a daemon without root's DAC override (see below)


@st.composite
def bad_file(draw: st.DrawFn) -> tuple[str, int, int]:
    return draw(st.sampled_from(KINDS)), draw(st.integers(0, 10_000)), draw(st.integers(1, 10**6))


def _make(kind: str, i: int, n: int, inc: Path, outside: Path) -> tuple[Path, str | None]:
    """Create one hostile entry; returns it and the reject reason expected (None: valid)."""
    if kind == "near_name":
        name = [
            "2025-10-02T03-00-00_sb01.hdf5",
            "2025-10-02T03:00:00_sb1.hdf5",
            "2025-10-02T03:00:00_sb99.hdf5",
            "2025-10-02T03:00:00_SB01.hdf5",
            "x2025-10-02T03:00:00_sb01.h5",
        ][n % 5]
        p = inc / f"{i}{name}" if n % 2 else inc / name
        p.write_bytes(b"x")
        return p, "misnamed"
    if kind == "directory":
        p = inc / f"{unix_to_iso(T_BAD + i)}_sb02.hdf5"
        p.mkdir(exist_ok=True)
        return p, None  # not a file: walked, never read, never rejected
    if kind == "text_file":
        p = inc / f"{unix_to_iso(T_BAD + i)}_sb03.hdf5"
        p.write_text("hello " * (n % 1000))
        return p, "not_hdf5"
    if kind == "zero":
        p = inc / f"{unix_to_iso(T_BAD + i)}_sb04.hdf5"
        p.write_bytes(b"")
        return p, "not_hdf5"
    src = _template(Path(tempfile.mkdtemp()), i)
    if kind == "symlink_out":
        tgt = outside / src.name
        shutil.move(src, tgt)
        p = inc / src.name
        p.symlink_to(tgt)
        return p, "symlink_outside"
    p = inc / src.name
    shutil.move(src, p)
    if kind == "symlink_in":
        # a link to a file inside the storage location: followed, the file indexed
        real = inc / "sub" / src.name
        real.parent.mkdir(exist_ok=True)
        shutil.move(p, real)
        p.symlink_to(real)
        return p, None
    if kind == "unreadable":
        p.chmod(0)
        return p, "permission_denied"
    if kind == "truncated":
        data = p.read_bytes()
        p.write_bytes(data[: n % len(data)])
        return p, "truncated|not_hdf5"
    if kind == "no_header":
        with h5py.File(p, "r+") as f:
            del f["Header"]
        return p, "no_header"
    if kind == "wrong_type":
        key = ["Nblts", "Nfreqs", "latitude", "telescope_name", "time_array"][n % 5]
        _edit(p, f"Header/{key}", np.bytes_("nonsense") if key != "telescope_name" else 3.5)
        return p, "invalid_header"
    if kind == "wrong_shape":
        _edit(p, "Header/freq_array", np.zeros((3, 7)))
        return p, "invalid_header"
    if kind == "nan_time":
        _edit(
            p,
            "Header/time_array",
            np.full(SMALL.nants * (SMALL.nants + 1) // 2 * SMALL.ntimes, np.nan),
        )
        return p, "invalid_header"
    if kind == "inf_freq":
        _edit(p, "Header/freq_array", np.full((1, SMALL.nchan), np.inf))
        return p, "invalid_header"
    if kind == "huge_dims":
        _edit(p, "Header/Nblts", 10**15)
        return p, "invalid_header"
    if kind == "time_mismatch":
        far = inc / f"{unix_to_iso(T_BAD + 50_000 + i)}_sb05.hdf5"
        p.rename(far)
        return far, "time_mismatch"
    if kind == "duplicate":
        # the same subband again, a second later: a recorded conflict, never a rejection
        twin = inc / f"{unix_to_iso(T_BAD + 1000 * (i % 50) + 1)}_sb{i % 16:02d}.hdf5"
        if not twin.exists():
            shutil.copy(p, twin)
        return p, None
    raise AssertionError(kind)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(bad=st.lists(bad_file(), min_size=1, max_size=6))
def test_hostile_files_are_rejected_with_a_reason_and_harm_nothing(bad, record) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        site = write_site(root)
        outside = root / "outside"
        outside.mkdir()
        (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
        for sb, t in plan.files.items():
            write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
        expected: dict[str, str | None] = {}
        for j, (kind, i, n) in enumerate(bad):
            p, reason = _make(kind, i * 10 + j, n, site.incoming, outside)
            expected[str(p)] = reason
            COUNTS[kind] = COUNTS.get(kind, 0) + 1
        db = Hdf5DB(site.cfg.hdf5_db)
        idx = Indexer(db, site.cfg)
        idx.register_locations()
        r = idx.reconcile()  # must not raise, whatever is in the folder
        rejected = {row["path"]: row["reason"] for row in db.rejected()}
        for path, reason in expected.items():
            if reason is None:
                assert path not in rejected
            else:
                assert rejected.get(path) in reason.split("|"), (path, rejected)
        for row in db.rejected():
            assert row["detail"] and len(row["detail"]) > 20  # says what, and what to do
        # the valid group is complete, exactly once, whatever surrounded it
        assert db.count_events("group.complete") >= 1
        g = db.group(unix_to_iso(min(plan.files.values())))
        assert g is not None and g["state"] == "complete" and g["n_conflicts"] == 0
        db.close()
        idx.close()
        assert r.seen >= 16


def test_daemon_stays_up_while_fed_bad_files(tmp_path: Path, record) -> None:
    """The live daemon, run as an unprivileged user would be (as root: without the DAC
    capabilities, so an unreadable file is unreadable), fed every kind of bad file."""
    site = write_site(tmp_path)
    argv = [sys.executable, "-m", "dsa110_ingest", "run"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: cannot run the daemon without DAC override")
        argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, env=site.env(), stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        try:
            wait_for(lambda: "service.ready" in log.read_text(), 30, log.read_text)
            outside = tmp_path / "outside"
            outside.mkdir()
            made: dict[str, str | None] = {}
            for j, kind in enumerate((KINDS + LIVE_ONLY) * 2):
                p, reason = _make(kind, 500 + j, 7919 * (j + 1), site.incoming, outside)
                made[str(p)] = reason
            (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
            for sb, t in plan.files.items():
                write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
            wait_for(lambda: "group.complete" in log.read_text(), 30, lambda: log.read_text())
            expected = {p for p, r in made.items() if r is not None}
            wait_for(
                lambda: len(site.cli_json("status", "--json")["rejected_files"]) >= len(expected),
                30,
                lambda: log.read_text()[-3000:],
            )
            st = site.cli_json("status", "--json")
            reasons = {r["path"]: r["reason"] for r in st["rejected_files"]}
            for p in expected:
                assert reasons.get(p) in (made[p] or "").split("|"), (p, reasons.get(p))
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
    total = sum(COUNTS.values()) + len(made)
    record(
        "bad input fuzzer (hypothesis + a live daemon)",
        bad_inputs=total,
        kinds=sorted(set(KINDS + LIVE_ONLY)),
        daemon_exits=0,
        valid_groups_lost=0,
    )
