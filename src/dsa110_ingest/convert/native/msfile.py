"""The Measurement Set's tables: MAIN with tiled data columns, metadata columns, subtables."""

from __future__ import annotations

import math
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


def create_main(
    path: Path,
    n_rows: int,
    n_chan: int,
    n_pol: int,
    tiling: Tiling,
    extra_data_cols: tuple[str, ...],
) -> Any:
    """An empty MS at ``path`` with ``n_rows`` rows; the standard MS subtables exist, empty."""
    from casacore import tables

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
    ms.addrows(n_rows)
    return ms


def reopen_main(path: Path) -> Any:
    """The MAIN table at ``path``, writable."""
    from casacore import tables

    return tables.table(str(path), readonly=False, ack=False)
