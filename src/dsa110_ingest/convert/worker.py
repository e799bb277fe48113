"""One conversion, start to finish, in its own process: ``python -m dsa110_ingest.convert.worker``.

Reads a request (JSON) on stdin, writes the MS under a temporary name beside the final
one and renames it into place only when complete, prints one result line (JSON) on
stdout. A crash, hang or OOM here never touches the ingest daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dsa110_ingest.convert import command_backend, pyuvdata_backend
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConversionError


def _validate(req: ConversionRequest, path: Path) -> str | None:
    if req.backend in ("pyuvdata", "native"):
        return pyuvdata_backend.validate_ms(path, req.n_channels)
    return command_backend.validate_output(path)


def _backend(name: str) -> Any:
    if name == "native":
        from dsa110_ingest.convert.native import backend as native

        return native
    return pyuvdata_backend if name == "pyuvdata" else command_backend


def _clear_stale_temps(final: Path) -> None:
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def run(req: ConversionRequest, *, force: bool = False) -> dict[str, Any]:
    final = Path(req.output)
    t0 = time.monotonic()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionError(
            f"cannot create output folder {final.parent}: {e.strerror}; "
            "make it writable by the daemon's user"
        ) from None
    if final.exists() and not force:
        why = _validate(req, final)
        if why is None:
            return {
                "ms_path": str(final),
                "skipped": True,
                "n_channels": req.n_channels,
                "seconds": 0.0,
            }
        # an invalid leftover must not block the group, nor be destroyed unseen
        aside = final.with_name(f"{final.name}.invalid-{int(time.time())}")
        os.rename(final, aside)
        print(f"existing {final} {why}; moved aside to {aside}", file=sys.stderr)
    _clear_stale_temps(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    backend = _backend(req.backend)
    try:
        info = backend.convert(req, tmp)
        why = _validate(req, tmp)
        if why is not None:
            raise ConversionError(f"converter output {tmp} {why}")
        if final.exists():  # --force: the old product goes only once the new one is whole
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.rename(tmp, final)
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise ConversionError(f"writing {final} failed: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
    return {"ms_path": str(final), "skipped": False, "seconds": time.monotonic() - t0, **info}


def main() -> int:
    req = ConversionRequest.from_json(json.loads(sys.stdin.read()))
    try:
        result = run(req, force=bool(req.meta.get("force")))
    except ConversionError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 3
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
