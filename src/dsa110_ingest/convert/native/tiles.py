"""DATA, FLAG and WEIGHT_SPECTRUM written straight into casacore's tile files.

Through ``putcolslice`` a block is copied four times (numpy -> casacore Array -> the
storage manager's tile cache -> the page cache); profiled on a 64-antenna group that was
a quarter of the writer's CPU. The MAIN table is still created by casacore (its
TiledColumnStMan sizes every column's hypercube and extends its file to whole tiles when
the rows are added); the writer then puts each tile's bytes where casacore keeps them,
one ``pwrite`` per tile from the kernel's output: the bytes casacore would have written
(tests/convert/test_native_tiles.py compares the files byte for byte).

The layout, from casacore's TSMCube/TSMFile and checked at run time on every table:
one hypercube per column in ``table.f<SEQNR>_TSM0`` from offset 0; tiles in Fortran order
over the tile grid (the channel tiles of a row tile, then the next row tile); the values
of a tile in Fortran order over (pol, chan, row), which is C order over the writer's
(rows, chans, pols) blocks; numbers in the table's byte order; Bool as bits, least
significant first. :func:`open_tiles` checks each column's storage manager, cube and tile
shape and file size, then writes probe cells with casacore (the first and the last row),
flushes, and compares the bytes found with the bytes this module would write: any
difference (another casacore's layout, a big-endian table) and the writer uses
``putcolslice``, logging why.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from dsa110_ingest.convert.native import msfile
from dsa110_ingest.convert.native.msfile import Tiling

log = structlog.get_logger("dsa110_ingest.convert")

COLUMNS = (("DATA", np.complex64), ("FLAG", np.bool_), ("WEIGHT_SPECTRUM", np.float32))


class LayoutMismatch(Exception):
    """casacore keeps a column's tiles other than this module writes them."""


@dataclass
class _Column:
    name: str
    dtype: np.dtype[Any]
    fd: int
    tile_bytes: int


def _tile_bytes(tiling: Tiling, dtype: np.dtype[Any]) -> int:
    n = tiling.pols * tiling.chans * tiling.rows
    return (n + 7) // 8 if dtype == np.bool_ else n * dtype.itemsize


