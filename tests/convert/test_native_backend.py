"""The native writer against the pyuvdata reference: the same groups, the same MS numbers.

Every case converts one group with both backends and compares the MAIN columns CASA uses
and the subtables. The reference is pyuvdata's ``write_ms`` on the fully loaded group.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert import pyuvdata_backend, worker
from dsa110_ingest.convert.request import ConversionRequest, InputFile
from dsa110_ingest.errors import ConversionError
from dsa110_ingest.tools.simulate import SimParams, plan_groups, write_file
from dsa110_ingest.uvh5 import read_header

from ..conftest import DATA

casacore_tables = pytest.importorskip("casacore.tables")
native = pytest.importorskip("dsa110_ingest.convert.native.backend")

EXACT_COLS = ("TIME", "ANTENNA1", "ANTENNA2", "FLAG", "FIELD_ID", "DATA_DESC_ID", "SCAN_NUMBER")
CLOSE_COLS = ("INTERVAL", "EXPOSURE", "WEIGHT_SPECTRUM", "TIME_CENTROID")


def _request(files: list[Path], backend: str = "native", out: str = "x.ms") -> ConversionRequest:
    inputs = []
    for i, f in enumerate(files):
        h = read_header(str(f))
        inputs.append(InputFile(str(f), i, h.freq_min_hz, h.n_freqs))
    return ConversionRequest("g", tuple(inputs), out, backend)


def _group(root: Path, p: SimParams, edit: Callable[[int, Path], None] | None = None) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
    files = [
        write_file(root, t, sb, p, obs_start_unix=plan.start_unix)
        for sb, t in sorted(plan.files.items())
    ]
    if edit is not None:
        for sb, f in enumerate(files):
            edit(sb, f)
    return files


def _flagged(sb: int, path: Path) -> None:
    """Random flags and uneven weights (different in every subband), some rows fully flagged."""
    rng = np.random.default_rng(100 + sb)
    with h5py.File(path, "r+") as f:
        fl = f["Data/flags"]
        flags = rng.random(fl.shape) < 0.2
        flags[:: 7 + sb] = True
        fl[...] = flags
        ns = f["Data/nsamples"]
        w = rng.choice([0.0, 0.5, 1.0, 2.0], size=ns.shape).astype(np.float32)
        ns[...] = w


def _casa_order(path: Path) -> np.ndarray:
    from pyuvdata.utils.pol import determine_pol_order

    with h5py.File(path, "r") as f:
        pols = f["Header/polarization_array"][()]
    return np.asarray(determine_pol_order(pols, order="CASA"))


def _compare(ref: Path, nat: Path, first_file: Path) -> None:
    t = casacore_tables.table
    with t(str(ref), ack=False) as a, t(str(nat), ack=False) as b:
        assert a.nrows() == b.nrows() > 0
        da, db = a.getcol("DATA"), b.getcol("DATA")
        assert da.shape == db.shape
        scale = np.maximum(np.abs(da), 1e-30)
        rel = np.abs(db - da) / scale
        # relative error where the value is not ~0; absolute against the data's scale else
        small = np.abs(da) < 1e-6 * np.abs(da).max()
        assert np.max(np.where(small, 0, rel)) < 1e-5
        assert np.max(np.abs(db - da)[small], initial=0) < 1e-6 * np.abs(da).max()
        assert np.max(np.abs(a.getcol("UVW") - b.getcol("UVW"))) < 1e-3  # metres
        for c in EXACT_COLS:
            np.testing.assert_array_equal(a.getcol(c), b.getcol(c), err_msg=c)
        for c in CLOSE_COLS:
            np.testing.assert_allclose(a.getcol(c), b.getcol(c), rtol=1e-7, err_msg=c)
        # pyuvdata writes WEIGHT and SIGMA in its own polarisation order (XX YY XY YX)
        # while DATA, FLAG and POLARIZATION.CORR_TYPE are in CASA order (XX XY YX YY); the
        # native writer keeps all of them in CASA order, as the MS definition wants
        perm = _casa_order(first_file)
        w = a.getcol("WEIGHT")[:, perm]
        np.testing.assert_allclose(w, b.getcol("WEIGHT"), rtol=1e-7)
        # pyuvdata leaves SIGMA uninitialised where WEIGHT is 0; compare where defined
        sig = a.getcol("SIGMA")[:, perm]
        np.testing.assert_allclose(sig[w > 0], b.getcol("SIGMA")[w > 0], rtol=1e-7)

        # keywords (units, pyuvdata's extra keywords); subtable links name their own MS
        def own(kw: dict[str, object]) -> dict[str, object]:
            return {k: v for k, v in kw.items() if not str(v).startswith("Table:")}

        assert _same(own(a.getkeywords()), own(b.getkeywords()))
        for c in a.colnames():
            assert _same(a.getcolkeywords(c), b.getcolkeywords(c)), c
    _compare_subtables(ref, nat)


def _same(x: object, y: object) -> bool:
    """Keyword records compared through their nested arrays."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return bool(np.array_equal(np.asarray(x), np.asarray(y)))


