"""The public API the seed document promised, on a real index."""

from __future__ import annotations

from pathlib import Path

import pytest

import dsa110_ingest as api
from dsa110_ingest.errors import InputFolderError

from .conftest import Site

# every `site` test here runs on each store backend (tests/conftest.py)
pytestmark = pytest.mark.store_backends


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
    if isinstance(cfg.hdf5_db, str):  # a PostgreSQL site: the URIs, as configured
        toml = site.config_path.read_text()
        for got in (api.get_hdf5_db_path(cfg), api.get_products_db_path(cfg)):
            assert isinstance(got, str) and got.startswith("postgresql://") and got in toml
        return
    assert api.get_hdf5_db_path(cfg) == site.root / "state" / "hdf5.sqlite3"
    assert api.get_products_db_path(cfg) == site.root / "state" / "products.sqlite3"


def test_indexing_a_missing_folder_is_a_project_error(site: Site, tmp_path: Path) -> None:
    with pytest.raises(InputFolderError, match="does not exist; pass the folder"):
        api.index_hdf5_files(tmp_path / "nope", tmp_path / "h.sqlite3", config=site.cfg)
    (tmp_path / "f").write_text("")
    with pytest.raises(InputFolderError, match="is not a directory"):
        api.index_hdf5_files(tmp_path / "f", tmp_path / "h.sqlite3", config=site.cfg)
    assert not (tmp_path / "h.sqlite3").exists()


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    assert api.__version__ == version("dsa110-ingest")


def test_every_public_name_resolves_and_import_stays_light() -> None:
    import subprocess
    import sys

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    # the command line starts without h5py: `--version` and `status` stay quick
    code = "import sys, dsa110_ingest.cli; print('h5py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
