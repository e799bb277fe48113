"""The Measurement Set recipe for DSA-110, decided from the files' headers alone.

Every writer (the pyuvdata backend here, a streaming python-casacore writer, a site's
command) must produce the same MS from the same group. This module makes every decision
of that recipe once, from metadata, so that the writers only move data:

* **Subband order.** Subbands sorted by ascending frequency (sb00 is the *highest*
  band); a file whose channels run high -> low is reversed (``SubbandPlan.descending``).
  The MS has ascending channels across the whole band. Overlapping frequency ranges
  (the same data under two subband names) are a permanent failure.
* **Pointing declination.** ``Header/extra_keywords/phase_center_dec`` (radians); all
  subbands must agree (else a permanent failure naming them). ``[convert]
  pointing_dec_deg`` overrides it; files without it fall back to the site latitude
  (zenith), and the fallback is logged. ``ConversionPlan.pointing_dec_source`` says
  which: ``"file"``, ``"config"`` or ``"fallback"``.
* **Time grid.** Integrations of different subbands whose centres differ by less than
  the tolerance (``[convert] time_tolerance_seconds``, default half an integration) are
  the same integration; its time on the MS grid is the median of theirs. The grid is the
  union of all subbands' integrations; a subband that lacks some of them gets flagged rows
  there (FLAG true, zero weight), so nothing is dropped. A subband with fewer than
  ``min_time_overlap`` of its integrations inside the span covered by the majority of
  the group's subbands belongs to another observation: a permanent failure naming it
  and its offset.
* **Rows.** MS row ``i * n_baselines + b``: integration ``i`` of the grid (ascending),
  baseline ``b`` of ``ConversionPlan.baselines`` (sorted by antenna pair, as the files
  give the pair). ``SubbandPlan.row_index[k]`` is the MS row of the file's row ``k``;
  MS rows that no file row maps to are the flagged ones.
* **Phasing.** ``"meridian"`` (default, as upstream): one sidereal phase centre per
  integration at hour angle 0 and the pointing declination (HADec at the observatory at
  that time, transformed to ICRS), FIELD names ``meridian_icrs_t0`` ..
  ``meridian_icrs_t{n-1}``. ``"meridian_mid"``: one centre, at the meridian at the mid
  time of the grid, named ``meridian_icrs_mid``. UVWs are recomputed from the antenna
  positions (pyuvdata ``phase(use_ant_pos=True)``).

API (stable; other writers build on it):

* :func:`make_plan` (or :func:`plan_for_request`) -> :class:`ConversionPlan`;
  raises :class:`~dsa110_ingest.errors.PermanentConversionError` for data errors.
* :meth:`ConversionPlan.phase_centres` -> list of :class:`PhaseCentre` (ICRS, needs
  pyerfa); :meth:`ConversionPlan.mid_centre` is what ``ms_index`` records.
* :func:`read_aligned` -> one subband as a pyuvdata ``UVData`` on the plan's rows and
  in ascending channel order, with or without its data (``read_data=False``).
* :func:`phased_metadata` -> the whole group as one metadata-only ``UVData``, aligned,
  ascending and phased: its ``uvw_array`` is the MS's UVW column (w_new for a streaming
  writer, whose per-row phase factor is ``exp(-2j*pi*(w_new - w_old)*freq/c)`` with
  ``w_old`` the file's ``Header/uvw_array[:, 2]`` of the mapped row).
* :func:`apply_phasing` phases any ``UVData`` built by :func:`combine` per the plan.
* :func:`verify_ms` checks a written MS against the plan (raises permanent errors).
* :meth:`ConversionPlan.summary` is the JSON a command backend and the ``group.converted``
  payload get.

The recipe is spread over four modules, all reachable from here: this one (the plan),
``headers`` (reading headers, pointing, time grid), ``phasing`` (the pyuvdata side:
``read_aligned``, ``combine``, ``apply_phasing``, ``meridian_icrs``) and ``verify``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dsa110_ingest.convert.headers import (
    SECONDS_PER_DAY,
    FileHeader,
    bl_keys,
    channel_order,
    common_baselines,
    periodic_searchsorted,
    pointing,
    read_file_header,
    runs_searchsorted,
    time_grid,
)
from dsa110_ingest.convert.phasing import (  # noqa: F401 -- the recipe's API, see above
    apply_phasing,
    combine,
    meridian_icrs,
    phased_metadata,
    read_aligned,
)
from dsa110_ingest.convert.verify import CASA_MOUNTS, verify_ms  # noqa: F401
from dsa110_ingest.errors import PermanentConversionError

if TYPE_CHECKING:
    from dsa110_ingest.convert.request import ConversionRequest

PHASINGS = ("meridian", "meridian_mid")


@dataclass(frozen=True)
class SubbandPlan:
    """One file of the group, as the MS will hold it."""

    path: str
    subband: int  # from the file name; for messages only (order is by frequency)
    freq_hz: np.ndarray  # channel centres in the file's own order
    descending: bool  # the file's channels run high -> low: writers reverse them
    chan_start: int  # first MS channel of this subband (MS channels ascending)
    times_jd: np.ndarray  # the file's distinct integration centres, ascending
    grid_index: np.ndarray  # per entry of times_jd: its integration on the MS grid
    row_index: np.ndarray  # per file row: its MS row
    missing: tuple[int, ...]  # grid integrations this file lacks (flagged in the MS)
    offset_s: float  # median of (file time - grid time), seconds
    pointing_dec_rad: float | None  # Header/extra_keywords/phase_center_dec
    channel_width: np.ndarray | None = None  # the header's, the file's channel order
    spw_ids: np.ndarray | None = None  # Header/flex_spw_id_array (None: not in the file)

    @property
    def n_channels(self) -> int:
        return int(self.freq_hz.size)

    @property
    def freq_ascending(self) -> np.ndarray:
        return self.freq_hz[::-1] if self.descending else self.freq_hz

    @property
    def name(self) -> str:
        return f"sb{self.subband:02d} ({Path(self.path).name})"


@dataclass(frozen=True)
class PhaseCentre:
    name: str  # FIELD name
    time_jd: float  # when the centre is on the meridian
    ra_rad: float  # ICRS
    dec_rad: float  # ICRS
    integrations: tuple[int, ...]  # grid integrations phased to it

    @property
    def ra_deg(self) -> float:
        return math.degrees(self.ra_rad)

    @property
    def dec_deg(self) -> float:
        return math.degrees(self.dec_rad)


@dataclass(frozen=True)
class ConversionPlan:
    group_id: str
    subbands: tuple[SubbandPlan, ...]  # ascending frequency
    grid_jd: np.ndarray  # MS integration centres (JD, UTC), ascending
    integration_s: float
    tolerance_s: float
    max_offset_s: float  # largest |file time - grid time| of any integration
    baselines: np.ndarray  # (n_baselines, 2) antenna numbers, the MS's baseline order
    pointing_dec_rad: float
    pointing_dec_source: str  # "file" | "config" | "fallback"
    phasing: str  # "meridian" | "meridian_mid"
    telescope_name: str  # OBSERVATION.TELESCOPE_NAME
    site_lat_deg: float
    site_lon_deg: float
    site_alt_m: float
    n_pols: int

    @property
    def n_integrations(self) -> int:
        return int(self.grid_jd.size)

    @property
    def n_baselines(self) -> int:
        return int(self.baselines.shape[0])

    @property
    def n_rows(self) -> int:
        return self.n_integrations * self.n_baselines

    @property
    def n_channels(self) -> int:
        return sum(s.n_channels for s in self.subbands)

    @property
    def freq_hz(self) -> np.ndarray:
        """The MS's channel frequencies, ascending."""
        return np.concatenate([s.freq_ascending for s in self.subbands])

    @property
    def n_flagged_rows(self) -> int:
        """Rows x subbands padded because a subband lacks an integration or baseline."""
        return sum(self.n_rows - s.row_index.size for s in self.subbands)

    def source_rows(self, k: int) -> np.ndarray:
        """Per MS row, the row of subband ``k``'s file its metadata come from: the row
        mapped there, else (a row the file lacks) the baseline's first row in the file."""
        sb = self.subbands[k]
        src = np.full(self.n_rows, -1, dtype=np.int64)
        src[sb.row_index] = np.arange(sb.row_index.size)
        padded = src < 0
        if padded.any():
            first_of_bl = np.full(self.n_baselines, -1, dtype=np.int64)
            bl_of_row = sb.row_index % self.n_baselines
            first_of_bl[bl_of_row[::-1]] = np.arange(sb.row_index.size)[::-1]
            src[padded] = first_of_bl[np.flatnonzero(padded) % self.n_baselines]
        return src

    def field_names(self) -> list[str]:
        if self.phasing == "meridian_mid":
            return ["meridian_icrs_mid"]
        return [f"meridian_icrs_t{i}" for i in range(self.n_integrations)]

    def phase_centres(self) -> list[PhaseCentre]:
        """The FIELDs of the MS, in order (ICRS; ERFA, see :func:`meridian_icrs`)."""
        if self.phasing == "meridian_mid":
            mid = float((self.grid_jd[0] + self.grid_jd[-1]) / 2.0)
            ((ra, dec),) = meridian_icrs(
                np.array([mid]),
                self.pointing_dec_rad,
                self.site_lat_deg,
                self.site_lon_deg,
                self.site_alt_m,
            )
            return [
                PhaseCentre("meridian_icrs_mid", mid, ra, dec, tuple(range(self.n_integrations)))
            ]
        coords = meridian_icrs(
            self.grid_jd,
            self.pointing_dec_rad,
            self.site_lat_deg,
            self.site_lon_deg,
            self.site_alt_m,
        )
        return [
            PhaseCentre(name, float(t), ra, dec, (i,))
            for i, (name, t, (ra, dec)) in enumerate(
                zip(self.field_names(), self.grid_jd, coords, strict=True)
            )
        ]

    def mid_centre(self) -> PhaseCentre:
        """The MS's own phase centre at its mid time (what ``ms_index`` ra/dec record):
        the only FIELD for ``meridian_mid``, else the FIELD of the integration nearest
        the mid time (the earlier one on a tie)."""
        centres = self.phase_centres()
        if len(centres) == 1:
            return centres[0]
        mid = (self.grid_jd[0] + self.grid_jd[-1]) / 2.0
        return centres[int(np.argmin(np.abs(self.grid_jd - mid)))]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: for a command backend's ``{inputs_json}`` and for events."""
        return {
            "inputs": [s.path for s in self.subbands],
            "descending_channels": [s.descending for s in self.subbands],
            "n_channels": self.n_channels,
            "n_integrations": self.n_integrations,
            "n_baselines": self.n_baselines,
            "n_rows": self.n_rows,
            "time_grid_jd": [float(t) for t in self.grid_jd],
            "integration_s": self.integration_s,
            "time_tolerance_s": self.tolerance_s,
            "max_time_offset_s": round(self.max_offset_s, 6),
            "subband_offsets_s": {
                f"sb{s.subband:02d}": round(s.offset_s, 6) for s in self.subbands
            },
            "missing_integrations": {
                f"sb{s.subband:02d}": list(s.missing) for s in self.subbands if s.missing
            },
            "pointing_dec_deg": math.degrees(self.pointing_dec_rad),
            "pointing_dec_source": self.pointing_dec_source,
            "phasing": self.phasing,
            "field_names": self.field_names(),
            "telescope_name": self.telescope_name,
        }


