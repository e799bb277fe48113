"""Soak: 8 hours (``make reliability-report``: a day, ``make soak``: a week) of observations
at accelerated cadence, into two locations, with every kind of writer, while the daemon
indexes and converts."""

from __future__ import annotations

import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from dsa110_ingest.tools.simulate import plan_groups, write_file

from ..conftest import SMALL, db_count, wait_for
from .conftest import SOAK_GROUPS, assert_exact, ledger, reliability_site, stand_in_converter


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# A job's `created_at` is taken just before its transaction waits for the write lock
# (up to the 10 s busy timeout); until that commit the dispatcher cannot see it.
QUEUE_SLACK_S = 12.0


def order_violations(
    rows: list[tuple[str, float, float, float, int]], slack: float = QUEUE_SLACK_S
) -> list[tuple[str, str]]:
    """(started, skipped) pairs: ``started`` was claimed while the older ``skipped`` had
    been pending (and unclaimed) for longer than ``slack``. A group that completes later
    may rightly start after a younger one: that is not a violation.

    Rows are (group_id, obs_mjd, created_at, started_at, attempts); ``started_at`` is the
    last claim, so only first-attempt jobs can prove when a job was still unclaimed."""
    out = []
    by_start = sorted(rows, key=lambda r: r[3])
    for gid, mjd, _, start, _ in by_start:
        for ogid, omjd, ocreated, ostart, oattempts in rows:
            if omjd < mjd and oattempts == 1 and ocreated + slack < start and ostart > start:
                out.append((gid, ogid))
    return out


def test_order_check_flags_only_a_waiting_older_group() -> None:
    # (group, obs, created, started, attempts)
    ok = [
        ("a", 1.0, 0.0, 1.0, 1),
        ("b", 2.0, 0.5, 2.0, 1),
        ("late", 0.5, 100.0, 101.0, 1),  # older, but completed after b started
        ("retried", 0.1, 0.0, 500.0, 3),  # its first claim is not known
    ]
    assert order_violations(ok) == []
    bad = [("young", 2.0, 0.0, 20.0, 1), ("old", 1.0, 0.0, 40.0, 1)]
    assert order_violations(bad) == [("young", "old")]
    # within the commit slack: not provable, not flagged
    assert order_violations([("y", 2.0, 0.0, 5.0, 1), ("o", 1.0, 0.0, 6.0, 1)]) == []


# its own deadlines (600 s to drain) are the bound, not the suite's default 300 s: on a
# busy 2-core machine a day (or week) of groups can take longer than that and still be right
@pytest.mark.timeout(1800)
def test_soak(tmp_path: Path, daemon_factory, record) -> None:
    conv = stand_in_converter(tmp_path / "convert")
    site = reliability_site(tmp_path / "site", conv, extra_locations=("incoming2",))
    staging = tmp_path / "staging"
    staging.mkdir()
    d = daemon_factory(site)
    d.wait_ready()
    rss_start = _rss_kib(d.proc.pid)
    rng = random.Random(2025)
    plans = plan_groups(SOAK_GROUPS, "2025-10-02T00:00:00", 3.0, seed=7)
    modes: dict[str, int] = {}
    rss_samples: list[int] = []
    t0 = time.monotonic()

    def correlator() -> None:
        for i, plan in enumerate(plans):
            dest = site.incoming if i % 2 == 0 else site.extra["incoming2"]
            for sb, t in rng.sample(sorted(plan.files.items()), 16):
                mode = rng.choice(["inplace", "tmp_rename", "rsync", "copy"])
                modes[mode] = modes.get(mode, 0) + 1
                if mode == "copy":  # written elsewhere, then copied in
                    src = write_file(staging, t, sb, SMALL, "inplace", plan.start_unix)
                    shutil.copy(src, dest / src.name)
                    src.unlink()
                else:
                    write_file(dest, t, sb, SMALL, mode, plan.start_unix)
            if i % 32 == 0:
                rss_samples.append(_rss_kib(d.proc.pid))

    writer = threading.Thread(target=correlator)
    writer.start()
    writer.join()
    hdf5 = site.root / "state" / "hdf5.sqlite3"
    wait_for(
        lambda: (
            db_count(hdf5, "SELECT COUNT(*) FROM conversion_jobs WHERE state = 'converted'")
            == SOAK_GROUPS
        ),
        600,
        lambda: d.log.read_text()[-3000:],
    )
    elapsed = time.monotonic() - t0
    rss_end = _rss_kib(d.proc.pid)
    assert d.stop() == 0
    led = ledger(site)
    assert_exact(led, SOAK_GROUPS)
    assert led["rejected"] == 0
    # oldest observation first: when a conversion started, no older group was waiting
    c = sqlite3.connect(hdf5)
    rows = c.execute(
        "SELECT group_id, obs_mjd, created_at, started_at, attempts FROM conversion_jobs"
    ).fetchall()
    inversions = order_violations(rows)
    assert inversions == [], inversions[:5]
    inversions = len(inversions)
    # memory flat: no growth with the number of files handled
    assert rss_end <= rss_start * 1.5 + 30_000, (rss_start, rss_end)
    record(
        "soak",
        groups=SOAK_GROUPS,
        files=16 * SOAK_GROUPS,
        locations=2,
        writers=modes,
        seconds=round(elapsed, 1),
        rss_start_mib=round(rss_start / 1024, 1),
        rss_end_mib=round(rss_end / 1024, 1),
        lost=0,
        duplicated=0,
        rejected=led["rejected"],
        order_inversions=inversions,
    )
