"""Files that link or store data outside themselves are never read: soft and external
links, external raw storage and virtual datasets are found without being followed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from h5py import h5d, h5f, h5g, h5l, h5o

from dsa110_ingest.errors import (
    ConversionDataError,
    ExternalLinkError,
    ExternalStorageError,
    OversizedChunkError,
    SoftLinkError,
    UnsafeHDF5Error,
    UVH5Error,
    VirtualDatasetError,
)
from dsa110_ingest.uvh5.opening import open_file

# Header/ and Data/ of a UVH5 file hold a few dozen objects, two levels deep at most
MAX_OBJECTS = 10_000
MAX_DEPTH = 6
# Reading any value of a chunked dataset decompresses its whole chunk, and HDF5 lets a
# chunk be far larger than its dataset (up to 4 GiB, for a one-value field): a few KB of
# gzip would cost the reader gigabytes. Real writers' chunks are at most a few MiB (h5py's
# automatic chunks stay below 1 MiB); the header's reads are bounded at 64 MiB anyway.
MAX_CHUNK_BYTES = {"Header": 64 * 2**20, "Data": 256 * 2**20}


class Unsafe(Exception):
    def __init__(
        self, kind: type[UnsafeHDF5Error], where: str, detail: str, fix: str | None = None
    ) -> None:
        super().__init__(where)
        self.kind, self.where, self.detail, self.fix = kind, where, detail, fix


# a shape problem, not a link: the h5repack hint of the link rule does not apply to these
_SHAPE_FIX = (
    "write the file again without the extra groups (pyuvdata's write_uvh5 keeps "
    "extra_keywords flat) or delete them with h5py; the observation waits for a good file"
)
# too many members, however flat (a UVH5 file's Header/ and Data/ hold a few dozen)
_COUNT_FIX = (
    "remove the extra datasets or keywords with h5py, or write the file again with only "
    "the fields a UVH5 file has; the observation waits for a good file"
)


def _link_problem(gid: h5g.GroupID, raw: bytes, ltype: int) -> Unsafe:
    name = raw.decode("utf-8", "replace")
    if ltype == h5l.TYPE_SOFT:
        target = gid.links.get_val(raw).decode("utf-8", "replace")
        return Unsafe(SoftLinkError, name, f"is a soft link to {target!r}")
    if ltype == h5l.TYPE_EXTERNAL:
        fname, obj = gid.links.get_val(raw)
        return Unsafe(
            ExternalLinkError,
            name,
            f"is an external link to {obj.decode('utf-8', 'replace')!r} in "
            f"{fname.decode('utf-8', 'replace')!r}",
        )
    return Unsafe(ExternalLinkError, name, f"is a user-defined link (type {ltype})")


def check_links(gid: h5g.GroupID, where: str) -> list[bytes]:
    """Every member of ``gid`` is a hard link: read from the group's own link table, so a
    soft-link loop or an external link to a FIFO is found without being followed. Returns
    the members' names, from the same pass (a second listing costs as much again)."""
    names: list[bytes] = []
    bad: list[tuple[bytes, int]] = []

    def visit(raw: bytes, info: Any) -> int | None:
        if info.type != h5l.TYPE_HARD:
            bad.append((raw, info.type))
            return 1  # stop the iteration
        names.append(raw)
        return None

    gid.links.iterate(visit, info=True)
    if bad:
        e = _link_problem(gid, *bad[0])
        e.where = f"{where}/{e.where}" if where else e.where
        raise e
    return names


def check_storage(ds: h5d.DatasetID, where: str) -> None:
    """Raw data kept in other files (external storage, virtual datasets) is never read, nor
    a dataset whose chunks would decompress to more than :data:`MAX_CHUNK_BYTES`."""
    dcpl = ds.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise Unsafe(VirtualDatasetError, where, "is a virtual dataset (data in other files)")
    if layout == h5d.CHUNKED:
        nbytes = ds.get_type().get_size()
        for d in dcpl.get_chunk():
            nbytes *= d
        limit = MAX_CHUNK_BYTES.get(where.split("/", 1)[0], MAX_CHUNK_BYTES["Data"])
        if nbytes > limit:
            raise Unsafe(
                OversizedChunkError,
                where,
                f"is stored in chunks of {nbytes / 2**20:.0f} MiB (limit {limit / 2**20:.0f} "
                "MiB): reading any value of it would decompress a whole chunk (a compression "
                "bomb, or a writer's mistake)",
            )
    # HDF5 allows external raw storage only with the contiguous layout: the one call saved
    # on every other dataset is a tenth of a header read's check
    if layout == h5d.CONTIGUOUS and dcpl.get_external_count() > 0:
        ext = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise Unsafe(ExternalStorageError, where, f"keeps its raw data outside the file ({ext!r})")


