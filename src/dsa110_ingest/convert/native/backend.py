"""16 UVH5 files -> one Measurement Set, streamed a subband block at a time."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert import pyuvdata_backend
from dsa110_ingest.convert.backends import require_casacore
from dsa110_ingest.convert.native import fused, kernel, msfile, reader
from dsa110_ingest.convert.native.group import GroupPlan, plan_group
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import PermanentConversionError, TransientConversionError

# Rows per block: a multiple of the tile's rows, sized so that one block of one subband
# (vis + flags + nsamples and the few temporaries of the kernel) stays near this many bytes.
BLOCK_BYTES = 16 << 20


def _main_columns(ms: Any, uv: Any) -> None:
    """The per-row columns, as pyuvdata's ``write_ms`` fills them for one spectral window."""
    from astropy.time import Time

    if uv.scan_number_array is None:
        uv._set_scan_numbers()
    jd, inv = np.unique(uv.time_array, return_inverse=True)
    t = (Time(jd, format="jd", scale="utc").mjd * 86400.0)[inv]
    ms.putcol("ANTENNA1", uv.ant_1_array)
    ms.putcol("ANTENNA2", uv.ant_2_array)
    ms.putcol("INTERVAL", uv.integration_time)
    ms.putcol("EXPOSURE", uv.integration_time)
    ms.putcol("DATA_DESC_ID", np.zeros(uv.Nblts, np.int32))
    ms.putcol("SCAN_NUMBER", uv.scan_number_array)
    ms.putcol("TIME", t)
    ms.putcol("TIME_CENTROID", t)
    ms.putcol("UVW", -uv.uvw_array)  # pyuvdata's flip_conj: CASA sees the conjugate
    field_ids = np.empty_like(uv.phase_center_id_array)
    for idx, cat_id in enumerate(uv.phase_center_catalog):
        field_ids[uv.phase_center_id_array == cat_id] = idx
    ms.putcol("FIELD_ID", field_ids)
    ms.putcolkeyword("DATA", "QuantumUnits", uv.vis_units)
    if uv.extra_keywords:
        ms.putkeyword("pyuvdata_extra", uv.extra_keywords)
    if uv.pol_convention is not None:
        ms.putkeyword("pyuvdata_polconv", uv.pol_convention)
    ms.putkeyword("pyuvdata_flip_conj", True)


def _subtables(path: Path, uv: Any, pol_order: Any) -> None:
    from pyuvdata.utils.io import ms as ms_utils

    p = str(path)
    ms_utils.write_ms_antenna(p, uvobj=uv)
    ms_utils.write_ms_data_description(p, uvobj=uv)
    ms_utils.write_ms_feed(p, uvobj=uv)
    ms_utils.write_ms_field(p, uvobj=uv)
    ms_utils.write_ms_history(p, uvobj=uv)
    ms_utils.write_ms_observation(p, uvobj=uv)
    ms_utils.write_ms_pointing(p, uvobj=uv)
    ms_utils.write_ms_polarization(p, pol_order=pol_order, uvobj=uv)
    ms_utils.write_ms_source(p, uvobj=uv)
    ms_utils.write_ms_spectral_window(p, uvobj=uv)


