"""Real conversions: simulated DSA-110 files (descending channels, per-subband time
offsets) -> pyuvdata backend -> a CASA Measurement Set, checked with pyuvdata read back
as the independent reference (``unproject_phase`` must give back the drift scan)."""

from __future__ import annotations

import math
import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert import worker
from dsa110_ingest.convert.request import ConversionRequest, InputFile
from dsa110_ingest.errors import PermanentConversionError
from dsa110_ingest.tools.simulate import INTEGRATION_S, SimParams, plan_groups, write_file
from dsa110_ingest.uvh5 import read_header

casacore_tables = pytest.importorskip("casacore.tables")
pyuvdata = pytest.importorskip("pyuvdata")
OFFSETS = tuple(float(x) for x in np.linspace(-3.0, 3.0, 16))  # seconds, per subband
P = SimParams(nants=6, nchan=4, ntimes=3, time_offsets_s=OFFSETS)
DATA = Path(__file__).parent.parent / "data"
START = plan_groups(1, "2025-10-02T00:00:00", 2.0)[0]


def write_group(d: Path, p: SimParams = P, starts: dict[int, float] | None = None) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    return [
        write_file(d, t, sb, p, obs_start_unix=(starts or {}).get(sb, START.start_unix))
        for sb, t in sorted(START.files.items())
    ]


@pytest.fixture(scope="module")
def group_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_group(tmp_path_factory.mktemp("grp"))


def _request(files: list[Path], out: Path, **kw: object) -> ConversionRequest:
    inputs = []
    for f in files:
        h = read_header(str(f))
        inputs.append(InputFile(str(f), int(f.name[-7:-5]), h.freq_min_hz, h.n_freqs))
    return ConversionRequest("g", tuple(inputs), str(out), "pyuvdata", **kw)  # type: ignore[arg-type]


def _read(path: Path, **kw: object) -> pyuvdata.UVData:
    uv = pyuvdata.UVData()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uv.read(str(path), **kw)
    return uv


def _table(path: Path, sub: str = "") -> casacore_tables.table:
    return casacore_tables.table(str(path / sub) if sub else str(path), ack=False)


def assert_drift_scan_recovered(ms: Path, files: list[Path], plan: recipe.ConversionPlan) -> int:
    """Every visibility of every input file is in the MS: unprojected, in the channel
    of its frequency, at the grid integration of its time. Returns the values compared."""
    uv = _read(ms)
    uv.unproject_phase()
    uv.conjugate_bls("ant1<ant2")  # the MS writer may flip baselines; compare one convention
    freqs = uv.freq_array.reshape(-1)
    assert np.all(np.diff(freqs) > 0)
    grid_of = {round(float(t), 7): i for i, t in enumerate(plan.grid_jd)}
    ms_row = {
        (int(a1), int(a2), grid_of[round(float(t), 7)]): r
        for r, (a1, a2, t) in enumerate(
            zip(uv.ant_1_array, uv.ant_2_array, uv.time_array, strict=True)
        )
    }
    compared = 0
    for f in files:
        ref = _read(f, file_type="uvh5")
        ref.conjugate_bls("ant1<ant2")
        sb = next(s for s in plan.subbands if s.path == str(f))
        chans = np.searchsorted(freqs, ref.freq_array.reshape(-1))
        np.testing.assert_allclose(freqs[chans], ref.freq_array.reshape(-1), rtol=0, atol=1.0)
        times = np.searchsorted(sb.times_jd, ref.time_array)
        for k in range(ref.Nblts):
            key = (int(ref.ant_1_array[k]), int(ref.ant_2_array[k]), int(sb.grid_index[times[k]]))
            got = uv.data_array[ms_row[key]][chans]
            want = ref.data_array[k]
            assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5, (f.name, key)
            assert not uv.flag_array[ms_row[key]][chans].any()
            compared += want.size
    return compared


