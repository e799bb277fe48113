"""A site's own converter, run as an argv list (never through a shell).

Contract (docs/operations.md, "Command backend"):

* ``{inputs}`` becomes one argument per file, in ascending frequency order;
  ``{output}`` the path to write; ``{group_id}`` the group.
* ``{inputs_json}`` is one JSON object: the recipe of convert/plan.py
  (:meth:`ConversionPlan.summary`): ``inputs`` (frequency order),
  ``descending_channels``, ``pointing_dec_deg`` and its ``pointing_dec_source``,
  ``phasing``, ``field_names``, ``time_grid_jd``, ``subband_offsets_s``,
  ``missing_integrations``, ``n_rows``, ``telescope_name`` ...
* Exit status: 0 = written (an MS output is verified like ours); 65 (EX_DATAERR) or 66
  (EX_NOINPUT) = the data are wrong, a permanent failure; 75 (EX_TEMPFAIL) = a condition
  of the node, retried without using up an attempt; anything else, or death by a
  signal, is retried with backoff and counts against ``max_attempts``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dsa110_ingest.convert.executor import die_with_parent
from dsa110_ingest.convert.plan import ConversionPlan
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import (
    ConversionError,
    ConversionTimeout,
    PermanentConversionError,
    TransientConversionError,
)

EXIT_PERMANENT = (65, 66)  # sysexits EX_DATAERR, EX_NOINPUT
EXIT_TRANSIENT = (75,)  # sysexits EX_TEMPFAIL


def expand(
    argv: tuple[str, ...], req: ConversionRequest, output: Path, plan: ConversionPlan | None = None
) -> list[str]:
    """``{inputs}`` becomes one argument per file (frequency order); the other
    placeholders are substituted inside their argument. File names are data, never code."""
    inputs = [s.path for s in plan.subbands] if plan else [f.path for f in req.by_frequency]
    recipe = plan.summary() if plan else {"inputs": inputs}
    out: list[str] = []
    for arg in argv:
        if arg == "{inputs}":
            out.extend(inputs)
            continue
        out.append(
            arg.replace("{group_id}", req.group_id)
            .replace("{output}", str(output))
            .replace("{inputs_json}", json.dumps(recipe))
        )
    return out


def convert(req: ConversionRequest, tmp_output: Path, plan: ConversionPlan) -> dict[str, Any]:
    argv = expand(req.command, req, tmp_output, plan)
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
        raise TransientConversionError(
            f"converter {argv[0]!r} not found; install it or fix [convert] command "
            "(retried without using up an attempt)"
        ) from None
    except PermissionError:
        raise TransientConversionError(
            f"converter {argv[0]!r} is not executable; chmod +x it or fix [convert] command"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConversionTimeout(
            f"converter ran longer than {req.timeout_s:.0f} s and was killed; raise "
            "[convert] timeout_seconds if that is normal"
        ) from None
    rc = proc.returncode
    if rc in EXIT_PERMANENT:
        raise PermanentConversionError(
            f"converter exited with status {rc}: it says the data of {req.group_id} are "
            "wrong (its output is in the log above)"
        )
    if rc in EXIT_TRANSIENT:
        raise TransientConversionError(
            f"converter exited with status {rc} (temporary failure of the node; its output "
            "is in the log above)"
        )
    if rc != 0:
        raise ConversionError(f"converter exited with status {rc} (its output is in the log above)")
    if not tmp_output.exists():
        raise ConversionError(f"converter exited 0 but wrote no {tmp_output}")
    return {"n_channels": plan.n_channels}


def validate_output(path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if path.is_dir() and not any(path.iterdir()):
        return "is an empty directory"
    return None