def _cell_values(tab: object, col: str) -> list[object]:
    # cells of variable shape (or undefined ones) cannot come back as one array
    return [tab.getcell(col, i) if tab.iscelldefined(col, i) else None for i in range(tab.nrows())]


def _compare_subtables(ref: Path, nat: Path) -> None:
    """Every column and column keyword of every subtable but HISTORY (which names the
    converter) as pyuvdata writes it."""
    t = casacore_tables.table
    subs = sorted(p.name for p in ref.iterdir() if p.is_dir() and p.name != "HISTORY")
    assert subs == sorted(p.name for p in nat.iterdir() if p.is_dir() and p.name != "HISTORY")
    for sub in subs:
        with t(f"{ref}/{sub}", ack=False) as a, t(f"{nat}/{sub}", ack=False) as b:
            assert a.nrows() == b.nrows(), sub
            assert sorted(a.colnames()) == sorted(b.colnames()), sub
            assert _same(a.getkeywords(), b.getkeywords()), sub
            for c in a.colnames():
                assert _same(a.getcolkeywords(c), b.getcolkeywords(c)), f"{sub}.{c}"
                for x, y in zip(_cell_values(a, c), _cell_values(b, c), strict=True):
                    if isinstance(x, np.ndarray) and x.dtype.kind in "fc":
                        np.testing.assert_allclose(x, y, rtol=1e-12, err_msg=f"{sub}.{c}")
                    else:
                        assert np.array_equal(np.asarray(x), np.asarray(y)), f"{sub}.{c}"


def _summarise(ms: Path) -> None:
    """What CASA's listobs leans on: TaQL over MAIN and derived hour angles from subtables."""
    t = casacore_tables.table
    work = ms.with_name(ms.name + ".copy")
    shutil.copytree(ms, work)
    with t(str(work), readonly=False, ack=False) as m:
        m.summary()  # casacore's own summary walks every subtable
        q = casacore_tables.taql(
            "select gmin(TIME) as t0, gmax(TIME) as t1, gcount() as n, "
            "gmax(ANTENNA2) as amax from $m"
        )
        assert q.getcell("n", 0) == m.nrows()
        with t(f"{work}/ANTENNA", ack=False) as ant:
            assert q.getcell("amax", 0) < ant.nrows()
        casacore_tables.msutil.addDerivedMSCal(str(work))
    with t(str(work), ack=False) as m:
        ha = m.getcol("HA1")
        assert np.all(np.isfinite(ha))
    shutil.rmtree(work)


def _both(
    files: list[Path], out: Path, **req_fields: object
) -> tuple[Path, Path, dict[str, object]]:
    ref, nat = out / "ref.ms", out / "nat.ms"
    req = replace(_request(files), **req_fields)
    plan = recipe.plan_for_request(req)
    pyuvdata_backend.convert(req, ref, plan)
    info = native.convert(req, nat, plan)
    recipe.verify_ms(nat, plan)
    return ref, nat, info


