"""16 UVH5 files -> one Measurement Set, streamed a subband block at a time."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert import pyuvdata_backend
from dsa110_ingest.convert.native import jit, kernel, msfile, reader
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import PermanentConversionError, TransientConversionError

# Rows per block: a multiple of the tile's rows, sized so that one block of one subband
# (vis + flags + nsamples and the few temporaries of the kernel) stays near this many bytes.
BLOCK_BYTES = 16 << 20


@dataclass
class GroupPlan:
    """What the writer needs, computed once per group from metadata only.

    ``uv`` is pyuvdata's metadata-only object of the group built and phased by the recipe
    (convert/plan.py): rows in MS order, channels ascending. ``w_old`` is the w each row
    was projected with before phasing (0 for unprojected drift-scan rows): the data's
    rotation is ``exp(-2j pi (w_new - w_old) f / c)``. ``row_maps[k]`` takes MS rows to
    rows of subband k's file (-1: the file lacks it); ``None`` when they coincide.
    """

    plan: recipe.ConversionPlan
    uv: Any
    w_old: np.ndarray
    row_maps: list[np.ndarray | None]
    centres: list[recipe.PhaseCentre]


def _row_map(row_index: np.ndarray, n_rows: int) -> np.ndarray | None:
    if row_index.size == n_rows and np.array_equal(row_index, np.arange(n_rows)):
        return None
    rows = np.full(n_rows, -1, dtype=np.int64)
    rows[row_index] = np.arange(row_index.size)
    return rows


def _freq_params(sb: recipe.SubbandPlan, default_spw: int) -> tuple[np.ndarray, np.ndarray]:
    """Channel widths and spw ids of one file, in the MS's (ascending) channel order."""
    with h5py.File(sb.path, "r") as f:
        h = f["Header"]
        width = np.broadcast_to(
            np.asarray(h["channel_width"][()], dtype=np.float64).reshape(-1), (sb.n_channels,)
        )
        spw = (
            np.asarray(h["flex_spw_id_array"][()]).reshape(-1)
            if "flex_spw_id_array" in h
            else np.full(sb.n_channels, default_spw)
        )
    if sb.descending:
        width, spw = width[::-1], spw[::-1]
    return np.array(width), np.array(spw)


def _extend_freq_axis(uv: Any, plan: recipe.ConversionPlan) -> None:
    """Give subband 0's metadata-only object the whole group's channels.

    What ``plan.combine`` (pyuvdata's ``fast_concat`` along frequency) makes of the 16
    metadata-only objects, without reading 15 more: everything but the frequency axis is
    taken from the first subband there too.
    """
    default_spw = int(np.asarray(uv.spw_array).reshape(-1)[0])
    widths, spws = [np.asarray(uv.channel_width, dtype=np.float64)], [uv.flex_spw_id_array]
    for sb in plan.subbands[1:]:
        w, s = _freq_params(sb, default_spw)
        widths.append(w)
        spws.append(s)
    uv.freq_array = plan.freq_hz.astype(np.float64)
    uv.channel_width = np.concatenate(widths)
    uv.flex_spw_id_array = np.concatenate(spws).astype(uv.flex_spw_id_array.dtype)
    uv.Nfreqs = int(uv.freq_array.size)
    first = np.sort(np.unique(uv.flex_spw_id_array, return_index=True)[1])
    uv.spw_array = uv.flex_spw_id_array[first]
    uv.Nspws = int(uv.spw_array.size)
    uv.history += " Combined data along frequency axis using pyuvdata."


def plan_group(plan: recipe.ConversionPlan) -> GroupPlan:
    """The recipe's metadata for the whole group, phased, and each file's row mapping.

    The same steps as ``plan.phased_metadata`` (read aligned, combine, phase), with the
    pre-phasing w kept: it is the w the file's data are projected with. Only the first
    subband is read through pyuvdata; the others add their channels (``_extend_freq_axis``).
    """
    jit.cache_pyuvdata_kernels()
    uv = recipe.read_aligned(plan, 0, read_data=False)
    if len(plan.subbands) > 1:
        _extend_freq_axis(uv, plan)
    unprojected = uv._check_for_cat_type("unprojected")
    w_old = np.where(unprojected, 0.0, uv.uvw_array[:, 2])
    centres = recipe.apply_phasing(uv, plan)
    uv.telescope.name = plan.telescope_name
    maps = [_row_map(s.row_index, plan.n_rows) for s in plan.subbands]
    return GroupPlan(plan, uv, w_old, maps, centres)


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
) -> dict[str, Any]:
    """Write the MS of ``group`` at ``path`` (which must not exist)."""
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
    flip = None
    if np.any(uv.ant_1_array < uv.ant_2_array) and np.any(uv.ant_1_array > uv.ant_2_array):
        # as write_ms: CASA wants one conjugation state, ant1 < ant2
        before = uv.ant_1_array.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uv.conjugate_bls("ant1<ant2")
        flip = uv.ant_1_array != before
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
            d, fl, ns = kernel.ms_block(
                vis,
                blk.flags,
                blk.nsamples,
                delta_w_m=delta_w[rows],
                freqs_hz=sb.freq_hz,  # the file's channel order
                descending=sb.descending,
                pol_order=pol_order,
                conj_rows=None if flip is None else flip[rows],
                conj_pol_order=conj_pol_order,
            )
            blc = [sb.chan_start, 0]
            trc = [sb.chan_start + nc - 1, n_pol - 1]
            nrow = blk.stop - blk.start
            ms.putcolslice("DATA", d, blc, trc, startrow=blk.start, nrow=nrow)
            ms.putcolslice("FLAG", fl, blc, trc, startrow=blk.start, nrow=nrow)
            ms.putcolslice("WEIGHT_SPECTRUM", ns, blc, trc, startrow=blk.start, nrow=nrow)
            lo, hi = ns.min(), ns.max()
            if lo == hi:  # the usual block: one weight everywhere (a cheap flat reduce)
                np.minimum(w_min[rows], lo, out=w_min[rows])
                np.maximum(w_max[rows], hi, out=w_max[rows])
            else:
                np.minimum(w_min[rows], ns.min(axis=1), out=w_min[rows])
                np.maximum(w_max[rows], ns.max(axis=1), out=w_max[rows])
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


def convert(
    req: ConversionRequest, tmp_output: Path, plan: recipe.ConversionPlan
) -> dict[str, Any]:
    """The worker's entry point: the recipe's MS at ``tmp_output``, streamed."""
    try:
        import casacore.tables  # noqa: F401
    except ImportError as e:
        raise TransientConversionError(
            "backend 'native' needs python-casacore (the extra 'convert'): "
            "pip install 'dsa110-ingest[convert]'"
        ) from e
    group = plan_group(plan)
    info = write_ms(group, tmp_output)
    pyuvdata_backend.finish_ms(tmp_output, plan, imaging_columns=req.imaging_columns)
    mid = plan.mid_centre() if len(group.centres) > 1 else group.centres[0]
    return {**info, "ra_deg": mid.ra_deg, "dec_deg": mid.dec_deg}


def validate_ms(path: Path, n_channels: int) -> str | None:
    return pyuvdata_backend.validate_ms(path, n_channels)
