"""The native writer's parts: the phase kernel against pyuvdata, the block reader, tiling."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsa110_ingest.convert.native import fused, kernel, msfile, reader
from dsa110_ingest.errors import ConversionError, PermanentConversionError
from dsa110_ingest.tools.simulate import SimParams, write_subband_file

pyuvdata = pytest.importorskip("pyuvdata")


@pytest.fixture(scope="module")
def subband(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sb") / "sb05.hdf5"
    write_subband_file(path, 1.759363e9, 5, SimParams(nants=6, nchan=8, ntimes=4, npols=4))
    return path


def test_phase_rotation_is_what_uvdata_phase_does_to_the_data(subband: Path) -> None:
    uv = pyuvdata.UVData()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uv.read(str(subband), file_type="uvh5")
        raw = uv.data_array.copy()
        assert uv._check_for_cat_type("unprojected").all()
        # a dec far from zenith: w changes by metres, thousands of turns at 1.4 GHz
        uv.phase(lon=1.0, lat=np.radians(71.0), cat_name="x", cat_type="sidereal")
    dw = uv.uvw_array[:, 2] - 0.0  # unprojected rows were projected with w = 0
    assert np.abs(dw).max() > 1.0
    vis = raw.astype(np.complex64)
    kernel.phase_rotate(vis, dw, uv.freq_array.reshape(-1))
    ref = uv.data_array
    err = np.abs(vis - ref) / np.maximum(np.abs(ref), 1e-12)
    assert err.max() < 1e-5


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5e3, 5e3), min_size=1, max_size=20),
    st.floats(1.0e8, 2.0e9),
    st.floats(1.0e3, 1.0e6),
    st.integers(1, 64),
)
def test_running_product_equals_the_exponential(
    dws: list[float], f0: float, df: float, n: int
) -> None:
    freqs = f0 + df * np.arange(n)
    got = kernel.phase_factors(np.array(dws), freqs)
    want = np.exp(-2j * np.pi * np.multiply.outer(np.array(dws), freqs) / kernel.SPEED_OF_LIGHT)
    assert np.abs(got - want).max() < 1e-6


def test_conjugated_rows_swap_cross_pols_and_ms_gets_the_conjugate() -> None:
    rng = np.random.default_rng(1)
    vis = (rng.standard_normal((3, 2, 4)) + 1j * rng.standard_normal((3, 2, 4))).astype(
        np.complex64
    )
    orig = vis.copy()
    flags = np.zeros(vis.shape, bool)
    flags[1, :, 2] = True  # XY of the conjugated row
    nsa = np.ones(vis.shape, np.float32)
    # pols XX YY XY YX
    casa = np.array([0, 2, 3, 1])  # XX XY YX YY
    conj_pols = np.array([0, 1, 3, 2])
    d, fl, _ = kernel.ms_block(
        vis, flags, nsa, delta_w_m=np.zeros(3), freqs_hz=np.array([1e9, 1.1e9]),
        descending=False, pol_order=casa, conj_rows=np.array([False, True, False]),
        conj_pol_order=conj_pols,
    )  # fmt: skip
    np.testing.assert_array_equal(d[0], np.conj(orig[0][:, casa]))
    # row 1 was conjugated to ant1 < ant2: its XY is the original YX, then CASA's conjugate
    np.testing.assert_array_equal(d[1], orig[1][:, conj_pols][:, casa])
    assert fl[1, :, casa.tolist().index(3)].all()  # the flag moved with the swapped pol


def test_descending_channels_come_out_ascending_with_their_own_phase() -> None:
    rng = np.random.default_rng(2)
    vis = (rng.standard_normal((5, 6, 2)) + 1j * rng.standard_normal((5, 6, 2))).astype(
        np.complex64
    )
    freqs = 1.4e9 - 1e5 * np.arange(6)  # stored high -> low
    dw = rng.uniform(-100, 100, 5)
    flags = np.zeros(vis.shape, bool)
    flags[:, 0] = True  # the highest channel
    rot = np.exp(-2j * np.pi * np.multiply.outer(dw, freqs) / 299792458.0)
    want = np.conj(vis * rot[..., None])
    d, fl, _ = kernel.ms_block(
        vis.copy(), flags, np.ones(vis.shape, np.float32), delta_w_m=dw, freqs_hz=freqs,
        descending=True, pol_order=np.array([0, 1]), conj_rows=None,
        conj_pol_order=np.array([0, 1]),
    )  # fmt: skip
    np.testing.assert_allclose(d, want[:, ::-1], rtol=1e-5, atol=1e-5)
    assert fl[:, -1].all() and not fl[:, :-1].any()
    assert d.flags.c_contiguous


def test_reader_pads_rows_the_file_lacks_and_keeps_order(subband: Path) -> None:
    with h5py.File(subband, "r") as f:
        vis_all = f["Data/visdata"][()][:, 0]
        n = vis_all.shape[0]
        rows = np.arange(n + 10) - 5  # 5 rows before the file's first, 5 after its last
        rows[rows >= n] = -1
        vis, flags, nsa = reader.read_rows(f, rows, 0, n + 10)
    assert (flags[:5].all() and flags[-5:].all()) and not flags[5:-5].any()
    assert not nsa[:5].any() and not vis[:5].any()
    np.testing.assert_array_equal(vis[5:-5], vis_all)


def test_reader_thread_hands_over_errors_with_the_file_name(tmp_path: Path, subband: Path) -> None:
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_group("Data")
    got = []
    with pytest.raises(PermanentConversionError, match=r"bad\.hdf5"):
        for blk in reader.blocks_ahead([str(subband), str(bad)], [None, None], 96, 10):
            got.append(blk.source)
    assert got and set(got) == {0}
    missing = tmp_path / "gone.hdf5"
    with pytest.raises(ConversionError, match=r"gone\.hdf5"):
        list(reader.blocks_ahead([str(missing)], [None], 96, 10))


def test_abandoned_reader_thread_ends(subband: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    gen = reader.blocks_ahead([str(subband)] * 4, [None] * 4, 96, 4, depth=1)
    next(gen)
    gen.close()  # the writer failed: the reader must not stay blocked on a full queue
    left = [
        t for t in threading.enumerate() if t.ident not in before and t.name == "ms-block-reader"
    ]
    assert not left


def test_tiles_cover_one_subband_and_fit_small_tables() -> None:
    t = msfile.choose_tiling(4, [48] * 16, 256 << 10)
    assert t.chans == 48 and t.pols == 4 and t.rows * 48 * 4 * 8 <= 256 << 10
    assert msfile.choose_tiling(2, [6, 4, 6], 1 << 20).chans == 2
    assert msfile.choose_tiling(2, [4] * 16, 1 << 20, max_rows=30).rows == 30


@settings(max_examples=40, deadline=None)
@given(
    n_rows=st.integers(1, 9),
    n_chan=st.integers(1, 7),
    four_pols=st.booleans(),
    descending=st.booleans(),
    even=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_kernel_is_the_numpy_kernel(
    n_rows: int, n_chan: int, four_pols: bool, descending: bool, even: bool, seed: int
) -> None:
    """The one-pass numba kernel the writer uses: the same DATA, FLAG and WEIGHT_SPECTRUM
    as the numpy reference, and the per-row weight extremes over the block's channels."""
    if not fused.available():
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    n_pol = 4 if four_pols else 2
    shape = (n_rows, n_chan, n_pol)
    vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    flags = rng.random(shape) < 0.3
    nsa = rng.choice([0.0, 0.5, 1.0, 2.0], size=shape).astype(np.float32)
    step = 1e5 if even else rng.uniform(5e4, 2e5, n_chan)
    freqs = 1.4e9 + np.cumsum(np.broadcast_to(step, (n_chan,)))
    if descending:
        freqs = freqs[::-1].copy()
    pol_order = np.array([0, 2, 3, 1]) if four_pols else np.array([1, 0])
    conj_pol_order = np.array([0, 1, 3, 2]) if four_pols else np.array([0, 1])
    kw = dict(
        delta_w_m=rng.uniform(-300, 300, n_rows),
        freqs_hz=freqs,
        descending=descending,
        pol_order=pol_order,
        conj_rows=rng.random(n_rows) < 0.5,
        conj_pol_order=conj_pol_order,
    )
    want = kernel.ms_block(vis.copy(), flags.copy(), nsa.copy(), **kw)  # type: ignore[arg-type]
    w_min = np.full((n_rows, n_pol), np.inf, np.float32)
    w_max = np.full((n_rows, n_pol), -np.inf, np.float32)
    got = fused.ms_block(vis, flags, nsa, **kw, w_min=w_min, w_max=w_max, buffers=fused.Buffers())  # type: ignore[arg-type]
    np.testing.assert_allclose(got[0], want[0], rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(w_min, want[2].min(axis=1))
    np.testing.assert_array_equal(w_max, want[2].max(axis=1))
