"""The group's metadata, planned once from headers: rows, UVWs, phase centres, subtables.

The first subband's header (h5py, convert/native/meta.py) gives the antennas, each row's
integration time and pre-phasing w; LSTs, apparent centres and UVWs come from ERFA
(convert/native/astrometry.py), once per integration. The numbers are those of the
recipe's pyuvdata path (``plan.phased_metadata``; tests/convert/test_native_astrometry.py
compares them), computed without importing pyuvdata or astropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.native import astrometry, meta, subtables
from dsa110_ingest.errors import PermanentConversionError


@dataclass
class GroupPlan:
    """What the writer needs, computed once per group from metadata only.

    Rows are the MS's (integration-major, ``plan.baselines`` order). ``uvw`` is each
    row's UVW after phasing, with the files' antenna order (pyuvdata's convention);
    ``flip`` the rows the MS conjugates to ant1 < ant2 (None: none), whose ``ant1``/``ant2``
    are already swapped. ``delta_w`` is w_new - w_old: the data's rotation is
    ``exp(-2j pi delta_w f / c)`` (w_old: the w the file's data are projected with, 0
    for drift scans). ``row_maps[k]`` takes MS rows to rows of subband k's file (-1:
    the file lacks it); ``None`` when they coincide.
    """

    plan: recipe.ConversionPlan
    meta: meta.FileMeta
    uvw: np.ndarray
    delta_w: np.ndarray
    flip: np.ndarray | None
    ant1: np.ndarray
    ant2: np.ndarray
    integration_s: np.ndarray
    field_ids: np.ndarray
    phasing: astrometry.Phasing
    site: astrometry.Site
    row_maps: list[np.ndarray | None]
    centres: list[recipe.PhaseCentre]
    channel_width: np.ndarray  # MS (ascending) channel order
    spw_id: int

    @property
    def scan_numbers(self) -> np.ndarray:
        """1 + the run of equal FIELD_ID each row is in (pyuvdata's scans, in row order)."""
        f = self.field_ids
        return np.concatenate(([1], 1 + np.cumsum(f[1:] != f[:-1]))).astype(np.int32)

    def subtables(self) -> subtables.Subtables:
        m, plan = self.meta, self.plan
        n_bl = plan.n_baselines
        observer = next(
            (str(v) for k, v in m.extra_keywords.items() if k.upper() == "OBSERVER"),
            plan.telescope_name,
        )
        return subtables.Subtables(
            meta=m,
            site_xyz=self.site.xyz,
            telescope_name=plan.telescope_name,
            observer=observer,
            freq_hz=plan.freq_hz,
            channel_width=self.channel_width,
            spw_id=self.spw_id,
            field_names=[c.name for c in self.centres],
            field_dirs=np.array([[c.ra_rad, c.dec_rad] for c in self.centres]),
            mid_time_s=float(subtables.mjd_seconds(np.median(plan.grid_jd))),
            int_times_s=subtables.mjd_seconds(plan.grid_jd),
            int_interval_s=np.median(self.integration_s.reshape(-1, n_bl), axis=1),
            history=m.history.rstrip("\n")
            + "\nConverted to a Measurement Set by dsa110-ingest (native writer).",
        )


def _row_map(row_index: np.ndarray, n_rows: int) -> np.ndarray | None:
    if row_index.size == n_rows and np.array_equal(row_index, np.arange(n_rows)):
        return None
    rows = np.full(n_rows, -1, dtype=np.int64)
    rows[row_index] = np.arange(row_index.size)
    return rows


def _freq_params(sb: recipe.SubbandPlan, default_spw: int) -> tuple[np.ndarray, np.ndarray]:
    """Channel widths and spw ids of one file, in the MS's (ascending) channel order."""
    width, spw = sb.channel_width, sb.spw_ids
    if width is None:  # a plan made without them: from the file
        with h5py.File(sb.path, "r") as f:
            header = f["Header"]
            width = np.asarray(header["channel_width"][()], dtype=np.float64)
            if "flex_spw_id_array" in header:
                spw = np.asarray(header["flex_spw_id_array"][()])
    width = np.broadcast_to(np.asarray(width, np.float64).reshape(-1), (sb.n_channels,))
    spw = np.full(sb.n_channels, default_spw) if spw is None else np.asarray(spw).reshape(-1)
    if sb.descending:
        width, spw = width[::-1], spw[::-1]
    return np.array(width), np.array(spw)


def _channels(plan: recipe.ConversionPlan, m: meta.FileMeta) -> tuple[np.ndarray, int]:
    """Channel widths of the whole band (ascending) and its one spectral window id."""
    first = plan.subbands[0]
    w0, s0 = m.channel_width, m.spw_ids
    widths = [w0[::-1] if first.descending else w0]
    spws = [s0]
    for sb in plan.subbands[1:]:
        w, s = _freq_params(sb, int(s0[0]))
        widths.append(w)
        spws.append(s)
    ids = np.unique(np.concatenate(spws))
    if ids.size != 1:
        raise PermanentConversionError(
            f"{first.name}: {ids.size} spectral windows; the native writer writes one: "
            'set [convert] backend = "pyuvdata" for this data'
        )
    return np.concatenate(widths), int(ids[0])


def _antenna_index(numbers: np.ndarray, ants: np.ndarray, where: str) -> np.ndarray:
    order = np.argsort(numbers)
    pos = np.searchsorted(numbers, ants, sorter=order)
    idx = order[np.minimum(pos, numbers.size - 1)]
    if not np.array_equal(numbers[idx], ants):
        raise PermanentConversionError(
            f"{where}: baselines use antenna numbers missing from Header/antenna_numbers; "
            "the file is damaged"
        )
    return idx


def plan_group(plan: recipe.ConversionPlan) -> GroupPlan:
    """The recipe's metadata for the whole group, phased, and each file's row mapping.

    The same steps as ``plan.phased_metadata`` (read aligned, combine, phase): per-row
    metadata from the first subband (as ``plan.combine`` takes them), UVWs from the
    antenna positions at the plan's phase centres, computed with ERFA once per
    integration (:func:`astrometry.phase_integrations`).
    """
    sb0 = plan.subbands[0]
    m = meta.read_file_meta(sb0.path, sb0.row_index.size)
    if m.pols.size != plan.n_pols:
        raise PermanentConversionError(f"{sb0.name}: polarization_array changed while planning")
    src = plan.source_rows(0)
    site = astrometry.Site.from_geodetic(plan.site_lat_deg, plan.site_lon_deg, plan.site_alt_m)
    centres = plan.phase_centres()
    ra = np.empty(plan.n_integrations)
    dec = np.empty(plan.n_integrations)
    field_of_int = np.empty(plan.n_integrations, np.int32)
    for i, c in enumerate(centres):
        ra[list(c.integrations)] = c.ra_rad
        dec[list(c.integrations)] = c.dec_rad
        field_of_int[list(c.integrations)] = i
    ph = astrometry.phase_integrations(plan.grid_jd, ra, dec, site)
    t_idx = np.arange(plan.n_rows) // plan.n_baselines
    ant1 = np.tile(plan.baselines[:, 0], plan.n_integrations)
    ant2 = np.tile(plan.baselines[:, 1], plan.n_integrations)
    idx1 = _antenna_index(m.antenna_numbers, ant1, sb0.name)
    idx2 = _antenna_index(m.antenna_numbers, ant2, sb0.name)
    uvw = astrometry.uvw(ph, site, m.antenna_positions, idx1, idx2, t_idx)
    w_old = np.where(m.projected[src], m.uvw[src, 2], 0.0)
    flip = None
    if np.any(ant1 < ant2) and np.any(ant1 > ant2):
        # CASA wants one conjugation state: ant1 < ant2, as pyuvdata's write_ms makes it
        flip = ant1 > ant2
        ant1, ant2 = np.where(flip, ant2, ant1), np.where(flip, ant1, ant2)
    width, spw = _channels(plan, m)
    return GroupPlan(
        plan=plan,
        meta=m,
        uvw=uvw,
        delta_w=uvw[:, 2] - w_old,
        flip=flip,
        ant1=ant1,
        ant2=ant2,
        integration_s=m.integration_s[src],
        field_ids=field_of_int[t_idx],
        phasing=ph,
        site=site,
        row_maps=[_row_map(s.row_index, plan.n_rows) for s in plan.subbands],
        centres=centres,
        channel_width=width,
        spw_id=spw,
    )
