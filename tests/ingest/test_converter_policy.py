"""One acceptance rule for the indexer and the converter: a file the converter would refuse
as unsafe is rejected at indexing, so its group waits for a good file instead of completing
and then failing for good (OPERATOR3 defect 2)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dsa110_ingest.errors import ConversionDataError
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.uvh5 import refuse_unsafe_inputs

from .. import hostile
from ..conftest import Site


@pytest.mark.parametrize(
    ("kind", "variant"),
    [("deep_nesting", 0), ("deep_nesting", 1), ("unread_oversized_chunk", 0)],
)
def test_a_file_the_converter_refuses_is_rejected_and_its_group_waits(
    site: Site, sim_groups, tmp_path: Path, kind: str, variant: int
) -> None:
    paths = sim_groups(site.incoming, n=1)
    bad = next(p for p in paths if p.name.endswith("_sb05.hdf5"))
    good = tmp_path / "good.hdf5"
    shutil.copy2(bad, good)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    want = hostile.MAKERS[kind](bad, variant, elsewhere)
    # the converter's own rule, checked first: the test is about the two agreeing
    with pytest.raises(ConversionDataError, match=want):
        refuse_unsafe_inputs([str(bad)])

    db = site.db()
    idx = Indexer(db, site.cfg)
    idx.register_locations()
    r = idx.reconcile()
    assert (r.indexed, r.rejected) == (15, 1)
    assert db.count_events("group.complete") == 0
    ((row_path, reason, detail),) = [(x.path, x.reason, x.detail) for x in db.rejected()]
    assert (row_path, reason) == (str(bad), want)
    if kind == "deep_nesting":
        # a shape problem: the link rule's h5repack hint does not apply, the fix does
        assert "nested more than 6 deep" in detail and "h5repack" not in detail
        assert "write the file again without the extra groups" in detail
    (g,) = db.list_groups(None, None, None)
    assert g.state != "complete" and g.n_subbands == 15

    os.replace(good, bad)  # the writer puts a good file in its place
    r = idx.index_paths([str(bad)])
    assert r.indexed == 1 and [e[0] for e in r.events] == ["group.complete"]
    assert db.count_events("group.complete") == 1 and db.rejected() == []
    idx.close()
    db.close()
