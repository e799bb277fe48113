"""A dispatcher blocked on a slow executor keeps its leases (review finding 5): renewals
run on their own thread and connection, so no other node can claim a group converting
here. Real template process (stopped with SIGSTOP: slow to answer), real converters, real
SQLite, a second claimant that tries the whole time."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.convert.executor import LocalProcessExecutor
from dsa110_ingest.convert.lease_keeper import LeaseKeeper
from dsa110_ingest.db import open_index_at
from dsa110_ingest.db.records import ConversionJob
from dsa110_ingest.tools.simulate import simulate

from ..conftest import (
    SMALL,
    STORE_BACKENDS,
    Site,
    converter_script,
    store_target,
    wait_for,
    write_site,
)
from .conftest import ancestry_body, claim, command_site, indexed_site, read_runs


def _running(db_path: object, gid: str, owner: str) -> bool:
    with open_index_at(str(db_path), readonly=True) as db:
        job = db.job(gid)
    return job is not None and job.state == "running" and job.lease_owner == owner


def _site(request: pytest.FixtureRequest, root: Path, script: Path, backend: str) -> Site:
    """indexed_site's deployment (lease 3 s, two workers) on ``backend``."""
    if backend == "sqlite":
        return indexed_site(root, script, "workers = 2\n")
    dbs = (store_target(request, backend, "hdf5"), store_target(request, backend, "products"))
    conv = command_site(root / "probe", script, "workers = 2\n").config_path.read_text()
    conv = conv[conv.index("[convert]") :]
    site = write_site(root, convert=conv, databases=dbs)
    simulate(site.incoming, 1, params=SMALL)
    site.cli("run", "--rescan", "--no-convert")
    return site


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_leases_hold_while_the_dispatcher_waits_on_a_slow_template(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "slow", ancestry_body(runs, sleep=600))
    site = _site(request, tmp_path, script, backend)
    cfg = site.cfg
    lease = cfg.convert.lease_seconds
    assert lease == 3
    ex = LocalProcessExecutor(cfg.convert.backend)
    assert ex.template is not None
    ex.template.answer_timeout = 600.0  # slow, not hung: it answers once continued
    d = Dispatcher(cfg, ex)
    d.start()
    tpl = None
    try:
        wait_for(lambda: read_runs(runs), 120, "the first conversion never started")
        (first,) = list(d.running)
        tpl = ex.template
        assert tpl is not None and tpl.pid
        os.kill(tpl.pid, signal.SIGSTOP)  # from now the template answers nothing
        # a second group arrives; its fork request waits on the template's answer
        simulate(site.incoming, 1, "2025-10-02T01:00:00", params=SMALL)
        site.cli("run", "--rescan", "--no-convert")
        with open_index_at(cfg.hdf5_db, readonly=True) as db:
            second = next(
                g.group_id for g in db.list_groups(None, None, None) if g.group_id != first
            )
        wait_for(lambda: _running(cfg.hdf5_db, second, d.owner), 60, "never claimed")
        # another node tries to take either group for four lease periods
        end = time.monotonic() + 4 * lease
        with open_index_at(cfg.hdf5_db) as db:
            while time.monotonic() < end:
                for gid in (first, second):
                    taken = db.lease_job(gid, "node-b:1:x", time.time(), lease)
                    assert taken is None, f"{gid}'s lease lapsed while the dispatcher waited"
                time.sleep(0.2)
        assert second not in d.running  # the dispatcher's thread was blocked all along
        assert d.leases.renewals >= 2 * 3  # both groups, every lease / 3
    finally:
        if tpl is not None and tpl.pid:
            os.kill(tpl.pid, signal.SIGCONT)
        d.stop(60)
    assert [r["what"] for r in read_runs(runs)].count("start") <= 2


def test_a_lease_taken_elsewhere_is_reported_lost_once(tmp_path: Path) -> None:
    site = indexed_site(tmp_path, converter_script(tmp_path / "ok"))
    cfg = site.cfg
    with open_index_at(cfg.hdf5_db) as db:
        gid, _ = claim(db, "daemon-a", time.time())
        keeper = LeaseKeeper(cfg, "daemon-a")
        keeper.hold(gid)
        keeper.renew(db)
        assert keeper.renewals == 1 and keeper.take_lost() == set()
        # another daemon, whose clock says the lease lapsed, takes it
        assert db.claim_job("daemon-b", time.time() + 10 * 3, 3.0, False) is not None
        keeper.renew(db)
        assert keeper.take_lost() == {gid} and keeper.take_lost() == set()
        assert keeper.held() == set()  # never renewed again
        keeper.hold(gid)
        keeper.drop(gid)
        keeper.renew(db)
        assert keeper.take_lost() == set()


