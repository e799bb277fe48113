"""The telescope and per-row metadata of a group's first subband, read with h5py.

What the MS's subtables and MAIN metadata columns take from the files beyond the plan
(convert/plan.py): antennas, feeds, history, keywords, and each row's integration time
and pre-phasing w. Read through the index's bounded reader (uvh5/node.py), the same
fields pyuvdata's UVH5 reader takes, in a few milliseconds and without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsa110_ingest.errors import PermanentConversionError, UVH5Error
from dsa110_ingest.uvh5.fields import MAX_TEXT_BYTES
from dsa110_ingest.uvh5.node import Node, TooLarge
from dsa110_ingest.uvh5.opening import open_file
from dsa110_ingest.uvh5.safety import Unsafe, check_contained

MAX_ANTS = 100_000
MAX_ROWS = 100_000_000
# catalog entries whose data are not projected: their w is 0 before phasing
_UNPROJECTED = ("unprojected", "drift")


@dataclass
class FileMeta:
    """One file's metadata as the MS needs it (antenna arrays in the file's order)."""

    antenna_numbers: np.ndarray  # int64
    antenna_names: list[str]
    antenna_positions: np.ndarray  # (n, 3) m, ITRF relative to the site
    antenna_diameters: np.ndarray | None
    mount_types: list[str] | None
    uvw: np.ndarray  # (rows, 3) the file's own UVWs (m)
    projected: np.ndarray  # per row: the data are projected (w of ``uvw`` applies)
    integration_s: np.ndarray  # per row
    pols: np.ndarray  # AIPS polarization numbers, file order
    spw_ids: np.ndarray  # per channel (file order)
    channel_width: np.ndarray  # per channel (file order)
    vis_units: str
    history: str
    pol_convention: str | None
    x_orientation: str | None
    feed_array: np.ndarray | None  # (n_ants, n_feeds) of 'x', 'y', 'l', 'r'
    feed_angle: np.ndarray | None  # (n_ants, n_feeds) rad
    extra_keywords: dict[str, Any] = field(default_factory=dict)


def _text(v: Any) -> str:
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0] if v.size else b""
    if isinstance(v, bytes | np.bytes_):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def _strings(v: np.ndarray) -> list[str]:
    return [_text(s).strip() for s in np.asarray(v).reshape(-1)]


def _keyword_value(v: np.ndarray) -> Any:
    """An extra keyword as pyuvdata hands it to the MS: strings decoded, scalars unboxed."""
    if v.dtype.kind in "SOU" and v.size == 1:
        return _text(v)
    if v.shape == ():
        return v.item()
    return v


class _Reader:
    def __init__(self, path: str, header: Node) -> None:
        self.path, self.header = path, header

    def bad(self, what: str) -> PermanentConversionError:
        return PermanentConversionError(
            f"{self.path}: {what}; the file cannot be converted as it is (replace it, or "
            "remove it and convert the group without it)"
        )

    def array(self, key: str, max_size: int, *, required: bool = True) -> np.ndarray | None:
        v = self.header.read(key, max_size, max_bytes=64 << 20)
        if v is None and required:
            raise self.bad(f"Header/{key} is missing")
        return v

    def need(self, key: str, max_size: int) -> np.ndarray:
        v = self.array(key, max_size)
        assert v is not None
        return v

    def text(self, key: str, default: str | None) -> str | None:
        v = self.header.read(key, 1, MAX_TEXT_BYTES)
        return default if v is None else _text(v).strip()


def read_file_meta(path: str, n_rows: int) -> FileMeta:
    """The metadata of one subband file with ``n_rows`` rows (the plan's count)."""
    try:
        fid = open_file(path, "best-effort")
    except UVH5Error as e:
        raise PermanentConversionError(f"{path}: {e}") from None
    try:
        check_contained(fid, full=False)
        header = Node(fid, b"").group("Header")
        if header is None:
            raise PermanentConversionError(f"{path}: no Header group; not a UVH5 file")
        return _read(_Reader(path, header), n_rows)
    except Unsafe as e:
        raise PermanentConversionError(f"{path}: {e}") from None
    except (TooLarge, OverflowError, KeyError, TypeError, ValueError, IndexError) as e:
        raise PermanentConversionError(
            f"{path}: the header cannot be read for the MS ({type(e).__name__}: {e}); "
            "compare it with a good file using h5dump -H"
        ) from None
    except OSError as e:
        raise PermanentConversionError(f"{path}: read error in the header ({e})") from None
    finally:
        fid.close()


def _read(r: _Reader, n_rows: int) -> FileMeta:
    numbers = r.need("antenna_numbers", MAX_ANTS).reshape(-1).astype(np.int64)
    n_ants = numbers.size
    names = _strings(r.need("antenna_names", MAX_ANTS))
    pos = r.need("antenna_positions", 3 * MAX_ANTS).astype(np.float64).reshape(-1, 3)
    if len(names) != n_ants or pos.shape[0] != n_ants or numbers.min(initial=0) < 0:
        raise r.bad("antenna_numbers, antenna_names and antenna_positions disagree")
    diam = r.array("antenna_diameters", MAX_ANTS, required=False)
    mounts = r.array("mount_type", MAX_ANTS, required=False)
    uvw = r.need("uvw_array", 3 * MAX_ROWS).astype(np.float64).reshape(-1, 3)
    if uvw.shape[0] != n_rows:
        raise r.bad(f"uvw_array has {uvw.shape[0]} rows, time_array {n_rows}")
    integ = r.need("integration_time", MAX_ROWS).astype(np.float64).reshape(-1)
    if integ.size not in (1, n_rows):
        raise r.bad(f"integration_time has {integ.size} rows, time_array {n_rows}")
    freq_n = r.need("freq_array", MAX_ROWS).size
    width = np.broadcast_to(
        r.need("channel_width", MAX_ROWS).astype(np.float64).reshape(-1), (freq_n,)
    )
    spw = r.array("flex_spw_id_array", MAX_ROWS, required=False)
    if spw is None:
        spw = np.broadcast_to(r.need("spw_array", MAX_ROWS).reshape(-1)[:1], (freq_n,))
    feeds = r.array("feed_array", 4 * MAX_ANTS, required=False)
    angles = r.array("feed_angle", 4 * MAX_ANTS, required=False)
    return FileMeta(
        antenna_numbers=numbers,
        antenna_names=names,
        antenna_positions=pos,
        antenna_diameters=None if diam is None else diam.astype(np.float64).reshape(-1),
        mount_types=None if mounts is None else _strings(mounts),
        uvw=uvw,
        projected=_projected(r, n_rows),
        integration_s=np.array(np.broadcast_to(integ, (n_rows,))),
        pols=r.need("polarization_array", 4).reshape(-1).astype(np.int64),
        spw_ids=np.asarray(spw, dtype=np.int64).reshape(-1),
        channel_width=np.array(width),
        vis_units=_units(r.text("vis_units", "uncalib")),
        history=r.text("history", "") or "",
        pol_convention=r.text("pol_convention", None),
        x_orientation=r.text("x_orientation", None),
        feed_array=None if feeds is None else np.char.lower(_feed_strings(feeds)),
        feed_angle=None if angles is None else angles.astype(np.float64),
        extra_keywords=_extra_keywords(r),
    )


def _units(v: str | None) -> str:
    # pyuvdata's spelling of uncalibrated data, whatever case the file uses
    return "uncalib" if not v or v.lower() == "uncalib" else v


def _feed_strings(v: np.ndarray) -> np.ndarray:
    return np.array(_strings(v), dtype="<U1").reshape(v.shape)


def _projected(r: _Reader, n_rows: int) -> np.ndarray:
    """Per row: are the file's data projected to a phase centre (its w applies)?

    Files of UVH5 1.0+ name each row's catalog entry (``phase_center_id_array``) and
    each entry's ``cat_type``; older files say ``phase_type`` ("phased" or "drift";
    pyuvdata reads anything but "phased" as unprojected)."""
    cat = r.header.group("phase_center_catalog")
    ids = r.array("phase_center_id_array", MAX_ROWS, required=False)
    if cat is None or ids is None:
        return np.full(n_rows, r.text("phase_type", "drift") == "phased")
    ids = ids.reshape(-1).astype(np.int64)
    if ids.size != n_rows:
        raise r.bad(f"phase_center_id_array has {ids.size} rows, time_array {n_rows}")
    out = np.zeros(n_rows, bool)
    for key in cat.children():
        entry = cat.group(key)
        if entry is None:
            raise r.bad(f"phase_center_catalog/{key} is not a group")
        kind = _text(entry.read("cat_type", 1, MAX_TEXT_BYTES)).strip()
        if kind not in _UNPROJECTED:
            out[ids == int(key)] = True
    return out


def _extra_keywords(r: _Reader) -> dict[str, Any]:
    ek = r.header.group("extra_keywords")
    if ek is None:
        return {}
    out: dict[str, Any] = {}
    for key in ek.children():
        v = ek.read(key, MAX_ROWS, max_bytes=MAX_TEXT_BYTES * 16)
        if v is not None:
            out[key] = _keyword_value(v)
    return out
