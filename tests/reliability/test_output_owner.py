"""Two deployments with their own indexes (two state_dirs, SQLite) watching one folder and
writing one output_dir: each observation is converted once, by the index that claimed
the output_dir; the other says why it converts nothing; the owner keeps converting across
a restart; a takeover (`claim-output --force`) moves the conversions to the other index.

Real parts only: two `dsa110-ingest run` daemons as subprocesses, real h5py files from
the simulator, a real converter subprocess, the real CLI.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from dsa110_ingest.convert.claimfile import CLAIM_NAME, read_claim
from dsa110_ingest.tools.simulate import simulate

from ..conftest import SMALL, Daemon, Site, wait_for, write_site
from .conftest import stand_in_converter


def deployment(root: Path, incoming: Path, output: Path, converter: Path) -> Site:
    """Its own state_dir (its own index), the shared folder and output_dir."""
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{converter}", "{{output}}", '
        f'"{{inputs}}"]\noutput_dir = "{output}"\nworkers = 1\nlease_seconds = 3\n'
        "backoff_initial_seconds = 0.3\nbackoff_max_seconds = 2\n"
    )
    site = write_site(root, convert=conv)
    text = site.config_path.read_text().replace('log_level = "debug"', 'log_level = "info"')
    site.config_path.write_text(text.replace('path = "incoming"', f'path = "{incoming}"'))
    return Site(site.root, site.config_path, incoming)


def ms_rows(site: Site) -> list[str]:
    db = site.root / "state" / "products.sqlite3"
    if not db.exists():
        return []
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in c.execute("SELECT group_id FROM ms_index ORDER BY group_id")]
    except sqlite3.OperationalError:
        return []
    finally:
        c.close()


def jobs(site: Site) -> dict[str, int]:
    return dict(site.cli_json("status", "--json")["conversions"])


def refusals(d: Daemon) -> list[dict[str, Any]]:
    return [x for x in d.lines() if x.get("event") == "convert.output_dir_refused"]


def measurement_sets(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir() if p.name != CLAIM_NAME)


def test_two_indexes_one_output_dir_convert_each_observation_once(
    tmp_path: Path, daemon_factory, record
) -> None:
    conv = stand_in_converter(tmp_path / "conv", "time.sleep(0.2)")
    incoming, output = tmp_path / "incoming", tmp_path / "ms"
    incoming.mkdir()
    a = deployment(tmp_path / "a", incoming, output, conv)
    b = deployment(tmp_path / "b", incoming, output, conv)
    t0 = time.monotonic()
    da: Daemon = daemon_factory(a)
    da.wait_ready()
    wait_for(lambda: (output / CLAIM_NAME).exists(), 60, lambda: da.log.read_text()[-3000:])
    db: Daemon = daemon_factory(b)
    db.wait_ready()
    # the second index says why it converts nothing: once, naming both indexes and the fix
    (refused,) = wait_for(lambda: refusals(db), 60, lambda: db.log.read_text()[-3000:])
    a_id = read_claim(output / CLAIM_NAME).index_id  # type: ignore[union-attr]
    assert refused["level"] == "error" and refused["kind"] == "conflict"
    assert a_id in refused["error"] and refused["this_index_id"] in refused["error"]
    assert (
        "claim-output --force" in refused["error"] and str(output / CLAIM_NAME) in refused["error"]
    )

    # one observation arrives; both index it, only the owner converts it
    simulate(incoming, 1, "2025-10-02T00:00:00", 0.0, params=SMALL)
    wait_for(
        lambda: ms_rows(a) and jobs(b).get("pending") == 1, 120, lambda: db.log.read_text()[-3000:]
    )
    time.sleep(2.0)  # several dispatcher turns of B: still nothing
    assert ms_rows(a) == ["2025-10-02T00:00:00"] and ms_rows(b) == []
    assert len(measurement_sets(output)) == 1
    st = b.cli_json("status", "--json")
    assert "belongs to another index" in st["output_dir"]["problem"]
    wait_for(
        lambda: (
            "belongs to another index"
            in (b.cli_json("status", "--json")["heartbeat"]["status"]["problem"] or "")
        ),
        30,
        "the second daemon's heartbeat never reported the conflict",
    )
    text = b.cli("status", check=False).stdout
    assert "NOT CONVERTING" in text and a_id in text
    assert st["conversions"] == {"pending": 1}
    doctor = b.cli("doctor", check=False)
    assert doctor.returncode == 1 and "FAIL  output_dir owner" in doctor.stdout

    # the owner, SIGKILLed and restarted, keeps converting; the other still does not
    da.kill()
    da = daemon_factory(a)
    da.wait_ready()
    simulate(incoming, 1, "2025-10-02T00:10:00", 0.0, params=SMALL)
    wait_for(
        lambda: len(ms_rows(a)) == 2 and jobs(b).get("pending") == 2,
        120,
        lambda: da.log.read_text()[-3000:],
    )
    assert ms_rows(b) == [] and len(measurement_sets(output)) == 2
    assert refusals(da) == []

    # while A's daemon runs here, B's takeover is refused naming it: its running
    # conversions would write beside B's
    early = b.cli("claim-output", "--force", check=False)
    assert early.returncode == 1 and "Stop that daemon first" in early.stderr, early.stderr
    assert f"pid {da.proc.pid}" in early.stderr
    assert read_claim(output / CLAIM_NAME).index_id == a_id  # type: ignore[union-attr]
    # takeover: A retired, B takes the claim; B registers the observations (their MS are
    # there and valid: nothing converted twice) without a restart, within its recheck
    assert da.stop() == 0
    took = b.cli("claim-output", "--force")
    assert "is now claimed by this index" in took.stdout and a_id in took.stdout
    wait_for(lambda: len(ms_rows(b)) == 2, 120, lambda: db.log.read_text()[-3000:])
    assert len(measurement_sets(output)) == 2
    assert any(x.get("event") == "convert.output_dir_ours" for x in db.lines())
    assert b.cli_json("status", "--json")["output_dir"]["problem"] is None
    # ...and A, started again, is now the one refused
    da = daemon_factory(a)
    da.wait_ready()
    wait_for(lambda: refusals(da), 60, lambda: da.log.read_text()[-3000:])
    assert da.stop() == 0 and db.stop() == 0
    claim = json.loads((output / CLAIM_NAME).read_text())
    assert claim["took_over_from"] and a_id in claim["took_over_from"]
    record(
        "two indexes, one output_dir: each observation converted once",
        groups=2,
        ms_written=len(measurement_sets(output)),
        converted_by_owner=2,
        converted_by_other_before_takeover=0,
        seconds=round(time.monotonic() - t0, 1),
    )
