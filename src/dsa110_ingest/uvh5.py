"""UVH5 header reader: h5py only, metadata only, every layout pyuvdata writes.

pyuvdata's ``read(read_data=False)`` costs 12-64 ms a file plus a numba warm-up; the
few datasets the index needs cost ~1 ms with h5py. Data arrays are never read; their
shapes are checked (metadata) so that a file whose header lies about its size is
rejected instead of indexed.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5f, h5g, h5l, h5o, h5p, h5s, h5t

from dsa110_ingest.errors import (
    ConversionDataError,
    ExternalLinkError,
    ExternalStorageError,
    FileLockedError,
    FilePermissionError,
    FileVanishedError,
    HeaderTooLargeError,
    InvalidHeaderError,
    MissingFieldError,
    MissingHeaderError,
    NotHDF5Error,
    SoftLinkError,
    TruncatedFileError,
    UnsafeHDF5Error,
    UVH5Error,
    VirtualDatasetError,
)
from dsa110_ingest.times import jd_to_mjd

REQUIRED = (
    "Nants_data",
    "Nbls",
    "Nblts",
    "Nfreqs",
    "Npols",
    "Ntimes",
    "time_array",
    "freq_array",
    "telescope_name",
    "latitude",
    "longitude",
    "altitude",
    "polarization_array",
)
# Beyond this a claimed dimension is a corrupt header, not a telescope: DSA-110 has
# ~111k baseline-times per file, so 1e8 leaves ample room.
MAX_BLTS = 100_000_000
MAX_FREQS = 10_000_000
# Memory, not element counts, bounds a read: a few hundred bytes of gzip can claim a
# 300 MB string. DSA-110's largest header dataset (time_array) is ~0.9 MB.
MAX_READ_BYTES = 64 * 2**20
MAX_TEXT_BYTES = 64 * 2**10
# Header/ and Data/ of a UVH5 file hold a few dozen objects, two levels deep at most
MAX_OBJECTS = 10_000
MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    n_ants: int
    n_bls: int
    n_blts: int
    n_freqs: int
    n_pols: int
    n_spws: int
    n_times: int
    start_mjd: float
    end_mjd: float
    mid_mjd: float
    freq_min_hz: float
    freq_max_hz: float
    channel_width_hz: float
    integration_time_s: float
    telescope_name: str
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    polarizations: tuple[int, ...]
    phase_type: str
    ra_deg: float | None
    dec_deg: float | None
    uvh5_version: str


_FAPL: dict[str, h5p.PropFAID] = {}


def _fapl(mode: str) -> h5p.PropFAID:
    """File-access property list, made once per locking mode (a per-file cost otherwise)."""
    if mode not in _FAPL:
        fapl = h5p.create(h5p.FILE_ACCESS)
        use, ignore_unsupported = {"true": (True, False), "false": (False, False)}.get(
            mode, (True, True)
        )
        fapl.set_file_locking(use, ignore_unsupported)
        _FAPL[mode] = fapl
    return _FAPL[mode]


class _Node:
    """A group of an open file, read through h5py's low-level API.

    The high-level ``h5py.File``/``Group``/``Dataset`` objects cost ~60 us each per
    access; on the ~20 fields the index needs that was two thirds of a file's cost.
    """

    def __init__(self, fid: h5f.FileID, prefix: bytes) -> None:
        self.fid = fid
        self.prefix = prefix
        # one listing of the members: a lookup of a missing name costs an HDF5 error stack
        gid = h5g.open(fid, prefix.rstrip(b"/") or b"/")
        # before any member is opened: a soft-link loop or an external link is never followed
        _check_links(gid, prefix.decode("utf-8", "replace").strip("/"))
        self.names = frozenset(n.decode("utf-8", "replace") for n in gid)
        self._open: dict[str, h5d.DatasetID | None] = {}

    def _ds(self, key: str) -> h5d.DatasetID | None:
        if key.split("/", 1)[0] not in self.names:
            return None
        if key not in self._open:
            try:
                ds = h5d.open(self.fid, self.prefix + key.encode())
            except (KeyError, ValueError, TypeError):
                ds = None
            if ds is not None:
                _check_storage(ds, (self.prefix + key.encode()).decode("utf-8", "replace"))
            self._open[key] = ds
        return self._open[key]

    def group(self, key: str) -> _Node | None:
        if key not in self.names:
            return None
        try:
            return _Node(self.fid, self.prefix + key.encode() + b"/")
        except (KeyError, ValueError, TypeError):
            return None  # a dataset of that name, not a group

    def children(self) -> list[str]:
        return sorted(self.names)

    def shape(self, key: str) -> tuple[int, ...] | None:
        ds = self._ds(key)
        return None if ds is None else ds.shape

    def read(self, key: str, max_size: int, max_bytes: int = MAX_READ_BYTES) -> np.ndarray | None:
        """The dataset's value in its own type; None when there is no such dataset."""
        ds = self._ds(key)
        if ds is None:
            return None
        dt = ds.dtype
        shape = self._checked_shape(key, ds, max_size, dt.itemsize, max_bytes)
        if dt.kind in "OV":  # variable-length strings, compounds: the slow path
            # a variable-length string lives uncompressed in the file's heap: it can be no
            # bigger than the file, so there is no amplification to bound beyond the count
            return np.asarray(h5py.Dataset(ds)[()])
        out = np.empty(shape, dtype=dt)
        ds.read(h5s.ALL, h5s.ALL, out)
        return out

    def read_number(self, key: str, max_size: int) -> np.ndarray | None:
        """A numeric dataset as float64, converted by HDF5 (no numpy type introspection:
        it is most of a small read's cost). A non-numeric one comes back in its own type,
        for the caller's type check to name."""
        ds = self._ds(key)
        if ds is None:
            return None
        shape = self._checked_shape(key, ds, max_size, 8, MAX_READ_BYTES)
        out = np.empty(shape, dtype=np.float64)
        try:
            ds.read(h5s.ALL, h5s.ALL, out, _F64)
        except (TypeError, ValueError, OSError):
            return self.read(key, max_size)
        return out

    @staticmethod
    def _checked_shape(
        key: str, ds: h5d.DatasetID, max_size: int, itemsize: int, max_bytes: int
    ) -> tuple[int, ...]:
        shape = ds.shape
        if shape is None:  # an HDF5 null dataspace: present, but no value
            raise ValueError(f"{key} has no value (null dataspace)")
        n = 1
        for d in shape:
            n *= d
        if n > max_size:
            raise OverflowError(key)
        # the reader's own allocation (float64 for numbers: HDF5 converts through a
        # bounded buffer, so the file's type does not add to it)
        nbytes = n * itemsize
        if nbytes > max_bytes:
            raise _TooLarge(key, nbytes, max_bytes)
        return shape


