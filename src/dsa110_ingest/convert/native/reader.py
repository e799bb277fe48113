"""Row blocks of one subband file, read with h5py in a thread ahead of the writer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
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
    reused: tuple[np.ndarray, ...] | None = None  # the pool's arrays the block lives in


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


def datasets(f: h5py.File) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
    """visdata, flags, nsamples: looked up once per file (a lookup costs ~0.3 ms)."""
    d = f["Data"]
    return d["visdata"], d["flags"], d["nsamples"]


def read_rows(
    f: h5py.File | tuple[h5py.Dataset, ...],
    rows: np.ndarray | None,
    start: int,
    stop: int,
    into: tuple[np.ndarray, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visibilities, flags, nsamples of MS rows ``[start, stop)``.

    ``rows`` maps MS rows to file rows (-1: the file has no such row; it becomes flagged
    with zero weight); ``None`` means the file's rows are the MS's rows. ``into``: arrays
    of at least ``stop - start`` rows to read into (see :func:`direct_shape`), used when
    the rows are not mapped; the result is then views of them.
    """
    vis_ds, flag_ds, nsa_ds = f if isinstance(f, tuple) else datasets(f)
    if rows is None and into is not None:
        n = stop - start
        for ds, buf in zip((vis_ds, flag_ds, nsa_ds), into, strict=True):
            ds.read_direct(buf, np.s_[start:stop], np.s_[0:n])
        return tuple(_squeeze_spw(b[:n]) for b in into)  # type: ignore[return-value]
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
_DIRECT_DTYPES = (np.dtype(np.complex64), np.dtype(np.bool_), np.dtype(np.float32))


def direct_shape(dss: tuple[h5py.Dataset, ...]) -> tuple[int, ...] | None:
    """The per-row shape of a file's datasets (:func:`datasets`) when they can be read
    straight into the writer's arrays (complex64 visibilities, bool flags, float32
    nsamples, native byte order); None when a read must convert."""
    if tuple(ds.dtype for ds in dss) != _DIRECT_DTYPES:
        return None
    tail = dss[0].shape[1:]
    return tail if all(ds.shape[1:] == tail for ds in dss) else None


class _Pool:
    """Input arrays reused from block to block. h5py returns each read in a new,
    zero-filled array: a memset and fresh memory for every byte of the group; reading
    into ``n_sets`` arrays that come back once a block is written avoids both."""

    def __init__(self, n_sets: int, rows: int, stop: threading.Event) -> None:
        self.free: queue.Queue[tuple[np.ndarray, ...]] = queue.Queue()
        self.budget, self.rows, self.stop = n_sets, rows, stop

    def take(self, tail: tuple[int, ...]) -> tuple[np.ndarray, ...] | None:
        """A free set shaped (rows, *tail); waits for one once ``n_sets`` exist; None
        when stopped."""
        if self.budget > 0:
            self.budget -= 1
            return self._new(tail)
        while not self.stop.is_set():
            try:
                bufs = self.free.get(timeout=0.5)
            except queue.Empty:
                continue
            return bufs if bufs[0].shape[1:] == tail else self._new(tail)
        return None

    def _new(self, tail: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        return tuple(np.empty((self.rows, *tail), dt) for dt in _DIRECT_DTYPES)

    def give(self, block: Block) -> None:
        if block.reused is not None:
            self.free.put(block.reused)


def _blocks(
    paths: list[str],
    row_maps: list[np.ndarray | None],
    n_rows: int,
    block_rows: int,
    pool: _Pool | None = None,
    order: Iterable[int] | None = None,
) -> Iterator[Block]:
    for i in range(len(paths)) if order is None else order:
        path = paths[i]
        try:
            with h5py.File(path, "r") as f:
                dss = datasets(f)
                tail = direct_shape(dss) if pool is not None and row_maps[i] is None else None
                for start in range(0, n_rows, block_rows):
                    end = min(start + block_rows, n_rows)
                    into = None if tail is None or pool is None else pool.take(tail)
                    if tail is not None and into is None:
                        return  # stopped while waiting for a free set
                    arrays = read_rows(dss, row_maps[i], start, end, into)
                    yield Block(i, start, end, *arrays, reused=into)
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
    reuse: bool = False,
    order: Iterable[int] | None = None,
) -> Iterator[Block]:
    """Every block of every subband in order, read by a thread up to ``depth`` blocks ahead.

    Disk (or page-cache copy and decompression) and the writer's CPU work overlap; the
    bounded queue is what keeps memory at a few blocks whatever the group's size.
    ``depth`` 0 reads in the caller's thread (to measure what the overlap buys).
    ``reuse``: a block's arrays are read into again once the caller asks for the next
    block (it must keep no view of them: the native writer's numba kernel copies).
    ``order``: the subbands to read (indices into ``paths``), taken one at a time as the
    reader reaches them (the writer's processes share one queue of them); all, in order,
    when None.
    """
    stop = threading.Event()
    pool = _Pool(max(depth, 0) + 2, block_rows, stop) if reuse else None
    if depth <= 0:
        for blk in _blocks(paths, row_maps, n_rows, block_rows, pool, order):
            yield blk
            if pool is not None:
                pool.give(blk)
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)

    def work() -> None:
        try:
            for item in _blocks(paths, row_maps, n_rows, block_rows, pool, order):
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
            if pool is not None:
                pool.give(item)
    finally:
        stop.set()
        while t.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.1)