@pytest.mark.parametrize("npols", [2, 4])
def test_dsa_group_descending_channels_flags_matches_pyuvdata(tmp_path: Path, npols: int) -> None:
    p = SimParams(nants=6, nchan=4, ntimes=3, npols=npols, dec_deg=71.0, descending=True)
    files = _group(tmp_path / "in", p, _flagged)
    with h5py.File(files[0], "r") as f:
        assert np.all(np.diff(f["Header/freq_array"][()].reshape(-1)) < 0)
    ref, nat, info = _both(files, tmp_path)
    _compare(ref, nat, files[0])
    _summarise(nat)
    with casacore_tables.table(f"{nat}/SPECTRAL_WINDOW", ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ")[0]
    assert freqs.size == 16 * p.nchan and np.all(np.diff(freqs) > 0)
    with casacore_tables.table(str(nat), ack=False) as m:
        a1, a2 = m.getcol("ANTENNA1"), m.getcol("ANTENNA2")
        assert np.any(a1 == a2)  # autocorrelations are kept
        assert m.getcol("FLAG").any() and not m.getcol("FLAG").all()
    assert info["n_channels"] == 16 * p.nchan


@pytest.mark.parametrize("phasing", ["meridian", "meridian_mid"])
def test_time_offset_subbands_match_pyuvdata(tmp_path: Path, phasing: str) -> None:
    """Subbands a few seconds apart share integrations; one a whole integration late
    leaves flagged rows at both ends of the grid."""
    offsets = tuple([0.0, 3.0, -2.5, 12.884901888] + [1.0] * 12)
    p = SimParams(nants=5, nchan=3, ntimes=3, npols=2, time_offsets_s=offsets)
    files = _group(tmp_path / "in", p)
    ref, nat, _ = _both(files, tmp_path, phasing=phasing)
    _compare(ref, nat, files[0])
    with casacore_tables.table(str(nat), ack=False) as m:
        assert m.nrows() == 4 * 15  # 4 integrations on the grid, 15 baselines
        flags = m.getcol("FLAG")
        # sb03 (the fourth-highest band) lacks the first integration of the grid
        assert flags.all(axis=(1, 2)).sum() == 0 and flags.any()
    with casacore_tables.table(f"{nat}/FIELD", ack=False) as fld:
        assert fld.nrows() == (4 if phasing == "meridian" else 1)


@pytest.mark.parametrize(
    "name", ["zen.2458661.23480.HH.uvh5", "zen.2458432.34569.uvh5", "simulated_bda_file.uvh5"]
)
def test_real_hera_files_match_pyuvdata(tmp_path: Path, name: str) -> None:
    # mixed baseline conjugation, integer {r, i} visibilities, baseline-dependent averaging
    ref, nat, _ = _both([DATA / name], tmp_path)
    _compare(ref, nat, DATA / name)
    _summarise(nat)


def test_small_blocks_and_tiles_give_the_same_ms(tmp_path: Path) -> None:
    """Blocks and tiles that do not divide the rows: the layout must not change a number."""
    p = SimParams(nants=7, nchan=3, ntimes=4, time_offsets_s=(0.0, 2.0, 13.0))
    files = _group(tmp_path / "in", p, _flagged)
    plan = recipe.plan_for_request(_request(files))
    native.write_ms(native.plan_group(plan), tmp_path / "big.ms")
    info = native.write_ms(
        native.plan_group(plan), tmp_path / "small.ms", block_bytes=1, tile_bytes=200, read_ahead=0
    )
    assert info["block_rows"] < 112 / 4  # many blocks per subband
    t = casacore_tables.table
    with t(str(tmp_path / "big.ms"), ack=False) as a, t(str(tmp_path / "small.ms"), ack=False) as b:
        for c in ("DATA", "FLAG", "WEIGHT_SPECTRUM", "WEIGHT", "UVW"):
            np.testing.assert_array_equal(a.getcol(c), b.getcol(c), err_msg=c)


def test_numba_kernel_writes_the_numpy_kernels_ms(tmp_path: Path) -> None:
    """Big groups go through the one-pass numba kernel, small ones through numpy: the
    MS must not depend on which (forced here on a small group)."""
    from dsa110_ingest.convert.native import fused

    if not fused.available():
        pytest.skip("numba is not installed")
    p = SimParams(nants=5, nchan=3, ntimes=3, npols=4, time_offsets_s=(0.0, 2.0, 13.0))
    files = _group(tmp_path / "in", p, _flagged)
    group = native.plan_group(recipe.plan_for_request(_request(files)))
    a_info = native.write_ms(group, tmp_path / "numpy.ms", fused_kernel=False)
    b_info = native.write_ms(group, tmp_path / "numba.ms", fused_kernel=True)
    assert native.write_ms(group, tmp_path / "auto.ms")["kernel"] == "numpy"  # small: numpy
    assert (a_info["kernel"], b_info["kernel"]) == ("numpy", "numba")
    t = casacore_tables.table
    with (
        t(str(tmp_path / "numpy.ms"), ack=False) as a,
        t(str(tmp_path / "numba.ms"), ack=False) as b,
    ):
        for c in ("FLAG", "WEIGHT_SPECTRUM", "WEIGHT", "UVW"):
            np.testing.assert_array_equal(a.getcol(c), b.getcol(c), err_msg=c)
        np.testing.assert_allclose(a.getcol("DATA"), b.getcol("DATA"), rtol=1e-6, atol=1e-6)


def test_worker_converts_with_native_by_default(tmp_path: Path) -> None:
    from dsa110_ingest.config import ConvertConfig

    assert ConvertConfig().backend == "native"
    files = _group(tmp_path / "in", SimParams(nants=4, nchan=2, ntimes=2))
    out = tmp_path / "ms" / "g.ms"
    result = worker.run(_request(files, out=str(out)))
    assert result["ms_path"] == str(out) and not result["skipped"]
    assert pyuvdata_backend.validate_ms(out, 32) is None
    again = worker.run(_request(files, out=str(out)))
    assert again["skipped"]


def test_unreadable_visibilities_name_the_file_and_leave_no_ms(tmp_path: Path) -> None:
    files = _group(tmp_path / "in", SimParams(nants=4, nchan=2, ntimes=2))
    out = tmp_path / "ms" / "g.ms"
    req = _request(files, out=str(out))  # indexed while whole; damaged afterwards
    with h5py.File(files[5], "r+") as f:
        del f["Data/visdata"]
    with pytest.raises(ConversionError, match=re.escape(files[5].name)):
        worker.run(req)
    assert not out.exists()
    assert not list(out.parent.glob(".g.ms.tmp-*"))


def test_native_worker_imports_neither_pyuvdata_nor_astropy(tmp_path: Path) -> None:
    """A fresh worker process converting with "native" never imports pyuvdata or astropy
    (seconds of CPU in every worker): the metadata come from h5py, the tables from casacore."""
    import json
    import subprocess
    import sys

    files = _group(tmp_path / "in", SimParams(nants=4, nchan=2, ntimes=2))
    req = _request(files, out=str(tmp_path / "g.ms"))
    child = (
        "import json, sys\n"
        "from dsa110_ingest.convert import worker\n"
        "from dsa110_ingest.convert.request import ConversionRequest\n"
        "res = worker.run(ConversionRequest.from_json(json.loads(sys.stdin.read())))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyuvdata', 'astropy'))\n"
        "print(json.dumps({'skipped': res['skipped'], 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child],
        input=json.dumps(req.to_json()),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"skipped": False, "heavy": []}
    assert pyuvdata_backend.validate_ms(tmp_path / "g.ms", 32) is None