class _TooLarge(Exception):
    def __init__(self, key: str, nbytes: int, limit: int) -> None:
        super().__init__(key)
        self.key, self.nbytes, self.limit = key, nbytes, limit


class _Unsafe(Exception):
    def __init__(self, kind: type[UnsafeHDF5Error], where: str, detail: str) -> None:
        super().__init__(where)
        self.kind, self.where, self.detail = kind, where, detail


def _link_problem(gid: h5g.GroupID, raw: bytes, ltype: int) -> _Unsafe:
    name = raw.decode("utf-8", "replace")
    if ltype == h5l.TYPE_SOFT:
        target = gid.links.get_val(raw).decode("utf-8", "replace")
        return _Unsafe(SoftLinkError, name, f"is a soft link to {target!r}")
    if ltype == h5l.TYPE_EXTERNAL:
        fname, obj = gid.links.get_val(raw)
        return _Unsafe(
            ExternalLinkError,
            name,
            f"is an external link to {obj.decode('utf-8', 'replace')!r} in "
            f"{fname.decode('utf-8', 'replace')!r}",
        )
    return _Unsafe(ExternalLinkError, name, f"is a user-defined link (type {ltype})")


def _check_links(gid: h5g.GroupID, where: str) -> None:
    """Every member of ``gid`` is a hard link: read from the group's own link table, so a
    soft-link loop or an external link to a FIFO is found without being followed."""
    bad: list[tuple[bytes, int]] = []

    def visit(raw: bytes, info: Any) -> int | None:
        if info.type != h5l.TYPE_HARD:
            bad.append((raw, info.type))
            return 1  # stop the iteration
        return None

    gid.links.iterate(visit, info=True)
    if bad:
        e = _link_problem(gid, *bad[0])
        e.where = f"{where}/{e.where}" if where else e.where
        raise e


