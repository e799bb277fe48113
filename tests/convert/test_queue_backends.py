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


def _converting(site: Site, script: Path, extra: str = "") -> Site:
    """The site's converter: the command ``script``, fast retries and short leases."""
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", "{{inputs}}"]\n'
        'output_dir = "ms"\nbackoff_initial_seconds = 0.2\nbackoff_max_seconds = 0.5\n'
        "lease_seconds = 3\n" + extra
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


# a converter that takes its `run` process down with it, as an OOM kill or a segfault of
# the writer that takes the daemon along would: SIGKILL to the first ancestor that is
# `python -m dsa110_ingest run` (the template and its child die with it, PDEATHSIG)
_KILL_MY_DAEMON = """
pid = os.getppid()
while pid > 1:
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    if b"dsa110_ingest" in argv and b"run" in argv:
        os.kill(pid, 9)
        time.sleep(30)
    pid = int(open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[1])
"""


def test_a_conversion_that_kills_its_daemon_fails_after_max_attempts(
    site: Site, tmp_path: Path, sim_groups: Any
) -> None:
    """Each attempt's lease expires with its daemon: the re-claim that would be attempt
    max_attempts + 1 fails the group instead (once, with the reason and the fix), so a
    conversion that kills its daemon is not retried for ever."""
    started = tmp_path / "started"
    body = f"open({str(started)!r}, 'a').write('x'); exec({_KILL_MY_DAEMON!r})"
    _converting(site, converter_script(tmp_path / "convert-killer", body), "max_attempts = 2\n")
    sim_groups(site.incoming, n=1)
    for attempt in (1, 2):
        p = site.cli("run", "--rescan", check=False, timeout=300)
        assert p.returncode == -signal.SIGKILL, (attempt, p.returncode, p.stderr[-3000:])
        assert len(started.read_text()) == attempt
    # the third pass finds the lease expired and the attempts used up: failed, not retried
    p = site.cli("run", "--rescan", check=False, timeout=300)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    assert len(started.read_text()) == 2
    (g,) = site.cli_json("groups", "--json")
    gid = g["group_id"]
    assert (g["conversion"], g["attempts"]) == ("failed", 2), g
    assert "lease" in g["last_error"] and f"dsa110-ingest retry {gid}" in g["last_error"]
    assert "2 attempts" in g["last_error"]
    failed = [e for e in site.events() if e["type"] == "group.failed"]
    assert len(failed) == 1 and failed[0]["payload"]["kind"] == "lease_lost"
    assert failed[0]["payload"]["attempts"] == 2
    text = site.cli("status", check=False).stdout
    assert f"conversion failed (2x) {gid}: " in text and "lease" in text
    # nothing retries it by itself, nor reports it twice
    p = site.cli("run", "--rescan", check=False, timeout=300)
    assert len(started.read_text()) == 2
    assert [e["type"] for e in site.events()].count("group.failed") == 1
