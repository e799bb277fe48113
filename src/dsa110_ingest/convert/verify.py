"""The written Measurement Set checked against the recipe before it is renamed into place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dsa110_ingest.errors import PermanentConversionError, TransientConversionError

if TYPE_CHECKING:
    from dsa110_ingest.convert.plan import ConversionPlan

# MOUNT values CASA's measures understand (ANTENNA.MOUNT); anything else becomes alt-az
CASA_MOUNTS = ("alt-az", "equatorial", "X-Y", "orbiting", "bizarre")
# DATA read back (verification, imaging columns) in blocks of about this many bytes: a
# fixed row count would be 100 MB at real DSA-110 size (768 channels, 4 pols), above the
# writer's own memory bound
READ_BLOCK_BYTES = 16 << 20


def rows_per_read(n_channels: int, n_pols: int) -> int:
    """Rows of complex64 DATA in about ``READ_BLOCK_BYTES``."""
    return max(1, READ_BLOCK_BYTES // (8 * max(1, n_channels * n_pols)))


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
            step = rows_per_read(plan.n_channels, plan.n_pols)
            for start in range(0, nrows, step):
                block = main.getcol("DATA", startrow=start, nrow=min(step, nrows - start))
                if block.shape[1:] != want:
                    raise fail(f"DATA cells are {block.shape[1:]}, expected {want}")
                if np.any(block != 0):
                    return
    except PermanentConversionError:
        raise
    except Exception as e:  # casacore raises bare RuntimeError for any damage
        raise fail(f"DATA is not readable: {e}") from e
    raise fail("DATA is all zero")
