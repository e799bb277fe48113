"""The MS recipe decided from headers: subband order, channel reversal, pointing, time
grids and row mapping (convert/plan.py). Real h5py files from the simulator."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_ingest.config import load_config
from dsa110_ingest.convert.plan import make_plan, meridian_icrs
from dsa110_ingest.errors import ConfigError, PermanentConversionError
from dsa110_ingest.tools.simulate import INTEGRATION_S, SimParams, plan_groups, write_file

P = SimParams(nants=4, nchan=3, ntimes=4)
START = plan_groups(1, "2025-10-02T00:00:00", 0.0)[0].start_unix


def group(
    d: Path, p: SimParams = P, starts: dict[int, float] | None = None
) -> list[tuple[str, int]]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for sb in range(p.n_subbands):
        start = (starts or {}).get(sb, START)
        out.append((str(write_file(d, START + sb % 3, sb, p, obs_start_unix=start)), sb))
    return out


def test_subbands_ascend_and_descending_files_are_reversed(tmp_path: Path) -> None:
    files = group(tmp_path)
    plan = make_plan(list(reversed(files)), group_id="g")
    assert [s.subband for s in plan.subbands] == list(range(15, -1, -1))  # sb00 highest
    assert all(s.descending for s in plan.subbands)
    assert np.all(np.diff(plan.freq_hz) > 0) and plan.freq_hz.size == 16 * P.nchan
    assert [s.chan_start for s in plan.subbands] == [P.nchan * k for k in range(16)]
    with h5py.File(plan.subbands[0].path) as f:  # the file itself is high -> low
        assert np.all(np.diff(f["Header/freq_array"][()].reshape(-1)) < 0)
    ascending = make_plan(
        group(tmp_path / "asc", SimParams(nants=4, nchan=3, ntimes=4, descending=False))
    )
    assert not any(s.descending for s in ascending.subbands)
    np.testing.assert_allclose(ascending.freq_hz, plan.freq_hz)


def test_pointing_from_files_config_or_site_latitude(tmp_path: Path) -> None:
    files = group(tmp_path)
    plan = make_plan(files)
    assert plan.pointing_dec_source == "file"
    assert math.degrees(plan.pointing_dec_rad) == pytest.approx(55.0)
    over = make_plan(files, pointing_dec_deg=60.0)
    assert over.pointing_dec_source == "config"
    assert math.degrees(over.pointing_dec_rad) == pytest.approx(60.0)
    for path, _ in files:
        with h5py.File(path, "a") as f:
            del f["Header/extra_keywords/phase_center_dec"]
    fb = make_plan(files)
    assert fb.pointing_dec_source == "fallback"
    assert math.degrees(fb.pointing_dec_rad) == pytest.approx(fb.site_lat_deg)


def test_disagreeing_pointing_is_a_permanent_failure_naming_the_subbands(tmp_path: Path) -> None:
    files = group(tmp_path)
    with h5py.File(files[7][0], "a") as f:
        f["Header/extra_keywords/phase_center_dec"][()] = math.radians(40.0)
    with pytest.raises(PermanentConversionError, match=r"disagree on the pointing.*sb07=40\.0000"):
        make_plan(files)
    # the override is the documented way out
    assert make_plan(files, pointing_dec_deg=55.0).pointing_dec_source == "config"


def test_overlapping_frequencies_are_permanent(tmp_path: Path) -> None:
    files = group(tmp_path)
    dup = tmp_path / "copy_sb01.hdf5"
    dup.write_bytes(Path(files[0][0]).read_bytes())
    with pytest.raises(PermanentConversionError, match="overlap in frequency"):
        make_plan([*files[1:], files[0], (str(dup), 1)])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offsets=st.lists(st.floats(-3.0, 3.0), min_size=16, max_size=16))
def test_offsets_within_tolerance_share_one_grid(
    tmp_path_factory: pytest.TempPathFactory, offsets: list[float]
) -> None:
    d = tmp_path_factory.mktemp("off")
    p = SimParams(nants=3, nchan=1, ntimes=3, time_offsets_s=tuple(offsets))
    plan = make_plan(group(d, p))
    assert plan.n_integrations == 3 and plan.n_flagged_rows == 0
    assert plan.max_offset_s == pytest.approx(
        max(abs(o - np.median(offsets)) for o in offsets), abs=0.6
    )
    assert plan.max_offset_s <= 6.0 + 1e-6
    # the grid is the median of the subbands' times, one integration apart
    np.testing.assert_allclose(np.diff(plan.grid_jd) * 86400, INTEGRATION_S, atol=1e-3)
    for s in plan.subbands:
        assert sorted(s.row_index) == list(range(plan.n_rows))


def test_a_subband_one_integration_late_gets_flagged_rows(tmp_path: Path) -> None:
    plan = make_plan(group(tmp_path, starts={5: START + INTEGRATION_S}))
    assert plan.n_integrations == P.ntimes + 1
    late = next(s for s in plan.subbands if s.subband == 5)
    assert late.missing == (0,)
    assert late.offset_s == pytest.approx(0.0, abs=1e-3)
    others = [s for s in plan.subbands if s.subband != 5]
    assert all(s.missing == (P.ntimes,) for s in others)
    assert plan.n_flagged_rows == 16 * plan.n_baselines
    # the late file's rows land one integration further down
    assert late.row_index.min() == plan.n_baselines


def test_a_subband_from_another_observation_is_permanent_and_named(tmp_path: Path) -> None:
    files = group(tmp_path, starts={9: START + 600.0})
    with pytest.raises(PermanentConversionError) as e:
        make_plan(files, group_id="g1")
    msg = str(e.value)
    assert "sb09" in msg and "+600.0 s" in msg and "min_time_overlap" in msg
    assert "sb08" not in msg


def test_min_time_overlap_decides(tmp_path: Path) -> None:
    # sb03 two integrations late: half of its 4 integrations overlap the others'
    files = group(tmp_path, starts={3: START + 2 * INTEGRATION_S})
    assert make_plan(files, min_time_overlap=0.5).n_integrations == P.ntimes + 2
    with pytest.raises(PermanentConversionError, match="sb03"):
        make_plan(files, min_time_overlap=0.75)


def test_config_keys_for_the_recipe(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[convert]\nphasing = "meridian_mid"\npointing_dec_deg = 71.5\n'
        "time_tolerance_seconds = 2\nmin_time_overlap = 0.8\nimaging_columns = true\n"
        'telescope_name = "DSA-110"\n'
    )
    c = load_config(conf, env={}).convert
    assert (c.phasing, c.pointing_dec_deg, c.time_tolerance_seconds) == ("meridian_mid", 71.5, 2.0)
    assert (c.min_time_overlap, c.imaging_columns, c.telescope_name) == (0.8, True, "DSA-110")
    assert load_config(None, env={}).convert.pointing_dec_deg is None  # from the files
    for bad in ('phasing = "zenith"', "pointing_dec_deg = 95", "min_time_overlap = 0"):
        conf.write_text(f"[convert]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"\[convert\]"):
            load_config(conf, env={})


def test_meridian_centres_agree_with_astropy_hadec_to_icrs() -> None:
    """The erfa shortcut against astropy's full transform (IERS tables, offline)."""
    astropy_coords = pytest.importorskip("astropy.coordinates")
    import astropy.units as u
    from astropy.time import Time
    from astropy.utils import iers

    jd = np.linspace(2460950.5, 2460951.5, 7)  # a day: every hour angle of the sky
    loc = astropy_coords.EarthLocation.from_geodetic(-118.2825 * u.deg, 37.2339 * u.deg, 1222 * u.m)
    for dec in (-20.0, 37.2339, 55.0, 80.0):
        ours = np.array(meridian_icrs(jd, math.radians(dec), 37.2339, -118.2825, 1222.0))
        with iers.conf.set_temp("auto_download", False):
            frame = astropy_coords.HADec(obstime=Time(jd, format="jd", scale="utc"), location=loc)
            c = astropy_coords.SkyCoord(
                ha=np.zeros(jd.size) * u.rad, dec=np.full(jd.size, dec) * u.deg, frame=frame
            ).transform_to(astropy_coords.ICRS())
        sep = c.separation(
            astropy_coords.SkyCoord(ours[:, 0] * u.rad, ours[:, 1] * u.rad, frame="icrs")
        )
        assert np.all(sep.arcsec < 2.0), (dec, sep.arcsec)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-5, 40), min_size=1, max_size=12, unique=True),
    x=st.lists(st.integers(-10, 50), max_size=60),
    period=st.integers(1, 5),
)
def test_searchsorted_shortcuts_are_searchsorted(
    values: list[int], x: list[int], period: int
) -> None:
    """The plan's lookups of times (runs) and baselines (one list per integration)."""
    from dsa110_ingest.convert.headers import periodic_searchsorted, runs_searchsorted

    a = np.array(sorted(values), dtype=np.int64)
    xs = np.array(x, dtype=np.int64)
    runs = np.repeat(xs, period)
    np.testing.assert_array_equal(runs_searchsorted(a, runs), np.searchsorted(a, runs))
    np.testing.assert_array_equal(runs_searchsorted(a, xs), np.searchsorted(a, xs))
    tiled = np.tile(a[::-1][: max(1, a.size)], period)  # repeats every a.size values
    for arr in (tiled, xs, np.tile(xs[: a.size], period)):
        np.testing.assert_array_equal(periodic_searchsorted(a, arr), np.searchsorted(a, arr))
