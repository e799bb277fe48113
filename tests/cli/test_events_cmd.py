"""`dsa110-ingest events` on every store backend: it prints what another process
committed, `--after` resumes, `--follow` wakes for new events (on PostgreSQL by
LISTEN/NOTIFY)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from ..conftest import Site, wait_for

# every `site` test here runs on each store backend (tests/conftest.py)
pytestmark = pytest.mark.store_backends


def test_events_printed_once_and_resumed_after_an_id(site: Site, sim_groups: Any) -> None:
    sim_groups(site.incoming, n=2)
    site.cli("index-hdf5", str(site.incoming))
    events = site.events()
    assert [e["type"] for e in events] == ["group.complete", "group.complete"]
    assert events[0]["id"] < events[1]["id"]
    later = [
        json.loads(ln)
        for ln in site.cli("events", "--after", str(events[0]["id"])).stdout.splitlines()
    ]
    assert later == events[1:]
    site.cli("index-hdf5", str(site.incoming))  # again: nothing new happened
    assert site.events() == events


def test_follow_prints_events_another_process_commits(site: Site, sim_groups: Any) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "dsa110_ingest", "events", "--follow"],
        env=site.env(),
        cwd=site.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert follower.stdout is not None
        for ln in follower.stdout:
            lines.append(json.loads(ln))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        sim_groups(site.incoming, n=1, start="2025-10-02T00:00:00")
        site.cli("index-hdf5", str(site.incoming))
        wait_for(lambda: len(lines) == 1, 60, lambda: f"follower printed {lines}")
        sim_groups(site.incoming, n=1, start="2025-10-02T01:00:00")
        site.cli("index-hdf5", str(site.incoming))
        wait_for(lambda: len(lines) == 2, 60, lambda: f"follower printed {lines}")
        assert [e["type"] for e in lines] == ["group.complete", "group.complete"]
        assert lines[0]["id"] < lines[1]["id"]
        assert follower.poll() is None
    finally:
        follower.kill()
        follower.wait(10)
