"""Grouping: unit cases for ``place`` and the order-independence property, on a real DB."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_ingest.config import load_config
from dsa110_ingest.db import open_index_at
from dsa110_ingest.ingest.grouping import GroupSpan, place
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.ingest.reader import HeaderReader
from dsa110_ingest.ingest.scanner import Candidate
from dsa110_ingest.naming import NameParser
from dsa110_ingest.times import iso_to_unix, unix_to_iso
from dsa110_ingest.uvh5 import HeaderInfo
from tests.pg_server import PgDatabases

T0 = iso_to_unix("2025-10-02T00:00:00")


def test_new_group_is_named_by_its_timestamp() -> None:
    p = place(T0, [])
    assert p.target is None and p.group_id == "2025-10-02T00:00:00"


def test_an_earlier_file_renames_an_open_group() -> None:
    g = GroupSpan("2025-10-02T00:00:05", T0 + 5, T0 + 9, "collecting")
    p = place(T0, [g])
    assert p.target == g and p.group_id == "2025-10-02T00:00:00"


def test_a_frozen_group_keeps_its_id() -> None:
    g = GroupSpan("2025-10-02T00:00:05", T0 + 5, T0 + 9, "complete")
    assert place(T0, [g]).group_id == "2025-10-02T00:00:05"


def test_a_bridging_file_merges_open_groups() -> None:
    a = GroupSpan("a", T0, T0, "collecting")
    b = GroupSpan("b", T0 + 100, T0 + 100, "collecting")
    p = place(T0 + 50, [a, b])
    assert p.target == a and p.merge == (b,) and (p.min_ts, p.max_ts) == (T0, T0 + 100)


class _FakeReader(HeaderReader):
    """Headers made from the name, so thousands of orders run fast; the real reader is
    covered by test_uvh5 and the end-to-end tests."""

    def __init__(self) -> None:
        super().__init__("best-effort", 1)

    def read_many(self, paths: Any) -> Any:
        for p in paths:
            ts = iso_to_unix(os.path.basename(p)[:19])
            mjd = ts / 86400 + 40587
            sb = int(os.path.basename(p)[22:24])
            f0 = 1.5e9 - sb * 2e7  # each subband its own band, sb00 the highest
            yield HeaderInfo(
                4,
                10,
                20,
                2,
                2,
                1,
                2,
                mjd,
                mjd + 0.003,
                mjd + 0.0015,
                f0,
                f0 + 1e6,
                1e6,
                12.9,
                "OVRO_DSA",
                37.2,
                -118.3,
                1222.0,
                (-5, -6),
                "drift",
                10.0,
                55.0,
                "",
            )


def _index_in_order(
    files: list[tuple[float, int]], tol: float, uri: str | None = None
) -> dict[str, Any]:
    """Index ``files`` one by one into a fresh SQLite file, or into the emptied
    PostgreSQL database at ``uri``."""
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(env={"HOME": d})
        cfg = cfg.with_overrides(groups=cfg.groups.__class__(cluster_tolerance_seconds=tol))
        if uri is not None:
            from tests.pg_server import reset_database

            reset_database(uri)
        db = open_index_at(uri if uri is not None else Path(d) / "h.sqlite3")
        idx = Indexer(db, cfg, reader=_FakeReader(), clock=lambda: 1.0)
        parser = NameParser()
        lid = db.ensure_location("data", "/data", "adhoc")
        for ts, sb in files:  # one file per batch: the live order, not a sorted backfill
            name = f"{unix_to_iso(ts)}_sb{sb:02d}.hdf5"
            path = f"/data/{name}"
            idx.process([Candidate(path, name, 1, 1, lid, parser.parse(path, name))])
        groups = {
            r.group_id: (r.state, r.n_subbands, r.n_conflicts)
            for r in db.list_groups(None, None, None)
        }
        members = {
            g: sorted(f.filename for f in db.group_files(g, members_only=False)) for g in groups
        }
        events = sorted((r.type, r.group_id) for r in db.events_after(0, 100000))
        db.close()
        return {"groups": groups, "members": members, "events": events}


@st.composite
def observations(draw: st.DrawFn) -> list[tuple[float, int]]:
    """Files of several observations: one file per subband, jittered names, gaps > tol.

    A jitter of up to 45 s against a 60 s tolerance makes some files of one observation
    farther apart than the tolerance, so live arrival must rename and merge groups."""
    n_obs = draw(st.integers(1, 4))
    jitter = draw(st.sampled_from([2, 20, 45]))
    files: list[tuple[float, int]] = []
    start = T0
    for _ in range(n_obs):
        subbands = draw(st.sets(st.integers(0, 15), min_size=1, max_size=16))
        for sb in subbands:
            files.append((start + draw(st.integers(-jitter, jitter)), sb))
        start += draw(st.sampled_from([200, 309, 600]))
    return files


# each example indexes up to ~100 files twice into fresh databases: 1-6 s under load, so
# 50 examples and a wider per-test limit than the suite's 300 s (CI shares 2 cores)
@pytest.mark.timeout(900)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=observations(), data=st.data())
def test_any_arrival_order_gives_the_backfill_groups(
    files: list[tuple[float, int]], data: st.DataObject
) -> None:
    backfill = _index_in_order(sorted(files), tol=60)
    shuffled = data.draw(st.permutations(files))
    live = _index_in_order(list(shuffled), tol=60)
    assert live == backfill
    # and the groups are the observations: each complete group has exactly one event
    completes = [e for e in backfill["events"] if e[0] == "group.complete"]
    assert len(completes) == sum(1 for s in backfill["groups"].values() if s[1] == 16)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=observations(), data=st.data())
def test_any_arrival_order_gives_the_backfill_groups_on_postgresql(
    pg_dbs: PgDatabases, files: list[tuple[float, int]], data: st.DataObject
) -> None:
    """The same property on the PostgreSQL store (window locks, row locks on the way);
    fewer examples: each one empties a server database twice."""
    backfill = _index_in_order(sorted(files), tol=60, uri=pg_dbs.index)
    live = _index_in_order(list(data.draw(st.permutations(files))), tol=60, uri=pg_dbs.index)
    assert live == backfill
    assert backfill == _index_in_order(sorted(files), tol=60)  # and SQLite agrees
