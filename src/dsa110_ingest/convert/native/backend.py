"""16 UVH5 files -> one Measurement Set, streamed a subband block at a time.

Imports neither pyuvdata nor astropy: the group's metadata come from h5py
(convert/native/group.py, meta.py), the subtables are written with python-casacore
(subtables.py); a fresh worker spends its CPU on the data, not on imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert import pyuvdata_backend
from dsa110_ingest.convert.backends import require_casacore
from dsa110_ingest.convert.native import (
    fused,
    helper,
    kernel,
    msfile,
    mstemplate,
    reader,
    subtables,
    tiles,
)
from dsa110_ingest.convert.native.group import GroupPlan, plan_group
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import PermanentConversionError

# Rows per block: a multiple of the tile's rows, sized so that one block of one subband
# (vis + flags + nsamples and the few temporaries of the kernel) stays near this many bytes.
BLOCK_BYTES = 16 << 20
# Below this much DATA the numpy kernel: loading numba and its cached kernel costs a fresh
# worker ~0.9 CPU s, which the one-pass kernel wins back at ~0.7 s per GB of DATA over
# the numpy passes (benchmarks/convert_profile.py, 64 antennas: 0.57 s vs ~1.0 s a 0.6 GB
# MS); break-even near 1.3 GB, so numba pays only for groups well above it. A conversion
# forked from the template (convert/template.py) finds numba loaded and always uses it.
FUSED_MIN_BYTES = 2 << 30


def _main_columns(ms: Any, g: GroupPlan) -> None:
    """The per-row columns, as pyuvdata's ``write_ms`` fills them for one spectral window."""
    t = subtables.mjd_seconds(np.repeat(g.plan.grid_jd, g.plan.n_baselines))
    uvw = g.uvw if g.flip is None else np.where(g.flip[:, None], -g.uvw, g.uvw)
    ms.putcol("ANTENNA1", g.ant1.astype(np.int32))
    ms.putcol("ANTENNA2", g.ant2.astype(np.int32))
    ms.putcol("INTERVAL", g.integration_s)
    ms.putcol("EXPOSURE", g.integration_s)
    ms.putcol("DATA_DESC_ID", np.zeros(t.size, np.int32))
    ms.putcol("SCAN_NUMBER", g.scan_numbers)
    ms.putcol("TIME", t)
    ms.putcol("TIME_CENTROID", t)
    ms.putcol("UVW", -uvw)  # pyuvdata's flip_conj: CASA sees the conjugate
    ms.putcol("FIELD_ID", g.field_ids)
    ms.putcolkeyword("DATA", "QuantumUnits", g.meta.vis_units)
    if g.meta.extra_keywords:
        ms.putkeyword("pyuvdata_extra", g.meta.extra_keywords)
    if g.meta.pol_convention is not None:
        ms.putkeyword("pyuvdata_polconv", g.meta.pol_convention)
    ms.putkeyword("pyuvdata_flip_conj", True)


