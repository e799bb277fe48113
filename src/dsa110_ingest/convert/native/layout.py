"""Where each subband's channels and rows go in the MS, from the group's metadata."""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from dsa110_ingest.errors import ConversionError


@dataclass(frozen=True)
class SubbandLayout:
    path: str
    chan_start: int  # first MS channel this file fills
    n_chan: int
    reverse: bool  # the file stores its channels descending
    rows: np.ndarray | None  # MS row -> file row (-1: absent); None: the same rows


def channel_layout(path: str, ms_freqs: np.ndarray) -> tuple[int, int, bool]:
    """(first MS channel, channel count, reversed) of one file within ascending ``ms_freqs``."""
    with h5py.File(path, "r") as f:
        freqs = np.asarray(f["Header/freq_array"][()], dtype=np.float64).reshape(-1)
    idx = np.searchsorted(ms_freqs, freqs)
    ok = (idx < ms_freqs.size) & np.isclose(ms_freqs[np.minimum(idx, ms_freqs.size - 1)], freqs)
    if not ok.all():
        raise ConversionError(
            f"{path}: channel frequencies not found in the group's frequency axis; "
            "the group's files disagree about their channels, convert with backend "
            '"pyuvdata" to see which'
        )
    n = idx.size
    lo = int(idx.min())
    if n == 1 or np.array_equal(idx, np.arange(lo, lo + n)):
        return lo, n, False
    if np.array_equal(idx, np.arange(lo + n - 1, lo - 1, -1)):
        return lo, n, True
    raise ConversionError(
        f"{path}: its channels interleave with another file's instead of forming one "
        'contiguous band; the native writer needs contiguous subbands: use backend "pyuvdata"'
    )
