"""The public API the seed document promised, on a real index."""

from __future__ import annotations

from pathlib import Path

import dsa110_ingest as api

from .conftest import Site


def test_public_api(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=3, missing=())
    sim_groups(site.incoming, n=1, start="2025-10-02T01:00:00", missing=(4, 5))
    db = site.root / "state" / "api.sqlite3"
    r = api.index_hdf5_files(site.incoming, db, config=site.cfg)
    assert r.indexed == 3 * 16 + 14
    groups = api.find_subband_groups_from_db(db, "2025-10-02T00:00:00", "2025-10-02T00:12:00")
    assert [g.n_subbands for g in groups] == [16, 16, 16]
    assert [g.group_id for g in groups] == sorted(g.group_id for g in groups)
    for g in groups:
        assert [int(Path(f).name[-7:-5]) for f in g.files] == list(range(16))
        assert api.get_group_count(db, g.group_id) == 16 and api.is_group_complete(db, g.group_id)
    (late,) = api.find_subband_groups_from_db(db, 60950.04, 60950.05)  # MJD works too
    assert late.missing_subbands == (4, 5) and not api.is_group_complete(db, late.group_id)
    assert api.get_group_count(db, "no-such-group") == 0
    assert api.find_subband_groups_from_db(db, "2025-10-03T00:00:00", "2025-10-04T00:00:00") == []


def test_default_paths_come_from_the_config(site: Site) -> None:
    cfg = site.cfg
    assert api.get_hdf5_db_path(cfg) == site.root / "state" / "hdf5.sqlite3"
    assert api.get_products_db_path(cfg) == site.root / "state" / "products.sqlite3"