def write_ms(
    group: GroupPlan,
    path: Path,
    *,
    extra_data_cols: tuple[str, ...] = (),
    block_bytes: int = BLOCK_BYTES,
    tile_bytes: int = msfile.TILE_BYTES,
    read_ahead: int = 2,
    fused_kernel: bool = True,
) -> dict[str, Any]:
    """Write the MS of ``group`` at ``path`` (which must not exist). ``fused_kernel``
    False uses the numpy kernel (the reference) even where numba is available."""
    try:
        from pyuvdata import utils
    except ImportError as e:
        raise TransientConversionError(
            "backend 'native' needs the extra 'convert': pip install 'dsa110-ingest[convert]'"
        ) from e

    uv = group.uv
    subs = group.plan.subbands
    if uv.Nspws != 1:
        raise PermanentConversionError(
            f"{subs[0].name}: {uv.Nspws} spectral windows; the native writer "
            'writes one: set [convert] backend = "pyuvdata" for this data'
        )
    w_new = uv.uvw_array[:, 2].copy()
    flip = _one_conjugation(uv)
    n_rows, n_chan, n_pol = int(uv.Nblts), int(uv.Nfreqs), int(uv.Npols)
    pol_order = np.asarray(utils.pol.determine_pol_order(uv.polarization_array, order="CASA"))
    conj_pol_order = np.argsort(utils.pol.reorder_conj_pols(uv.polarization_array))
    delta_w = w_new - group.w_old
    freqs = np.asarray(uv.freq_array, dtype=np.float64).reshape(-1)
    tiling = msfile.choose_tiling(n_pol, [s.n_channels for s in subs], tile_bytes, max_rows=n_rows)
    max_chan = max(s.n_channels for s in subs)
    per_row = max_chan * n_pol * (8 + 1 + 4)
    block_rows = max(tiling.rows, (block_bytes // per_row) // tiling.rows * tiling.rows)

    # WEIGHT is the median of WEIGHT_SPECTRUM over all channels; the streaming pass keeps
    # only each row's min and max, which give the median whenever they agree (DSA-110:
    # always); rows where they differ get a second pass over their WEIGHT_SPECTRUM.
    w_min = np.full((n_rows, n_pol), np.inf, np.float32)
    w_max = np.full((n_rows, n_pol), -np.inf, np.float32)

    use_fused = fused_kernel and fused.available()
    buffers = fused.Buffers()
    ms = msfile.create_main(path, n_rows, n_chan, n_pol, tiling, extra_data_cols)
    try:
        _main_columns(ms, uv)
        for blk in reader.blocks_ahead(
            [s.path for s in subs],
            group.row_maps,
            n_rows,
            block_rows,
            read_ahead,
        ):
            sb = subs[blk.source]
            nc = sb.n_channels
            vis = blk.vis
            if vis.shape[1:] != (nc, n_pol):
                raise PermanentConversionError(
                    f"{sb.name}: visdata has shape {vis.shape[1:]} per row, the header "
                    f"promises ({nc}, {n_pol}); the file is inconsistent: replace it"
                )
            rows = slice(blk.start, blk.stop)
            args = dict(
                delta_w_m=delta_w[rows],
                freqs_hz=sb.freq_hz,  # the file's channel order
                descending=sb.descending,
                pol_order=pol_order,
                conj_rows=None if flip is None else flip[rows],
                conj_pol_order=conj_pol_order,
            )
            if use_fused:
                d, fl, ns = fused.ms_block(
                    vis, blk.flags, blk.nsamples, **args,
                    w_min=w_min[rows], w_max=w_max[rows], buffers=buffers,
                )  # fmt: skip
            else:
                d, fl, ns = kernel.ms_block(vis, blk.flags, blk.nsamples, **args)
                _track_weights(ns, w_min[rows], w_max[rows])
            blc = [sb.chan_start, 0]
            trc = [sb.chan_start + nc - 1, n_pol - 1]
            nrow = blk.stop - blk.start
            ms.putcolslice("DATA", d, blc, trc, startrow=blk.start, nrow=nrow)
            ms.putcolslice("FLAG", fl, blc, trc, startrow=blk.start, nrow=nrow)
            ms.putcolslice("WEIGHT_SPECTRUM", ns, blc, trc, startrow=blk.start, nrow=nrow)
        _put_weight_and_sigma(ms, w_min, w_max, block_rows)
    finally:
        ms.close()
    _subtables(path, uv, utils.tools.slicify(pol_order, allow_empty=True))
    return {
        "n_channels": n_chan,
        "n_rows": n_rows,
        "freq_min_hz": float(freqs.min()),
        "freq_max_hz": float(freqs.max()),
        "tile_shape": tiling.shape,
        "block_rows": block_rows,
    }


def _one_conjugation(uv: Any) -> np.ndarray | None:
    """Conjugate baselines to ant1 < ant2 where both states occur (CASA wants one, as
    pyuvdata's write_ms does); the rows flipped, or None when none needed it."""
    if not (np.any(uv.ant_1_array < uv.ant_2_array) and np.any(uv.ant_1_array > uv.ant_2_array)):
        return None
    before = uv.ant_1_array.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uv.conjugate_bls("ant1<ant2")
    flip: np.ndarray = uv.ant_1_array != before
    return flip


def _track_weights(ns: np.ndarray, w_min: np.ndarray, w_max: np.ndarray) -> None:
    """Fold one block's WEIGHT_SPECTRUM into each row's min and max (views, updated in place)."""
    lo, hi = ns.min(), ns.max()
    if lo == hi:  # the usual block: one weight everywhere (a cheap flat reduce)
        np.minimum(w_min, lo, out=w_min)
        np.maximum(w_max, hi, out=w_max)
    else:
        np.minimum(w_min, ns.min(axis=1), out=w_min)
        np.maximum(w_max, ns.max(axis=1), out=w_max)


def _put_weight_and_sigma(ms: Any, w_min: np.ndarray, w_max: np.ndarray, block_rows: int) -> None:
    """WEIGHT (the median of WEIGHT_SPECTRUM over channels) and SIGMA; only rows whose
    min and max differ are read back for the median."""
    n_rows = w_min.shape[0]
    weight = w_min.astype(np.float64)
    uneven = (w_min != w_max).any(axis=1)
    for lo in range(0, n_rows, block_rows):
        hi = min(lo + block_rows, n_rows)
        sel = np.flatnonzero(uneven[lo:hi])
        if sel.size:
            spec = ms.getcol("WEIGHT_SPECTRUM", startrow=lo, nrow=hi - lo)
            weight[lo + sel] = np.median(spec[sel], axis=1)
    ms.putcol("WEIGHT", weight)
    sigma = np.zeros_like(weight)
    np.power(weight, -0.5, where=weight != 0, out=sigma)
    ms.putcol("SIGMA", sigma)


def convert(
    req: ConversionRequest, tmp_output: Path, plan: recipe.ConversionPlan
) -> dict[str, Any]:
    """The worker's entry point: the recipe's MS at ``tmp_output``, streamed."""
    require_casacore("native")
    group = plan_group(plan)
    info = write_ms(group, tmp_output)
    pyuvdata_backend.finish_ms(tmp_output, plan, imaging_columns=req.imaging_columns)
    mid = plan.mid_centre() if len(group.centres) > 1 else group.centres[0]
    return {**info, "ra_deg": mid.ra_deg, "dec_deg": mid.dec_deg}


def validate_ms(path: Path, n_channels: int) -> str | None:
    return pyuvdata_backend.validate_ms(path, n_channels)
