"""UVH5 header reader: h5py only, metadata only, every layout pyuvdata writes.

pyuvdata's ``read(read_data=False)`` costs 12-64 ms a file plus a numba warm-up; the
few datasets the index needs cost ~1 ms with h5py. Data arrays are never read; their
shapes are checked (metadata) so that a file whose header lies about its size is
rejected instead of indexed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsa110_ingest.errors import (
    HeaderTooLargeError,
    InvalidHeaderError,
    MissingFieldError,
    MissingHeaderError,
    TruncatedFileError,
    UVH5Error,
)
from dsa110_ingest.times import jd_to_mjd
from dsa110_ingest.uvh5.fields import array_field, finite_array, float_field, int_field, text_field
from dsa110_ingest.uvh5.node import Node, TooLarge
from dsa110_ingest.uvh5.opening import open_file
from dsa110_ingest.uvh5.pointing import phase_centre
from dsa110_ingest.uvh5.safety import Unsafe, Walked, check_members, unsafe_error

# Beyond this a claimed dimension is a corrupt header, not a telescope: DSA-110 has
# ~111k baseline-times per file, so 1e8 leaves ample room.
MAX_BLTS = 100_000_000
MAX_FREQS = 10_000_000
_VISDATA = "Data/visdata"


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


def read_header(path: str, locking: str = "best-effort") -> HeaderInfo:
    """Read the index metadata of one UVH5 file. Raises :class:`UVH5Error` subclasses."""
    fid = open_file(path, locking)
    try:
        # the root is listed (and its links checked) once, for both the rule and the reads
        root = Node(fid, b"")
        # all of Header/ and Data/, as the converter checks them (one rule: a file the
        # converter would refuse is never indexed); what it opened is read below, not
        # opened (nor its links checked) again
        root.walked = check_members(root.gid, root.raw_names, True, Walked((b"Header",)))
        return _read_open(path, root)
    except UVH5Error:
        raise
    except Unsafe as e:
        raise unsafe_error(path, e) from None
    except TooLarge as e:
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


def _read_open(path: str, root: Node) -> HeaderInfo:
    header = root.group("Header")
    if header is None:
        raise MissingHeaderError(
            path,
            "HDF5 file has no Header group (not a UVH5 file)",
            "only UVH5 subband files belong in a storage location",
        )
    n_ants = int_field(path, header, "Nants_data", 1, 100_000)
    n_bls = int_field(path, header, "Nbls", 1, 10**9)
    n_blts = int_field(path, header, "Nblts", 1, MAX_BLTS)
    n_freqs = int_field(path, header, "Nfreqs", 1, MAX_FREQS)
    n_pols = int_field(path, header, "Npols", 1, 4)
    n_times = int_field(path, header, "Ntimes", 1, MAX_BLTS)
    n_spws = (
        int_field(path, header, "Nspws", 1, 100_000) if header.shape("Nspws") is not None else 1
    )

    times = finite_array(path, "time_array", array_field(path, header, "time_array", MAX_BLTS))
    if times.size != n_blts:
        raise InvalidHeaderError(path, f"time_array has {times.size} entries, Nblts = {n_blts}")
    freqs = finite_array(path, "freq_array", array_field(path, header, "freq_array", MAX_FREQS))
    # old files: (Nspws, Nfreqs); version >= 1.0 files: (Nfreqs,)
    freqs = freqs.reshape(-1)
    if freqs.size != n_freqs:
        raise InvalidHeaderError(path, f"freq_array has {freqs.size} entries, Nfreqs = {n_freqs}")
    pols = array_field(path, header, "polarization_array", 4)
    if pols.size != n_pols:
        raise InvalidHeaderError(
            path, f"polarization_array has {pols.size} entries, Npols = {n_pols}"
        )

    cw_raw = header.read_number("channel_width", MAX_FREQS)
    cw = np.abs(finite_array(path, "channel_width", cw_raw)) if cw_raw is not None else np.zeros(1)
    it_raw = header.read_number("integration_time", MAX_BLTS)
    it = finite_array(path, "integration_time", it_raw) if it_raw is not None else np.zeros(1)

    _check_data_shapes(path, root, n_blts, n_freqs, n_pols)

    t0 = float(times.min())
    t1 = float(times.max())
    lat = float_field(path, header, "latitude")
    lon = float_field(path, header, "longitude")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 360.0):
        raise InvalidHeaderError(path, f"telescope location lat={lat}, lon={lon} is impossible")
    mid_jd = (t0 + t1) / 2.0
    phase_type, ra, dec = phase_centre(path, header, mid_jd, lat, lon, times)
    version = text_field(path, header, "version") if header.shape("version") is not None else ""

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
        telescope_name=text_field(path, header, "telescope_name"),
        latitude_deg=lat,
        longitude_deg=lon,
        altitude_m=float_field(path, header, "altitude"),
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


def _check_data_shapes(path: str, root: Node, n_blts: int, n_freqs: int, n_pols: int) -> None:
    shape = root.shape(_VISDATA)
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
