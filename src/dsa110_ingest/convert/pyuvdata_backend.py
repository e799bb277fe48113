"""pyuvdata + python-casacore: 16 UVH5 files -> one Measurement Set, per convert/plan.py.

Each subband is read on the plan's rows (time grid aligned, missing integrations
flagged), in ascending channel order; the subbands are joined along frequency, phased
to the meridian at the pointing declination and written with pyuvdata's ``write_ms``.
The MS is then finished the way upstream's ``configure_ms_for_imaging`` does
(ANTENNA.MOUNT, telescope name, optional imaging columns) and verified by the worker.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.backends import require_casacore
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.convert.verify import rows_per_read
from dsa110_ingest.errors import PermanentConversionError


def convert(
    req: ConversionRequest, tmp_output: Path, plan: recipe.ConversionPlan
) -> dict[str, Any]:
    require_casacore("pyuvdata")
    parts = [recipe.read_aligned(plan, k) for k in range(len(plan.subbands))]
    uv = recipe.combine(parts)
    del parts
    centres = recipe.apply_phasing(uv, plan)
    uv.telescope.name = plan.telescope_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            uv.write_ms(str(tmp_output), clobber=False, run_check=False)
        except ValueError as e:
            raise PermanentConversionError(f"pyuvdata cannot write the group: {e}") from e
    finish_ms(tmp_output, plan, imaging_columns=req.imaging_columns)
    mid = plan.mid_centre() if len(centres) > 1 else centres[0]
    return {
        "n_channels": int(uv.Nfreqs),
        "n_rows": int(uv.Nblts),
        "freq_min_hz": float(uv.freq_array.min()),
        "freq_max_hz": float(uv.freq_array.max()),
        "ra_deg": mid.ra_deg,
        "dec_deg": mid.dec_deg,
    }


def finish_ms(path: Path, plan: recipe.ConversionPlan, *, imaging_columns: bool) -> None:
    """What CASA calibration and imaging expect beyond pyuvdata's MS: a MOUNT CASA knows,
    the configured telescope name, and on request MODEL_DATA and CORRECTED_DATA (as
    upstream's ``configure_ms_for_imaging``; WEIGHT_SPECTRUM is always there)."""
    from casacore.tables import addImagingColumns, table

    with table(str(path / "ANTENNA"), readonly=False, ack=False) as ant:
        mounts = list(ant.getcol("MOUNT"))
        fixed = [m if m in recipe.CASA_MOUNTS else "alt-az" for m in mounts]
        if fixed != mounts:
            ant.putcol("MOUNT", fixed)
    with table(str(path / "OBSERVATION"), readonly=False, ack=False) as obs:
        obs.putcol("TELESCOPE_NAME", [plan.telescope_name] * obs.nrows())
    if not imaging_columns:
        return
    # pyuvdata already writes WEIGHT_SPECTRUM (= nsample, 0 on flagged padding). The new
    # columns come without values, which CASA refuses: start them as upstream does
    # (MODEL_DATA = 0, CORRECTED_DATA = DATA, natural IMAGING_WEIGHT), in row blocks
    addImagingColumns(str(path), ack=False)
    with table(str(path), readonly=False, ack=False) as main:
        step = rows_per_read(plan.n_channels, plan.n_pols)
        for start in range(0, main.nrows(), step):
            n = min(step, main.nrows() - start)
            data = main.getcol("DATA", startrow=start, nrow=n)
            main.putcol("CORRECTED_DATA", data, startrow=start, nrow=n)
            main.putcol("MODEL_DATA", np.zeros_like(data), startrow=start, nrow=n)
            if "IMAGING_WEIGHT" in main.colnames():
                ws = main.getcol("WEIGHT_SPECTRUM", startrow=start, nrow=n)
                main.putcol("IMAGING_WEIGHT", ws.mean(axis=2), startrow=start, nrow=n)


def validate_ms(path: Path, n_channels: int) -> str | None:
    """None when ``path`` is a readable MS with ``n_channels`` ascending channels; else
    why not. Used for an MS found already in place (the full check is plan.verify_ms)."""
    try:
        from casacore.tables import table
    except ImportError:
        return "python-casacore is not installed; cannot validate"
    try:
        with table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
            nchan = int(sum(spw.getcol("NUM_CHAN")))
        with table(str(path), ack=False) as main:
            nrows = main.nrows()
    except Exception as e:  # noqa: BLE001 -- casacore raises bare RuntimeError for any damage
        return f"not a readable Measurement Set: {e}"
    if nchan != n_channels:
        return f"has {nchan} channels, expected {n_channels}"
    if nrows == 0:
        return "has no rows"
    return None