class _Writer:
    """One group's MAIN table, filled a block at a time; holds the per-block state."""

    def __init__(
        self,
        g: GroupPlan,
        block_bytes: int,
        tile_bytes: int,
        fused_kernel: bool | None,
        direct_tiles: bool = True,
        processes: int = 1,
    ) -> None:
        self.g = g
        self.direct_tiles = direct_tiles
        # a helper process only with direct tiles (putcolslice needs the one open table)
        self.processes = processes if direct_tiles and len(g.plan.subbands) > 1 else 1
        self.helper_cpu_s, self.helper_maxrss_kib = 0.0, 0
        self.template_cache: Path | None = None  # MAIN copied from there (mstemplate.py)
        if self.processes > 1:  # each process holds its own blocks: the same bytes in all
            block_bytes //= self.processes
        self.tiles: tiles.TileFiles | None = None
        subs = g.plan.subbands
        self.n_rows, self.n_pol = g.plan.n_rows, g.plan.n_pols
        self.pol_order = subtables.casa_pol_order(g.meta.pols)
        self.conj_pol_order = subtables.conj_pol_order(g.meta.pols)
        self.tiling = msfile.choose_tiling(
            self.n_pol, [s.n_channels for s in subs], tile_bytes, max_rows=self.n_rows
        )
        per_row = max(s.n_channels for s in subs) * self.n_pol * (8 + 1 + 4)
        rows = self.tiling.rows
        self.block_rows = max(rows, (block_bytes // per_row) // rows * rows)
        # WEIGHT is the median of WEIGHT_SPECTRUM over all channels; the streaming pass
        # keeps only each row's min and max, which give the median whenever they agree
        # (DSA-110: always); rows where they differ get a second pass.
        self.w_min = np.full((self.n_rows, self.n_pol), np.inf, np.float32)
        self.w_max = np.full((self.n_rows, self.n_pol), -np.inf, np.float32)
        if fused_kernel is None:  # numba when loaded already (the template) or worth loading
            big = self.n_rows * g.plan.n_channels * self.n_pol * 8 >= FUSED_MIN_BYTES
            fused_kernel = big or fused.loaded()
        self.use_fused = fused_kernel and fused.available()
        self.buffers = fused.Buffers()

    def block(self, ms: Any, blk: reader.Block, bg: tiles.Background | None) -> None:
        g = self.g
        sb = g.plan.subbands[blk.source]
        nc = sb.n_channels
        if blk.vis.shape[1:] != (nc, self.n_pol):
            raise PermanentConversionError(
                f"{sb.name}: visdata has shape {blk.vis.shape[1:]} per row, the header "
                f"promises ({nc}, {self.n_pol}); the file is inconsistent: replace it"
            )
        rows = slice(blk.start, blk.stop)
        args = dict(
            delta_w_m=g.delta_w[rows],
            freqs_hz=sb.freq_hz,  # the file's channel order
            descending=sb.descending,
            pol_order=self.pol_order,
            conj_rows=None if g.flip is None else g.flip[rows],
            conj_pol_order=self.conj_pol_order,
        )
        w_min, w_max = self.w_min[rows], self.w_max[rows]
        bufs = self.buffers if bg is None else bg.buffers()
        if self.use_fused:
            d, fl, ns = fused.ms_block(
                blk.vis, blk.flags, blk.nsamples, **args,
                w_min=w_min, w_max=w_max, buffers=bufs,
            )  # fmt: skip
        else:
            d, fl, ns = kernel.ms_block(blk.vis, blk.flags, blk.nsamples, **args)
            _track_weights(ns, w_min, w_max)
        if bg is not None:
            bg.submit((d, fl, ns), blk.start, sb.chan_start, bufs)
            return
        blc = [sb.chan_start, 0]
        trc = [sb.chan_start + nc - 1, self.n_pol - 1]
        n = blk.stop - blk.start
        ms.putcolslice("DATA", d, blc, trc, startrow=blk.start, nrow=n)
        ms.putcolslice("FLAG", fl, blc, trc, startrow=blk.start, nrow=n)
        ms.putcolslice("WEIGHT_SPECTRUM", ns, blc, trc, startrow=blk.start, nrow=n)

    def _blocks(self, ms: Any, read_ahead: int, order: Iterator[int] | None = None) -> None:
        """Every block (of the subbands ``order`` hands out; all when None): read (a
        thread), kernel (here), tiles written (another thread, when written directly;
        else ``putcolslice`` here)."""
        g = self.g
        paths = [s.path for s in g.plan.subbands]
        bg = None if self.tiles is None else tiles.Background(self.tiles, fused.Buffers)
        try:
            # the numba kernel copies every block: its input arrays can be read into again
            for blk in reader.blocks_ahead(
                paths, g.row_maps, self.n_rows, self.block_rows, read_ahead, self.use_fused,
                order,
            ):  # fmt: skip
                self.block(ms, blk, bg)
        finally:
            if bg is not None:
                bg.close()

    def _blocks_shared(self, read_ahead: int, side_work: Any) -> None:
        """The subbands shared with a helper process (convert/native/helper.py); the
        parent runs ``side_work`` first (the subtables) while the helper starts on them."""
        queue = helper.SubbandQueue(len(self.g.plan.subbands))
        w_min = helper.shared_full(self.w_min.shape, np.float32, np.inf)
        w_max = helper.shared_full(self.w_max.shape, np.float32, -np.inf)

        def work() -> None:
            self.w_min, self.w_max = w_min, w_max
            self._blocks(None, read_ahead, queue.take())

        h = helper.Helper(work)
        try:
            side_work()
            self._blocks(None, read_ahead, queue.take())
            h.join()
        finally:
            h.kill()  # a no-op once joined
            queue.close()
        self.helper_cpu_s, self.helper_maxrss_kib = h.cpu_s, h.maxrss_kib
        np.minimum(self.w_min, w_min, out=self.w_min)
        np.maximum(self.w_max, w_max, out=self.w_max)

    def write(self, path: Path, extra_data_cols: tuple[str, ...], read_ahead: int) -> None:
        msfile.reserve(path)  # room for casacore's last writes should the disk fill
        try:
            if not self._main(path, extra_data_cols, read_ahead):
                subtables.write_all(path, self.g.subtables())
        finally:
            msfile.release()

    def _main(self, path: Path, extra_data_cols: tuple[str, ...], read_ahead: int) -> bool:
        """MAIN written; True when the subtables were written too (by the parent, while
        the helper wrote tiles)."""
        g = self.g
        done = False
        shape = (path, self.n_rows, g.plan.n_channels, self.n_pol, self.tiling, extra_data_cols)
        if self.direct_tiles and self.template_cache is not None:  # no zero-filled tiles
            ms = mstemplate.create_main(*shape, self.template_cache)
        else:
            ms = msfile.create_main(*shape)
        try:
            _main_columns(ms, g)
            if self.direct_tiles:
                self.tiles = tiles.open_tiles(
                    ms, path, self.n_rows, g.plan.n_channels, self.n_pol, self.tiling
                )
            if self.tiles is not None:
                # closed while the tiles are written: casacore keeps none of them cached
                closing, ms = ms, None
                msfile.close(closing, path)
            if self.tiles is not None and self.processes > 1:
                self._blocks_shared(read_ahead, lambda: subtables.write_all(path, g.subtables()))
                done = True
            else:
                self._blocks(ms, read_ahead)
            if ms is None:
                ms = msfile.reopen_main(path)
            _put_weight_and_sigma(ms, self.w_min, self.w_max, self.block_rows)
            closing, ms = ms, None
            msfile.close(closing, path)
        finally:
            if self.tiles is not None:
                self.tiles.close()
            if ms is not None:  # failed: the reserved room back first (msfile.close)
                msfile.discard(ms, path)
        return done


def write_ms(
    group: GroupPlan,
    path: Path,
    *,
    extra_data_cols: tuple[str, ...] = (),
    block_bytes: int = BLOCK_BYTES,
    tile_bytes: int = msfile.TILE_BYTES,
    read_ahead: int = 2,
    fused_kernel: bool | None = None,
    direct_tiles: bool = True,
    processes: int | None = None,
    template_cache: Path | None = None,
) -> dict[str, Any]:
    """Write the MS of ``group`` at ``path`` (which must not exist). ``fused_kernel``:
    None runs the numba kernel where numba is installed and either already loaded or the
    group has at least ``FUSED_MIN_BYTES`` of DATA, True for any size, False never (the
    numpy kernel, the reference). ``direct_tiles``: write DATA, FLAG and WEIGHT_SPECTRUM
    into casacore's tile files (convert/native/tiles.py; ``putcolslice`` when its layout
    checks fail), False always through ``putcolslice`` (the reference). ``processes``: 2
    shares the subbands with a helper process (convert/native/helper.py; direct tiles
    only), 1 writes them all here; None: ``helper.default_processes()``.
    ``template_cache``: a folder of empty MAIN tables by shape (convert/native/
    mstemplate.py): MAIN is copied from there, with no zero-filled tiles (direct tiles
    only); None: casacore creates it."""
    if processes is None:
        processes = helper.default_processes()
    w = _Writer(group, block_bytes, tile_bytes, fused_kernel, direct_tiles, processes)
    w.template_cache = template_cache
    w.write(path, extra_data_cols, read_ahead)
    freqs = group.plan.freq_hz
    return {
        "n_channels": int(freqs.size),
        "n_rows": w.n_rows,
        "freq_min_hz": float(freqs.min()),
        "freq_max_hz": float(freqs.max()),
        "tile_shape": w.tiling.shape,
        "block_rows": w.block_rows,
        "kernel": "numba" if w.use_fused else "numpy",
        "tiles": "direct" if w.tiles is not None else "putcolslice",
        "processes": w.processes if w.tiles is not None else 1,
        "helper_cpu_s": round(w.helper_cpu_s, 3),
        "helper_maxrss_kib": w.helper_maxrss_kib,
    }


def _track_weights(ns: np.ndarray, w_min: np.ndarray, w_max: np.ndarray) -> None:
    """Fold one block's WEIGHT_SPECTRUM into each row's min and max (views, updated in place)."""
    lo, hi = ns.min(), ns.max()
    if lo == hi:  # the usual block: one weight everywhere (a cheap flat reduce)
        np.minimum(w_min, lo, out=w_min)
        np.maximum(w_max, hi, out=w_max)
    else:
        np.minimum(w_min, ns.min(axis=1), out=w_min)
        np.maximum(w_max, ns.max(axis=1), out=w_max)


def _put_weight_and_sigma(ms: Any, w_min: np.ndarray, w_max: np.ndarray, block_rows: int) -> None:
    """WEIGHT (the median of WEIGHT_SPECTRUM over channels) and SIGMA; only rows whose
    min and max differ are read back for the median."""
    n_rows = w_min.shape[0]
    weight = w_min.astype(np.float64)
    uneven = (w_min != w_max).any(axis=1)
    for lo in range(0, n_rows, block_rows):
        hi = min(lo + block_rows, n_rows)
        sel = np.flatnonzero(uneven[lo:hi])
        if sel.size:
            spec = ms.getcol("WEIGHT_SPECTRUM", startrow=lo, nrow=hi - lo)
            weight[lo + sel] = np.median(spec[sel], axis=1)
    ms.putcol("WEIGHT", weight)
    sigma = np.zeros_like(weight)
    np.power(weight, -0.5, where=weight != 0, out=sigma)
    ms.putcol("SIGMA", sigma)


def convert(
    req: ConversionRequest, tmp_output: Path, plan: recipe.ConversionPlan
) -> dict[str, Any]:
    """The worker's entry point: the recipe's MS at ``tmp_output``, streamed."""
    require_casacore("native")
    group = plan_group(plan)
    info = write_ms(group, tmp_output, template_cache=tmp_output.parent / mstemplate.CACHE_DIR)
    pyuvdata_backend.finish_ms(tmp_output, plan, imaging_columns=req.imaging_columns)
    mid = plan.mid_centre() if len(group.centres) > 1 else group.centres[0]
    return {**info, "ra_deg": mid.ra_deg, "dec_deg": mid.dec_deg}


def validate_ms(path: Path, n_channels: int) -> str | None:
    return pyuvdata_backend.validate_ms(path, n_channels)
