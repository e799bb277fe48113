"""Executors and the dispatcher's fencing, on real SQLite files and real child processes:
a given-up attempt never registers its result, an attempt lost by the executor does not
count, and the executor settings are validated."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from dsa110_ingest.config import load_config
from dsa110_ingest.convert.executor import LocalProcessExecutor, make_executor
from dsa110_ingest.convert.queue import Dispatcher, Recorder, build_request
from dsa110_ingest.db import IndexStore, open_index_at, open_products_at
from dsa110_ingest.errors import ConfigError

from ..conftest import Site, converter_script, db_count, wait_for
from .conftest import ancestry_body, command_site, read_runs


def _indexed_site(tmp_path: Path, script: Path, sim_groups, extra: str = "") -> Site:
    site = command_site(tmp_path, script, extra)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")  # the job waits in the queue
    return site


def _claim(db: IndexStore, owner: str, now: float) -> tuple[str, str]:
    job = db.claim_job(owner, now, 3.0, False)
    assert job is not None
    return job.group_id, job.attempt_token


def test_a_given_up_attempt_never_registers_its_late_result(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    site = _indexed_site(tmp_path, ok_script, sim_groups)
    cfg = site.cfg
    t0 = time.time()
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        gid, old = _claim(db, "daemon-a", t0)
        # daemon-a stalls past its lease; daemon-b takes the group over
        gid_b, new = _claim(db, "daemon-b", t0 + 10)
        assert gid_b == gid and new != old and new and old
        base = build_request(cfg, db, gid)
        result = {"ms_path": base.output, "n_channels": base.n_channels}
        rec = Recorder(cfg, db, products, clock=lambda: t0 + 11)
        late = rec.success(replace(base, token=old), result, "daemon-a")
        assert late is False
        assert db_count(cfg.products_db, "SELECT COUNT(*) FROM ms_index") == 0
        assert db.job(gid).lease_owner == "daemon-b"
        # even under the owner that holds the lease, a stale token is refused
        assert not rec.success(replace(base, token=old), result, None)
        assert rec.success(replace(base, token=new), result, "daemon-b")
        assert db_count(cfg.products_db, "SELECT COUNT(*) FROM ms_index") == 1
        assert db.job(gid).state == "converted"


def test_an_attempt_lost_by_the_executor_does_not_count(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    site = _indexed_site(tmp_path, ok_script, sim_groups, "max_attempts = 1\n")
    cfg = site.cfg
    t0 = time.time()
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        gid, token = _claim(db, "daemon-a", t0)
        req = build_request(cfg, db, gid)
        req = replace(req, token=token)
        Recorder(cfg, db, products, clock=lambda: t0).transient(req, "daemon-a", "worker lost")
        job = db.job(gid)
        assert (job.state, job.attempts, job.last_error) == ("pending", 0, "worker lost")
        assert job.next_attempt_at == pytest.approx(t0 + cfg.convert.backoff_initial_seconds)
        # max_attempts = 1, yet the group is not failed: the next attempt is claimable
        assert db.claim_job("daemon-a", t0 + 1, 3.0, False) is not None


def test_the_dispatcher_gives_up_an_attempt_whose_lease_was_taken(
    tmp_path: Path, sim_groups
) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "slow", ancestry_body(runs, sleep=30))
    site = _indexed_site(tmp_path, script, sim_groups)
    cfg = site.cfg
    d = Dispatcher(cfg, LocalProcessExecutor())
    d.start()
    try:
        wait_for(lambda: read_runs(runs), 30)
        (run,) = read_runs(runs)
        with open_index_at(cfg.hdf5_db) as db:
            # another daemon, whose clock says our lease has lapsed, takes the group
            gid, _ = _claim(db, "daemon-b", time.time() + cfg.convert.lease_seconds + 1)
            wait_for(lambda: not d.running, 30, "the dispatcher kept a lost attempt")
            assert db.job(gid).lease_owner == "daemon-b"
        # the given-up converter is stopped, not left to finish and race the new attempt
        wait_for(lambda: not Path(f"/proc/{run['pid']}").exists(), 30)
        assert [r["what"] for r in read_runs(runs)] == ["start"]
        assert d.completed == 0
    finally:
        d.stop()
    assert db_count(cfg.products_db, "SELECT COUNT(*) FROM ms_index") == 0


def test_the_local_executor_is_the_default(tmp_path: Path) -> None:
    cfg = load_config(None, env={"HOME": str(tmp_path)})
    assert cfg.convert.executor == "local"
    ex = make_executor(cfg.convert)
    assert isinstance(ex, LocalProcessExecutor)
    assert ex.unavailable() is None and ex.capacity() is None
    assert ex.describe() == {"executor": "local"}


@pytest.mark.parametrize(
    ("convert", "needle"),
    [
        ('executor = "slurm"', "executor must be one of"),
        ('executor = "dask"', "needs exactly one of dask_scheduler"),
        (
            'executor = "dask"\ndask_scheduler = "tcp://h:8786"\ndask_scheduler_file = "s.json"',
            "needs exactly one of dask_scheduler",
        ),
        ("dask_resource = 1", "dask_resource must be a string"),
    ],
)
def test_bad_executor_settings_name_the_key(tmp_path: Path, convert: str, needle: str) -> None:
    f = tmp_path / "ingest.toml"
    f.write_text(f"[convert]\n{convert}\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(f, env={"HOME": str(tmp_path)})


def test_a_relative_scheduler_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "etc" / "ingest.toml"
    f.parent.mkdir()
    f.write_text('[convert]\nexecutor = "dask"\ndask_scheduler_file = "dask/scheduler.json"\n')
    cfg = load_config(f, env={"HOME": str(tmp_path)})
    assert cfg.convert.dask_scheduler_file == str(tmp_path / "etc" / "dask" / "scheduler.json")


def test_a_remote_result_is_checked_from_the_daemons_side(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    site = _indexed_site(tmp_path, ok_script, sim_groups)
    cfg = site.cfg
    with open_index_at(cfg.hdf5_db, readonly=True) as db:
        gid = db.list_groups(None, None, None)[0].group_id
        req = build_request(cfg, db, gid)
    d = Dispatcher(cfg, LocalProcessExecutor())
    # a worker on another host said it wrote the MS, but this host does not see it
    why = d._check_here(req, {"ms_path": req.output})
    assert why is not None and "does not exist" in why and "storage shared by the workers" in why
    Path(req.output).mkdir(parents=True)
    (Path(req.output) / "inputs.txt").write_text("x")
    assert d._check_here(req, {"ms_path": req.output}) is None
