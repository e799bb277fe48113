"""A site's own converter, run as an argv list (never through a shell)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dsa110_ingest.convert.executor import die_with_parent
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConversionError, ConversionTimeout


def expand(argv: tuple[str, ...], req: ConversionRequest, output: Path) -> list[str]:
    """``{inputs}`` becomes one argument per file (frequency order); the other
    placeholders are substituted inside their argument. File names are data, never code."""
    inputs = [f.path for f in req.by_frequency]
    out: list[str] = []
    for arg in argv:
        if arg == "{inputs}":
            out.extend(inputs)
            continue
        out.append(
            arg.replace("{group_id}", req.group_id)
            .replace("{output}", str(output))
            .replace("{inputs_json}", json.dumps(inputs))
        )
    return out


def convert(req: ConversionRequest, tmp_output: Path) -> dict[str, Any]:
    argv = expand(req.command, req, tmp_output)
    try:
        # the converter's stdout goes to our stderr: our stdout carries only the result
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            stderr=sys.stderr.fileno(),
            timeout=req.timeout_s,
            check=False,
            preexec_fn=die_with_parent,
        )
    except FileNotFoundError:
        raise ConversionError(f"converter {argv[0]!r} not found; fix [convert] command") from None
    except PermissionError:
        raise ConversionError(f"converter {argv[0]!r} is not executable") from None
    except subprocess.TimeoutExpired:
        raise ConversionTimeout(
            f"converter ran longer than {req.timeout_s:.0f} s and was killed; raise "
            "[convert] timeout_seconds if that is normal"
        ) from None
    if proc.returncode != 0:
        raise ConversionError(
            f"converter exited with status {proc.returncode} (its output is in the log above)"
        )
    if not tmp_output.exists():
        raise ConversionError(f"converter exited 0 but wrote no {tmp_output}")
    return {"n_channels": req.n_channels}


def validate_output(path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if path.is_dir() and not any(path.iterdir()):
        return "is an empty directory"
    return None