def _check_storage(ds: h5d.DatasetID, where: str) -> None:
    """Raw data kept in other files (external storage, virtual datasets) is never read."""
    dcpl = ds.get_create_plist()
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise _Unsafe(VirtualDatasetError, where, "is a virtual dataset (data in other files)")
    if dcpl.get_external_count() > 0:
        ext = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise _Unsafe(ExternalStorageError, where, f"keeps its raw data outside the file ({ext!r})")


def _walk(gid: h5g.GroupID, where: str, depth: int, budget: list[int]) -> None:
    """Links and storage of everything under ``gid`` (the converter reads all of it)."""
    if depth > MAX_DEPTH:
        raise _Unsafe(UnsafeHDF5Error, where, "groups nested too deep (a hard-link cycle?)")
    _check_links(gid, where)
    for raw in gid:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Unsafe(UnsafeHDF5Error, where, f"holds more than {MAX_OBJECTS} objects")
        here = f"{where}/{raw.decode('utf-8', 'replace')}"
        obj = h5o.open(gid, raw)
        if isinstance(obj, h5g.GroupID):
            _walk(obj, here, depth + 1, budget)
        elif isinstance(obj, h5d.DatasetID):
            _check_storage(obj, here)


def check_contained(fid: h5f.FileID, full: bool = True) -> None:
    """Raise ``_Unsafe`` unless the root's links, and everything under Header/ and Data/,
    stay inside the file. ``full=False`` (the indexer's hot path) leaves the storage check
    of each Header/ dataset to the moment it is opened: a full walk would triple the cost
    of a header read, and datasets the index never opens are never read by it."""
    root = h5g.open(fid, b"/")
    _check_links(root, "")
    budget = [MAX_OBJECTS]
    members = set(root)
    for raw in (b"Header", b"Data"):
        if raw not in members:
            continue
        obj = h5o.open(root, raw)
        if not isinstance(obj, h5g.GroupID):
            continue
        if full or raw == b"Data":
            _walk(obj, raw.decode(), 1, budget)
        # else: each group of Header/ the reader uses checks its links as it is opened


def _unsafe_error(path: str, e: _Unsafe) -> UnsafeHDF5Error:
    return e.kind(
        path,
        f"{e.where} {e.detail}; files that link or store data outside themselves are never read",
        "rewrite the file with its data inside it (h5repack -f NONE does not follow links; "
        "pyuvdata's write_uvh5 does)",
    )


def assert_self_contained(path: str) -> None:
    """For the converter: raise :class:`UnsafeHDF5Error` when ``path`` links or stores data
    outside itself (the same rule as the indexer's)."""
    fid = _open(path, "best-effort")
    try:
        check_contained(fid, full=True)
    except _Unsafe as e:
        raise _unsafe_error(path, e) from None
    finally:
        fid.close()


_F64 = h5t.NATIVE_DOUBLE