@pytest.mark.parametrize("phasing", ["meridian", "meridian_mid"])
def test_ms_is_meridian_phased_ascending_and_gives_back_the_drift_scan(
    group_files: list[Path], tmp_path: Path, phasing: str
) -> None:
    out = tmp_path / "g.ms"
    result = worker.run(_request(group_files, out, phasing=phasing))
    plan = recipe.make_plan([(str(f), int(f.name[-7:-5])) for f in group_files], phasing=phasing)
    assert result["ms_path"] == str(out) and not result["skipped"]
    assert result["max_time_offset_s"] == pytest.approx(3.0, abs=1e-3)
    assert result["pointing_dec_source"] == "file" and result["phasing"] == phasing
    n = assert_drift_scan_recovered(out, group_files, plan)
    assert n == 16 * P.nchan * P.npols * plan.n_rows

    with _table(out, "FIELD") as fld:
        names = list(fld.getcol("NAME"))
        phase_dir = fld.getcol("PHASE_DIR")[:, 0, :]  # (fields, [ra, dec]) in rad
    with _table(out) as main:
        assert main.nrows() == plan.n_baselines * plan.n_integrations
        field_of_row = main.getcol("FIELD_ID")
        time_of_row = main.getcol("TIME")
    if phasing == "meridian":
        assert names == [f"meridian_icrs_t{i}" for i in range(P.ntimes)]
        # each integration's rows point at its own field
        assert len(set(zip(field_of_row, time_of_row, strict=True))) == P.ntimes
    else:
        assert names == ["meridian_icrs_mid"] and set(field_of_row) == {0}
    # Dec = pointing (ICRS vs apparent < 0.5 deg); RA = local sidereal time (< 1 deg)
    from astropy.time import Time

    times = plan.grid_jd if phasing == "meridian" else [(plan.grid_jd[0] + plan.grid_jd[-1]) / 2]
    lst = Time(np.asarray(times), format="jd").sidereal_time(
        "apparent", longitude=plan.site_lon_deg
    )
    for (ra, dec), want_ra in zip(phase_dir, lst.deg, strict=True):
        assert abs(math.degrees(dec) - 55.0) < 0.5
        assert abs((math.degrees(ra) - want_ra + 180) % 360 - 180) < 1.0
    # ms_index records the MS's own mid-time centre
    mid = 1 if phasing == "meridian" else 0
    assert result["ra_deg"] == pytest.approx(math.degrees(phase_dir[mid][0]) % 360, abs=1e-6)
    assert result["dec_deg"] == pytest.approx(math.degrees(phase_dir[mid][1]), abs=1e-6)


