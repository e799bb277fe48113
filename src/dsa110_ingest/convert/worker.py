"""One conversion, start to finish, in its own process: ``python -m dsa110_ingest.convert.worker``.

Reads a request (JSON) on stdin, plans the MS from the files' headers (convert/plan.py),
writes it under a temporary name beside the final one, verifies it and renames it into
place only when it passes, prints one result line (JSON) on stdout. A crash, hang or OOM
here never touches the ingest daemon.

Errors leave as ``{"error": ..., "kind": ...}`` (errors.ConversionError.to_json): the
kind tells the queue whether to fail the group at once (``permanent``), retry without
using up an attempt (``node``: disk full, backend missing) or retry counting it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dsa110_ingest import uvh5
from dsa110_ingest.convert import command_backend, ownership
from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.backends import Backend, backend_for
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConversionError, TransientConversionError

# bytes per visibility in the MS: DATA (complex64) + FLAG + WEIGHT_SPECTRUM (float32);
# the imaging columns add MODEL_DATA and CORRECTED_DATA (complex64 each)
_BYTES_PER_VIS = 13
_BYTES_PER_VIS_IMAGING = 29


def free_bytes(path: Path) -> int:
    """Free space where ``path`` lives (a seam: fault tests replace it)."""
    return shutil.disk_usage(path).free


def estimated_ms_bytes(plan: recipe.ConversionPlan, imaging_columns: bool) -> int:
    per = _BYTES_PER_VIS_IMAGING if imaging_columns else _BYTES_PER_VIS
    # +10 % and 1 MiB for the subtables and table headers
    return int(plan.n_rows * plan.n_channels * plan.n_pols * per * 1.1) + (1 << 20)


def disk_full_error(folder: Path, need: int, when: str) -> TransientConversionError:
    free = free_bytes(folder)
    return TransientConversionError(
        f"output disk full (ENOSPC) {when}: {folder} has {free / 2**20:.1f} MiB free, the MS "
        f"needs ~{need / 2**20:.1f} MiB; free space there or point [convert] output_dir "
        "elsewhere (retried without using up an attempt)"
    )


def _looks_like_enospc(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    # casacore reports a full disk as a RuntimeError with the strerror text
    return "No space left on device" in str(e)


def _clear_stale_temps(final: Path) -> None:
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _verify(backend: Backend, tmp: Path, plan: recipe.ConversionPlan) -> None:
    if backend.writes_ms or (tmp / "table.dat").exists():
        # an MS, whoever wrote it, must be the planned one
        recipe.verify_ms(tmp, plan)
        return
    why = command_backend.validate_output(tmp)
    if why is not None:
        raise ConversionError(f"converter output {tmp} {why}")


def run(req: ConversionRequest, *, force: bool = False) -> dict[str, Any]:
    final = Path(req.output)
    t0 = time.monotonic()
    backend = backend_for(req.backend)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        cls = TransientConversionError if e.errno == errno.ENOSPC else ConversionError
        raise cls(
            f"cannot create output folder {final.parent}: {e.strerror}; "
            "make it writable by the daemon's user"
        ) from None
    if final.exists() and not force:
        kept = _keep_existing(req, backend, final)
        if kept is not None:
            return kept
    _clear_stale_temps(final)
    uvh5.refuse_unsafe_inputs(f.path for f in req.inputs)  # nothing read from elsewhere
    plan = recipe.plan_for_request(req)
    need = estimated_ms_bytes(plan, req.imaging_columns)
    if free_bytes(final.parent) < need:
        raise disk_full_error(final.parent, need, "before writing")
    info = _write(req, backend, plan, final, need)
    return {
        "ms_path": str(final),
        "skipped": False,
        "seconds": time.monotonic() - t0,
        # this process's own peak: a wait4() of it also reports its children's (the
        # native writer's helper) as the larger of the two, not their sum
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        **info,
        **_recipe_result(plan, info),
    }


def _keep_existing(req: ConversionRequest, backend: Backend, final: Path) -> dict[str, Any] | None:
    """An output already at ``final``: its result when it stands as the product (a retry
    after a crash between the rename and the DB writes), else None, moved aside."""
    why = backend.validate(req, final)
    if why is None:
        out: dict[str, Any] = {
            "ms_path": str(final),
            "skipped": True,
            "n_channels": req.n_channels,
            "seconds": 0.0,
        }
        try:  # the centre ms_index records; the MS itself is already accepted
            out.update(_recipe_result(recipe.plan_for_request(req), {}))
        except ConversionError as e:
            print(f"existing {final} kept; its phase centre is unknown: {e}", file=sys.stderr)
        return out
    # an invalid leftover must not block the group, nor be destroyed unseen
    aside = final.with_name(f"{final.name}.invalid-{int(time.time())}")
    os.rename(final, aside)
    print(f"existing {final} {why}; moved aside to {aside}", file=sys.stderr)
    return None


def _write(
    req: ConversionRequest, backend: Backend, plan: recipe.ConversionPlan, final: Path, need: int
) -> dict[str, Any]:
    """Convert into a temporary name beside ``final``, verify, rename into place; what
    the backend reports. A failure leaves no temporary, and is blamed on the disk when
    the disk is (nearly) full."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    converter = backend.load()
    try:
        try:
            info = converter.convert(req, tmp, plan)
            _verify(backend, tmp, plan)
            # never over a new owner's MS: the claim checked and the MS renamed as one step
            old = ownership.place(req.meta, tmp, final)
            if old is not None:  # --force: the old product goes only once the new one is whole
                _remove(old)
            dfd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except ConversionError as e:
            # a converter that died of a full disk says only "status 1": ask the disk
            if e.counts and not e.permanent and free_bytes(final.parent) < min(need, 64 << 20):
                raise disk_full_error(final.parent, need, f"while writing {final}") from e
            raise
        except Exception as e:
            # a full disk shows up as OSError, casacore's RuntimeError or worse: ask the
            # disk before the half-written MS is removed and the space comes back
            if _looks_like_enospc(e) or free_bytes(final.parent) < min(need, 64 << 20):
                raise disk_full_error(final.parent, need, f"while writing {final}") from e
            if isinstance(e, OSError):
                raise ConversionError(f"writing {final} failed: {e}") from e
            raise
    finally:
        if tmp.exists():
            _remove(tmp)
    return info


