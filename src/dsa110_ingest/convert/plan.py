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
  astropy); :meth:`ConversionPlan.mid_centre` is what ``ms_index`` records.
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
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import structlog

from dsa110_ingest.errors import PermanentConversionError, TransientConversionError

if TYPE_CHECKING:
    from pyuvdata import UVData

    from dsa110_ingest.convert.request import ConversionRequest

log = structlog.get_logger("dsa110_ingest.convert")

PHASINGS = ("meridian", "meridian_mid")
SECONDS_PER_DAY = 86400.0
# two subbands "agree" on the pointing within this: far below any beam, far above
# float32 round-off of a radian value
DEC_AGREE_RAD = math.radians(1.0 / 3600.0)
# MOUNT values CASA's measures understand (ANTENNA.MOUNT); anything else becomes alt-az
CASA_MOUNTS = ("alt-az", "equatorial", "X-Y", "orbiting", "bizarre")


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

    def field_names(self) -> list[str]:
        if self.phasing == "meridian_mid":
            return ["meridian_icrs_mid"]
        return [f"meridian_icrs_t{i}" for i in range(self.n_integrations)]

    def phase_centres(self) -> list[PhaseCentre]:
        """The FIELDs of the MS, in order (ICRS; computed with astropy, offline)."""
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


# -- reading headers --------------------------------------------------------------------
@dataclass(frozen=True)
class _Header:
    path: str
    subband: int
    freq_hz: np.ndarray
    time_jd: np.ndarray  # per row
    ant1: np.ndarray
    ant2: np.ndarray
    integration_s: float
    pointing_dec_rad: float | None
    lat_deg: float
    lon_deg: float
    alt_m: float
    telescope_name: str
    pols: tuple[int, ...]