# -- the plan -----------------------------------------------------------------------------
def make_plan(
    files: list[tuple[str, int]],
    *,
    group_id: str = "",
    phasing: str = "meridian",
    pointing_dec_deg: float | None = None,
    time_tolerance_s: float | None = None,
    min_time_overlap: float = 0.5,
    telescope_name: str | None = None,
) -> ConversionPlan:
    """Decide the MS for a group of ``(path, subband_number)`` files (any order).

    ``pointing_dec_deg`` / ``telescope_name``: ``None`` or NaN / empty take them from
    the files. ``time_tolerance_s``: ``None`` or 0 means half an integration.
    Raises :class:`PermanentConversionError` for data errors, naming the file.
    """
    if phasing not in PHASINGS:
        raise PermanentConversionError(f"unknown phasing {phasing!r}; use one of {PHASINGS}")
    if not files:
        raise PermanentConversionError(f"group {group_id}: no files to convert")
    heads = [read_file_header(p, sb) for p, sb in files]
    heads.sort(key=lambda h: float(h.freq_hz.min()))
    subband_desc = channel_order(heads, group_id)
    ref_bls = common_baselines(heads, group_id)
    baselines = np.stack([ref_bls >> 20, ref_bls & ((1 << 20) - 1)], axis=1)

    integration_s = min(h.integration_s for h in heads)
    tol_s = time_tolerance_s if time_tolerance_s else integration_s / 2.0
    grid, per_sb_index = time_grid(heads, tol_s, min_time_overlap, group_id)

    subplans: list[SubbandPlan] = []
    chan = 0
    max_off = 0.0
    for h, desc, (utimes, gidx) in zip(heads, subband_desc, per_sb_index, strict=True):
        sp, off = _subband_plan(h, desc, utimes, gidx, grid, ref_bls, chan)
        subplans.append(sp)
        max_off = max(max_off, off)
        chan += h.freq_hz.size

    dec, source = pointing(heads, pointing_dec_deg, group_id)
    name = telescope_name or heads[0].telescope_name
    return ConversionPlan(
        group_id=group_id,
        subbands=tuple(subplans),
        grid_jd=grid,
        integration_s=integration_s,
        tolerance_s=tol_s,
        max_offset_s=max_off,
        baselines=baselines,
        pointing_dec_rad=dec,
        pointing_dec_source=source,
        phasing=phasing,
        telescope_name=name,
        site_lat_deg=heads[0].lat_deg,
        site_lon_deg=heads[0].lon_deg,
        site_alt_m=heads[0].alt_m,
        n_pols=len(heads[0].pols),
    )


