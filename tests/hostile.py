"""Hostile UVH5 files, one maker per class, each from a valid file written by the simulator.

Shared by the unit tests (tests/uvh5/test_read_header.py, tests/ingest/) and the fuzzer
(tests/reliability/test_fuzz.py), so that each class is built the same way everywhere.
Every maker edits ``path`` in place and returns the reject reason the reader must give.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

SECRET = b"TOP-SECRET-0600-CONTENT-XYZ-12345678"  # 36 bytes, never to appear in the index


def _replace(f: h5py.File, key: str) -> None:
    if key in f:
        del f[key]


def soft_link_loop(path: Path, n: int, elsewhere: Path) -> str:
    """A soft link to itself (or a two-link cycle), in Header/ or in place of a group."""
    with h5py.File(path, "r+") as f:
        if n % 3 == 0:
            _replace(f, "Header/Nblts")
            f["Header/Nblts"] = h5py.SoftLink("/Header/Nblts")
        elif n % 3 == 1:
            _replace(f, "Header/Nfreqs")
            _replace(f, "Header/Npols")
            f["Header/Nfreqs"] = h5py.SoftLink("/Header/Npols")
            f["Header/Npols"] = h5py.SoftLink("/Header/Nfreqs")
        else:
            del f["Data"]
            f["Data"] = h5py.SoftLink("/Data")
    return "soft_link"


def external_link_file(path: Path, n: int, elsewhere: Path) -> str:
    """An external link to a dataset or a whole group of another (readable) file."""
    other = elsewhere / f"other-{n}.h5"
    with h5py.File(other, "w") as o:
        o["Header/telescope_name"] = np.bytes_(SECRET)
        o["secret"] = np.bytes_(SECRET)
    with h5py.File(path, "r+") as f:
        if n % 2:
            _replace(f, "Header/telescope_name")
            f["Header/telescope_name"] = h5py.ExternalLink(str(other), "/secret")
        else:
            _replace(f, "Header/extra_keywords")
            f["Header/extra_keywords"] = h5py.ExternalLink(str(other), "/Header")
    return "external_link"


def external_link_fifo(path: Path, n: int, elsewhere: Path) -> str:
    """An external link to a FIFO: following it blocks in open() forever."""
    fifo = elsewhere / f"fifo-{n}"
    if not fifo.exists():
        os.mkfifo(fifo)
    with h5py.File(path, "r+") as f:
        key = "Header" if n % 2 else "Data"
        del f[key]
        f[key] = h5py.ExternalLink(str(fifo), f"/{key}")
    return "external_link"


def external_storage(path: Path, n: int, elsewhere: Path) -> str:
    """Raw data of a header (or data) dataset kept in a file outside the location."""
    secret = elsewhere / f"secret-{n}"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    with h5py.File(path, "r+") as f:
        if n % 2:
            _replace(f, "Header/telescope_name")
            f.create_dataset(
                "Header/telescope_name", shape=(1,), dtype="S36", external=[(str(secret), 0, 36)]
            )
        else:
            _replace(f, "Header/latitude")
            f.create_dataset(
                "Header/latitude", shape=(1,), dtype="f8", external=[(str(secret), 0, 8)]
            )
    return "external_storage"


def virtual_dataset(path: Path, n: int, elsewhere: Path) -> str:
    """A virtual dataset mapping another file's data into Header/ or Data/."""
    other = elsewhere / f"vsrc-{n}.h5"
    with h5py.File(path, "r") as f:
        freqs = f["Header/freq_array"][()].reshape(-1)
        vshape = f["Data/visdata"].shape
        vdt = f["Data/visdata"].dtype
    with h5py.File(other, "w") as o:
        o["f"] = freqs
        o.create_dataset("v", shape=vshape, dtype=vdt)
    with h5py.File(path, "r+") as f:
        if n % 2:
            lay = h5py.VirtualLayout(shape=freqs.shape, dtype="f8")
            lay[:] = h5py.VirtualSource(str(other), "f", shape=freqs.shape)
            _replace(f, "Header/freq_array")
            f.create_virtual_dataset("Header/freq_array", lay)
        else:
            lay = h5py.VirtualLayout(shape=vshape, dtype=vdt)
            lay[...] = h5py.VirtualSource(str(other), "v", shape=vshape)
            _replace(f, "Data/visdata")
            f.create_virtual_dataset("Data/visdata", lay)
    return "virtual_dataset"