def open_error(path: str, exc: OSError) -> UVH5Error:
    """Map the OSError h5py raised on open to the project's typed errors."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return FileVanishedError(
            path,
            "file disappeared before it could be read",
            "nothing to do if it was moved or deleted on purpose",
        )
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return FilePermissionError(
            path,
            "permission denied while opening",
            "make it readable by the daemon's user (chmod/chgrp)",
        )
    if isinstance(exc, BlockingIOError) or "unable to lock file" in low or exc.errno == 11:
        return FileLockedError(
            path,
            "locked by a writer (HDF5 file lock)",
            "retried automatically once the writer closes it",
        )
    if "truncated file" in low:
        return TruncatedFileError(
            path, f"truncated HDF5 file ({text})", "the copy or write was cut short; write it again"
        )
    if "signature" in low or "not an hdf5" in low:
        return NotHDF5Error(
            path,
            "not an HDF5 file (no HDF5 signature)",
            "only UVH5 subband files belong in a storage location",
        )
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
        return NotHDF5Error(path, "is a directory, not a file", "rename or move it")
    return NotHDF5Error(
        path,
        f"cannot be opened as HDF5: {text}",
        "check the file with h5dump; rewrite it if it is damaged",
    )


def refuse_unsafe_inputs(paths: Iterable[str]) -> None:
    """For the converter, before it opens anything with pyuvdata: raise
    :class:`ConversionDataError` when an input links or stores data outside itself (a
    file changed after it was indexed, or indexed before this check existed)."""
    for p in paths:
        try:
            assert_self_contained(p)
        except UnsafeHDF5Error as e:
            raise ConversionDataError(
                f"input refused ({e.reason}): {e}; the group is not converted "
                "(retrying cannot help)"
            ) from None
        except UVH5Error:
            continue  # missing or damaged: the converter reports that in its own words


def _open(path: str, locking: str) -> h5f.FileID:
    try:
        # O_NONBLOCK: a FIFO put in place of the file must not block this open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotHDF5Error(
                path,
                "not a regular file (a FIFO, socket or device)",
                "only UVH5 subband files belong in a storage location",
            )
        if st.st_size == 0:
            raise NotHDF5Error(
                path,
                "empty file (0 bytes)",
                "a writer may still be starting; it is retried when it grows",
            )
        return h5f.open(os.fsencode(path), h5f.ACC_RDONLY, fapl=_fapl(locking))
    except UVH5Error:
        raise
    except OSError as e:
        raise open_error(path, e) from None


def read_header(path: str, locking: str = "best-effort") -> HeaderInfo:
    """Read the index metadata of one UVH5 file. Raises :class:`UVH5Error` subclasses."""
    fid = _open(path, locking)
    try:
        check_contained(fid, full=False)
        return _read_open(path, _Node(fid, b""))
    except UVH5Error:
        raise
    except _Unsafe as e:
        raise _unsafe_error(path, e) from None
    except _TooLarge as e:
        raise HeaderTooLargeError(
            path,
            f"Header/{e.key} would need {e.nbytes / 2**20:.1f} MiB to read (limit "
            f"{e.limit / 2**20:.2f} MiB): a corrupt or hostile header",
            "the file cannot be used; write it again",
        ) from None
    except RuntimeError as e:
        # HDF5's own failures (a link or object it cannot resolve) are the file's fault
        raise InvalidHeaderError(
            path, f"HDF5 could not resolve an object: {e}", "check the file with h5dump"
        ) from None
    except OSError as e:
        # a read failing after a good open means the file is damaged past its header
        raise TruncatedFileError(
            path,
            f"read error inside the file: {e}",
            "the file is damaged or was cut short; write it again",
        ) from None
    except OverflowError as e:
        raise InvalidHeaderError(
            path, f"Header/{e} claims too many elements (corrupt header)", "the file cannot be used"
        ) from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise InvalidHeaderError(
            path, f"header is malformed: {e}", "compare with a good file using h5dump -H"
        ) from None
    finally:
        fid.close()


def _missing(path: str, key: str) -> MissingFieldError:
    return MissingFieldError(
        path,
        f"required header field Header/{key} is missing",
        "the file was not written by a UVH5 writer",
    )


def _scalar(path: str, h: _Node, key: str, numeric: bool = True) -> Any:
    v = h.read_number(key, 1) if numeric else h.read(key, 1, MAX_TEXT_BYTES)
    if v is None:
        raise _missing(path, key)
    if v.size != 1:
        raise InvalidHeaderError(path, f"Header/{key} should be a scalar, has shape {v.shape}")
    x = v.reshape(()).item()
    return x.item() if isinstance(x, np.generic) else x


def _int(path: str, h: _Node, key: str, lo: int = 0, hi: int = 2**40) -> int:
    v = _scalar(path, h, key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidHeaderError(path, f"Header/{key} = {v!r} is not an integer in {lo}..{hi}")
    return v


def _float(path: str, h: _Node, key: str) -> float:
    v = _scalar(path, h, key)
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InvalidHeaderError(path, f"Header/{key} = {v!r} is not a number") from None
    if not math.isfinite(x):
        raise InvalidHeaderError(path, f"Header/{key} is {x} (not finite)")
    return x


def _text(path: str, h: _Node, key: str) -> str:
    v = _scalar(path, h, key, numeric=False)
    if isinstance(v, bytes | str) and len(v) > MAX_TEXT_BYTES:
        # a variable-length string: read already (no bigger than the file), never kept
        raise HeaderTooLargeError(
            path,
            f"Header/{key} is a {len(v)}-byte string (limit {MAX_TEXT_BYTES})",
            "the file cannot be used; write it again",
        )
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    raise InvalidHeaderError(path, f"Header/{key} should be a string, got {type(v).__name__}")


def _array(path: str, h: _Node, key: str, max_size: int) -> np.ndarray:
    v = h.read_number(key, max_size)
    if v is None:
        raise _missing(path, key)
    return v


def _finite(path: str, key: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "iuf":
        raise InvalidHeaderError(path, f"Header/{key} has non-numeric type {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.size == 0 or not np.isfinite(a).all():
        raise InvalidHeaderError(
            path,
            f"Header/{key} is empty or holds NaN/inf values",
            "the correlator wrote a bad header; the file cannot be used",
        )
    return a


def _read_open(path: str, f: _Node) -> HeaderInfo:
    h = f.group("Header")
    if h is None:
        raise MissingHeaderError(
            path,
            "HDF5 file has no Header group (not a UVH5 file)",
            "only UVH5 subband files belong in a storage location",
        )
    n_ants = _int(path, h, "Nants_data", 1, 100_000)
    n_bls = _int(path, h, "Nbls", 1, 10**9)
    n_blts = _int(path, h, "Nblts", 1, MAX_BLTS)
    n_freqs = _int(path, h, "Nfreqs", 1, MAX_FREQS)
    n_pols = _int(path, h, "Npols", 1, 4)
    n_times = _int(path, h, "Ntimes", 1, MAX_BLTS)
    n_spws = _int(path, h, "Nspws", 1, 100_000) if h.shape("Nspws") is not None else 1

    times = _finite(path, "time_array", _array(path, h, "time_array", MAX_BLTS))
    if times.size != n_blts:
        raise InvalidHeaderError(path, f"time_array has {times.size} entries, Nblts = {n_blts}")
    freqs = _finite(path, "freq_array", _array(path, h, "freq_array", MAX_FREQS))
    # old files: (Nspws, Nfreqs); version >= 1.0 files: (Nfreqs,)
    freqs = freqs.reshape(-1)
    if freqs.size != n_freqs:
        raise InvalidHeaderError(path, f"freq_array has {freqs.size} entries, Nfreqs = {n_freqs}")
    pols = _array(path, h, "polarization_array", 4)
    if pols.size != n_pols:
        raise InvalidHeaderError(
            path, f"polarization_array has {pols.size} entries, Npols = {n_pols}"
        )

    cw_raw = h.read_number("channel_width", MAX_FREQS)
    cw = np.abs(_finite(path, "channel_width", cw_raw)) if cw_raw is not None else np.zeros(1)
    it_raw = h.read_number("integration_time", MAX_BLTS)
    it = _finite(path, "integration_time", it_raw) if it_raw is not None else np.zeros(1)

    _check_data_shapes(path, f, n_blts, n_freqs, n_pols)

    t0 = float(times.min())
    t1 = float(times.max())
    lat = _float(path, h, "latitude")
    lon = _float(path, h, "longitude")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 360.0):
        raise InvalidHeaderError(path, f"telescope location lat={lat}, lon={lon} is impossible")
    mid_jd = (t0 + t1) / 2.0
    phase_type, ra, dec = _phase_centre(path, h, mid_jd, lat, lon, times)
    version = _text(path, h, "version") if h.shape("version") is not None else ""

    return HeaderInfo(
        n_ants=n_ants,
        n_bls=n_bls,
        n_blts=n_blts,
        n_freqs=n_freqs,
        n_pols=n_pols,
        n_spws=n_spws,
        n_times=n_times,
        start_mjd=jd_to_mjd(t0),
        end_mjd=jd_to_mjd(t1),
        mid_mjd=jd_to_mjd(mid_jd),
        freq_min_hz=float(freqs.min()),
        freq_max_hz=float(freqs.max()),
        channel_width_hz=_typical(cw),
        integration_time_s=_typical(it),
        telescope_name=_text(path, h, "telescope_name"),
        latitude_deg=lat,
        longitude_deg=lon,
        altitude_m=_float(path, h, "altitude"),
        polarizations=tuple(int(p) for p in pols.reshape(-1)),
        phase_type=phase_type,
        ra_deg=ra,
        dec_deg=dec,
        uvh5_version=version,
    )


def _typical(a: np.ndarray) -> float:
    """The median, without sorting when the array is constant (nearly always: a median of
    Nblts values would be a tenth of a file's read time)."""
    lo, hi = float(a.min()), float(a.max())
    return lo if lo == hi else float(np.median(a))


def _check_data_shapes(path: str, f: _Node, n_blts: int, n_freqs: int, n_pols: int) -> None:
    shape = f.shape("Data/visdata")
    if shape is None:
        raise MissingFieldError(
            path,
            "Data/visdata is missing (header without data)",
            "the write was interrupted; write the file again",
        )
    # (Nblts, Nfreqs, Npols), or (Nblts, 1, Nfreqs, Npols) in old files
    core = tuple(s for i, s in enumerate(shape) if not (len(shape) == 4 and i == 1 and s == 1))
    if core != (n_blts, n_freqs, n_pols):
        raise InvalidHeaderError(
            path,
            f"Data/visdata has shape {shape}, header says "
            f"Nblts={n_blts} Nfreqs={n_freqs} Npols={n_pols}",
        )


def _opt_float(h: _Node, key: str) -> float | None:
    try:
        v = h.read_number(key, 1)
    except (ValueError, OverflowError):
        return None
    if v is None or v.size != 1 or v.dtype.kind not in "iuf":
        return None
    val = float(v.reshape(()))
    return val if math.isfinite(val) else None


def gmst_rad(jd: float) -> float:
    """Greenwich mean sidereal time (IAU 1982), good to ~0.1 s: enough for an index RA."""
    t = (jd - 2451545.0) / 36525.0
    gmst_s = (
        67310.54841 + (876600.0 * 3600.0 + 8640184.812866) * t + 0.093104 * t * t - 6.2e-6 * t**3
    )
    return math.radians((gmst_s % 86400.0) / 240.0)


def _lst_rad(h: _Node, mid_jd: float, lon_deg: float, times: np.ndarray) -> float:
    if h.shape("lst_array") == times.shape:
        lst = h.read_number("lst_array", times.size)
        i = int(np.argmin(np.abs(times - mid_jd)))
        if math.isfinite(lst[i]):
            return float(lst[i])
    return (gmst_rad(mid_jd) + math.radians(lon_deg)) % (2 * math.pi)


def _phase_centre(
    path: str, h: _Node, mid_jd: float, lat: float, lon: float, times: np.ndarray
) -> tuple[str, float | None, float | None]:
    """(phase_type, ra_deg, dec_deg) from whichever convention the file uses."""
    cat = h.group("phase_center_catalog")
    ids = cat.children() if cat is not None else []
    if cat is not None and ids:
        entry = cat.group(sorted(ids, key=lambda k: int(k) if k.isdigit() else 0)[0])
        if entry is None:
            raise InvalidHeaderError(path, "phase_center_catalog entry is not a group")
        has_type = entry.shape("cat_type") is not None
        cat_type = _text(path, entry, "cat_type") if has_type else "sidereal"
        if cat_type == "sidereal":
            lon_c = _opt_float(entry, "cat_lon")
            lat_c = _opt_float(entry, "cat_lat")
            if lon_c is not None and lat_c is not None:
                return cat_type, math.degrees(lon_c) % 360.0, math.degrees(lat_c)
        return cat_type, *_drift_radec(h, mid_jd, lat, lon, times)

    phase_type = _text(path, h, "phase_type") if h.shape("phase_type") is not None else "drift"
    if phase_type == "phased":
        ra = _opt_float(h, "phase_center_ra")
        dec = _opt_float(h, "phase_center_dec")
        if ra is None or dec is None:
            raise InvalidHeaderError(
                path, "phase_type is 'phased' but phase_center_ra/dec are missing or not finite"
            )
        return phase_type, math.degrees(ra) % 360.0, math.degrees(dec)
    return phase_type, *_drift_radec(h, mid_jd, lat, lon, times)


def _drift_radec(
    h: _Node, mid_jd: float, lat: float, lon: float, times: np.ndarray
) -> tuple[float, float]:
    """Pointing of a drift scan at mid time: DSA-110 keeps dec and HA in extra_keywords."""
    lst = _lst_rad(h, mid_jd, lon, times)
    ek = h.group("extra_keywords")
    dec_rad = ha_rad = None
    if ek is not None:
        dec_rad = _opt_float(ek, "phase_center_dec")
        ha_rad = _opt_float(ek, "ha_phase_center")
    ra = math.degrees((lst - (ha_rad or 0.0)) % (2 * math.pi))
    dec = math.degrees(dec_rad) if dec_rad is not None else lat
    return ra, dec
