"""Tiles written straight into casacore's files: the bytes casacore itself writes.

The native writer puts DATA, FLAG and WEIGHT_SPECTRUM into the tile files of the MAIN
table casacore created (convert/native/tiles.py). Each case writes the same group both
ways, directly and through ``putcolslice``, and compares every file of the table byte for
byte, then every column as casacore reads it back.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.native import msfile, tiles
from dsa110_ingest.tools.simulate import SimParams

from .test_native_backend import _flagged, _group, _request, _summarise

casacore_tables = pytest.importorskip("casacore.tables")
native = pytest.importorskip("dsa110_ingest.convert.native.backend")


def _same_tables(a: Path, b: Path, tiles_only: bool = False) -> None:
    """Every storage manager file byte for byte (``tiles_only``: the tiled ones; a table
    copied from a template and filled in a second session lays out its StandardStMan
    buckets differently), then every column as casacore reads it."""
    names = sorted(p.name for p in a.iterdir() if p.name.startswith("table.f"))
    assert any(n.endswith("_TSM0") for n in names)
    assert names == sorted(p.name for p in b.iterdir() if p.name.startswith("table.f"))
    for name in names:
        if tiles_only and not name.endswith("_TSM0"):
            continue
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    t = casacore_tables.table
    with t(str(a), ack=False) as ta, t(str(b), ack=False) as tb:
        assert ta.nrows() == tb.nrows()
        for c in ta.colnames():
            if ta.iscelldefined(c, 0):
                np.testing.assert_array_equal(ta.getcol(c), tb.getcol(c), err_msg=c)


@pytest.mark.parametrize(
    ("npols", "nchan", "tile_bytes", "block_bytes", "fused_kernel", "processes", "template"),
    [
        (2, 4, msfile.TILE_BYTES, native.BLOCK_BYTES, False, 1, False),
        (2, 4, msfile.TILE_BYTES, native.BLOCK_BYTES, True, 2, True),
        # tiles of an odd bit count (FLAG rows straddle bytes), a partial last tile,
        # several blocks and tiles per subband; written by one process and by two (each
        # subband's tiles by either: every tile written exactly once all the same); MAIN
        # created by casacore or copied from a template (convert/native/mstemplate.py:
        # sparse files where casacore zero-filled)
        (4, 3, 300, 1, False, 1, True),
        (4, 3, 300, 1, False, 2, False),
        (1, 5, 120, 700, True, 2, True),
    ],
)
def test_direct_tiles_are_the_bytes_casacore_writes(
    tmp_path: Path,
    npols: int,
    nchan: int,
    tile_bytes: int,
    block_bytes: int,
    fused_kernel: bool,
    processes: int,
    template: bool,
) -> None:
    if fused_kernel and not native.fused.available():
        pytest.skip("numba is not installed")
    p = SimParams(nants=7, nchan=nchan, ntimes=4, npols=npols, time_offsets_s=(0.0, 2.0, 13.0))
    files = _group(tmp_path / "in", p, _flagged)
    group = native.plan_group(recipe.plan_for_request(_request(files)))
    kw = dict(tile_bytes=tile_bytes, block_bytes=block_bytes, fused_kernel=fused_kernel)
    cache = tmp_path / "templates" if template else None
    a = native.write_ms(
        group, tmp_path / "direct.ms", direct_tiles=True, processes=processes,
        template_cache=cache, **kw,
    )  # fmt: skip
    b = native.write_ms(group, tmp_path / "casacore.ms", direct_tiles=False, **kw)
    assert (a["tiles"], b["tiles"]) == ("direct", "putcolslice")
    assert (a["processes"], b["processes"]) == (processes, 1)
    if tile_bytes != msfile.TILE_BYTES:  # the last tile is partly beyond the last row
        assert a["n_rows"] % a["tile_shape"][2] != 0
    _same_tables(tmp_path / "direct.ms", tmp_path / "casacore.ms", tiles_only=template)
    _summarise(tmp_path / "direct.ms")
    if template:  # built once, kept sparse: the zero-filled tiles take no disk
        (kept,) = list(cache.iterdir())  # type: ignore[union-attr]
        tsm = [p for p in kept.rglob("*_TSM0") if p.stat().st_size > 4096]
        assert tsm and all(p.stat().st_blocks * 512 < p.stat().st_size for p in tsm)


def _main(path: Path, n_rows: int, n_chan: int, n_pol: int, tiling: msfile.Tiling) -> object:
    return msfile.create_main(path, n_rows, n_chan, n_pol, tiling, ())


def test_tiles_narrower_than_a_block_and_rows_not_tile_aligned(tmp_path: Path) -> None:
    """Subbands of unequal widths get tiles of their common divisor of channels: a block
    then spans several channel tiles."""
    n_rows, n_chan, n_pol = 53, 12, 2
    tiling = msfile.Tiling(n_pol, 2, 8)
    rng = np.random.default_rng(5)
    shape = (n_rows, n_chan, n_pol)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    flag = rng.random(shape) < 0.4
    ws = rng.random(shape).astype(np.float32)
    ref = _main(tmp_path / "ref.ms", n_rows, n_chan, n_pol, tiling)
    out = _main(tmp_path / "out.ms", n_rows, n_chan, n_pol, tiling)
    files = tiles.open_tiles(out, tmp_path / "out.ms", n_rows, n_chan, n_pol, tiling)
    assert files is not None
    out.close()  # type: ignore[attr-defined]
    for name, arr in (("DATA", data), ("FLAG", flag), ("WEIGHT_SPECTRUM", ws)):
        for chan0, chan1 in ((0, 6), (6, 10), (10, 12)):  # blocks of 6, 4 and 2 channels
            for row0 in range(0, n_rows, 16):
                block = np.ascontiguousarray(arr[row0 : row0 + 16, chan0:chan1])
                files.write(name, block, row0, chan0)
                ref.putcolslice(  # type: ignore[attr-defined]
                    name, block, [chan0, 0], [chan1 - 1, n_pol - 1],
                    startrow=row0, nrow=block.shape[0],
                )  # fmt: skip
    files.close()
    ref.close()  # type: ignore[attr-defined]
    _same_tables(tmp_path / "out.ms", tmp_path / "ref.ms")


def test_another_tile_shape_falls_back_with_the_reason(tmp_path: Path) -> None:
    ms = _main(tmp_path / "a.ms", 40, 8, 2, msfile.Tiling(2, 4, 16))
    with capture_logs() as logs:
        got = tiles.open_tiles(ms, tmp_path / "a.ms", 40, 8, 2, msfile.Tiling(2, 8, 16))
    ms.close()  # type: ignore[attr-defined]
    assert got is None
    (event,) = [e for e in logs if e["event"] == "ms.tiles_fallback"]
    assert "tile [2, 4, 16]" in event["reason"] and event["writer"] == "putcolslice"


def test_a_big_endian_table_falls_back_with_the_reason(tmp_path: Path) -> None:
    """The probe cells show the byte order: a big-endian table is not this module's
    layout, so the writer logs it and uses putcolslice."""
    n_rows, n_chan, n_pol = 20, 6, 2
    tiling = msfile.Tiling(n_pol, 3, 8)
    desc = casacore_tables.maketabdesc(
        [
            casacore_tables.makearrcoldesc(
                name,
                value,
                valuetype=vt,
                shape=[n_chan, n_pol],
                options=5,
                datamanagertype="TiledColumnStMan",
                datamanagergroup=f"Tiled{name}",
            )
            for name, value, vt in (
                ("DATA", 0j, "complex"),
                ("FLAG", False, "boolean"),
                ("WEIGHT_SPECTRUM", 0.0, "float"),
            )
        ]
    )
    spec = {"DEFAULTTILESHAPE": np.int32(tiling.shape)}
    dminfo = casacore_tables.makedminfo(
        desc, {f"Tiled{n}": spec for n in ("DATA", "FLAG", "WEIGHT_SPECTRUM")}
    )
    path = tmp_path / "big.ms"
    t = casacore_tables.table(str(path), desc, nrow=n_rows, dminfo=dminfo, endian="big", ack=False)
    with capture_logs() as logs:
        got = tiles.open_tiles(t, path, n_rows, n_chan, n_pol, tiling)
    t.close()
    assert got is None
    (event,) = [e for e in logs if e["event"] == "ms.tiles_fallback"]
    assert "DATA" in event["reason"] and "byte order" in event["reason"]


def test_the_writer_falls_back_to_putcolslice_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any layout check failing (injected here) leaves the MS to casacore: the same MS."""
    p = SimParams(nants=5, nchan=3, ntimes=3, npols=2)
    files = _group(tmp_path / "in", p, _flagged)
    group = native.plan_group(recipe.plan_for_request(_request(files)))
    native.write_ms(group, tmp_path / "direct.ms")

    def differs(*_: object) -> int:
        raise tiles.LayoutMismatch("DATA: injected")

    monkeypatch.setattr(tiles, "_check_dminfo", differs)
    with capture_logs() as logs:
        info = native.write_ms(group, tmp_path / "fallback.ms")
    assert info["tiles"] == "putcolslice"
    assert [e["reason"] for e in logs if e["event"] == "ms.tiles_fallback"] == ["DATA: injected"]
    _same_tables(tmp_path / "direct.ms", tmp_path / "fallback.ms")