class TileFiles:
    """The open tile files of one MAIN table's bulk columns and their common geometry."""

    def __init__(self, n_rows: int, n_chan: int, tiling: Tiling) -> None:
        self.n_rows, self.n_chan, self.tiling = n_rows, n_chan, tiling
        self.chan_tiles = n_chan // tiling.chans
        self.row_tiles = -(-n_rows // tiling.rows)
        self.cols: dict[str, _Column] = {}

    def offset(self, col: _Column, row: int, chan: int) -> int:
        """Byte offset of the tile holding MS row ``row``, channel ``chan``."""
        t = row // self.tiling.rows * self.chan_tiles + chan // self.tiling.chans
        return t * col.tile_bytes

    def write(self, name: str, arr: np.ndarray, start: int, chan_start: int) -> None:
        """``arr`` (rows, chans, pols; MS order) at MS rows from ``start`` (a tile's first
        row) and channels from ``chan_start`` (a tile's first channel)."""
        col = self.cols[name]
        tr, tc = self.tiling.rows, self.tiling.chans
        n, nc = arr.shape[0], arr.shape[1]
        for c0 in range(0, nc, tc):
            part = arr if nc == tc else arr[:, c0 : c0 + tc]
            for r0 in range(0, n, tr):
                tile = np.ascontiguousarray(part[r0 : r0 + tr])
                _pwrite_all(
                    col.fd, _encode(tile, col.dtype), self.offset(col, start + r0, chan_start + c0)
                )

    def close(self) -> None:
        for col in self.cols.values():
            os.close(col.fd)
        self.cols.clear()


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """All of ``data`` at ``offset``: a short write (a filling disk) is continued, so
    that a full disk is reported as ENOSPC by the next write."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, f"pwrite wrote nothing at offset {offset}")
        view, offset = view[n:], offset + n


def _encode(tile: np.ndarray, dtype: np.dtype[Any]) -> Any:
    """A tile's bytes (whole or its first rows: the last tile of the table), as casacore
    stores them: little-endian numbers (checked by the probe), Bool as bits LSB first."""
    if dtype == np.bool_:
        return np.packbits(tile.reshape(-1), bitorder="little")
    return memoryview(tile.reshape(-1).view(np.uint8))


def _probe_cells(n_chan: int, n_pol: int, row: int) -> dict[str, np.ndarray]:
    """Distinct, byte-order-revealing values for one row of each column."""
    k = np.arange(n_chan * n_pol, dtype=np.float64).reshape(n_chan, n_pol)
    return {
        "DATA": (k + 1.25 + 1j * (row + 0.5 + k / 7)).astype(np.complex64),
        "FLAG": (k.astype(np.int64) * 7 + row) % 3 == 0,
        "WEIGHT_SPECTRUM": (k * 3.0 + 0.75 + row).astype(np.float32),
    }


def _check_dminfo(ms: Any, name: str, files: TileFiles, n_pol: int) -> int:
    """The column's SEQNR, after checking its storage manager against the layout."""
    info = ms.getdminfo(name)
    if info.get("TYPE") != "TiledColumnStMan":
        raise LayoutMismatch(f"{name} is stored by {info.get('TYPE')}, not TiledColumnStMan")
    cubes = list(info.get("SPEC", {}).get("HYPERCUBES", {}).values())
    if len(cubes) != 1:
        raise LayoutMismatch(f"{name} has {len(cubes)} hypercubes, expected 1")
    t = files.tiling
    cube = [int(x) for x in cubes[0]["CubeShape"]]
    tile = [int(x) for x in cubes[0]["TileShape"]]
    want_cube = [n_pol, files.n_chan, files.n_rows]
    if cube != want_cube or tile != t.shape:
        raise LayoutMismatch(f"{name}: cube {cube} tile {tile}, expected {want_cube} and {t.shape}")
    return int(info["SEQNR"])


def _check_probe(path: Path, files: TileFiles, col: _Column, rows: list[int]) -> None:
    """The probe cells casacore wrote are where, and as, :meth:`TileFiles.write` puts them."""
    t = files.tiling
    for row in rows:
        cell = _probe_cells(files.n_chan, t.pols, row)[col.name]
        r0 = row // t.rows * t.rows
        for c0 in range(0, files.n_chan, t.chans):
            tile = np.zeros((t.rows, t.chans, t.pols), col.dtype)
            tile[row - r0] = cell[c0 : c0 + t.chans]
            mine = np.frombuffer(bytes(_encode(tile, col.dtype)), np.uint8)
            lo = (row - r0) * t.chans * t.pols  # the row's first value in the tile
            hi = lo + t.chans * t.pols
            if col.dtype == np.bool_:
                lo, hi = lo // 8, (hi + 7) // 8
            else:
                lo, hi = lo * col.dtype.itemsize, hi * col.dtype.itemsize
            found = os.pread(col.fd, hi - lo, files.offset(col, row, c0) + lo)
            # partial bytes at a bit-packed row's ends hold neighbouring rows' flags: compare
            # the row's own bits only
            have = np.frombuffer(found, np.uint8)
            want = mine[lo:hi]
            if col.dtype == np.bool_:
                mask = _row_bit_mask(row - r0, t, lo, hi)
                have, want = have & mask, want & mask
            if have.size != want.size or not np.array_equal(have, want):
                raise LayoutMismatch(
                    f"{col.name}: row {row}, channels {c0}+ are not stored as expected "
                    "(byte order, bit order or tile order differ)"
                )


def _row_bit_mask(r: int, t: Tiling, lo: int, hi: int) -> np.ndarray:
    bits = np.zeros((hi - lo) * 8, np.bool_)
    first = r * t.chans * t.pols - lo * 8
    bits[first : first + t.chans * t.pols] = True
    return np.packbits(bits, bitorder="little")


def open_tiles(
    ms: Any, path: Path, n_rows: int, n_chan: int, n_pol: int, tiling: Tiling
) -> TileFiles | None:
    """The bulk columns' tile files of the open, freshly created MAIN table at ``path``,
    checked (see the module's docstring); writes the probe cells and flushes ``ms``.
    None, logged with the reason, when anything differs: write with ``putcolslice``."""
    files = TileFiles(n_rows, n_chan, tiling)
    if n_chan % tiling.chans or tiling.pols != n_pol:
        log.info("ms.tiles_fallback", reason=f"tile {tiling.shape} does not divide the cells")
        return None
    rows = sorted({0, n_rows - 1})
    try:
        seqnr = {name: _check_dminfo(ms, name, files, n_pol) for name, _ in COLUMNS}
    except (LayoutMismatch, KeyError) as e:
        log.warning("ms.tiles_fallback", ms=str(path), reason=str(e), writer="putcolslice")
        return None
    for row in rows:
        for name, cell in _probe_cells(n_chan, n_pol, row).items():
            ms.putcell(name, row, cell)
    # casacore's flush, with the room kept for it (msfile.room); a disk that is full
    # fails the conversion here (ENOSPC), not the direct writes
    with msfile.room():
        ms.flush()
    try:
        for name, dt in COLUMNS:
            f = path / f"table.f{seqnr[name]}_TSM0"
            dtype = np.dtype(dt)
            col = _Column(name, dtype, os.open(f, os.O_RDWR), _tile_bytes(tiling, dtype))
            files.cols[name] = col
            size = os.fstat(col.fd).st_size
            if size != files.chan_tiles * files.row_tiles * col.tile_bytes:
                raise LayoutMismatch(
                    f"{f.name} holds {size} bytes, not "
                    f"{files.chan_tiles * files.row_tiles} tiles of {col.tile_bytes}"
                )
            _check_probe(path, files, col, rows)
    except (LayoutMismatch, OSError, KeyError) as e:
        files.close()
        log.warning("ms.tiles_fallback", ms=str(path), reason=str(e), writer="putcolslice")
        return None
    return files


class Background:
    """The tiles of each block written by a thread while the kernel computes the next.

    ``pwrite`` and the numba kernel release the GIL, so on two cores the reader thread
    (h5py), the kernel and the writes overlap. Two output buffer sets alternate: the
    kernel fills one while the thread writes the other (:meth:`buffers` waits for a free
    one), so memory stays at two blocks of output.
    """

    def __init__(self, files: TileFiles, make_buffers: Any, depth: int = 2) -> None:
        self.files = files
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.free: queue.Queue[Any] = queue.Queue()
        for _ in range(depth):
            self.free.put(make_buffers())
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ms-tile-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            arrays, start, chan_start, bufs = job
            try:
                if self.error is None:
                    for (name, _), arr in zip(COLUMNS, arrays, strict=True):
                        self.files.write(name, arr, start, chan_start)
            except BaseException as e:  # noqa: BLE001 -- raised in the writer's thread
                self.error = e
            self.free.put(bufs)

    def buffers(self) -> Any:
        """A free output buffer set (waits while both are being written)."""
        bufs = self.free.get()
        self._raise()
        return bufs

    def submit(
        self, arrays: tuple[np.ndarray, ...], start: int, chan_start: int, bufs: Any
    ) -> None:
        """DATA, FLAG, WEIGHT_SPECTRUM of a block (views of ``bufs``) to write."""
        self.jobs.put((arrays, start, chan_start, bufs))

    def close(self) -> None:
        """Wait for every submitted block; raise the first write error."""
        self.jobs.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
