"""Opening a file for reading: HDF5 file locking per mode, and the OSError of an open
mapped to the project's typed errors (a FIFO, an empty file, a lock, a truncation)."""

from __future__ import annotations

import errno
import os
import stat

from h5py import h5f, h5p

from dsa110_ingest.errors import (
    FileLockedError,
    FilePermissionError,
    FileVanishedError,
    NotHDF5Error,
    TruncatedFileError,
    UVH5Error,
)

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


def open_file(path: str, locking: str) -> h5f.FileID:
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
