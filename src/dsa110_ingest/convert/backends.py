"""Can the configured conversion backend run on this machine? Asked before any work
starts (``doctor``, ``run``, ``convert``), because a converter that is not installed fails
every group the same way: retrying it only burns time.

A new backend adds its requirement check to :data:`REQUIREMENTS`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable

from dsa110_ingest.config import Config
from dsa110_ingest.errors import BackendUnavailableError

CONVERT_EXTRA_HINT = "pip install 'dsa110-ingest[convert]'"


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        # ValueError: a module blanked in sys.modules; ImportError: a broken parent package
        return True


def _pyuvdata(cfg: Config) -> list[str]:
    missing = [
        dist
        for mod, dist in (("pyuvdata", "pyuvdata"), ("casacore", "python-casacore"))
        if _module_missing(mod)
    ]
    if not missing:
        return []
    return [
        f'[convert] backend = "{cfg.convert.backend}" needs {" and ".join(missing)}, which '
        "are not "
        f"installed: {CONVERT_EXTRA_HINT} (or set [convert] enabled = false, or run "
        "with --no-convert, to index and group only)"
    ]


def _command(cfg: Config) -> list[str]:
    exe = cfg.convert.command[0] if cfg.convert.command else ""
    if not exe:
        return ['[convert] backend = "command" needs `command`, an argv list']
    found = (
        exe
        if os.sep in exe and os.access(exe, os.X_OK) and os.path.isfile(exe)
        else None
        if os.sep in exe
        else shutil.which(exe)
    )
    if found is None:
        return [
            f"[convert] command: {exe} is not an executable file"
            + ("" if os.sep in exe else " on PATH")
            + "; install it or fix `command` in the config"
        ]
    return []


REQUIREMENTS: dict[str, Callable[[Config], list[str]]] = {
    "native": _pyuvdata,  # the native writer uses pyuvdata for metadata, casacore for tables
    "pyuvdata": _pyuvdata,
    "command": _command,
}


def check_available(cfg: Config) -> list[str]:
    """What keeps the configured backend from running, each with its fix; [] when it can."""
    check = REQUIREMENTS.get(cfg.convert.backend)
    if check is None:
        return [
            f"[convert] backend {cfg.convert.backend!r} is unknown; use one of "
            f"{sorted(REQUIREMENTS)}"
        ]
    return check(cfg)


def require_available(cfg: Config) -> None:
    problems = check_available(cfg)
    if problems:
        raise BackendUnavailableError("; ".join(problems))
