"""Reliability scenarios record their figures; `make soak` turns them into docs/reliability.md.

``DSA110_SOAK`` scales the soak: unset (``make test``) a third of a day of observations,
``day`` (``make reliability-report``) a day, ``week`` (``make soak``) a week.
``DSA110_RELIABILITY_REPORT`` names a folder where each scenario appends one JSON line of
figures.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Site, converter_script, write_site

# groups of ~309 s observations: 288 a day. `make test` runs 96 (8 hours): 1,536 files,
# each writer kind ~380 times across the two locations, converted while they arrive, and
# the same exactness, ordering and memory checks; the day and the week, which bound a
# slow leak far tighter, are `make reliability-report` and `make soak`
SOAK_SCALES = {"test": 96, "day": 288, "week": 7 * 288}
SOAK_SCALE = os.environ.get("DSA110_SOAK", "test")
if SOAK_SCALE not in SOAK_SCALES:
    raise ValueError(
        f"DSA110_SOAK={SOAK_SCALE!r} is not a soak scale; use one of {sorted(SOAK_SCALES)}"
    )
SOAK_GROUPS = SOAK_SCALES[SOAK_SCALE]


class Record:
    def __init__(self) -> None:
        self.out = os.environ.get("DSA110_RELIABILITY_REPORT")

    def __call__(self, scenario: str, **figures: Any) -> None:
        line = {
            "scenario": scenario,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **figures,
        }
        print(json.dumps(line))
        if self.out:
            Path(self.out).mkdir(parents=True, exist_ok=True)
            with open(Path(self.out) / "results.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")


@pytest.fixture
def record() -> Record:
    return Record()


stand_in_converter = converter_script


def reliability_site(
    root: Path,
    converter: Path,
    *,
    extra_locations: tuple[str, ...] = (),
    convert_extra: str = "",
    output: str = "ms",
) -> Site:
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{converter}", "{{output}}", '
        f'"{{inputs}}"]\noutput_dir = "{output}"\nworkers = 2\nbackoff_initial_seconds = 0.3\n'
        "backoff_max_seconds = 2\nlease_seconds = 3\nmax_attempts = 20\n" + convert_extra
    )
    site = write_site(root, extra_locations=extra_locations, convert=conv)
    # info, not debug: a soak's debug log would be the biggest thing it writes
    text = site.config_path.read_text().replace('log_level = "debug"', 'log_level = "info"')
    site.config_path.write_text(text)
    return site


def ledger(site: Site) -> dict[str, Any]:
    """Everything "nothing lost, nothing doubled" is checked against."""
    h = sqlite3.connect(site.root / "state" / "hdf5.sqlite3", timeout=30)
    p = sqlite3.connect(site.root / "state" / "products.sqlite3", timeout=30)
    try:
        ev = dict(h.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
        per_group = (
            h.execute(
                "SELECT MAX(c) FROM (SELECT COUNT(*) c FROM events WHERE type = 'group.complete' "
                "GROUP BY group_id)"
            ).fetchone()[0]
            or 0
        )
        conv_per_group = (
            h.execute(
                "SELECT MAX(c) FROM (SELECT COUNT(*) c FROM events WHERE type = 'group.converted' "
                "GROUP BY group_id)"
            ).fetchone()[0]
            or 0
        )
        return {
            "files": h.execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0],
            "distinct_files": h.execute(
                "SELECT COUNT(DISTINCT filename) FROM hdf5_file_index"
            ).fetchone()[0],
            "groups": h.execute("SELECT COUNT(*) FROM groups").fetchone()[0],
            "complete": h.execute(
                "SELECT COUNT(*) FROM groups WHERE state = 'complete'"
            ).fetchone()[0],
            "complete_events": ev.get("group.complete", 0),
            "converted_events": ev.get("group.converted", 0),
            "max_complete_per_group": per_group,
            "max_converted_per_group": conv_per_group,
            "rejected": h.execute("SELECT COUNT(*) FROM rejected_files").fetchone()[0],
            "ms_rows": p.execute("SELECT COUNT(*) FROM ms_index").fetchone()[0],
            "ms_groups": p.execute("SELECT COUNT(DISTINCT group_id) FROM ms_index").fetchone()[0],
            "jobs": dict(
                h.execute("SELECT state, COUNT(*) FROM conversion_jobs GROUP BY state").fetchall()
            ),
        }
    finally:
        h.close()
        p.close()


def assert_exact(led: dict[str, Any], n_groups: int) -> None:
    """Every file once, every group complete once and converted once, one MS row each."""
    assert led["files"] == led["distinct_files"] == 16 * n_groups, led
    assert led["groups"] == led["complete"] == n_groups, led
    assert led["complete_events"] == led["converted_events"] == n_groups, led
    assert led["max_complete_per_group"] == led["max_converted_per_group"] == 1, led
    assert led["ms_rows"] == led["ms_groups"] == n_groups, led
    assert led["jobs"] == {"converted": n_groups}, led