def test_channels_in_the_right_place_whatever_the_input_order(
    group_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "g.ms"
    worker.run(_request(group_files, out))
    shuffled = list(group_files)
    random.Random(3).shuffle(shuffled)
    out2 = tmp_path / "g2.ms"
    worker.run(_request(shuffled, out2))
    with _table(out) as a, _table(out2) as b:
        np.testing.assert_array_equal(a.getcol("DATA"), b.getcol("DATA"))
    with _table(out, "SPECTRAL_WINDOW") as spw:
        freqs = spw.getcol("CHAN_FREQ")[0]
    # sb00 is the top of the band and its file runs high -> low: it ends the MS, reversed
    with h5py.File(next(f for f in group_files if f.name.endswith("_sb00.hdf5"))) as f:
        sb00 = f["Header/freq_array"][()].reshape(-1)
    np.testing.assert_allclose(freqs[-P.nchan :], sb00[::-1], rtol=0, atol=1.0)


def test_imaging_columns_mount_and_telescope_name(group_files: list[Path], tmp_path: Path) -> None:
    plain, full = tmp_path / "plain.ms", tmp_path / "full.ms"
    worker.run(_request(group_files, plain))
    worker.run(_request(group_files, full, imaging_columns=True, telescope_name="DSA-110"))
    with _table(plain) as t:
        assert "WEIGHT_SPECTRUM" in t.colnames()
        assert not {"MODEL_DATA", "CORRECTED_DATA"} & set(t.colnames())
    with _table(full) as t:
        assert {"MODEL_DATA", "CORRECTED_DATA", "WEIGHT_SPECTRUM"} <= set(t.colnames())
        np.testing.assert_array_equal(t.getcol("CORRECTED_DATA"), t.getcol("DATA"))
        assert not t.getcol("MODEL_DATA").any()
        assert t.getcol("IMAGING_WEIGHT").shape == (t.nrows(), 16 * P.nchan)
    for ms, name in ((plain, "OVRO_DSA"), (full, "DSA-110")):
        with _table(ms, "OBSERVATION") as obs:
            assert list(obs.getcol("TELESCOPE_NAME")) == [name]
        with _table(ms, "ANTENNA") as ant:
            assert set(ant.getcol("MOUNT")) <= set(recipe.CASA_MOUNTS)
            assert ant.nrows() == P.nants
            np.testing.assert_allclose(ant.getcol("DISH_DIAMETER"), 4.65)


def test_subband_one_integration_late_converts_with_flagged_rows(tmp_path: Path) -> None:
    p = SimParams(nants=5, nchan=4, ntimes=3)
    files = write_group(tmp_path / "in", p, starts={5: START.start_unix + INTEGRATION_S})
    out = tmp_path / "late.ms"
    result = worker.run(_request(files, out))
    plan = recipe.make_plan([(str(f), int(f.name[-7:-5])) for f in files])
    assert plan.n_integrations == p.ntimes + 1
    assert result["flagged_subband_integrations"]["sb05"] == [0]
    assert_drift_scan_recovered(out, files, plan)  # nothing dropped
    uv = _read(out)
    late = next(s for s in plan.subbands if s.subband == 5)
    chans = slice(late.chan_start, late.chan_start + late.n_channels)
    first = uv.time_array == uv.time_array.min()
    last = uv.time_array == uv.time_array.max()
    assert uv.flag_array[first][:, chans].all() and (uv.nsample_array[first][:, chans] == 0).all()
    assert not uv.flag_array[first][:, : late.chan_start].any()
    others = np.r_[0 : late.chan_start, late.chan_start + late.n_channels : plan.n_channels]
    assert uv.flag_array[last][:, others].all() and not uv.flag_array[last][:, chans].any()
    with _table(out) as t:
        ws = t.getcol("WEIGHT_SPECTRUM")
        flags = t.getcol("FLAG")
    assert np.all(ws[flags] == 0) and np.all(ws[~flags] > 0)


def test_subband_from_another_time_range_is_a_permanent_failure(tmp_path: Path) -> None:
    files = write_group(tmp_path / "in", starts={11: START.start_unix + 3600.0})
    with pytest.raises(PermanentConversionError, match=r"sb11 .*\+360[01]\.\d s"):
        worker.run(_request(files, tmp_path / "x.ms"))
    assert not list(tmp_path.glob("*.ms")) and not list(tmp_path.glob(".x.ms*"))


def test_pointing_override_moves_the_fields(group_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "o.ms"
    r = worker.run(_request(group_files, out, pointing_dec_deg=20.0, phasing="meridian_mid"))
    assert r["pointing_dec_source"] == "config" and abs(r["dec_deg"] - 20.0) < 0.5


@pytest.mark.parametrize(
    "name", ["zen.2458661.23480.HH.uvh5", "zen.2458432.34569.uvh5", "simulated_bda_file.uvh5"]
)
def test_real_hera_files_convert_phased_at_the_site_latitude(tmp_path: Path, name: str) -> None:
    f = tmp_path / "2025-10-02T00:12:00_sb03.hdf5"
    shutil.copy(DATA / name, f)
    out = tmp_path / "h.ms"
    r = worker.run(_request([f], out))
    plan = recipe.make_plan([(str(f), 3)])
    assert r["pointing_dec_source"] == "fallback"
    assert abs(r["dec_deg"] - plan.site_lat_deg) < 0.5  # HERA: -30.7 deg
    assert_drift_scan_recovered(out, [f], plan)


def test_verification_rejects_an_ms_that_is_not_the_planned_one(
    group_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "v.ms"
    worker.run(_request(group_files, out))
    plan = recipe.make_plan([(str(f), int(f.name[-7:-5])) for f in group_files])
    recipe.verify_ms(out, plan)  # as written: passes
    other = recipe.make_plan(
        [(str(f), int(f.name[-7:-5])) for f in group_files], phasing="meridian_mid"
    )
    with pytest.raises(PermanentConversionError, match="FIELD names"):
        recipe.verify_ms(out, other)

    def edit(sub: str, change: Callable[[Any], None]) -> None:
        t = casacore_tables.table(str(out / sub) if sub else str(out), readonly=False, ack=False)
        try:
            change(t)
        finally:
            t.close()

    data = _table(out).getcol("DATA")
    edit("", lambda t: t.putcol("DATA", np.zeros_like(data)))
    with pytest.raises(PermanentConversionError, match="all zero"):
        recipe.verify_ms(out, plan)
    edit("", lambda t: t.putcol("DATA", data))
    freqs = _table(out, "SPECTRAL_WINDOW").getcol("CHAN_FREQ")
    edit("SPECTRAL_WINDOW", lambda t: t.putcol("CHAN_FREQ", freqs[:, ::-1]))
    with pytest.raises(PermanentConversionError, match="not ascending"):
        recipe.verify_ms(out, plan)
    edit("SPECTRAL_WINDOW", lambda t: t.putcol("CHAN_FREQ", freqs))
    recipe.verify_ms(out, plan)
    edit("", lambda t: t.addrows(1))  # a row nobody wrote: never read, found by the count
    with pytest.raises(PermanentConversionError, match=r"\d+ rows, expected"):
        recipe.verify_ms(out, plan)


def test_existing_valid_ms_is_skipped_and_invalid_one_is_moved_aside(
    group_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "g.ms"
    worker.run(_request(group_files, out))
    again = worker.run(_request(group_files, out))
    assert again["skipped"] is True and abs(again["dec_deg"] - 55.0) < 0.5
    bad = tmp_path / "bad.ms"
    bad.mkdir()
    (bad / "junk").write_text("not a table")
    r = worker.run(_request(group_files, bad))
    assert not r["skipped"]
    with _table(bad, "SPECTRAL_WINDOW") as spw:
        assert spw.getcol("CHAN_FREQ")[0].size == 16 * P.nchan
    assert len(list(tmp_path.glob("bad.ms.invalid-*"))) == 1
