"""``kernel.ms_block`` in one pass over the block, compiled with numba (cached on disk).

The numpy version (convert/native/kernel.py, the reference the tests compare with) walks
a block several times: phase factors, rotation, conjugation, then a copy that reverses
the channels and reorders the polarisations; reversing channels of a (rows, chans, pols)
array is an element-by-element copy with a negative stride. Profiled on a 64-antenna
group these passes were half the writer's CPU time. Here each visibility is read once,
rotated, conjugated and stored at its MS position, and the per-row weight extremes for
WEIGHT are taken on the way; output buffers are reused from block to block.
numba comes with pyuvdata (its baseline kernels); without it the numpy path is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsa110_ingest.convert.native.kernel import SPEED_OF_LIGHT

_KERNEL: Any = None
_TRIED = False
_WARM = False


def _compile() -> Any:
    global _KERNEL, _TRIED
    if _TRIED:
        return _KERNEL
    _TRIED = True
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def ms_block_fused(  # type: ignore[no-untyped-def]
        vis, flags, nsa, z0, step, uneven, fac, descending, pol_order, conj_rows,
        conj_pol_order, out_vis, out_flags, out_nsa, w_min, w_max,
    ):  # fmt: skip
        # one row at a time: its phase factors (a running product from z0 by step, as
        # kernel.phase_factors), the row's source polarisations, then one simple loop per
        # output (branch-free inner loops: measured 26 % faster than one loop doing all)
        n_rows, n_chan, n_pol = vis.shape
        src = np.empty(n_pol, np.int64)
        for r in range(n_rows):
            if uneven.shape[0]:  # uneven channels: the factors computed exactly
                fac[:] = uneven[r]
            else:
                z = z0[r]
                st = step[r]
                for k in range(n_chan):
                    fac[k] = np.complex64(z)
                    z = z * st
            flip = conj_rows[r]
            for j in range(n_pol):
                q = pol_order[j]
                src[j] = conj_pol_order[q] if flip else q
            for k in range(n_chan):
                kk = n_chan - 1 - k if descending else k
                f = fac[k]
                if flip:  # conjugated to ant1 < ant2 by the plan: back, then MS's conj
                    for j in range(n_pol):
                        out_vis[r, kk, j] = vis[r, k, src[j]] * f
                else:
                    for j in range(n_pol):
                        out_vis[r, kk, j] = np.conj(vis[r, k, src[j]] * f)
            for k in range(n_chan):
                kk = n_chan - 1 - k if descending else k
                for j in range(n_pol):
                    out_flags[r, kk, j] = flags[r, k, src[j]]
            for j in range(n_pol):
                lo = w_min[r, j]
                hi = w_max[r, j]
                q = src[j]
                for k in range(n_chan):
                    kk = n_chan - 1 - k if descending else k
                    w = nsa[r, k, q]
                    out_nsa[r, kk, j] = w
                    lo = min(lo, w)
                    hi = max(hi, w)
                w_min[r, j] = lo
                w_max[r, j] = hi

    _KERNEL = ms_block_fused
    return _KERNEL


def available() -> bool:
    return _compile() is not None


def loaded() -> bool:
    """The kernel is compiled (or loaded from numba's cache) in this process already: a
    conversion forked from the template (convert/template.py) gets it for free."""
    return _WARM


def warm() -> bool:
    """Load numba and the kernel now, for the argument types the writer passes (a forked
    child then calls it without compiling); False without numba."""
    global _WARM
    if _compile() is None:
        return False
    n, nc, npol = 1, 2, 2
    ms_block(
        np.zeros((n, nc, npol), np.complex64),
        np.zeros((n, nc, npol), np.bool_),
        np.ones((n, nc, npol), np.float32),
        delta_w_m=np.zeros(n),
        freqs_hz=np.array([1.0e9, 1.1e9]),
        descending=False,
        pol_order=np.arange(npol),
        conj_rows=None,
        conj_pol_order=np.arange(npol),
        w_min=np.full((n, npol), np.inf, np.float32),
        w_max=np.full((n, npol), -np.inf, np.float32),
        buffers=Buffers(),
    )
    _WARM = True
    return True


class Buffers:
    """Output arrays of the largest block, reused (a view of the first rows per block)."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def get(self, rows: int, chans: int, pols: int) -> tuple[np.ndarray, ...]:
        have = self._bufs.get((chans, pols))
        if have is None or have[0].shape[0] < rows:
            have = (
                np.empty((rows, chans, pols), np.complex64),
                np.empty((rows, chans, pols), np.bool_),
                np.empty((rows, chans, pols), np.float32),
            )
            self._bufs[(chans, pols)] = have
        return tuple(a[:rows] for a in have)


def ms_block(
    vis: np.ndarray,
    flags: np.ndarray,
    nsamples: np.ndarray,
    *,
    delta_w_m: np.ndarray,
    freqs_hz: np.ndarray,
    descending: bool,
    pol_order: np.ndarray,
    conj_rows: np.ndarray | None,
    conj_pol_order: np.ndarray,
    w_min: np.ndarray,
    w_max: np.ndarray,
    buffers: Buffers,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DATA, FLAG, WEIGHT_SPECTRUM of the block as ``kernel.ms_block`` gives them; also
    lowers ``w_min`` / raises ``w_max`` (rows, pols; CASA order) to the block's nsamples
    extremes over its channels. The outputs are views of ``buffers``: valid until the
    next call."""
    fn = _compile()
    if fn is None:
        raise RuntimeError("numba is not available")
    n, nc, npol = vis.shape
    freqs = np.ascontiguousarray(freqs_hz, dtype=np.float64)
    z0, step, uneven = _row_factors(np.asarray(delta_w_m, dtype=np.float64), freqs)
    conj = np.zeros(n, np.bool_) if conj_rows is None else np.asarray(conj_rows, np.bool_)
    out = buffers.get(n, nc, npol)
    fn(
        np.ascontiguousarray(vis),
        np.ascontiguousarray(flags),
        np.ascontiguousarray(nsamples, dtype=np.float32),
        z0,
        step,
        uneven,
        np.empty(nc, np.complex64),
        bool(descending),
        np.ascontiguousarray(pol_order, dtype=np.int64),
        np.ascontiguousarray(conj),
        np.ascontiguousarray(conj_pol_order, dtype=np.int64),
        *out,
        w_min,
        w_max,
    )
    return out


def _row_factors(
    delta_w_m: np.ndarray, freqs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's phase factor at the first channel and from one channel to the next
    (evenly spaced channels: every DSA-110 subband), and for unevenly spaced channels
    every factor, exactly (rows, chans; else an empty array). numpy's vectorised complex
    exponential costs about half of numba's scalar one."""
    scale = (-2.0 * np.pi / SPEED_OF_LIGHT) * delta_w_m
    z0 = np.exp(1j * scale * freqs[0])
    d = np.diff(freqs)
    df = float(d[0]) if d.size else 0.0
    empty = np.empty((0, freqs.size), np.complex64)
    if freqs.size <= 2 or np.allclose(d, df, rtol=1e-9, atol=0.0):
        return z0, np.exp(1j * scale * df), empty
    exact = np.exp(1j * np.multiply.outer(scale, freqs)).astype(np.complex64)
    return z0, np.ones_like(z0), exact
