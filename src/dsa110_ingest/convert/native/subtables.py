"""The MS's subtables, written with python-casacore from the group's metadata.

The same rows and values pyuvdata's ``write_ms`` writes (``pyuvdata.utils.io.ms``), so
that the two backends' Measurement Sets agree (tests/convert/test_native_backend.py
compares them), without importing pyuvdata and astropy (seconds in every worker):

* ANTENNA: one row per antenna *number* (0 .. max): CASA indexes it by ANTENNA1/2, so
  missing numbers are empty rows; absolute ITRF positions; one DISH_DIAMETER for all
  rows when the antennas agree.
* FEED: one row per antenna row, receptors from the polarizations (or the file's
  ``feed_array``/``x_orientation``, whose angles are the receptors' orientation).
* FIELD and SOURCE: one row per phase centre (SOURCE_ID = FIELD row + 1).
* SPECTRAL_WINDOW, DATA_DESCRIPTION, POLARIZATION (correlations in CASA order).
* OBSERVATION (with pyuvdata's TELESCOPE_LOCATION column), HISTORY (one row per line
  of the files' history and one for this conversion), POINTING (zenith, per antenna and
  integration, as pyuvdata writes it for a transit array).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsa110_ingest.convert.native import msfile
from dsa110_ingest.convert.native.meta import FileMeta
from dsa110_ingest.errors import PermanentConversionError

MJD_ZERO = 2400000.5
SECONDS_PER_DAY = 86400.0
# AIPS polarization number -> (name, CASA Stokes code); CASA order is by that code
POLS: dict[int, tuple[str, int]] = {
    1: ("pI", 1), 2: ("pQ", 2), 3: ("pU", 3), 4: ("pV", 4),
    -1: ("rr", 5), -3: ("rl", 6), -4: ("lr", 7), -2: ("ll", 8),
    -5: ("xx", 9), -7: ("xy", 10), -8: ("yx", 11), -6: ("yy", 12),
}  # fmt: skip
_CASA_TOPO = 5  # MEAS_FREQ_REF of topocentric frequencies
_EAST = ("east", "e", "ew")
_NORTH = ("north", "n", "ns")


def mjd_seconds(jd: np.ndarray | float) -> np.ndarray:
    """UTC JD -> the MS's TIME (MJD seconds); exact in the subtraction, as astropy's
    ``Time(jd).mjd`` (both operands are within a factor of two of each other)."""
    return (np.asarray(jd, dtype=np.float64) - MJD_ZERO) * SECONDS_PER_DAY


def _pol_info(pols: np.ndarray) -> tuple[str, int]:
    info = POLS.get(int(pols))
    if info is None:
        raise PermanentConversionError(f"polarization number {int(pols)} is not one CASA knows")
    return info


def casa_pol_order(pols: np.ndarray) -> np.ndarray:
    """Indices that put the file's polarizations in CASA order (XX XY YX YY)."""
    return np.argsort([_pol_info(p)[1] for p in pols], kind="stable")


def conj_pol_order(pols: np.ndarray) -> np.ndarray:
    """For each polarization, the index of its conjugate (XY <-> YX), for conjugated rows."""
    names = [_pol_info(p)[0] for p in pols]
    flipped = [n if n.startswith("p") else n[::-1] for n in names]
    try:
        return np.array([names.index(f) for f in flipped], dtype=np.int64)
    except ValueError:
        raise PermanentConversionError(
            f"polarizations {names}: a cross-hand product lacks its conjugate, which "
            'rows conjugated to ant1 < ant2 need: set [convert] backend = "pyuvdata"'
        ) from None


def _feeds_of(pols: np.ndarray) -> list[str]:
    names = [_pol_info(p)[0] for p in pols]
    if any(n.startswith("p") for n in names):
        raise PermanentConversionError(
            f"pseudo-Stokes polarizations {names} have no feeds for the MS's FEED table; "
            'convert this data with [convert] backend = "pyuvdata"'
        )
    return sorted({c for n in names for c in n})


