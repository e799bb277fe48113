"""A group of an open file read through h5py's low-level API, with every read bounded."""

from __future__ import annotations

import h5py
import numpy as np
from h5py import h5d, h5f, h5g, h5s, h5t

from dsa110_ingest.uvh5.safety import Walked, check_links, check_storage

# Memory, not element counts, bounds a read: a few hundred bytes of gzip can claim a
# 300 MB string. DSA-110's largest header dataset (time_array) is ~0.9 MB.
MAX_READ_BYTES = 64 * 2**20

_F64 = h5t.NATIVE_DOUBLE
# a one-element memory space: a scalar field is read without asking its dataspace first;
# HDF5 refuses the read unless the file holds exactly one element there
_ONE = h5s.create_simple((1,))


class Node:
    """A group of an open file, read through h5py's low-level API.

    The high-level ``h5py.File``/``Group``/``Dataset`` objects cost ~60 us each per
    access; on the ~20 fields the index needs that was two thirds of a file's cost.
    Datasets are opened relative to this group's own id (no walk from the root each
    time), and each one's dataspace is asked for once.
    """

    def __init__(
        self,
        fid: h5f.FileID,
        prefix: bytes,
        gid: h5g.GroupID | None = None,
        walked: Walked | None = None,
    ) -> None:
        self.fid = fid
        self.prefix = prefix
        self.walked = walked
        seen = walked.groups.get(prefix.rstrip(b"/")) if walked is not None else None
        if seen is not None:  # opened and its links checked by the walk already
            gid, self.raw_names = seen
        else:
            if gid is None:
                gid = h5g.open(fid, prefix.rstrip(b"/") or b"/")
            # before any member is opened: a soft-link loop or an external link is never
            # followed. The same pass lists the members: a lookup of a missing name would
            # cost an HDF5 error stack
            self.raw_names = check_links(gid, prefix.decode("utf-8", "replace").strip("/"))
        self.gid = gid
        self.names = frozenset(n.decode("utf-8", "replace") for n in self.raw_names)
        self._open: dict[str, h5d.DatasetID | None] = {}
        self._shapes: dict[str, tuple[int, ...] | None] = {}

    def _ds(self, key: str) -> h5d.DatasetID | None:
        if key in self._open:
            return self._open[key]
        if key.split("/", 1)[0] not in self.names:
            return None
        raw = key.encode()
        walked = self.walked.datasets.get(self.prefix + raw) if self.walked else None
        if walked is not None:
            self._open[key] = walked  # its storage was checked by the walk
            return walked
        try:
            ds = h5d.open(self.gid, raw)
        except (KeyError, ValueError, TypeError):
            ds = None
        if ds is not None:
            check_storage(ds, (self.prefix + raw).decode("utf-8", "replace"))
        self._open[key] = ds
        return ds

    def _shape(self, key: str, ds: h5d.DatasetID) -> tuple[int, ...] | None:
        if key not in self._shapes:
            self._shapes[key] = ds.shape
        return self._shapes[key]

    def group(self, key: str) -> Node | None:
        if key not in self.names:
            return None
        prefix = self.prefix + key.encode() + b"/"
        if self.walked is not None and prefix.rstrip(b"/") in self.walked.groups:
            return Node(self.fid, prefix, walked=self.walked)
        try:
            gid = h5g.open(self.gid, key.encode())
        except (KeyError, ValueError, TypeError):
            return None  # a dataset of that name, not a group
        return Node(self.fid, prefix, gid, self.walked)

    def children(self) -> list[str]:
        return sorted(self.names)

    def shape(self, key: str) -> tuple[int, ...] | None:
        ds = self._ds(key)
        return None if ds is None else self._shape(key, ds)

    def read(self, key: str, max_size: int, max_bytes: int = MAX_READ_BYTES) -> np.ndarray | None:
        """The dataset's value in its own type; None when there is no such dataset."""
        ds = self._ds(key)
        if ds is None:
            return None
        dt = ds.dtype
        shape = self._check_size(key, self._shape(key, ds), max_size, dt.itemsize, max_bytes)
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
        if max_size == 1 and key not in self._shapes:
            one = np.empty(1, dtype=np.float64)
            try:
                ds.read(_ONE, h5s.ALL, one, _F64)
                return one
            except (TypeError, ValueError, OSError, RuntimeError):
                pass  # not one number: the checked path below names what it is
        shape = self._check_size(key, self._shape(key, ds), max_size, 8, MAX_READ_BYTES)
        out = np.empty(shape, dtype=np.float64)
        try:
            ds.read(h5s.ALL, h5s.ALL, out, _F64)
        except (TypeError, ValueError, OSError):
            return self.read(key, max_size)
        return out

    @staticmethod
    def _check_size(
        key: str, shape: tuple[int, ...] | None, max_size: int, itemsize: int, max_bytes: int
    ) -> tuple[int, ...]:
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
            raise TooLarge(key, nbytes, max_bytes)
        return shape


class TooLarge(Exception):
    def __init__(self, key: str, nbytes: int, limit: int) -> None:
        super().__init__(key)
        self.key, self.nbytes, self.limit = key, nbytes, limit