def _recipe_result(plan: recipe.ConversionPlan, info: dict[str, Any]) -> dict[str, Any]:
    """What the group.converted payload and ms_index learn about the MS."""
    out: dict[str, Any] = {
        "phasing": plan.phasing,
        "pointing_dec_deg": round(float(plan.summary()["pointing_dec_deg"]), 6),
        "pointing_dec_source": plan.pointing_dec_source,
        "n_integrations": plan.n_integrations,
        "max_time_offset_s": round(plan.max_offset_s, 3),
        "flagged_subband_integrations": {
            f"sb{s.subband:02d}": list(s.missing) for s in plan.subbands if s.missing
        },
    }
    if "ra_deg" not in info:
        try:
            mid = plan.mid_centre()
        except TransientConversionError:  # no pyerfa beside a command backend: no centre
            return out
        out["ra_deg"], out["dec_deg"] = mid.ra_deg, mid.dec_deg
    return out


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of giving them back to the
    kernel: every visibility block (~10 MiB arrays, above malloc's mmap threshold) would
    otherwise be fresh pages that the kernel zero-fills on first touch -- 245,000 page
    faults and ~10 % of the writer's CPU on a 2 GB MS (perf). The peak is unchanged: the
    same blocks are reused, and the process ends with the conversion."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: its maximum; blocks come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: freed heap stays mapped


def main() -> int:
    keep_freed_memory()
    req = ConversionRequest.from_json(json.loads(sys.stdin.read()))
    try:
        result = run(req, force=bool(req.meta.get("force")))
    except ConversionError as e:
        print(json.dumps(e.to_json()), flush=True)
        return 3
    except Exception as e:  # noqa: BLE001 -- reported with its class; the queue retries it
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "kind": "error"}), flush=True)
        return 3
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