def _read_header(path: str, subband: int) -> _Header:
    def bad(what: str) -> PermanentConversionError:
        return PermanentConversionError(
            f"sb{subband:02d} ({path}): {what}; the file cannot be converted as it is "
            "(replace it, or remove it and convert the group without it)"
        )

    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise PermanentConversionError(
            f"sb{subband:02d}: {path} is gone; restore it, then `dsa110-ingest retry`"
        ) from None
    except OSError as e:
        raise bad(f"not a readable HDF5 file ({e})") from None
    with f:
        h = f.get("Header")
        if not isinstance(h, h5py.Group):
            raise bad("no Header group")

        def arr(key: str) -> np.ndarray:
            ds = h.get(key)
            if not isinstance(ds, h5py.Dataset):
                raise bad(f"Header/{key} is missing")
            return np.asarray(ds[()])

        def text(key: str, default: str) -> str:
            ds = h.get(key)
            if not isinstance(ds, h5py.Dataset):
                return default
            v = ds[()]
            return (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip()

        freq = arr("freq_array").reshape(-1).astype(np.float64)
        times = arr("time_array").reshape(-1).astype(np.float64)
        ant1 = arr("ant_1_array").reshape(-1).astype(np.int64)
        ant2 = arr("ant_2_array").reshape(-1).astype(np.int64)
        integ = arr("integration_time").reshape(-1).astype(np.float64)
        pols = tuple(int(p) for p in arr("polarization_array").reshape(-1))
        if not (times.size == ant1.size == ant2.size == integ.size) or times.size == 0:
            raise bad("time_array, ant_1_array, ant_2_array and integration_time differ in length")
        if freq.size == 0 or not np.all(np.isfinite(freq)):
            raise bad("freq_array is empty or not finite")
        if not np.all(np.isfinite(times)) or not np.all(integ > 0):
            raise bad("time_array is not finite or integration_time is not positive")
        dec: float | None = None
        ek = h.get("extra_keywords")
        if isinstance(ek, h5py.Group) and isinstance(ek.get("phase_center_dec"), h5py.Dataset):
            v = np.asarray(ek["phase_center_dec"][()]).reshape(-1)
            if v.size != 1 or not np.isfinite(v[0]) or abs(float(v[0])) > math.pi / 2:
                raise bad(f"extra_keywords/phase_center_dec = {v!r} is not a declination in rad")
            dec = float(v[0])
        return _Header(
            path=path,
            subband=subband,
            freq_hz=freq,
            time_jd=times,
            ant1=ant1,
            ant2=ant2,
            integration_s=float(np.median(integ)),
            pointing_dec_rad=dec,
            lat_deg=float(arr("latitude").reshape(-1)[0]),
            lon_deg=float(arr("longitude").reshape(-1)[0]),
            alt_m=float(arr("altitude").reshape(-1)[0]),
            telescope_name=text("telescope_name", "unknown"),
            pols=pols,
        )


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
    heads = [_read_header(p, sb) for p, sb in files]
    heads.sort(key=lambda h: float(h.freq_hz.min()))

    # channel order and frequency overlap
    subband_desc: list[bool] = []
    for h in heads:
        d = np.diff(h.freq_hz)
        if d.size and np.all(d < 0):
            subband_desc.append(True)
        elif d.size == 0 or np.all(d > 0):
            subband_desc.append(False)
        else:
            raise PermanentConversionError(
                f"sb{h.subband:02d} ({h.path}): channel frequencies are neither ascending "
                "nor descending (duplicate or shuffled channels); the file is damaged"
            )
    for a, b in itertools.pairwise(heads):
        if float(b.freq_hz.min()) <= float(a.freq_hz.max()):
            raise PermanentConversionError(
                f"group {group_id}: sb{a.subband:02d} ({a.path}) and sb{b.subband:02d} "
                f"({b.path}) overlap in frequency ({a.freq_hz.min() / 1e6:.3f}-"
                f"{a.freq_hz.max() / 1e6:.3f} MHz vs {b.freq_hz.min() / 1e6:.3f}-"
                f"{b.freq_hz.max() / 1e6:.3f} MHz): one of them is a copy under the wrong "
                "name; remove it and `dsa110-ingest retry` the group"
            )
    if len({h.pols for h in heads}) > 1:
        raise PermanentConversionError(
            f"group {group_id}: subbands disagree on polarizations: "
            + ", ".join(f"sb{h.subband:02d} {list(h.pols)}" for h in heads)
        )

    # baselines: every subband must have the same set
    def bl_keys(h: _Header) -> np.ndarray:
        return h.ant1 * (1 << 20) + h.ant2

    ref_bls = np.unique(bl_keys(heads[0]))
    for h in heads[1:]:
        bls = np.unique(bl_keys(h))
        if bls.size != ref_bls.size or not np.array_equal(bls, ref_bls):
            raise PermanentConversionError(
                f"group {group_id}: sb{h.subband:02d} ({h.path}) has {bls.size} baselines, "
                f"sb{heads[0].subband:02d} has {ref_bls.size} (or other antenna pairs): the "
                "files do not come from one correlator configuration"
            )
    baselines = np.stack([ref_bls >> 20, ref_bls & ((1 << 20) - 1)], axis=1)

    integration_s = min(h.integration_s for h in heads)
    tol_s = time_tolerance_s if time_tolerance_s else integration_s / 2.0
    grid, per_sb_index = _time_grid(heads, tol_s, min_time_overlap, group_id)

    subplans: list[SubbandPlan] = []
    chan = 0
    max_off = 0.0
    for h, desc, (utimes, gidx) in zip(heads, subband_desc, per_sb_index, strict=True):
        tpos = np.searchsorted(utimes, h.time_jd)
        bpos = np.searchsorted(ref_bls, bl_keys(h))
        rows = gidx[tpos] * ref_bls.size + bpos
        if np.unique(rows).size != rows.size:
            raise PermanentConversionError(
                f"sb{h.subband:02d} ({h.path}): a baseline appears twice in one "
                "integration; the file is damaged"
            )
        offs = (utimes - grid[gidx]) * SECONDS_PER_DAY
        max_off = max(max_off, float(np.max(np.abs(offs))))
        subplans.append(
            SubbandPlan(
                path=h.path,
                subband=h.subband,
                freq_hz=h.freq_hz,
                descending=desc,
                chan_start=chan,
                times_jd=utimes,
                grid_index=gidx,
                row_index=rows,
                missing=tuple(sorted(set(range(grid.size)) - {int(i) for i in gidx})),
                offset_s=float(np.median(offs)),
                pointing_dec_rad=h.pointing_dec_rad,
            )
        )
        chan += h.freq_hz.size

    dec, source = _pointing(heads, pointing_dec_deg, group_id)
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


def _pointing(heads: list[_Header], override_deg: float | None, group_id: str) -> tuple[float, str]:
    if override_deg is not None and not math.isnan(override_deg):
        return math.radians(override_deg), "config"
    decs = [h.pointing_dec_rad for h in heads]
    have = [d for d in decs if d is not None]
    if not have:
        lat = heads[0].lat_deg
        log.warning(
            "convert.pointing_fallback",
            group_id=group_id,
            dec_deg=lat,
            hint="the files carry no Header/extra_keywords/phase_center_dec: phased to the "
            "meridian at the site latitude (zenith); set [convert] pointing_dec_deg if wrong",
        )
        return math.radians(lat), "fallback"
    ref = have[0]
    if len(have) != len(decs) or any(abs(d - ref) > DEC_AGREE_RAD for d in have):
        listing = ", ".join(
            f"sb{h.subband:02d}="
            + ("none" if h.pointing_dec_rad is None else f"{math.degrees(h.pointing_dec_rad):.4f}")
            for h in heads
        )
        raise PermanentConversionError(
            f"group {group_id}: subbands disagree on the pointing declination "
            f"(extra_keywords/phase_center_dec, deg: {listing}); fix the files, or set "
            "[convert] pointing_dec_deg and `dsa110-ingest retry` the group"
        )
    return float(np.median(have)), "file"


def _time_grid(
    heads: list[_Header], tol_s: float, min_overlap: float, group_id: str
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The MS's integration grid and, per subband, (distinct times, grid index of each)."""
    tol = tol_s / SECONDS_PER_DAY
    uniq = [np.unique(h.time_jd) for h in heads]
    allt = np.concatenate(uniq)
    owner = np.concatenate([np.full(u.size, k) for k, u in enumerate(uniq)])
    order = np.argsort(allt, kind="stable")
    cluster = np.empty(allt.size, dtype=np.int64)
    cid, first, members = -1, -math.inf, set[int]()
    for j in order:
        t, k = allt[j], int(owner[j])
        # same integration: within the tolerance of the cluster's first time and not a
        # second time of one subband (a subband's own integrations are distinct)
        if t - first >= tol or k in members:
            cid += 1
            first, members = t, set()
        members.add(k)
        cluster[j] = cid
    n = cid + 1
    grid = np.array([float(np.median(allt[cluster == c])) for c in range(n)])
    counts = np.bincount(cluster, minlength=n)

    # the span most subbands cover; a subband mostly outside it is another observation
    major = np.flatnonzero(counts * 2 > len(heads))
    per_sb: list[tuple[np.ndarray, np.ndarray]] = []
    start = 0
    for u in uniq:
        per_sb.append((u, cluster[start : start + u.size]))
        start += u.size
    if major.size == 0:
        lo, hi = math.inf, -math.inf
    else:
        lo, hi = grid[major[0]] - tol, grid[major[-1]] + tol
    strays = []
    for h, (u, _) in zip(heads, per_sb, strict=True):
        inside = float(np.mean((u >= lo) & (u <= hi)))
        if inside < min_overlap:
            ref = grid[major[0]] if major.size else float(np.median(allt))
            strays.append(
                f"sb{h.subband:02d} ({h.path}) starts {(u[0] - ref) * SECONDS_PER_DAY:+.1f} s "
                f"from the group ({inside:.0%} of its integrations overlap)"
            )
    if strays:
        raise PermanentConversionError(
            f"group {group_id}: time ranges do not overlap: {'; '.join(strays)} "
            f"(needs at least [convert] min_time_overlap = {min_overlap:g}); such a file "
            "belongs to another observation: move it out and `dsa110-ingest retry` the group"
        )
    return grid, per_sb


# -- coordinates ---------------------------------------------------------------------------
def meridian_icrs(
    times_jd: np.ndarray, dec_rad: float, lat_deg: float, lon_deg: float, alt_m: float
) -> list[tuple[float, float]]:
    """ICRS (ra, dec) in radians of hour angle 0, declination ``dec_rad`` (HADec as
    observed at the site, no refraction) at each UTC time (JD).

    SOFA/ERFA's observed -> ICRS transform (``atoc13``, what astropy uses underneath)
    with UT1 - UTC and polar motion taken as zero: within ~1 arcsec of astropy's
    ``HADec -> ICRS`` with full IERS tables (tests/convert/test_plan.py checks it), but
    in milliseconds instead of the seconds astropy spends parsing IERS tables in every
    worker process, and never online. The FIELD table records exactly these centres."""
    try:
        import erfa
    except ImportError as e:
        raise TransientConversionError(
            "computing phase centres needs pyerfa (with the extra 'convert'): "
            "pip install 'dsa110-ingest[convert]'"
        ) from e
    jd = np.atleast_1d(np.asarray(times_jd, dtype=np.float64))
    day = np.floor(jd)
    ra, dec = erfa.atoc13(
        "H",
        np.zeros(jd.size),
        np.full(jd.size, dec_rad),
        day,
        jd - day,
        0.0,  # UT1 - UTC
        math.radians(lon_deg),
        math.radians(lat_deg),
        alt_m,
        0.0,  # polar motion x
        0.0,  # polar motion y
        0.0,  # pressure: no refraction
        0.0,
        0.0,
        0.0,
    )
    return [(float(r), float(d)) for r, d in zip(ra, dec, strict=True)]


# -- pyuvdata side: reading, combining, phasing --------------------------------------------
def _uvdata() -> type[UVData]:
    try:
        from pyuvdata import UVData
    except ImportError as e:
        raise TransientConversionError(
            "backend 'pyuvdata' needs the extra 'convert': pip install 'dsa110-ingest[convert]'"
        ) from e
    return UVData


def read_aligned(plan: ConversionPlan, k: int, *, read_data: bool = True) -> UVData:
    """Subband ``k`` of the plan (ascending frequency) as a ``UVData`` whose rows are the
    MS's rows (``plan.n_rows``, integration-major), times on the grid, channels ascending.
    Rows the file lacks are copies of the baseline's metadata, flagged with zero weight."""
    sb = plan.subbands[k]
    uv = _uvdata()()
    with warnings.catch_warnings():
        # the files carry the site's location; pyuvdata's telescope lookup would go online
        warnings.simplefilter("ignore")
        try:
            uv.read(sb.path, file_type="uvh5", read_data=read_data, run_check=False)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PermanentConversionError(f"{sb.name}: pyuvdata cannot read it: {e}") from e
    if uv.Nblts != sb.row_index.size:
        raise PermanentConversionError(
            f"{sb.name}: pyuvdata reads {uv.Nblts} rows, the header has {sb.row_index.size}"
        )
    # source row of every MS row: the file row mapped there, else any row of the baseline
    src = np.full(plan.n_rows, -1, dtype=np.int64)
    src[sb.row_index] = np.arange(sb.row_index.size)
    padded = src < 0
    if padded.any():
        first_of_bl = np.full(plan.n_baselines, -1, dtype=np.int64)
        bl_of_row = sb.row_index % plan.n_baselines
        first_of_bl[bl_of_row[::-1]] = np.arange(sb.row_index.size)[::-1]
        src[padded] = first_of_bl[np.flatnonzero(padded) % plan.n_baselines]
    _take_rows(uv, src)
    uv.time_array = np.repeat(plan.grid_jd, plan.n_baselines)
    uv.Ntimes = plan.n_integrations
    uv.set_lsts_from_time_array()
    # apparent coordinates of the (unprojected) centre follow the new times
    uv._set_app_coords_helper()
    if read_data and padded.any():
        uv.data_array[padded] = 0
        uv.flag_array[padded] = True
        uv.nsample_array[padded] = 0
    if sb.descending:
        uv.reorder_freqs(channel_order="freq", run_check=False)
    return uv


def _take_rows(uv: UVData, idx: np.ndarray) -> None:
    """Index every baseline-time parameter of ``uv`` by ``idx`` (repeats allowed)."""
    for attr in uv:
        param = getattr(uv, attr)
        form = getattr(param, "form", None)
        if param.value is None or not isinstance(form, tuple) or "Nblts" not in form:
            continue
        param.value = np.take(np.asarray(param.value), idx, axis=form.index("Nblts"))
    uv.Nblts = int(idx.size)
    uv.Nbls = int(np.unique(uv.baseline_array).size)


def combine(parts: list[UVData]) -> UVData:
    """Subbands from :func:`read_aligned`, in plan order, as one object along frequency.
    Their rows are the same (grid x baselines); per-row metadata (drift-scan UVWs,
    integration times, apparent coordinates) are taken from the first, since phasing
    recomputes UVWs from the antenna positions anyway."""
    first = parts[0]
    per_row = [
        attr
        for attr in first
        if isinstance(getattr(getattr(first, attr), "form", None), tuple)
        and "Nblts" in getattr(first, attr).form
        and attr not in ("_data_array", "_flag_array", "_nsample_array")
    ]
    for p in parts[1:]:
        for attr in per_row:
            getattr(p, attr).value = getattr(first, attr).value
    if len(parts) == 1:
        return first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = first.fast_concat(parts[1:], axis="freq", inplace=False, run_check=False)
    assert out is not None
    return out


def apply_phasing(uv: UVData, plan: ConversionPlan) -> list[PhaseCentre]:
    """Phase ``uv`` (rows as in :func:`read_aligned`) to the plan's centres; UVWs are
    recomputed from antenna positions. Works with and without data loaded."""
    centres = plan.phase_centres()
    rows_int = np.arange(uv.Nblts) // plan.n_baselines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in centres:
            mask = np.isin(rows_int, c.integrations)
            uv.phase(
                lon=c.ra_rad,
                lat=c.dec_rad,
                epoch="J2000",
                phase_frame="icrs",
                cat_type="sidereal",
                cat_name=c.name,
                select_mask=None if mask.all() else mask,
                use_ant_pos=True,
            )
    return centres


def phased_metadata(plan: ConversionPlan) -> UVData:
    """The whole group as one metadata-only ``UVData``: MS rows and channels, phased.
    Its ``uvw_array`` is the MS's UVW column; its phase-centre catalog the FIELD table."""
    uv = combine([read_aligned(plan, k, read_data=False) for k in range(len(plan.subbands))])
    apply_phasing(uv, plan)
    uv.telescope.name = plan.telescope_name
    return uv


# -- verification --------------------------------------------------------------------------
def verify_ms(path: Path, plan: ConversionPlan) -> None:
    """Check a written MS against the plan before it is renamed into place: rows =
    baselines x integrations, channels ascending and as planned, one FIELD per phase
    centre with the planned names, DATA shape (rows, channels, pols), valid MOUNT, and
    DATA not all zero. Raises :class:`PermanentConversionError` saying what is wrong."""
    try:
        from casacore.tables import table
    except ImportError as e:
        raise TransientConversionError(
            "verifying a Measurement Set needs python-casacore (the extra 'convert')"
        ) from e

    def fail(what: str) -> PermanentConversionError:
        return PermanentConversionError(f"the written MS {path} failed verification: {what}")

    try:
        with table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
            freqs = np.concatenate([np.asarray(r).reshape(-1) for r in spw.getcol("CHAN_FREQ")])
        with table(str(path / "FIELD"), ack=False) as fld:
            names = list(fld.getcol("NAME"))
        with table(str(path / "ANTENNA"), ack=False) as ant:
            mounts = set(ant.getcol("MOUNT"))
        with table(str(path), ack=False) as main:
            nrows = main.nrows()
    except Exception as e:  # casacore raises bare RuntimeError for any damage
        raise fail(f"not a readable Measurement Set: {e}") from e
    # the cheap checks first: reading DATA of rows nobody wrote can crash casacore
    if nrows != plan.n_rows:
        raise fail(
            f"{nrows} rows, expected {plan.n_baselines} baselines x {plan.n_integrations} "
            f"integrations = {plan.n_rows}"
        )
    if freqs.size != plan.n_channels or np.any(np.diff(freqs) <= 0):
        raise fail(f"{freqs.size} channels (expected {plan.n_channels}), or not ascending")
    if not np.allclose(freqs, plan.freq_hz, rtol=0, atol=1.0):
        raise fail("channel frequencies differ from the files'")
    if names != plan.field_names():
        raise fail(f"FIELD names {names[:3]}... != {plan.field_names()[:3]}...")
    if bad := {m for m in mounts if m not in CASA_MOUNTS}:
        raise fail(f"ANTENNA.MOUNT {sorted(bad)} is not one CASA knows {CASA_MOUNTS}")
    want = (plan.n_channels, plan.n_pols)
    try:
        with table(str(path), ack=False) as main:
            for start in range(0, nrows, 4096):
                block = main.getcol("DATA", startrow=start, nrow=min(4096, nrows - start))
                if block.shape[1:] != want:
                    raise fail(f"DATA cells are {block.shape[1:]}, expected {want}")
                if np.any(block != 0):
                    return
    except PermanentConversionError:
        raise
    except Exception as e:  # casacore raises bare RuntimeError for any damage
        raise fail(f"DATA is not readable: {e}") from e
    raise fail("DATA is all zero")