def compressed_bomb(path: Path, n: int, elsewhere: Path) -> str:
    """A few hundred KB on disk that claim hundreds of MB once read (gzip of one byte)."""
    with h5py.File(path, "r+") as f:
        if n % 3 == 2:
            # variable-length: no amplification (it is stored as is), but still no header
            # field is this long
            _replace(f, "Header/telescope_name")
            f.create_dataset(
                "Header/telescope_name", data="OVRO" * 50_000, dtype=h5py.string_dtype()
            )
        elif n % 3 == 1:
            _replace(f, "Header/telescope_name")
            # H5Ocopy moves the compressed chunk as it is: written once (seconds), then cheap
            with h5py.File(_string_bomb(elsewhere), "r") as src:
                f.copy(src["s"], "Header/telescope_name")
            # one value in one 100 MiB chunk: refused for its chunk before any read
            return "oversized_chunks"
        else:
            # a numeric field claiming 80 M float64 (640 MB), gzip of zeros; visdata's
            # shape agrees with the claim, so only a byte bound stops the read
            nblts = 80_000_000
            nfreqs = f["Header/Nfreqs"][()]
            npols = f["Header/Npols"][()]
            for k in ("time_array", "integration_time"):
                _replace(f, f"Header/{k}")
                f.create_dataset(
                    f"Header/{k}",
                    shape=(nblts,),
                    dtype="f8",
                    chunks=(2**20,),
                    compression="gzip",
                    fillvalue=2460000.5 if k == "time_array" else 12.9,
                )
            f["Header/Nblts"][()] = nblts
            vdt = f["Data/visdata"].dtype
            del f["Data/visdata"]
            f.create_dataset(
                "Data/visdata",
                shape=(nblts, nfreqs, npols),
                dtype=vdt,
                chunks=(2**16, nfreqs, npols),
                compression="gzip",
            )
    return "header_too_large"


_ZEROS_GZ: dict[int, bytes] = {}