@dataclass(frozen=True)
class Subtables:
    """Everything the subtables take from the group (antenna arrays in file order)."""

    meta: FileMeta  # the first subband's: antennas, feeds, polarizations
    site_xyz: np.ndarray
    telescope_name: str
    observer: str
    freq_hz: np.ndarray
    channel_width: np.ndarray
    spw_id: int
    field_names: list[str]
    field_dirs: np.ndarray  # (n_fields, 2) ICRS rad
    mid_time_s: float  # MS TIME of the median row
    int_times_s: np.ndarray  # MS TIME of each integration
    int_interval_s: np.ndarray  # median INTERVAL of each integration's rows
    history: str


def write_all(path: Path, st: Subtables) -> None:
    from casacore import tables

    p = str(path)
    _antenna(tables, p, st)
    _feed(tables, p, st)
    _field_and_source(tables, p, st)
    _spectral(tables, p, st)
    _observation(tables, p, st)
    _history(tables, p, st)
    _pointing(tables, p, st)


def _writing(t: Any, path: str, name: str) -> Any:
    """The subtable ``name`` of the MS at ``path``, closed by an explicit flush (never by
    casacore's close after a failed write: convert/native/msfile.py ``close``)."""
    return msfile.writing(t, Path(path) / name)


def _new(tables: Any, path: str, name: str, complete: bool = False) -> Any:
    desc = (tables.complete_ms_desc if complete else tables.required_ms_desc)(name)
    return tables.table(
        f"{path}::{name}", tabledesc=desc, dminfo=tables.makedminfo(desc), ack=False,
        readonly=False,
    )  # fmt: skip


def _antenna(tables: Any, path: str, st: Subtables) -> None:
    m = st.meta
    nums = m.antenna_numbers
    n = int(nums.max()) + 1
    names = [""] * n
    mounts = [""] * n
    for i, num in enumerate(nums):
        names[num] = m.antenna_names[i]
        mounts[num] = m.mount_types[i] if m.mount_types else ""
    pos = np.zeros((n, 3))
    pos[nums] = m.antenna_positions + np.asarray(st.site_xyz).reshape(1, 3)  # absolute ITRF
    with _writing(_new(tables, path, "ANTENNA"), path, "ANTENNA") as t:
        t.addrows(n)
        t.putcol("NAME", names)
        t.putcol("STATION", names)
        t.putcol("MOUNT", mounts)
        t.putcol("POSITION", pos)
        d = m.antenna_diameters
        if d is not None:
            diam = np.zeros(n)
            if np.unique(d).size == 1:  # CASA cannot mix diameters: none for padding rows
                diam[:] = d[0]
            else:
                diam[nums] = d
            t.putcol("DISH_DIAMETER", diam)
        info = t.getcolkeyword("POSITION", "MEASINFO")
        info["Ref"] = "ITRF"
        t.putcolkeyword("POSITION", "MEASINFO", info)


