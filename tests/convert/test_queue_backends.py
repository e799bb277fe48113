"""The conversion queue on every store backend: `run --rescan` converts each complete
group exactly once (one job, one group.converted event, one ms_index row), a second
rescan converts nothing, and a daemon killed mid-conversion leaves a job the next one
finishes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.db import open_index_at, open_products_at

from ..conftest import Site, converter_script, wait_for

# every `site` test here runs on each store backend (tests/conftest.py)
pytestmark = pytest.mark.store_backends


def _converting(site: Site, script: Path) -> Site:
    """The site's converter: the command ``script``, fast retries and short leases."""
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", "{{inputs}}"]\n'
        'output_dir = "ms"\nbackoff_initial_seconds = 0.2\nbackoff_max_seconds = 0.5\n'
        "lease_seconds = 3\n"
    )
    text = site.config_path.read_text()
    assert "[convert]\nenabled = false\n" in text
    site.config_path.write_text(text.replace("[convert]\nenabled = false\n", conv))
    return site


def _state(site: Site) -> tuple[dict[str, str], list[Any], list[str]]:
    cfg = site.cfg
    with open_index_at(cfg.hdf5_db, readonly=True) as idx:
        groups = [g.group_id for g in idx.list_groups(None, None, None)]
        jobs = {g: j.state for g in groups if (j := idx.job(g)) is not None}
        events = [e.type for e in idx.events_after(0, 100_000)]
    with open_products_at(cfg.products_db, readonly=True) as prod:
        ms = prod.all_ms()
    return jobs, ms, events


def test_each_complete_group_converts_once(site: Site, tmp_path: Path, sim_groups: Any) -> None:
    _converting(site, converter_script(tmp_path / "convert-ok"))
    sim_groups(site.incoming, n=3)
    site.cli("run", "--rescan")
    jobs, ms, events = _state(site)
    assert sorted(jobs.values()) == ["converted"] * 3
    assert sorted(r.group_id for r in ms) == sorted(jobs)
    assert all(r.status == "converted" and r.start_mjd for r in ms)
    assert events.count("group.complete") == 3 and events.count("group.converted") == 3
    for r in ms:
        assert len((Path(r.path) / "inputs.txt").read_text().splitlines()) == 16
    site.cli("run", "--rescan")  # again: nothing converts twice
    assert _state(site) == (jobs, ms, events)


def test_a_daemon_killed_mid_conversion_leaves_a_job_the_next_finishes(
    site: Site, tmp_path: Path, sim_groups: Any, daemon_factory: Any
) -> None:
    started = tmp_path / "started"
    slow = converter_script(
        tmp_path / "convert-slow", f"open({str(started)!r}, 'a').write('x'); time.sleep(2)"
    )
    _converting(site, slow)
    sim_groups(site.incoming, n=1)
    d = daemon_factory(site)
    wait_for(started.exists, 120, lambda: d.log.read_text()[-3000:])
    d.proc.send_signal(signal.SIGKILL)  # the converter dies with it (PDEATHSIG)
    d.proc.wait(30)
    d2 = daemon_factory(site)
    # the lease (3 s) lapses, the job is claimed again and converts once
    wait_for(
        lambda: list(_state(site)[0].values()) == ["converted"],
        120,
        lambda: d2.log.read_text()[-3000:],
    )
    d2.stop()
    _, ms, events = _state(site)
    assert len(ms) == 1 and events.count("group.converted") == 1
    assert len(started.read_text()) == 2  # two attempts, one result