def open_member(gid: h5g.GroupID, raw: bytes) -> Any:
    """The member ``raw`` of ``gid``, opened as a dataset first: nearly every member is
    one, and ``h5o.open`` (which asks HDF5 the object's type, then opens it as that)
    costs ~20 us more than ``h5d.open`` on each. Anything else (a group, a named
    datatype) is opened by ``h5o.open`` as before."""
    try:
        return h5d.open(gid, raw)
    except (KeyError, TypeError, ValueError):
        return h5o.open(gid, raw)


@dataclass
class Walked:
    """What a walk opened that the header's reads use again, by raw path (``b"Header/
    extra_keywords"``): each dataset's storage and each group's links are checked once,
    and nothing is opened twice. Kept: ``Data/visdata``, and what lies at most
    :data:`KEEP_DEPTH` levels below a path in ``under`` (the readers go no deeper), up
    to :data:`MAX_KEPT` objects; a hostile file's thousands of others are closed as they
    are passed."""

    under: tuple[bytes, ...] = ()
    datasets: dict[bytes, h5d.DatasetID] = field(default_factory=dict)
    groups: dict[bytes, tuple[h5g.GroupID, list[bytes]]] = field(default_factory=dict)

    def wants(self, path: bytes) -> bool:
        if not self.under or len(self.datasets) + len(self.groups) >= MAX_KEPT:
            return False
        if path == b"Data/visdata":
            return True
        return any(
            (path == u or path.startswith(u + b"/")) and path.count(b"/", len(u)) <= KEEP_DEPTH
            for u in self.under
        )


# the header reader's deepest read: Header/phase_center_catalog/<id>/cat_lon
KEEP_DEPTH = 3
MAX_KEPT = 256


def _walk(gid: h5g.GroupID, raw_where: bytes, depth: int, budget: list[int], kept: Walked) -> None:
    """Links and storage of everything under ``gid`` (the converter reads all of it)."""
    where = raw_where.decode("utf-8", "replace")
    if depth > MAX_DEPTH:
        raise Unsafe(
            UnsafeHDF5Error,
            where,
            f"has groups nested more than {MAX_DEPTH} deep (a UVH5 file's are at most 3; "
            "or a hard-link cycle)",
            _SHAPE_FIX,
        )
    names = check_links(gid, where)
    if kept.wants(raw_where):
        kept.groups[raw_where] = (gid, names)
    budget[0] -= len(names)
    if budget[0] < 0:
        raise Unsafe(UnsafeHDF5Error, where, f"holds more than {MAX_OBJECTS} objects", _COUNT_FIX)
    for raw in names:
        raw_here = raw_where + b"/" + raw
        obj = open_member(gid, raw)
        if isinstance(obj, h5g.GroupID):
            _walk(obj, raw_here, depth + 1, budget, kept)
        elif isinstance(obj, h5d.DatasetID):
            check_storage(obj, raw_here.decode("utf-8", "replace"))
            if kept.wants(raw_here):
                kept.datasets[raw_here] = obj


def check_contained(fid: h5f.FileID, full: bool = True) -> None:
    """Raise ``Unsafe`` unless the root's links, and everything under Header/ and Data/,
    stay inside the file. ``full=False`` leaves the storage check of each Header/
    dataset to the moment it is opened (the converter's metadata read: its caller ran
    the full check on the same files first)."""
    root = h5g.open(fid, b"/")
    check_members(root, check_links(root, ""), full)


def check_members(
    root: h5g.GroupID, members: list[bytes], full: bool, kept: Walked | None = None
) -> Walked:
    """:func:`check_contained` below a root whose own links ``check_links`` has passed
    (``members``: the names it returned). Returns what it kept open (see
    :class:`Walked`) for the header's reads."""
    budget = [MAX_OBJECTS]
    kept = kept if kept is not None else Walked()
    for raw in (b"Header", b"Data"):
        if raw not in members:
            continue
        obj = h5o.open(root, raw)
        if not isinstance(obj, h5g.GroupID):
            continue
        if full or raw == b"Data":
            _walk(obj, raw, 1, budget, kept)
        # else: each group of Header/ the reader uses checks its links as it is opened
    return kept


def unsafe_error(path: str, e: Unsafe) -> UnsafeHDF5Error:
    if e.fix is not None:
        return e.kind(path, f"{e.where} {e.detail}; such files are never read", e.fix)
    if e.kind is OversizedChunkError:
        return e.kind(
            path,
            f"{e.where} {e.detail}; such files are never read",
            "rewrite the file with small chunks: h5repack -l CHUNK=..., or pyuvdata's write_uvh5",
        )
    return e.kind(
        path,
        f"{e.where} {e.detail}; files that link or store data outside themselves are never read",
        "rewrite the file with its data inside it: pyuvdata's write_uvh5 does, "
        "h5repack -f NONE does not follow links",
    )


def assert_self_contained(path: str) -> None:
    """For the converter: raise :class:`UnsafeHDF5Error` when ``path`` links or stores data
    outside itself (the same rule as the indexer's)."""
    fid = open_file(path, "best-effort")
    try:
        check_contained(fid, full=True)
    except Unsafe as e:
        raise unsafe_error(path, e) from None
    finally:
        fid.close()


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