def _subband_plan(
    h: FileHeader,
    desc: bool,
    utimes: np.ndarray,
    gidx: np.ndarray,
    grid: np.ndarray,
    ref_bls: np.ndarray,
    chan_start: int,
) -> tuple[SubbandPlan, float]:
    """Where each of one subband's rows goes in the MS, and its largest time offset (s)."""
    tpos = runs_searchsorted(utimes, h.time_jd)
    bpos = periodic_searchsorted(ref_bls, bl_keys(h))
    rows = gidx[tpos] * ref_bls.size + bpos
    seen = np.zeros(grid.size * ref_bls.size, np.bool_)
    seen[rows] = True  # a row twice marks one cell for two: fewer marks than rows
    if np.count_nonzero(seen) != rows.size:
        raise PermanentConversionError(
            f"sb{h.subband:02d} ({h.path}): a baseline appears twice in one "
            "integration; the file is damaged"
        )
    offs = (utimes - grid[gidx]) * SECONDS_PER_DAY
    plan = SubbandPlan(
        path=h.path,
        subband=h.subband,
        freq_hz=h.freq_hz,
        descending=desc,
        chan_start=chan_start,
        times_jd=utimes,
        grid_index=gidx,
        row_index=rows,
        missing=tuple(sorted(set(range(grid.size)) - {int(i) for i in gidx})),
        offset_s=float(np.median(offs)),
        pointing_dec_rad=h.pointing_dec_rad,
        channel_width=h.channel_width,
        spw_ids=h.spw_ids,
    )
    return plan, float(np.max(np.abs(offs)))


def plan_for_request(req: ConversionRequest) -> ConversionPlan:
    """:func:`make_plan` with the ``[convert]`` settings a request carries."""
    return make_plan(
        [(f.path, f.subband) for f in req.inputs],
        group_id=req.group_id,
        phasing=req.phasing,
        pointing_dec_deg=req.pointing_dec_deg,
        time_tolerance_s=req.time_tolerance_s,
        min_time_overlap=req.min_time_overlap,
        telescope_name=req.telescope_name,
    )
