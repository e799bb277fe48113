"""The group's metadata, planned once from headers: rows, UVWs, phase centres, subtables.

pyuvdata reads the first subband's header (telescope, antennas, catalog, keywords, as
its own ``write_ms`` would see them); LSTs, apparent centres and UVWs come from ERFA
(convert/native/astrometry.py), once per integration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.native import astrometry, jit


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
    LSTs and phasing are computed with ERFA once per integration (``_ErfaUVData``,
    :func:`phase`), not by pyuvdata's astropy path: the same numbers, seconds sooner.
    """
    jit.cache_pyuvdata_kernels()
    uv = recipe.read_aligned(plan, 0, read_data=False, uvdata_class=_erfa_uvdata())
    if len(plan.subbands) > 1:
        _extend_freq_axis(uv, plan)
    unprojected = uv._check_for_cat_type("unprojected")
    w_old = np.where(unprojected, 0.0, uv.uvw_array[:, 2])
    centres = phase(uv, plan)
    uv.telescope.name = plan.telescope_name
    maps = [_row_map(s.row_index, plan.n_rows) for s in plan.subbands]
    return GroupPlan(plan, uv, w_old, maps, centres)


def _site(uv: Any) -> astrometry.Site:
    return astrometry.Site.from_xyz(np.asarray(uv.telescope._location.xyz(), np.float64))


_ERFA_UVDATA: type | None = None


def _erfa_lsts(uv: Any, **_: object) -> None:
    jd, inv = np.unique(uv.time_array, return_inverse=True)
    uv.lst_array = astrometry.lst(astrometry.Times.from_jd(jd), _site(uv))[inv]


def _erfa_uvdata() -> type:
    """``UVData`` whose LSTs come from :func:`astrometry.lst` (pyuvdata's ERFA formula)
    instead of astropy ``Time`` objects and a parse of the IERS tables (seconds in every
    fresh worker). pyuvdata reads a UVH5 file through its ``UVH5`` subclass, which sets
    the LSTs while reading the header: that class gets the same method."""
    global _ERFA_UVDATA
    if _ERFA_UVDATA is None:
        from pyuvdata import UVData
        from pyuvdata.uvdata.uvh5 import UVH5

        class ErfaUVH5(UVH5):  # type: ignore[misc]
            set_lsts_from_time_array = _erfa_lsts

        class ErfaUVData(UVData):  # type: ignore[misc]
            set_lsts_from_time_array = _erfa_lsts

            def read_uvh5(self, filename: str, **kwargs: Any) -> None:
                obj = ErfaUVH5()
                obj.read_uvh5(filename, **kwargs)
                self._convert_from_filetype(obj)

        _ERFA_UVDATA = ErfaUVData
    return _ERFA_UVDATA


def phase(uv: Any, plan: recipe.ConversionPlan) -> list[recipe.PhaseCentre]:
    """What ``plan.apply_phasing`` (pyuvdata ``phase(use_ant_pos=True)`` per centre) does
    to a metadata-only object: UVWs from the antenna positions, apparent centres, frame
    position angles, the phase-centre catalog (pyuvdata's own bookkeeping, so FIELD ids
    are the same), computed once per integration."""
    centres = plan.phase_centres()
    ra = np.empty(plan.n_integrations)
    dec = np.empty(plan.n_integrations)
    for c in centres:
        ra[list(c.integrations)] = c.ra_rad
        dec[list(c.integrations)] = c.dec_rad
    site = _site(uv)
    ph = astrometry.phase_integrations(plan.grid_jd, ra, dec, site)
    t_idx = np.arange(uv.Nblts) // plan.n_baselines
    numbers = np.asarray(uv.telescope.antenna_numbers)
    order = np.argsort(numbers)
    idx1 = order[np.searchsorted(numbers, uv.ant_1_array, sorter=order)]
    idx2 = order[np.searchsorted(numbers, uv.ant_2_array, sorter=order)]
    pos = np.asarray(uv.telescope.antenna_positions, np.float64)
    uv.uvw_array = astrometry.uvw(ph, site, pos, idx1, idx2, t_idx)
    uv.phase_center_app_ra = ph.app_ra[t_idx]
    uv.phase_center_app_dec = ph.app_dec[t_idx]
    uv.phase_center_frame_pa = ph.frame_pa[t_idx]
    for c in centres:
        cat_id = uv._add_phase_center(
            c.name,
            cat_type="sidereal",
            cat_lon=c.ra_rad,
            cat_lat=c.dec_rad,
            cat_frame="icrs",
            cat_epoch=2000.0,
            info_source="user",
            force_update=True,
        )
        uv.phase_center_id_array[np.isin(t_idx, c.integrations)] = cat_id
        uv._clear_unused_phase_centers()
    return centres