def _feed_table(st: Subtables) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per antenna number: receptor types (upper case) and angles, and whether they came
    from the file (FEED keyword ``pyuvdata_has_feed``)."""
    m = st.meta
    n = int(m.antenna_numbers.max()) + 1
    if m.feed_array is not None and m.feed_angle is not None:
        feeds, angles, has = m.feed_array, m.feed_angle, True
    else:
        kinds = _feeds_of(m.pols)
        feeds = np.tile(np.array(kinds, dtype="<U1"), (m.antenna_numbers.size, 1))
        angles = np.zeros(feeds.shape)
        has = False
        orient = (m.x_orientation or "").lower()
        if kinds == ["x", "y"] and orient in _EAST + _NORTH:
            # the x dipole's angle from north: 90 deg when it points east
            angles[:] = [np.pi / 2, 0.0] if orient in _EAST else [0.0, np.pi / 2]
            has = True
    types = np.tile(feeds[0], (n, 1)).astype("<U1")
    types[m.antenna_numbers] = feeds
    types = np.char.upper(types)
    ang = np.zeros((n, feeds.shape[1]))
    ang[m.antenna_numbers] = angles
    for i in range(n):  # CASA's receptor order: X before Y, R before L
        if types[i].tolist() in (["Y", "X"], ["L", "R"]):
            types[i] = types[i, ::-1]
            ang[i] = ang[i, ::-1]
    return types, ang, has


def _feed(tables: Any, path: str, st: Subtables) -> None:
    types, ang, has = _feed_table(st)
    n, nf = types.shape
    with _writing(tables.table(f"{path}::FEED", ack=False, readonly=False), path, "FEED") as t:
        t.putkeyword("pyuvdata_has_feed", has)
        t.addrows(n)
        t.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
        t.putcol("BEAM_ID", np.full(n, -1, np.int32))
        t.putcol("BEAM_OFFSET", np.zeros((n, 2, 2)))
        t.putcol("FEED_ID", np.zeros(n, np.int32))
        t.putcol("TIME", np.full(n, st.mid_time_s))
        t.putcol("INTERVAL", np.full(n, np.finfo(float).max))
        t.putcol("NUM_RECEPTORS", np.full(n, nf, np.int32))
        t.putcol("POLARIZATION_TYPE", types)
        t.putcol("POL_RESPONSE", np.zeros((n, 2, 2), np.complex64))
        t.putcol("POSITION", np.zeros((n, 3)))
        t.putcol("RECEPTOR_ANGLE", ang)
        t.putcol("SPECTRAL_WINDOW_ID", np.zeros(n, np.int32))


def _field_and_source(tables: Any, path: str, st: Subtables) -> None:
    n = len(st.field_names)
    dirs = np.asarray(st.field_dirs, np.float64).reshape(n, 2)
    # numbered as pyuvdata's phase-centre catalog numbers them: after the files' entry 0
    source_ids = np.arange(1, n + 1, dtype=np.int32)
    with _writing(_new(tables, path, "FIELD"), path, "FIELD") as t:
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            info = t.getcolkeyword(col, "MEASINFO")
            info["Ref"] = "ICRS"  # the plan's centres are ICRS
            t.putcolkeyword(col, "MEASINFO", info)
        t.addrows(n)
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            t.putcol(col, dirs[:, np.newaxis, :])
        t.putcol("NAME", st.field_names)
        t.putcol("NUM_POLY", np.zeros(n, np.int32))
        t.putcol("TIME", np.full(n, st.mid_time_s))
        t.putcol("SOURCE_ID", source_ids)
    with _writing(_new(tables, path, "SOURCE", complete=True), path, "SOURCE") as t:
        t.addrows(n)
        t.putcol("NAME", st.field_names)
        t.putcol("SOURCE_ID", source_ids)
        t.putcol("INTERVAL", np.full(n, np.finfo(float).max))
        t.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, np.int32))
        t.putcol("NUM_LINES", np.zeros(n, np.int32))
        t.putcol("TIME", np.full(n, st.mid_time_s))
        t.putcol("DIRECTION", dirs)
        t.putcol("PROPER_MOTION", np.zeros((n, 2)))


def _spectral(tables: Any, path: str, st: Subtables) -> None:
    desc = tables.required_ms_desc("SPECTRAL_WINDOW")
    extended = tables.complete_ms_desc("SPECTRAL_WINDOW")
    desc["ASSOC_SPW_ID"] = extended["ASSOC_SPW_ID"]
    desc["ASSOC_NATURE"] = extended["ASSOC_NATURE"]
    width = np.asarray(st.channel_width, np.float64)
    spw = tables.table(
        f"{path}::SPECTRAL_WINDOW", tabledesc=desc, dminfo=tables.makedminfo(desc),
        ack=False, readonly=False,
    )  # fmt: skip
    with _writing(spw, path, "SPECTRAL_WINDOW") as t:
        t.addrows(1)
        t.putcell("NUM_CHAN", 0, st.freq_hz.size)
        t.putcell("NAME", 0, f"SPW{st.spw_id}")
        t.putcell("ASSOC_SPW_ID", 0, st.spw_id)
        t.putcell("ASSOC_NATURE", 0, "")
        t.putcell("CHAN_FREQ", 0, st.freq_hz)
        for col in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
            t.putcell(col, 0, width)
        t.putcell("TOTAL_BANDWIDTH", 0, float(np.sum(width)))
        t.putcell("MEAS_FREQ_REF", 0, _CASA_TOPO)
        t.putcell("REF_FREQUENCY", 0, float(st.freq_hz[0]))
    with _writing(
        tables.table(f"{path}::DATA_DESCRIPTION", ack=False, readonly=False),
        path,
        "DATA_DESCRIPTION",
    ) as t:
        t.addrows(1)
        t.putcol("SPECTRAL_WINDOW_ID", np.zeros(1, np.int32))
    pols = st.meta.pols[casa_pol_order(st.meta.pols)]
    names = [_pol_info(p)[0] for p in pols]
    kinds = sorted({c for n in names for c in n})
    products = np.array([(kinds.index(n[0]), kinds.index(n[1])) for n in names], np.int32)
    with _writing(
        tables.table(f"{path}::POLARIZATION", ack=False, readonly=False), path, "POLARIZATION"
    ) as t:
        t.addrows(1)
        t.putcell("CORR_TYPE", 0, np.array([_pol_info(p)[1] for p in pols], np.int32))
        t.putcell("CORR_PRODUCT", 0, products)
        t.putcell("NUM_CORR", 0, len(names))


def _observation(tables: Any, path: str, st: Subtables) -> None:
    with _writing(_new(tables, path, "OBSERVATION"), path, "OBSERVATION") as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, st.telescope_name)
        # not an MS column: pyuvdata keeps the array centre here to read it back
        t.addcols(tables.makearrcoldesc("TELESCOPE_LOCATION", 0.0, shape=[3], valuetype="double"))
        t.putcell("TELESCOPE_LOCATION", 0, np.asarray(st.site_xyz, np.float64))
        t.putcell("OBSERVER", 0, st.observer)


def _history(tables: Any, path: str, st: Subtables) -> None:
    lines = st.history.splitlines() or [""]
    n = len(lines)
    with _writing(_new(tables, path, "HISTORY"), path, "HISTORY") as t:
        t.addrows(n)
        t.putcol("APP_PARAMS", np.full((n, 1), "", dtype=object).astype(str))
        t.putcol("CLI_COMMAND", np.full((n, 1), "", dtype=object).astype(str))
        t.putcol("APPLICATION", ["dsa110-ingest"] * n)
        t.putcol("MESSAGE", lines)
        t.putcol("OBJECT_ID", np.zeros(n, np.int32))
        t.putcol("OBSERVATION_ID", np.full(n, -1, np.int32))
        t.putcol("ORIGIN", ["dsa110-ingest"] * n)
        t.putcol("PRIORITY", ["INFO"] * n)
        t.putcol("TIME", np.full(n, time.time() + 3506716800.0))  # Unix -> MJD seconds


def _pointing(tables: Any, path: str, st: Subtables) -> None:
    n_ant = int(st.meta.antenna_numbers.max()) + 1
    n_t = st.int_times_s.size
    n = n_ant * n_t
    with _writing(
        tables.table(f"{path}::POINTING", ack=False, readonly=False), path, "POINTING"
    ) as t:
        # a first row with the cell shape: addrows then gives every row that shape,
        # which casacore fills far faster than cells of unknown shape
        t.addrows(1)
        t.putcell("DIRECTION", 0, np.zeros((2, 1)))
        t.putcell("TARGET", 0, np.zeros((2, 1)))
        t.addrows(n - 1)
        t.putcol("ANTENNA_ID", np.tile(np.arange(n_ant, dtype=np.int32), n_t))
        t.putcol("TIME", np.repeat(st.int_times_s, n_ant))
        t.putcol("INTERVAL", np.repeat(st.int_interval_s, n_ant))
        t.putcol("NAME", np.asarray(["ZENITH"] * n, dtype=np.bytes_), nrow=n)
        t.putcol("NUM_POLY", np.zeros(n, np.int32))
        t.putcol("TIME_ORIGIN", np.repeat(st.int_times_s, n_ant))
        zenith = np.zeros((n, 2, 1))
        zenith[:, 1, :] = np.pi / 2
        t.putcol("DIRECTION", zenith)
        t.putcol("TARGET", zenith)
        t.putcol("TRACKING", np.zeros(n, bool))
