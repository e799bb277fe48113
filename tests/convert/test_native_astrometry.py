"""The native writer's ERFA phasing against pyuvdata's ``phase`` and astropy's IERS tables."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.native import astrometry, group
from dsa110_ingest.tools.simulate import SimParams, plan_groups, write_file

from ..conftest import DATA

pytest.importorskip("pyuvdata")
iers = pytest.importorskip("astropy.utils.iers")

# HERA fixtures (2018, 2019: IERS-B span) and simulated DSA-110 groups (2025: IERS-A span)
JD_CASES = [2458432.34569, 2458661.2348, 2460950.5004, 2460951.99999]


@pytest.mark.parametrize("jd", JD_CASES)
def test_earth_orientation_is_astropys(jd: float) -> None:
    table = iers.earth_orientation_table.get()
    jds = jd + np.linspace(0.0, 0.9, 7)
    times = astrometry.Times.from_jd(jds)
    ut1_utc = table.ut1_utc(times.utc1, times.utc2)
    pm_x, pm_y = table.pm_xy(times.utc1, times.utc2)
    np.testing.assert_allclose(times.dut1, ut1_utc.to_value("s"), rtol=0, atol=1e-9)
    np.testing.assert_allclose(times.pm_x, pm_x.to_value("rad"), rtol=0, atol=1e-14)
    np.testing.assert_allclose(times.pm_y, pm_y.to_value("rad"), rtol=0, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    gha=st.floats(-7.0, 7.0),
    dec=st.floats(-1.5, 1.5),
    pa=st.floats(-0.1, 0.1),
)
def test_antenna_rotation_is_pyuvdatas(gha: float, dec: float, pa: float) -> None:
    from pyuvdata.utils.phasing import _rotate_one_axis, _rotate_two_axis

    pos = np.random.default_rng(1).normal(0, 1000, (9, 3))
    ref = _rotate_one_axis(
        _rotate_two_axis(
            pos.T[np.newaxis],
            rot_amount1=np.array([gha]),
            rot_amount2=np.array([dec]),
            rot_axis1=2,
            rot_axis2=1,
        ),
        rot_amount=np.array([pa]),
        rot_axis=0,
    )[0].T[:, [1, 2, 0]]
    got = astrometry.rotated_antennas(pos, np.array([gha]), np.array([dec]), np.array([pa]))
    np.testing.assert_allclose(got[0], ref, rtol=0, atol=1e-9)


def _sim_group(root: Path, p: SimParams) -> list[tuple[str, int]]:
    root.mkdir(parents=True, exist_ok=True)
    (gp,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
    return [
        (str(write_file(root, t, sb, p, obs_start_unix=gp.start_unix)), sb)
        for sb, t in sorted(gp.files.items())
    ]


@pytest.mark.parametrize(
    ("source", "phasing"),
    [
        ("dsa", "meridian"),
        ("dsa", "meridian_mid"),
        ("zen.2458661.23480.HH.uvh5", "meridian"),
        ("zen.2458432.34569.uvh5", "meridian"),
        ("simulated_bda_file.uvh5", "meridian"),
    ],
)
def test_group_metadata_is_what_pyuvdata_phase_gives(
    tmp_path: Path, source: str, phasing: str
) -> None:
    """Everything the MS takes from the phased metadata: UVWs, LSTs, apparent centres,
    frame angles, the FIELDs and each row's FIELD, times and integration times."""
    if source == "dsa":
        p = SimParams(nants=7, nchan=2, ntimes=3, npols=2, descending=True)
        files = _sim_group(tmp_path, p)
    else:
        files = [(str(DATA / source), 0)]
    plan = recipe.make_plan(files, phasing=phasing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = recipe.phased_metadata(plan)
    got = group.plan_group(plan)
    t_idx = np.arange(plan.n_rows) // plan.n_baselines
    np.testing.assert_allclose(got.uvw, ref.uvw_array, rtol=0, atol=1e-6)  # 1 micron
    ph = got.phasing
    for mine, attr in (
        (ph.lst, "lst_array"),
        (ph.app_ra, "phase_center_app_ra"),
        (ph.app_dec, "phase_center_app_dec"),
    ):
        np.testing.assert_allclose(mine[t_idx], getattr(ref, attr), rtol=0, atol=1e-11)
    np.testing.assert_allclose(ph.frame_pa[t_idx], ref.phase_center_frame_pa, rtol=0, atol=1e-10)
    cat = list(ref.phase_center_catalog.values())
    assert [c.name for c in got.centres] == [c["cat_name"] for c in cat]
    np.testing.assert_allclose(
        [[c.ra_rad, c.dec_rad] for c in got.centres],
        [[c["cat_lon"], c["cat_lat"]] for c in cat],
        rtol=0,
        atol=1e-15,
    )
    ids = list(ref.phase_center_catalog)
    np.testing.assert_array_equal(got.field_ids, [ids.index(i) for i in ref.phase_center_id_array])
    a1, a2 = ref.ant_1_array, ref.ant_2_array
    if got.flip is None:
        assert np.all(a1 <= a2) or np.all(a1 >= a2)
        np.testing.assert_array_equal(got.ant1, a1)
    else:  # mixed conjugation: the MS's rows are ant1 < ant2, as pyuvdata's write_ms makes them
        np.testing.assert_array_equal(got.flip, a1 > a2)
        np.testing.assert_array_equal(got.ant1, np.minimum(a1, a2))
    np.testing.assert_array_equal(got.integration_s, ref.integration_time)
    # the data's rotation: w_new minus the w they are projected with (0 where unprojected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = recipe.read_aligned(plan, 0, read_data=False)
    w_old = np.where(pre._check_for_cat_type("unprojected"), 0.0, pre.uvw_array[:, 2])
    np.testing.assert_allclose(got.delta_w, ref.uvw_array[:, 2] - w_old, rtol=0, atol=1e-6)


def test_a_date_past_the_iers_tables_uses_the_last_day_and_says_so() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        eo = astrometry.earth_orientation_days(99000, 99001)  # the year 2129
    assert np.all(np.isfinite(eo.ut1_utc)) and np.all(np.isfinite(eo.pm_x))
    assert eo.mjd[0] == eo.mjd[1] < 99000
    assert any(e["event"] == "convert.iers_out_of_range" for e in logs)