def _gzip_of_zeros(nbytes: int) -> bytes:
    """HDF5's deflate filter's encoding of ``nbytes`` zero bytes, made once per size."""
    if nbytes not in _ZEROS_GZ:
        z = zlib.compressobj(1)
        piece = bytes(16 * 2**20)
        out = [z.compress(piece) for _ in range(nbytes // len(piece))]
        _ZEROS_GZ[nbytes] = b"".join([*out, z.compress(bytes(nbytes % len(piece))), z.flush()])
    return _ZEROS_GZ[nbytes]


def oversized_chunk(path: Path, n: int, elsewhere: Path) -> str:
    """A dataset stored in one 512 MiB chunk, far past its own size (HDF5 allows a chunk
    larger than the dataset when it may grow), written as ~0.5 MB of gzip: a one-value
    header field, or Data/visdata (which only the converter reads)."""
    elements = 2**26  # of 8 bytes: 512 MiB of chunk
    with h5py.File(path, "r+") as f:
        if n % 2 == 0:
            _replace(f, "Header/latitude")
            ds = f.create_dataset(
                "Header/latitude",
                shape=(1,),
                maxshape=(None,),
                chunks=(elements,),
                dtype="f8",
                compression="gzip",
            )
        else:
            shape = f["Data/visdata"].shape
            inner = int(np.prod(shape[1:]))
            _replace(f, "Data/visdata")
            ds = f.create_dataset(
                "Data/visdata",
                shape=shape,
                maxshape=(None, *shape[1:]),
                chunks=(elements // inner, *shape[1:]),
                dtype="c8",
                compression="gzip",
            )
        ds.id.write_direct_chunk((0,) * len(ds.shape), _gzip_of_zeros(elements * 8))
    return "oversized_chunks"


def unread_oversized_chunk(path: Path, n: int, elsewhere: Path) -> str:
    """A chunk far past the limit in a Header dataset the index never reads but the
    converter (pyuvdata) does: a member of extra_keywords (512 MiB, one chunk), or
    uvw_array (96 MiB chunks). The indexer must refuse it as the converter does."""
    with h5py.File(path, "r+") as f:
        if n % 2 == 0:
            ds = f.create_dataset(
                "Header/extra_keywords/zbomb",
                shape=(2**26,),
                chunks=(2**26,),
                dtype="f8",
                compression="gzip",
            )
            ds.id.write_direct_chunk((0,), _gzip_of_zeros(2**26 * 8))
        else:
            shape = f["Header/uvw_array"].shape
            _replace(f, "Header/uvw_array")
            ds = f.create_dataset(
                "Header/uvw_array",
                shape=shape,
                maxshape=(None, 3),
                chunks=(2**22, 3),
                dtype="f8",
                compression="gzip",
            )
            ds.id.write_direct_chunk((0, 0), _gzip_of_zeros(2**22 * 3 * 8))
    return "oversized_chunks"


def deep_nesting(path: Path, n: int, elsewhere: Path) -> str:
    """2000 groups nested in Header/extra_keywords (which pyuvdata reads), or in a group of
    Header/ no reader uses: the converter refuses the file, so the indexer must too."""
    with h5py.File(path, "r+") as f:
        g = f.require_group("Header/extra_keywords" if n % 2 == 0 else "Header/notes")
        for _ in range(2000):
            g = g.create_group("d")
    return "unsafe_hdf5"


_BOMB: list[bytes] = []


def _string_bomb(elsewhere: Path) -> Path:
    """A file in ``elsewhere`` holding one gzip-compressed 100 MB fixed-length string
    (~100 KB on disk). Writing it takes seconds, so it is written once per process and its
    bytes kept; later calls only copy those bytes. It lives in the caller's folder, never
    in a temp folder of its own that nothing would remove."""
    p = elsewhere / "string-bomb.h5"
    if p.exists():
        return p
    if _BOMB:
        p.write_bytes(_BOMB[0])
        return p
    with h5py.File(p, "w") as f:
        ds = f.create_dataset(
            "s", shape=(1,), dtype=f"S{100 * 2**20}", chunks=(1,), compression="gzip"
        )
        ds[0] = b"OVRO_DSA"
    _BOMB[:] = [p.read_bytes()]
    return p


MAKERS: dict[str, Callable[[Path, int, Path], str]] = {
    "soft_link_loop": soft_link_loop,
    "external_link_file": external_link_file,
    "external_link_fifo": external_link_fifo,
    "external_storage": external_storage,
    "virtual_dataset": virtual_dataset,
    "compressed_bomb": compressed_bomb,
    "oversized_chunk": oversized_chunk,
    "unread_oversized_chunk": unread_oversized_chunk,
    "deep_nesting": deep_nesting,
}


def bad_utf8_name(ts_iso: str, sb: int, n: int) -> bytes:
    """A subband-like name that is not UTF-8 (bytes, as a file system allows)."""
    junk = [b"\xff\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80"][n % 4]
    name = f"{ts_iso}_sb{sb:02d}.hdf5".encode()
    return [junk + name, name[:-5] + junk + b".hdf5", name[:10] + junk + name[10:]][n % 3]


def newline_name(ts_iso: str, sb: int, n: int) -> str:
    """A subband name with a newline after, inside or before it (not a subband file)."""
    name = f"{ts_iso}_sb{sb:02d}.hdf5"
    return [name + "\n", name[:19] + "\n" + name[19:], name + "\r\n", name + "\n\n"][n % 4]
