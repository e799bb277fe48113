"""A daemon in a long start-up reconcile (operator2 D2, D3, D6), as a real subprocess on
a few thousand small real files: its heartbeat is fresh and `status` says it is
reconciling; each group.complete line is logged when its event commits, not at the
reconcile's end; SIGTERM ends the reconcile at its next batch, keeping what was done,
and the next pass resumes with every group completed exactly once."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from dsa110_ingest.cli.status import describe_daemon, status_dict
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.times import iso_to_unix, unix_to_iso

from ..conftest import SMALL, Daemon, Site, db_count, wait_for, write_site

N_GROUPS = 128  # 2048 small files: a reconcile of many seconds even on an idle machine
BATCH = 16  # one group a transaction: a stop is noticed within a fraction of a second


def _copies(site: Site, sim_groups) -> None:
    """One simulated observation, copied under N_GROUPS name times 5 min apart (the
    header skew check is off in this site, so each copy is an observation of its own)."""
    src = site.root / "one"
    files = sim_groups(src, n=1, jitter=0.0, params=SMALL)
    t0 = iso_to_unix(files[0].name[:19])
    for g in range(N_GROUPS):
        stamp = unix_to_iso(t0 + 300 * g)
        for f in files:
            shutil.copy(f, site.incoming / f"{stamp}{f.name[19:]}")


def _completes_logged(d: Daemon) -> int:
    return sum(1 for line in d.lines() if line.get("event") == "group.complete")


def test_sigterm_ends_a_long_start_up_reconcile_and_its_events_are_logged_as_committed(
    tmp_path: Path, sim_groups, daemon_factory: Callable[..., Daemon]
) -> None:
    site = write_site(
        tmp_path,
        toml_extra=f"[read]\nbatch_size = {BATCH}\n[groups]\nmax_header_skew_seconds = 1e9\n",
    )
    _copies(site, sim_groups)
    db_path = site.cfg.hdf5_db
    d = daemon_factory(site)

    def committed() -> int:
        return db_count(db_path, "SELECT COUNT(*) FROM events WHERE type = 'group.complete'")

    # D3: during the reconcile, `status` calls it running and says what it does
    wait_for(lambda: committed() >= 10, 120, lambda: f"no progress:\n{d.log.read_text()}")
    # (the phase is refreshed at each progress report, every few seconds)
    st = wait_for(
        lambda: (
            (s := status_dict(site.cfg))["daemon"]["state"] == "running"
            and "starting: reconciling" in describe_daemon(s)
            and s
        ),
        60,
        lambda: f"never running while reconciling: {describe_daemon(status_dict(site.cfg))}",
    )
    assert st["heartbeat"]["status"]["phase"].startswith("starting: reconciling")
    # D6: what is committed is logged now, while the reconcile goes on
    seen = committed()
    wait_for(
        lambda: _completes_logged(d) >= seen,
        30,
        lambda: f"{seen} events committed, {_completes_logged(d)} logged",
    )
    assert "service.ready" not in d.log.read_text()  # still in the start-up reconcile
    # D2: a stop ends the reconcile at its next batch (the old code ran it to its end)
    rc = d.stop(signal.SIGTERM, timeout=60)
    assert rc == 0
    text = d.log.read_text()
    assert "reconcile.stopped" in text and "service.ready" not in text
    done = committed()
    assert done < N_GROUPS, "the reconcile ran to its end despite the SIGTERM"
    assert _completes_logged(d) == done  # every committed event has its line
    # the next pass resumes: every group completes, each exactly once
    db = site.db()
    try:
        idx = Indexer(db, site.cfg)
        idx.register_locations()
        r = idx.reconcile()
        assert r.unchanged >= 16 * done - 16
        assert db.count_events("group.complete") == N_GROUPS
        idx.close()
    finally:
        db.close()
