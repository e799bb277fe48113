"""Conversions on a real Dask cluster (scheduler + 2 worker processes on 127.0.0.1): they
run on the workers, once each, survive a killed worker and a killed daemon, are cancelled
at the timeout, and wait (ingest going on) while the scheduler is unreachable."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest

from ..conftest import converter_script, db_count, wait_for
from .conftest import DaskCluster, ancestry_body, command_site, dask_site, read_runs

pytest.importorskip("distributed")


def _products(root: Path) -> Path:
    return root / "state" / "products.sqlite3"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(") ", 1)[1].split()[0] != "Z"


def test_conversions_run_on_the_workers_each_once(
    tmp_path: Path, dask_cluster: DaskCluster, daemon_factory, sim_groups
) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "conv", ancestry_body(runs, sleep=0.5))
    site = dask_site(tmp_path, script, dask_cluster.address, "workers = 4\n")
    port = _free_port()
    d = daemon_factory(site, "--metrics-listen", f"127.0.0.1:{port}")
    d.wait_ready()
    sim_groups(site.incoming, n=4)
    wait_for(
        lambda: db_count(_products(tmp_path), "SELECT COUNT(*) FROM ms_index") == 4,
        120,
        lambda: d.log.read_text()[-3000:],
    )
    started = [r for r in read_runs(runs) if r["what"] == "start"]
    # each group converted exactly once
    assert len(started) == 4 and len({r["out"] for r in started}) == 4
    workers = dask_cluster.worker_pids()
    for r in started:
        assert d.proc.pid not in r["anc"], "a conversion ran inside the daemon"
        assert set(r["anc"]) & workers, f"conversion {r} did not run under a Dask worker"
    # both workers took part (4 groups of 0.5 s, one slot each)
    assert len({next(iter(set(r["anc"]) & workers)) for r in started}) == 2
    assert [e["type"] for e in site.events()].count("group.converted") == 4
    # status shows the executor and its cluster
    wait_for(lambda: "2 worker(s)" in site.cli("status").stdout, 30)
    line = next(ln for ln in site.cli("status").stdout.splitlines() if ln.startswith("executor"))
    assert f"dask at {dask_cluster.address}" in line and "2 slot(s)" in line
    # and so do the metrics
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(
        lambda: (
            'dsa110_ingest_executor_workers{executor="dask"} 2.0'
            in urllib.request.urlopen(url, timeout=10).read().decode()
        ),
        30,
    )
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "dsa110_ingest_conversions_waiting 0.0" in body
    d.stop()


def test_a_worker_killed_mid_conversion_is_retried_and_converted_once(
    tmp_path: Path, dask_cluster: DaskCluster, daemon_factory, sim_groups
) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "conv", ancestry_body(runs, sleep=3))
    site = dask_site(tmp_path, script, dask_cluster.address)
    d = daemon_factory(site)
    d.wait_ready()
    sim_groups(site.incoming, n=1)
    wait_for(lambda: read_runs(runs), 60, lambda: d.log.read_text()[-3000:])
    first = read_runs(runs)[0]
    (victim,) = set(first["anc"]) & dask_cluster.worker_pids()
    os.kill(victim, signal.SIGKILL)  # the Dask worker process itself, mid-conversion
    wait_for(
        lambda: db_count(_products(tmp_path), "SELECT COUNT(*) FROM ms_index") == 1,
        120,
        lambda: d.log.read_text()[-3000:] + dask_cluster._log_tail(),
    )
    # the killed worker's child converter died with it; the retry converted the group once
    wait_for(lambda: not _alive(first["pid"]), 30)
    runs_now = read_runs(runs)
    assert [r["what"] for r in runs_now if r["pid"] == first["pid"]] == ["start"]
    assert [r["what"] for r in runs_now].count("done") == 1
    assert [e["type"] for e in site.events()].count("group.converted") == 1
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "converted"
    d.stop()
    dask_cluster.wait_workers(2)  # its nanny restarts it, for the next test


def test_a_daemon_killed_while_tasks_run_registers_one_result_after_restart(
    tmp_path: Path, dask_cluster: DaskCluster, daemon_factory, sim_groups
) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "conv", ancestry_body(runs, sleep=4))
    site = dask_site(tmp_path, script, dask_cluster.address)
    sim_groups(site.incoming, n=1)
    d = daemon_factory(site)
    wait_for(lambda: read_runs(runs), 60, lambda: d.log.read_text()[-3000:])
    first = read_runs(runs)[0]
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    # its client is gone: the scheduler releases the task and the worker kills the converter
    wait_for(lambda: not _alive(first["pid"]), 30, dask_cluster._log_tail)
    d2 = daemon_factory(site)
    wait_for(
        lambda: db_count(_products(tmp_path), "SELECT COUNT(*) FROM ms_index") == 1,
        120,
        lambda: d2.log.read_text()[-3000:],
    )
    runs_now = read_runs(runs)
    assert [r["what"] for r in runs_now if r["pid"] == first["pid"]] == ["start"]
    assert [r["what"] for r in runs_now].count("done") == 1
    assert [e["type"] for e in site.events()].count("group.converted") == 1
    (g,) = site.cli_json("groups", "--json")
    assert (g["conversion"], g["attempts"]) == ("converted", 2)
    d2.stop()


def test_a_conversion_past_the_timeout_is_cancelled_on_the_worker(
    tmp_path: Path, dask_cluster: DaskCluster, sim_groups
) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "conv", ancestry_body(runs, sleep=120))
    site = dask_site(
        tmp_path, script, dask_cluster.address, "max_attempts = 1\ntimeout_seconds = 15\n"
    )
    sim_groups(site.incoming, n=1)
    p = site.cli("run", "--rescan", check=False, timeout=180)
    assert p.returncode == 1  # a conversion it ran failed
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "failed" and "longer than timeout_seconds (15 s)" in g["last_error"]
    (run,) = read_runs(runs)
    wait_for(lambda: not _alive(run["pid"]), 30, dask_cluster._log_tail)
    # the slot is free again: the cluster is not left running a given-up conversion
    wait_for(lambda: not any(dask_cluster.client.processing().values()), 30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_scheduler_lets_ingest_go_on_and_conversions_wait(
    tmp_path: Path, dask_cluster: DaskCluster, daemon_factory, sim_groups
) -> None:
    sched_file = tmp_path / "scheduler.json"
    script = converter_script(tmp_path / "conv")
    site = command_site(
        tmp_path, script, f'executor = "dask"\ndask_scheduler_file = "{sched_file}"\n'
    )
    d = daemon_factory(site)
    d.wait_ready()
    sim_groups(site.incoming, n=1)
    wait_for(lambda: "group.complete" in [e["type"] for e in site.events()], 60)
    wait_for(lambda: "does not exist (yet)" in d.log.read_text(), 60)
    # a scheduler file naming a scheduler that is not there (it died, or a typo)
    sched_file.write_text(json.dumps({"address": f"tcp://127.0.0.1:{_free_port()}"}))
    wait_for(lambda: "unreachable" in d.log.read_text(), 60, lambda: d.log.read_text()[-3000:])
    wait_for(lambda: "waiting: scheduler" in site.cli("status").stdout, 60)
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "pending" and g["attempts"] == 0
    assert "convert.waiting" in d.log.read_text()
    # the scheduler is back, at the address its file now names: the waiting group converts
    sched_file.write_text(dask_cluster.scheduler_file.read_text())
    wait_for(
        lambda: db_count(_products(tmp_path), "SELECT COUNT(*) FROM ms_index") == 1,
        120,
        lambda: d.log.read_text()[-3000:],
    )
    (g,) = site.cli_json("groups", "--json")
    assert (g["conversion"], g["attempts"]) == ("converted", 1)
    d.stop()


def test_doctor_probes_output_dir_from_every_worker(
    tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    site = dask_site(tmp_path, converter_script(tmp_path / "conv"), dask_cluster.address)
    p = site.cli("doctor", check=False)
    lines = [ln for ln in p.stdout.splitlines() if "worker tcp://" in ln]
    assert len(lines) == 2 and all(ln.startswith("OK") for ln in lines), p.stdout
    assert "shares" in lines[0]
    assert not list((tmp_path / "ms").glob(".dsa110-probe-*"))
    bad = dask_site(
        tmp_path / "b", converter_script(tmp_path / "conv2"), f"tcp://127.0.0.1:{_free_port()}"
    )
    p = bad.cli("doctor", check=False)
    assert p.returncode == 1 and "unreachable" in p.stdout
