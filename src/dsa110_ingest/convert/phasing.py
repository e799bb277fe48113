"""The recipe's phasing on pyuvdata objects: phase centres, aligned subbands, combining.

The pyuvdata backend converts through these; the native writer plans its metadata with
:func:`read_aligned` and phases with ERFA directly (convert/native/astrometry.py)."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from dsa110_ingest.errors import PermanentConversionError, TransientConversionError

if TYPE_CHECKING:
    from pyuvdata import UVData

    from dsa110_ingest.convert.plan import ConversionPlan, PhaseCentre


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


def read_aligned(
    plan: ConversionPlan,
    k: int,
    *,
    read_data: bool = True,
    uvdata_class: type[UVData] | None = None,
) -> UVData:
    """Subband ``k`` of the plan (ascending frequency) as a ``UVData`` whose rows are the
    MS's rows (``plan.n_rows``, integration-major), times on the grid, channels ascending.
    Rows the file lacks are copies of the baseline's metadata, flagged with zero weight.
    ``uvdata_class``: a ``UVData`` subclass to read into (the native writer's computes
    LSTs with ERFA)."""
    sb = plan.subbands[k]
    uv = (uvdata_class or _uvdata())()
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
    src = plan.source_rows(k)
    padded = np.ones(plan.n_rows, bool)
    padded[sb.row_index] = False
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
