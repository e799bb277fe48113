"""The header reader against pyuvdata's own reading of real files, and every bad file."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from dsa110_ingest.errors import (
    ConversionDataError,
    FileLockedError,
    InvalidHeaderError,
    MissingFieldError,
    MissingHeaderError,
    NotHDF5Error,
    TruncatedFileError,
)
from dsa110_ingest.ingest.reader import HeaderReader, ReadFailure, read_for_index
from dsa110_ingest.times import iso_to_unix
from dsa110_ingest.tools.simulate import SimParams, write_subband_file
from dsa110_ingest.uvh5 import read_header, refuse_unsafe_inputs

from .. import hostile
from ..conftest import DATA, run_without_dac
from ..hostile import SECRET

FIXTURES = ["zen.2458661.23480.HH.uvh5", "zen.2458432.34569.uvh5", "simulated_bda_file.uvh5"]


def _pyuvdata(path: Path):  # type: ignore[no-untyped-def]
    from pyuvdata import UVData

    uv = UVData()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uv.read(str(path), file_type="uvh5", read_data=False)
    return uv


@pytest.fixture(scope="module")
def dsa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("dsa") / "2025-10-02T00:12:00_sb03.hdf5"
    write_subband_file(p, iso_to_unix("2025-10-02T00:12:00"), 3, SimParams(nants=5, nchan=6))
    return p


@pytest.mark.parametrize("name", [*FIXTURES, "dsa"])
def test_reader_agrees_with_pyuvdata(name: str, tmp_path: Path, dsa_file: Path) -> None:
    if name == "dsa":
        path = dsa_file
    else:  # under a DSA-110 style name, as the daemon would see it
        path = tmp_path / "2025-10-02T00:12:00_sb03.hdf5"
        shutil.copy(DATA / name, path)
    h = read_header(str(path))
    uv = _pyuvdata(path)
    assert (h.n_ants, h.n_bls, h.n_blts, h.n_freqs, h.n_pols, h.n_spws, h.n_times) == (
        uv.Nants_data,
        uv.Nbls,
        uv.Nblts,
        uv.Nfreqs,
        uv.Npols,
        uv.Nspws,
        uv.Ntimes,
    )
    assert h.start_mjd == pytest.approx(uv.time_array.min() - 2400000.5, abs=1e-9)
    assert h.end_mjd == pytest.approx(uv.time_array.max() - 2400000.5, abs=1e-9)
    assert h.freq_min_hz == pytest.approx(uv.freq_array.min())
    assert h.freq_max_hz == pytest.approx(uv.freq_array.max())
    assert h.channel_width_hz == pytest.approx(np.median(np.abs(uv.channel_width)))
    assert h.telescope_name == uv.telescope.name
    lat, lon, alt = uv.telescope.location_lat_lon_alt_degrees
    assert (h.latitude_deg, h.longitude_deg, h.altitude_m) == pytest.approx((lat, lon, alt))
    assert list(h.polarizations) == list(uv.polarization_array)
    (cat,) = uv.phase_center_catalog.values()
    if cat["cat_type"] == "sidereal":
        assert h.ra_deg == pytest.approx(math.degrees(cat["cat_lon"]))
        assert h.dec_deg == pytest.approx(math.degrees(cat["cat_lat"]))
    else:  # drift: the pointing at mid time, RA = LST - HA, dec from the file or the zenith
        mid = np.argmin(np.abs(uv.time_array - (h.mid_mjd + 2400000.5)))
        lst_deg = math.degrees(uv.lst_array[mid])
        assert (h.ra_deg - lst_deg + 180) % 360 - 180 == pytest.approx(0, abs=0.05)
        assert h.dec_deg == pytest.approx(55.0 if name == "dsa" else lat)


def test_version_1_2_layout_reports_its_catalog_type() -> None:
    h = read_header(str(DATA / "zen.2458432.34569.uvh5"))
    assert h.uvh5_version == "1.2" and h.phase_type == "unprojected"


def test_phased_old_layout_reads_ra_dec(tmp_path: Path) -> None:
    p = tmp_path / "f.hdf5"
    shutil.copy(DATA / "zen.2458661.23480.HH.uvh5", p)
    with h5py.File(p, "r+") as f:
        del f["Header/phase_type"]
        f["Header/phase_type"] = np.bytes_("phased")
        f["Header/phase_center_ra"] = math.radians(123.5)
        f["Header/phase_center_dec"] = math.radians(-12.25)
    h = read_header(str(p))
    assert (h.phase_type, h.ra_deg, h.dec_deg) == (
        "phased",
        pytest.approx(123.5),
        pytest.approx(-12.25),
    )


def _copy(tmp_path: Path) -> Path:
    p = tmp_path / "2025-10-02T00:12:00_sb03.hdf5"
    shutil.copy(DATA / "zen.2458661.23480.HH.uvh5", p)
    return p


def _edit(p: Path, key: str, value: object | None) -> None:
    with h5py.File(p, "r+") as f:
        del f[key]
        if value is not None:
            f[key] = value


@pytest.mark.parametrize(
    ("key", "value", "exc", "needle"),
    [
        ("Header/Nblts", None, MissingFieldError, "Header/Nblts is missing"),
        ("Header/time_array", np.full(200, np.nan), InvalidHeaderError, "NaN/inf"),
        ("Header/freq_array", np.array([[np.inf, 1, 2, 3]]), InvalidHeaderError, "NaN/inf"),
        ("Header/Nblts", 10**12, InvalidHeaderError, "Nblts"),
        ("Header/Nfreqs", 5, InvalidHeaderError, "freq_array has 4 entries, Nfreqs = 5"),
        ("Header/Npols", np.bytes_("two"), InvalidHeaderError, "Npols"),
        # a scalar field is read without asking its shape first: one of several values,
        # or none at all, must still be refused by name
        ("Header/Nbls", np.arange(3), InvalidHeaderError, "Header/Nbls claims too many"),
        ("Header/altitude", h5py.Empty("f8"), InvalidHeaderError, "altitude has no value"),
        ("Header/latitude", 123.0, InvalidHeaderError, "impossible"),
        ("Data/visdata", np.zeros((3, 1, 4, 2), np.complex64), InvalidHeaderError, "visdata"),
    ],
)
def test_bad_header_fields_are_named(
    tmp_path: Path, key: str, value: object, exc: type, needle: str
) -> None:
    p = _copy(tmp_path)
    _edit(p, key, value)
    with pytest.raises(exc) as e:
        read_header(str(p))
    assert needle in str(e.value) and str(p) in str(e.value)


def test_no_header_group(tmp_path: Path) -> None:
    p = tmp_path / "x.hdf5"
    with h5py.File(p, "w") as f:
        f["foo"] = 1
    with pytest.raises(MissingHeaderError):
        read_header(str(p))


@pytest.mark.parametrize("content", [b"", b"this is not hdf5 at all" * 100])
def test_not_hdf5(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "x.hdf5"
    p.write_bytes(content)
    with pytest.raises(NotHDF5Error):
        read_header(str(p))


@pytest.mark.parametrize("keep", [100, 2048, 40000, 80000])
def test_truncated(tmp_path: Path, keep: int) -> None:
    src = (DATA / "zen.2458661.23480.HH.uvh5").read_bytes()
    p = tmp_path / "x.hdf5"
    p.write_bytes(src[:keep])
    with pytest.raises((TruncatedFileError, NotHDF5Error)) as e:
        read_header(str(p))
    assert e.value.reason in ("truncated", "not_hdf5")


def test_permission_denied(tmp_path: Path) -> None:
    p = _copy(tmp_path)
    os.chmod(p, 0)
    code = (
        "import sys\nfrom dsa110_ingest.uvh5 import read_header\n"
        "from dsa110_ingest.errors import FilePermissionError\n"
        f"try:\n    read_header({str(p)!r})\nexcept FilePermissionError as e:\n"
        "    print('denied', e.fix)\n    sys.exit(0)\nsys.exit(1)\n"
    )
    r = run_without_dac(code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "readable" in r.stdout


def test_file_locked_by_a_writer_is_retryable_not_rejected(tmp_path: Path) -> None:
    p = _copy(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py,time,sys\nf=h5py.File({str(p)!r},'r+',locking=True)\n"
            "print('open',flush=True)\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(FileLockedError):
            read_header(str(p), locking="true")
        r = read_for_index(str(p), "true", lock_wait_s=0.3)
        assert isinstance(r, ReadFailure) and r.retryable and r.reason == "locked"
    finally:
        holder.kill()
        holder.wait()
    assert read_header(str(p), locking="true").n_blts == 200


# -- files that reach outside themselves, loop, or claim huge allocations (issue 9) -------
@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("kind", sorted(hostile.MAKERS))
def test_hostile_structures_are_rejected_without_being_followed(
    tmp_path: Path, kind: str, variant: int
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = tmp_path / "2025-10-02T00:00:00_sb03.hdf5"
    write_subband_file(p, iso_to_unix("2025-10-02T00:00:00"), 3, SimParams(4, 2, 2))
    want = hostile.MAKERS[kind](p, variant, elsewhere)
    # through the reader processes: a read that followed the FIFO link would hang, and
    # is then killed at the deadline (read_timeout, not the reason we want)
    reader = HeaderReader("best-effort", 1, deadline_s=60)
    try:
        (r,) = list(reader.read_many([str(p)]))
    finally:
        reader.close()
    assert isinstance(r, ReadFailure), r
    assert r.reason == want, r
    assert SECRET.decode() not in r.message
    # the converter refuses the same file before pyuvdata opens it
    with (
        pytest.raises(ConversionDataError, match=want)
        if want != ("header_too_large")
        else _no_raise()
    ):
        refuse_unsafe_inputs([str(p)])


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_a_header_bomb_costs_no_memory(tmp_path: Path) -> None:
    """Peak RSS of a fresh process reading bombs stays what reading a normal file costs
    (before the byte bound: +100 MB for the string bomb, +640 MB for the array one; before
    the chunk rule +512 MB for a one-value field in one huge chunk)."""
    elsewhere = tmp_path / "e"
    elsewhere.mkdir()
    paths = []
    for v in (0, 1):
        p = tmp_path / f"2025-10-02T00:00:0{v}_sb03.hdf5"
        write_subband_file(p, iso_to_unix("2025-10-02T00:00:00"), 3, SimParams(4, 2, 2))
        hostile.compressed_bomb(p, v, elsewhere)
        paths.append(str(p))
    p = tmp_path / "2025-10-02T00:00:02_sb03.hdf5"
    write_subband_file(p, iso_to_unix("2025-10-02T00:00:00"), 3, SimParams(4, 2, 2))
    hostile.oversized_chunk(p, 0, elsewhere)  # before the chunk rule: +512 MB, 2 s of gzip
    paths.append(str(p))
    code = (
        "import resource,sys\n"
        "from dsa110_ingest.uvh5 import read_header\n"
        "from dsa110_ingest.errors import UVH5Error\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        read_header(p)\n"
        "    except UVH5Error as e:\n"
        "        print(e.reason)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:3] == ["header_too_large", "oversized_chunks", "oversized_chunks"]
    assert int(out[3]) < 32, f"reading three bombs grew RSS by {out[3]} MiB"


def test_a_fifo_in_place_of_the_file_is_not_opened_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "2025-10-02T00:00:00_sb03.hdf5"
    os.mkfifo(fifo)
    with pytest.raises(NotHDF5Error, match="not a regular file"):
        read_header(str(fifo))
