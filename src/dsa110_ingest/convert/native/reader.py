"""Row blocks of one subband file, read with h5py in a thread ahead of the writer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import numpy as np

from dsa110_ingest.errors import ConversionError, PermanentConversionError


@dataclass(frozen=True)
class Block:
    """Rows ``[start, stop)`` of the MS, read from one subband file (channels as stored)."""

    source: int
    start: int
    stop: int
    vis: np.ndarray  # (rows, chans, pols) complex64
    flags: np.ndarray  # (rows, chans, pols) bool
    nsamples: np.ndarray  # (rows, chans, pols) float32


def _squeeze_spw(a: np.ndarray) -> np.ndarray:
    # old-style UVH5 keeps a length-1 spw axis: (Nblts, 1, Nfreqs, Npols)
    return a[:, 0] if a.ndim == 4 else a


def _read_vis(ds: h5py.Dataset, sel: slice | np.ndarray) -> np.ndarray:
    if ds.dtype.names:  # integer correlator output stored as a compound {r, i}
        raw = ds[sel]
        out = np.empty(raw.shape, np.complex64)
        out.real = raw["r"]
        out.imag = raw["i"]
        return out
    return _read_as(ds, sel, np.complex64)


def _read_as(ds: h5py.Dataset, sel: slice | np.ndarray, dtype: type) -> np.ndarray:
    # h5py's astype wrapper costs ~20 % of a read even when nothing is converted
    return ds[sel] if ds.dtype == dtype else ds.astype(dtype)[sel]


def read_rows(
    f: h5py.File, rows: np.ndarray | None, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visibilities, flags, nsamples of MS rows ``[start, stop)``.

    ``rows`` maps MS rows to file rows (-1: the file has no such row; it becomes flagged
    with zero weight); ``None`` means the file's rows are the MS's rows.
    """
    d = f["Data"]
    vis_ds, flag_ds, nsa_ds = d["visdata"], d["flags"], d["nsamples"]
    if rows is None:
        sel: slice | np.ndarray = slice(start, stop)
        vis = _squeeze_spw(_read_vis(vis_ds, sel))
        flags = _squeeze_spw(flag_ds[sel])
        nsa = _squeeze_spw(_read_as(nsa_ds, sel, np.float32))
        return vis, flags, nsa
    want = rows[start:stop]
    have = want >= 0
    n = stop - start
    shape_tail = vis_ds.shape[-2:]
    vis = np.zeros((n, *shape_tail), np.complex64)
    flags = np.ones((n, *shape_tail), bool)
    nsa = np.zeros((n, *shape_tail), np.float32)
    if have.any():
        src = want[have]
        lo, hi = int(src.min()), int(src.max()) + 1
        # one contiguous read of the span, then a gather: h5py's point selections are slow
        # and the mapped rows of a block are near each other (a time shift of the grid)
        vis[have] = _squeeze_spw(_read_vis(vis_ds, slice(lo, hi)))[src - lo]
        flags[have] = _squeeze_spw(flag_ds[lo:hi])[src - lo]
        nsa[have] = _squeeze_spw(_read_as(nsa_ds, slice(lo, hi), np.float32))[src - lo]
    return vis, flags, nsa


_DONE = object()


def _blocks(
    paths: list[str], row_maps: list[np.ndarray | None], n_rows: int, block_rows: int
) -> Iterator[Block]:
    for i, path in enumerate(paths):
        try:
            with h5py.File(path, "r") as f:
                for start in range(0, n_rows, block_rows):
                    end = min(start + block_rows, n_rows)
                    yield Block(i, start, end, *read_rows(f, row_maps[i], start, end))
        except (KeyError, ValueError, TypeError, IndexError) as e:
            # a dataset missing or of the wrong shape: the file is wrong, not the node
            raise PermanentConversionError(
                f"{path}: its visibilities cannot be read ({e}); the file is damaged: "
                "replace it, or remove it and convert the group without it"
            ) from e
        except OSError as e:  # an I/O error may pass (NFS, a disk hiccup): retried
            raise ConversionError(
                f"reading visibilities from {path} failed: {e}; check the file "
                "(`h5ls -r` it) or re-copy it from the correlator node"
            ) from e


def blocks_ahead(
    paths: list[str],
    row_maps: list[np.ndarray | None],
    n_rows: int,
    block_rows: int,
    depth: int = 2,
) -> Iterator[Block]:
    """Every block of every subband in order, read by a thread up to ``depth`` blocks ahead.

    Disk (or page-cache copy and decompression) and the writer's CPU work overlap; the
    bounded queue is what keeps memory at a few blocks whatever the group's size.
    ``depth`` 0 reads in the caller's thread (to measure what the overlap buys).
    """
    if depth <= 0:
        yield from _blocks(paths, row_maps, n_rows, block_rows)
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in _blocks(paths, row_maps, n_rows, block_rows):
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, not swallowed
            q.put(e)
            return
        q.put(_DONE)

    t = threading.Thread(target=work, name="ms-block-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Block)
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.1)
