"""The Measurement Set's tables: MAIN with tiled data columns, metadata columns, subtables."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bytes of one tile of the DATA column. Measured by benchmarks/convert_group.py (its tile
# table in docs/performance.md): tiles of one subband's channels x 256 KiB-1 MiB cost the
# least CPU per byte written; 64 KiB tiles multiply casacore's per-tile overhead.
TILE_BYTES = 256 << 10


@dataclass(frozen=True)
class Tiling:
    pols: int
    chans: int  # channels per tile: one subband (or a divisor of every subband's count)
    rows: int  # rows per tile

    @property
    def shape(self) -> list[int]:
        return [self.pols, self.chans, self.rows]


def choose_tiling(
    n_pols: int, subband_chans: list[int], tile_bytes: int = TILE_BYTES, max_rows: int = 0
) -> Tiling:
    """Tiles that one subband's block covers exactly: no tile is ever written twice.

    The channel extent of a tile divides every subband's channel count (one subband, for
    equal subbands), so a subband write never touches a neighbour's tiles; the row extent
    fills ``tile_bytes`` of complex64.
    """
    chans = 0
    for n in subband_chans:
        chans = math.gcd(chans, n)
    rows = max(1, tile_bytes // (8 * n_pols * max(chans, 1)))
    if max_rows > 0:  # a small table gets tiles no bigger than itself
        rows = min(rows, max_rows)
    return Tiling(n_pols, max(chans, 1), rows)


def _check_room(path: Path, need: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"{path.parent} has {free >> 20} MiB free, the MS's tiles need ~{need >> 20} MiB",
        )


def create_main(
    path: Path,
    n_rows: int,
    n_chan: int,
    n_pol: int,
    tiling: Tiling,
    extra_data_cols: tuple[str, ...],
) -> Any:
    """An empty MS at ``path`` with ``n_rows`` rows; the standard MS subtables exist, empty.

    casacore zero-fills the tiled columns at the table's first flush, where a disk that
    runs out aborts the process (see :func:`room`): OSError (ENOSPC) here instead when
    the disk has not the room for them."""
    from casacore import tables

    _check_room(path, n_rows * (n_chan * n_pol * 13 + 64))

    desc = tables.required_ms_desc("MAIN")
    for key in ("ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "FLAG_ROW"):
        desc[key].update(dataManagerGroup=key)
    for key in (
        "ARRAY_ID", "EXPOSURE", "FEED1", "FEED2", "FIELD_ID", "INTERVAL", "OBSERVATION_ID",
        "PROCESSOR_ID", "SCAN_NUMBER", "STATE_ID", "TIME", "TIME_CENTROID",
    ):  # fmt: skip
        # constant over long runs of rows: stored once per change
        desc[key].update(dataManagerType="IncrementalStMan", dataManagerGroup=key)
    desc["UVW"].update(dataManagerType="TiledColumnStMan", dataManagerGroup="TiledUVW")
    for key, group in (("WEIGHT", "TiledWgt"), ("SIGMA", "TiledSigma")):
        desc[key].update(
            dataManagerType="TiledColumnStMan", dataManagerGroup=group, shape=[n_pol], ndim=1
        )
        desc[key]["option"] = 5  # fixed shape (Direct | FixedShape)
    desc["FLAG"].update(
        dataManagerType="TiledColumnStMan",
        dataManagerGroup="TiledFlag",
        shape=[n_chan, n_pol],
        ndim=2,
        option=5,
    )
    desc["FLAG_CATEGORY"].update(
        dataManagerType="TiledShapeStMan",
        dataManagerGroup="TiledFlagCategory",
        keywords={"CATEGORY": np.array("baddata")},
    )
    specs: dict[str, dict[str, Any]] = {}
    cols = [("DATA", 0j, "complex", "TiledData")]
    cols += [(c, 0j, "complex", f"Tiled{c}") for c in extra_data_cols]
    cols += [("WEIGHT_SPECTRUM", 0.0, "float", "TiledWgtSpectrum")]
    for name, value, vtype, group in cols:
        cd = tables.makearrcoldesc(
            name,
            value,
            valuetype=vtype,
            shape=[n_chan, n_pol],
            datamanagertype="TiledColumnStMan",
            datamanagergroup=group,
            options=5,
        )
        desc.update(tables.maketabdesc(cd))
    # casacore's shapes are Fortran order: [pols, chans, rows]
    for group in ["TiledData", "TiledWgtSpectrum", "TiledFlag"] + [
        f"Tiled{c}" for c in extra_data_cols
    ]:
        specs[group] = {"DEFAULTTILESHAPE": np.int32(tiling.shape)}
    uvw_rows = 4096
    specs["TiledUVW"] = {"DEFAULTTILESHAPE": np.int32([3, uvw_rows])}
    specs["TiledWgt"] = {"DEFAULTTILESHAPE": np.int32([n_pol, uvw_rows])}
    specs["TiledSigma"] = {"DEFAULTTILESHAPE": np.int32([n_pol, uvw_rows])}
    ms = tables.default_ms(str(path), desc, tables.makedminfo(desc, specs))
    try:
        ms.addrows(n_rows)
    except BaseException:
        discard(ms, path)
        raise
    return ms


def reopen_main(path: Path) -> Any:
    """The MAIN table at ``path``, writable."""
    from casacore import tables

    return tables.table(str(path), readonly=False, ack=False)


# Room held on the output's filesystem while an MS is written, handed to casacore for
# each flush and close (:func:`room`). casacore writes a table's files partly from
# destructors (its AipsIO buffers), where an error -- a full disk -- terminates the
# process (``std::terminate``: exit 134, the temporary MS left behind and, in the
# one-shot ``convert``, the lease held): nothing in Python can catch it. Its writes once
# MAIN exists are small (table descriptions, subtables, the UVW/WEIGHT/SIGMA and probe
# tiles: a few MB at real DSA-110 size), so room kept aside for them means a disk that
# fills during a conversion fails it with a clean error (the bulk data goes through
# ``pwrite``: a plain OSError). Creating MAIN zero-fills it; that is checked beforehand.
BALLAST_BYTES = 32 << 20
_held: list[tuple[int, Path, int]] = []


def reserve(path: Path, nbytes: int = BALLAST_BYTES) -> None:
    """Allocate ``nbytes`` beside ``path`` (the temporary MS: ``<name>.ballast``, removed
    with the worker's stale temporaries); OSError (ENOSPC: the disk-full path) if the
    disk has not that much room."""
    b = path.with_name(path.name + ".ballast")
    fd = os.open(b, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError:
        b.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    _held.append((os.getpid(), b, nbytes))


def release() -> list[tuple[Path, int]]:
    """Give the reserved room back; what was held (this process's only: a forked helper
    inherits the list, not the files)."""
    me = os.getpid()
    mine = [x for x in _held if x[0] == me]
    for x in mine:
        _held.remove(x)
        with contextlib.suppress(OSError):
            x[1].unlink()
    return [(b, n) for _, b, n in mine]


@contextlib.contextmanager
def room() -> Iterator[None]:
    """casacore's writes in the block get the reserved room; reserved again after it (a
    disk that filled meanwhile fails here, cleanly: ENOSPC)."""
    held = release()
    ok = False
    try:
        yield
        ok = True
    finally:
        for b, n in held:
            try:
                reserve(b.with_name(b.name.removesuffix(".ballast")), n)
            except OSError:
                if ok:
                    raise


def close(t: Any, path: Path) -> None:
    """Close the table ``t`` at ``path`` that this writer filled, with the reserved room
    (:func:`room`); a table whose close failed is discarded (:func:`discard`)."""
    try:
        with room():
            t.close()  # its flush raises normally if a tile cannot be written
    except RuntimeError:
        discard(t, path)
        raise


def discard(t: Any, path: Path) -> None:
    """Close ``t`` (at ``path``) after a failed write: the reserved room is given back
    first, so casacore's close can write what it holds (the MS is removed anyway)."""
    release()
    with contextlib.suppress(RuntimeError):
        t.close()


@contextlib.contextmanager
def writing(t: Any, path: Path) -> Iterator[Any]:
    """``with writing(table, path) as t``: :func:`close` when the block succeeds,
    :func:`discard` when it raises (never casacore's close after a failed write)."""
    try:
        yield t
    except BaseException:
        discard(t, path)
        raise
    close(t, path)