def test_a_wedged_dispatcher_stops_holding_its_groups(tmp_path: Path) -> None:
    """No round of the dispatcher's loop for ``timeout_seconds``: renewals stop, so the
    groups of a stuck daemon go to other nodes when their leases lapse."""
    import dataclasses

    site = indexed_site(tmp_path, converter_script(tmp_path / "ok"))
    cfg = site.cfg
    cfg = dataclasses.replace(cfg, convert=dataclasses.replace(cfg.convert, timeout_seconds=1.0))
    with open_index_at(cfg.hdf5_db) as db:
        gid, _ = claim(db, "daemon-a", time.time())
        keeper = LeaseKeeper(cfg, "daemon-a")
        keeper.wedged_after_min_s = 0.0  # timeout_seconds alone: 1 s here
        keeper.hold(gid)
        keeper.take_lost()  # the loop comes round
        keeper.renew(db)
        assert keeper.renewals == 1
        time.sleep(1.5)  # ... and then not for longer than timeout_seconds
        keeper.renew(db)
        assert keeper.renewals == 1
        keeper.take_lost()  # it came round again
        keeper.renew(db)
        assert keeper.renewals == 2


def test_a_hung_template_costs_one_wait_and_no_attempt(tmp_path: Path) -> None:
    """Operator3 defect 1: with the template stopped, every conversion waited 120 s, the
    lease lapsed meanwhile and the group was claimed again and again past max_attempts.
    Now: one short wait, the conversion runs in a fresh process on its first attempt, the
    template is replaced for the next group."""
    runs = tmp_path / "runs.jsonl"
    site = indexed_site(tmp_path, converter_script(tmp_path / "log", ancestry_body(runs)))
    cfg = site.cfg
    ex = LocalProcessExecutor(cfg.convert.backend)
    assert ex.template is not None
    t = ex.template
    t.answer_timeout = 2.0
    d = Dispatcher(cfg, ex)
    d.start()

    def jobs() -> dict[str, ConversionJob | None]:
        with open_index_at(cfg.hdf5_db, readonly=True) as db:
            return {g.group_id: db.job(g.group_id) for g in db.list_groups(None, None, None)}

    def converted() -> set[str]:
        return {gid for gid, j in jobs().items() if j is not None and j.state == "converted"}

    try:
        wait_for(lambda: len(converted()) == 1, 120, "the first group was not converted")
        wait_for(lambda: t.ready_gen == t.gen, 60)
        old = t.pid
        os.kill(old, signal.SIGSTOP)
        simulate(site.incoming, 1, "2025-10-02T01:00:00", params=SMALL)
        site.cli("run", "--rescan", "--no-convert")
        wait_for(lambda: len(converted()) == 2, 120, "the second group was not converted")
        assert t.hung == 1
        assert all(j is not None and j.attempts == 1 for j in jobs().values()), jobs()
        simulate(site.incoming, 1, "2025-10-02T02:00:00", params=SMALL)
        site.cli("run", "--rescan", "--no-convert")
        wait_for(lambda: len(converted()) == 3, 120, "the third group was not converted")
        assert t.restarts == 1 and t.pid != old
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
        d.stop(60)
    starts = [r for r in read_runs(runs) if r["what"] == "start"]
    assert len(starts) == 3  # each group converted once


class _SlowSubmit:
    """A real local executor (fresh worker processes) whose submit takes ``delay`` s,
    as a template still importing on a loaded machine makes it (injected)."""

    def __init__(self, delay: float) -> None:
        self.inner = LocalProcessExecutor(use_template=False)
        self.delay = delay

    def submit(self, req: object) -> object:
        time.sleep(self.delay)
        return self.inner.submit(req)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_dispatcher_claiming_a_slow_round_is_not_called_wedged(tmp_path: Path) -> None:
    """One round of the claim loop submits up to ``workers`` conversions, each of which
    may wait on the executor: longer in all than the wedged cut-off, though every wait is
    short. Each claim is progress, so the leases of the round's groups are renewed
    (review4 finding 2: they lapsed mid-round)."""
    site = command_site(
        tmp_path, converter_script(tmp_path / "ok"), "workers = 4\ntimeout_seconds = 4\n"
    )
    simulate(site.incoming, 4, params=SMALL)
    site.cli("run", "--rescan", "--no-convert")
    d = Dispatcher(site.cfg, _SlowSubmit(2.5))  # type: ignore[arg-type]
    d.leases.wedged_after_min_s = 0.0  # timeout_seconds alone: wedged after 4 s idle
    d.start()
    try:
        wait_for(lambda: len(d.running) >= 2, 120, "the round never got going")
        before = d.leases.renewals
        wait_for(lambda: len(d.running) >= 4, 120, "the round never ended")
        # 2 claims of 2.5 s each: ~5 s, a renewal a second (lease 3 s / 3)
        assert d.leases.renewals - before >= 2, "leases not renewed during the round"
    finally:
        d.stop(60)
