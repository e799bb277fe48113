"""The indexer and the converter apply one acceptance rule, on the shapes of file the
walk treats specially: hard-link cycles and shared groups, named datatypes (opened as
neither a dataset nor a group), problems deep below Header/, Data/'s other datasets.
Whatever the indexer's read does to save time (datasets opened once, groups listed
once), a file is refused by both or by neither, for the same reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5py import h5g

from dsa110_ingest.errors import ConversionDataError
from dsa110_ingest.ingest.reader import ReadFailure, read_for_index
from dsa110_ingest.times import iso_to_unix
from dsa110_ingest.tools.simulate import SimParams, write_subband_file
from dsa110_ingest.uvh5 import HeaderInfo, read_header, refuse_unsafe_inputs
from dsa110_ingest.uvh5.opening import open_file
from dsa110_ingest.uvh5.safety import (
    MAX_KEPT,
    MAX_OBJECTS,
    Walked,
    check_links,
    check_members,
)


def _cycle(f: h5py.File, where: Path) -> None:
    f["Header/extra_keywords/loop"] = f["Header"]  # a hard link back up: a cycle


def _shared_group(f: h5py.File, where: Path) -> None:
    g = f.create_group("Header/extra_keywords/shared")
    g["x"] = 1.0
    f["Header/extra_keywords/again"] = g  # the same group under a second name


def _named_type(f: h5py.File, where: Path) -> None:
    f["Header/a_type"] = np.dtype("f8")  # neither a dataset nor a group


def _deep_chunk(f: h5py.File, where: Path) -> None:
    ds = f.create_dataset(
        "Header/phase_center_catalog/0/zbomb",
        shape=(1,),
        maxshape=(None,),
        chunks=(2**24,),  # 128 MiB of float64: past the Header/ limit
        dtype="f8",
    )
    ds[0] = 1.0


def _external_flags(f: h5py.File, where: Path) -> None:
    shape, dtype = f["Data/flags"].shape, f["Data/flags"].dtype
    del f["Data/flags"]
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = where / "flags.raw"
    raw.write_bytes(bytes(nbytes))
    f.create_dataset("Data/flags", shape=shape, dtype=dtype, external=[(str(raw), 0, nbytes)])


def _soft_link_deep(f: h5py.File, where: Path) -> None:
    f["Header/phase_center_catalog/0/alias"] = h5py.SoftLink("/Header/Nblts")


def _many_keywords(f: h5py.File, where: Path) -> None:
    for i in range(2 * MAX_KEPT):  # more than the read keeps open: the rest are closed
        f[f"Header/extra_keywords/k{i:04d}"] = float(i)


# shape -> the reason both must give (None: both accept the file)
SHAPES: dict[str, tuple[Callable[[h5py.File, Path], None], str | None]] = {
    "hard-link cycle": (_cycle, "unsafe_hdf5"),
    "group shared by two names": (_shared_group, None),
    "named datatype in Header/": (_named_type, None),
    "oversized chunk three levels down": (_deep_chunk, "oversized_chunks"),
    "external storage in Data/flags": (_external_flags, "external_storage"),
    "soft link three levels down": (_soft_link_deep, "soft_link"),
    "more keywords than the read keeps open": (_many_keywords, None),
}


def _made(tmp_path: Path, edit: Callable[[h5py.File, Path], None]) -> Path:
    p = tmp_path / "2025-10-02T00:00:00_sb03.hdf5"
    write_subband_file(p, iso_to_unix("2025-10-02T00:00:00"), 3, SimParams(4, 2, 2))
    with h5py.File(p, "r+") as f:
        if "Header/phase_center_catalog/0" not in f:
            f.create_group("Header/phase_center_catalog/0")["cat_name"] = np.bytes_("zenith")
        edit(f, tmp_path)
    return p


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_indexer_and_converter_agree(tmp_path: Path, shape: str) -> None:
    edit, want = SHAPES[shape]
    p = _made(tmp_path, edit)
    got = read_for_index(str(p), "best-effort", 0.5)
    if want is None:
        assert isinstance(got, HeaderInfo), got
        refuse_unsafe_inputs([str(p)])  # accepted by the converter too
    else:
        assert isinstance(got, ReadFailure) and got.reason == want, got
        with pytest.raises(ConversionDataError, match=want):
            refuse_unsafe_inputs([str(p)])


def test_the_read_keeps_a_bounded_number_of_objects_open(tmp_path: Path) -> None:
    p = _made(tmp_path, _many_keywords)
    fid = open_file(str(p), "best-effort")
    try:
        root = h5g.open(fid, b"/")
        kept = check_members(root, check_links(root, ""), True, Walked((b"Header",)))
        assert 0 < len(kept.datasets) + len(kept.groups) <= MAX_KEPT
        assert b"Header" in kept.groups and b"Data/visdata" not in kept.datasets  # full
    finally:
        fid.close()
    # the fields past the kept ones are opened (and checked) by the reads as before
    assert read_header(str(p)).n_ants == 4


def test_too_many_objects_is_refused_with_advice_that_fits(tmp_path: Path) -> None:
    """20,000 flat keywords: no nesting, so the nesting advice would be wrong
    (OPERATOR4 defect 5); indexer and converter refuse it alike."""

    def many(f: h5py.File, where: Path) -> None:
        ek = f.require_group("Header/extra_keywords")
        for i in range(MAX_OBJECTS + 10):
            ek[f"k{i}"] = float(i)

    p = _made(tmp_path, many)
    got = read_for_index(str(p), "best-effort", 0.5)
    assert isinstance(got, ReadFailure) and got.reason == "unsafe_hdf5", got
    assert f"Header/extra_keywords holds more than {MAX_OBJECTS} objects" in got.message
    assert "remove the extra datasets or keywords" in got.message
    assert "extra groups" not in got.message and "flat" not in got.message
    with pytest.raises(ConversionDataError, match="remove the extra datasets or keywords"):
        refuse_unsafe_inputs([str(p)])
