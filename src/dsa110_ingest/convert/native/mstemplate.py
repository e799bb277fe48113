"""Empty MAIN tables of one shape, made by casacore once and copied sparse for each group.

casacore's TiledColumnStMan writes every tile of a new table at its first flush: a table
created with its rows has a tile cache that knows of no tile on disk yet, so the flush
zero-fills the whole hypercube (~0.25 CPU s and 0.6 GB through the page cache for a
64-antenna group: the largest serial step of the writer, and the tiles are all written
again with the data). A table *opened* with its tile files already at full size takes
them as present (casacore's BucketCache counts the tiles in the file when it is made).
So the first group of a shape pays the zero-fill once, in a template: MAIN and the empty
subtables as casacore created them, its all-zero files kept as sparse files of the same
size, with a manifest (every file's size, the other files' SHA-256). Each group of that
shape then gets a copy: the few non-zero files (~1 MB: table descriptions, headers,
empty subtables) copied, the zero files created sparse at their size, which read as the
zeros casacore wrote. The table is then opened and written as before; its files end
byte for byte as casacore's own (tests/convert/test_native_tiles.py compares them with a
table created and written by casacore alone).

Templates live beside the outputs in ``.native-ms-templates/`` (the same filesystem as
the MS, writable by the daemon): built under a temporary name and renamed into place, so
concurrent conversions never see half of one. A template whose files do not match its
manifest is rebuilt; anything else wrong with it and the writer creates MAIN directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import structlog

from dsa110_ingest.convert.native import msfile

log = structlog.get_logger("dsa110_ingest.convert")

CACHE_DIR = ".native-ms-templates"
_MANIFEST = "manifest.json"
_VERSION = 1


def _key(
    n_rows: int, n_chan: int, n_pol: int, tiling: msfile.Tiling, extra: tuple[str, ...]
) -> str:
    import casacore

    tile = "x".join(map(str, tiling.shape))
    cols = "+".join(extra) or "none"
    ver = getattr(casacore, "__version__", "") or "unknown"  # another casacore: anew
    return f"v{_VERSION}-{n_rows}r-{n_chan}c-{n_pol}p-t{tile}-{cols}-casacore{ver}"


class NoRoom(Exception):
    """Not enough free disk to build a template: MAIN is created directly."""


def _is_zero(path: Path) -> bool:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return False
    return True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(dest: Path, n_rows: int, n_chan: int, n_pol: int, tiling: msfile.Tiling,
           extra: tuple[str, ...]) -> None:  # fmt: skip
    """MAIN (and its empty subtables) as casacore creates them, at ``dest``; the tiled
    storage managers' all-zero files made sparse."""
    build = dest.with_name(f".build-{dest.name}-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(dest.parent)
    # casacore zero-fills the whole table at its close, where a full disk aborts the
    # process (msfile.close): build only with room for it and the group's own data
    need = 2 * n_rows * n_chan * n_pol * 13 + (64 << 20)
    if shutil.disk_usage(dest.parent).free < need:
        raise NoRoom(f"{need >> 20} MiB needed to build a template, fewer free")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    try:
        ms = msfile.create_main(build / "MAIN", n_rows, n_chan, n_pol, tiling, extra)
        msfile.close(ms, build / "MAIN")  # casacore zero-fills every tile here: once
        files = []
        for p in sorted((build / "MAIN").rglob("*")):
            if not p.is_file():
                continue
            rel, size = str(p.relative_to(build / "MAIN")), p.stat().st_size
            zero = "_TSM" in p.name and size > 0 and _is_zero(p)
            if zero:  # the same bytes, no blocks: a hole reads as zeros
                os.truncate(p, 0)
                os.truncate(p, size)
            files.append({"path": rel, "size": size, "sha256": None if zero else _sha256(p)})
        (build / _MANIFEST).write_text(json.dumps({"version": _VERSION, "files": files}))
        try:
            os.rename(build, dest)
        except OSError:  # another conversion built it first: theirs is as good
            if not (dest / _MANIFEST).exists():
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _remove_orphans(cache: Path) -> None:
    """Builds left by a conversion killed while building (up to a whole zero-filled MS)."""
    for p in cache.glob(".build-*"):
        try:
            os.kill(int(p.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _copy(template: Path, path: Path) -> None:
    """The template's MAIN at ``path``; raises ValueError when it does not match its
    manifest."""
    manifest = json.loads((template / _MANIFEST).read_text())
    if manifest.get("version") != _VERSION:
        raise ValueError(f"{template}: manifest version {manifest.get('version')}")
    for f in manifest["files"]:
        src, dst = template / "MAIN" / f["path"], path / f["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f["sha256"] is None:
            if src.stat().st_size != f["size"]:
                raise ValueError(f"{src}: {src.stat().st_size} bytes, not {f['size']}")
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.ftruncate(fd, int(f["size"]))
            finally:
                os.close(fd)
            continue
        data = src.read_bytes()
        if len(data) != f["size"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise ValueError(f"{src} differs from the template's manifest")
        dst.write_bytes(data)


def create_main(
    path: Path,
    n_rows: int,
    n_chan: int,
    n_pol: int,
    tiling: msfile.Tiling,
    extra_data_cols: tuple[str, ...],
    cache: Path,
) -> Any:
    """``msfile.create_main``'s table, open, copied from the template of its shape in
    ``cache`` (built first when missing; rebuilt when damaged); casacore creates it
    directly if the template cannot be used, with the reason logged."""
    key = _key(n_rows, n_chan, n_pol, tiling, extra_data_cols)
    template = cache / key
    for attempt in (1, 2):
        try:
            if not (template / _MANIFEST).exists():
                _build(template, n_rows, n_chan, n_pol, tiling, extra_data_cols)
            _copy(template, path)
            return msfile.reopen_main(path)
        except NoRoom as e:
            log.info("ms.template_skipped", template=str(template), reason=str(e))
            break
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            shutil.rmtree(path, ignore_errors=True)
            log.warning("ms.template_unusable", template=str(template), reason=str(e),
                        attempt=attempt)  # fmt: skip
            with contextlib.suppress(OSError):
                # a damaged template is rebuilt once; anything else: without one
                shutil.rmtree(template)
    return msfile.create_main(path, n_rows, n_chan, n_pol, tiling, extra_data_cols)
