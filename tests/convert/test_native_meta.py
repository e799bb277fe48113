"""The native writer's header metadata and polarisation tables: bad input named, not guessed."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from dsa110_ingest.convert.native import meta, subtables
from dsa110_ingest.errors import PermanentConversionError

from ..conftest import DATA

HERA = DATA / "zen.2458432.34569.uvh5"


def test_hera_header_as_pyuvdata_reads_it() -> None:
    pytest.importorskip("pyuvdata")
    import warnings

    from pyuvdata import UVData

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uv = UVData.from_file(str(HERA), read_data=False, run_check=False)
    m = meta.read_file_meta(str(HERA), uv.Nblts)
    np.testing.assert_array_equal(m.antenna_numbers, uv.telescope.antenna_numbers)
    assert m.antenna_names == list(uv.telescope.antenna_names)
    np.testing.assert_array_equal(m.antenna_positions, uv.telescope.antenna_positions)
    np.testing.assert_array_equal(m.integration_s, uv.integration_time)
    np.testing.assert_array_equal(m.uvw, uv.uvw_array)
    np.testing.assert_array_equal(m.pols, uv.polarization_array)
    assert not m.projected.any() and uv._check_for_cat_type("unprojected").all()
    assert m.vis_units == uv.vis_units
    assert {k: str(v) for k, v in m.extra_keywords.items()} == {
        k: str(v) for k, v in uv.extra_keywords.items()
    }


@pytest.mark.parametrize(
    ("key", "said"),
    [("antenna_positions", "antenna_positions is missing"), ("uvw_array", "uvw_array is missing")],
)
def test_a_missing_header_field_names_the_file_and_field(
    tmp_path: Path, key: str, said: str
) -> None:
    bad = tmp_path / "bad.uvh5"
    shutil.copy(HERA, bad)
    with h5py.File(bad, "r+") as f:
        del f[f"Header/{key}"]
    with pytest.raises(PermanentConversionError, match=said) as e:
        meta.read_file_meta(str(bad), 80)
    assert str(bad) in str(e.value)


def test_rows_that_disagree_with_the_plan_are_refused() -> None:
    with pytest.raises(PermanentConversionError, match="uvw_array has 80 rows, time_array 81"):
        meta.read_file_meta(str(HERA), 81)


def test_polarisation_orders() -> None:
    pols = np.array([-5, -6, -7, -8])  # XX YY XY YX
    assert subtables.casa_pol_order(pols).tolist() == [0, 2, 3, 1]  # XX XY YX YY
    assert subtables.conj_pol_order(pols).tolist() == [0, 1, 3, 2]  # XY <-> YX
    with pytest.raises(PermanentConversionError, match="lacks its conjugate"):
        subtables.conj_pol_order(np.array([-5, -7]))
    with pytest.raises(PermanentConversionError, match="not one CASA knows"):
        subtables.casa_pol_order(np.array([-9]))
