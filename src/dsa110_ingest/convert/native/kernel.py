"""Per-block transforms from the file's visibilities to the MS's: phase, conjugation, order."""

from __future__ import annotations

import numpy as np

SPEED_OF_LIGHT = 299792458.0  # m/s, the value pyuvdata's astropy constant holds


def phase_rotate(vis: np.ndarray, delta_w_m: np.ndarray, freqs_hz: np.ndarray) -> None:
    """Rotate ``vis`` (rows, chans, pols) in place for a w change of ``delta_w_m`` per row.

    What re-phasing does to the data: ``vis *= exp(-2j pi (w_new - w_old) f / c)``, the
    factor pyuvdata's ``UVData._apply_w_proj`` applies. The phase is computed in float64
    (as pyuvdata does) and only the product is stored in the data's precision.
    """
    if not np.any(delta_w_m):
        return
    turns = np.multiply.outer(delta_w_m, freqs_hz * (1.0 / SPEED_OF_LIGHT))
    factor = np.exp((-2j * np.pi) * turns)
    vis *= factor[:, :, np.newaxis]


def to_ms_block(
    vis: np.ndarray,
    flags: np.ndarray,
    nsamples: np.ndarray,
    *,
    pol_order: np.ndarray,
    conj_rows: np.ndarray | None,
    conj_pol_order: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MS's DATA, FLAG, WEIGHT_SPECTRUM of one block, in CASA polarisation order.

    MS data are the complex conjugate of UVData's (pyuvdata's ``flip_conj`` convention:
    CASA's baseline is antenna2 - antenna1 seen from the other side). Rows that were
    conjugated to ant1 < ant2 in the plan are conjugated back, with their cross
    polarisations swapped (XY of a baseline is YX of its reverse).
    """
    if conj_rows is not None and conj_rows.any():
        sel = np.flatnonzero(conj_rows)
        vis[sel] = np.conj(vis[sel][:, :, conj_pol_order])
        flags[sel] = flags[sel][:, :, conj_pol_order]
        nsamples[sel] = nsamples[sel][:, :, conj_pol_order]
    np.conjugate(vis, out=vis)
    return vis[:, :, pol_order], flags[:, :, pol_order], nsamples[:, :, pol_order]
