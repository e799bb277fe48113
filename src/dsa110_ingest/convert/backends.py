"""The conversion backends, by the name ``[convert] backend`` gives them: what each needs
to run (asked before any work starts, by ``doctor``, ``run`` and ``convert``, because a
converter that is not installed fails every group the same way: retrying it only burns
time), the module that converts (imported only where a conversion runs), and how an
output already in place is judged.

A new backend is one :class:`Backend` in :data:`BACKENDS` (and its name in
``config.BACKENDS``): a module with ``convert(req, tmp_output, plan) -> dict``, its
requirement check, and whether it writes a Measurement Set.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dsa110_ingest.config import Config
from dsa110_ingest.errors import BackendUnavailableError, TransientConversionError

if TYPE_CHECKING:
    from dsa110_ingest.convert.plan import ConversionPlan
    from dsa110_ingest.convert.request import ConversionRequest

CONVERT_EXTRA_HINT = "pip install 'dsa110-ingest[convert]'"


class Converter(Protocol):
    def convert(
        self, req: ConversionRequest, tmp_output: Path, plan: ConversionPlan
    ) -> dict[str, Any]: ...


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        # ValueError: a module blanked in sys.modules; ImportError: a broken parent package
        return True


def require_casacore(backend: str) -> None:
    """Where the conversion runs (this host's worker process, or one under a Dask worker
    that may lack what the daemon's host has): python-casacore must import. Missing, it
    is the node's condition, retried without using up an attempt."""
    try:
        import casacore.tables  # noqa: F401
    except ImportError as e:
        raise TransientConversionError(
            f"backend {backend!r} needs python-casacore (the extra 'convert'): {CONVERT_EXTRA_HINT}"
        ) from e


def _needs(*modules: tuple[str, str]) -> Callable[[Config], list[str]]:
    """The requirement check of a backend that imports these (module, distribution)s."""

    def check(cfg: Config) -> list[str]:
        missing = [dist for mod, dist in modules if _module_missing(mod)]
        if not missing:
            return []
        return [
            f'[convert] backend = "{cfg.convert.backend}" needs {" and ".join(missing)}, '
            "which are not "
            f"installed: {CONVERT_EXTRA_HINT} (or set [convert] enabled = false, or run "
            "with --no-convert, to index and group only)"
        ]

    return check


_pyuvdata = _needs(("pyuvdata", "pyuvdata"), ("casacore", "python-casacore"))
# the native writer: h5py and casacore for the data, ERFA and the IERS tables for UVWs
_native = _needs(
    ("casacore", "python-casacore"), ("erfa", "pyerfa"), ("astropy_iers_data", "astropy-iers-data")
)


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


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # imported by load(), on the host that converts
    requirements: Callable[[Config], list[str]]  # what keeps it from running here, with fixes
    writes_ms: bool  # its output is a Measurement Set and is checked as one

    def load(self) -> Converter:
        return importlib.import_module(self.module)  # type: ignore[return-value]

    def validate(self, req: ConversionRequest, path: Path) -> str | None:
        """None when the output at ``path`` can stand as the group's product; else why
        not (an output found in place, or one a remote worker reported written)."""
        if self.writes_ms:
            from dsa110_ingest.convert.pyuvdata_backend import validate_ms

            return validate_ms(path, req.n_channels)
        from dsa110_ingest.convert.command_backend import validate_output

        return validate_output(path)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("native", "dsa110_ingest.convert.native.backend", _native, writes_ms=True),
        Backend("pyuvdata", "dsa110_ingest.convert.pyuvdata_backend", _pyuvdata, writes_ms=True),
        Backend("command", "dsa110_ingest.convert.command_backend", _command, writes_ms=False),
    )
}


def backend_for(name: str) -> Backend:
    """The backend a request names; one this installation does not know is the node's
    condition (a Dask worker with another version), not the group's."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise TransientConversionError(
            f"conversion backend {name!r} is unknown to this installation (it knows "
            f"{sorted(BACKENDS)}); install the daemon's dsa110-ingest version here"
        ) from None


def check_available(cfg: Config) -> list[str]:
    """What keeps the configured backend from running, each with its fix; [] when it can."""
    backend = BACKENDS.get(cfg.convert.backend)
    if backend is None:
        return [
            f"[convert] backend {cfg.convert.backend!r} is unknown; use one of {sorted(BACKENDS)}"
        ]
    return backend.requirements(cfg)


def require_available(cfg: Config) -> None:
    problems = check_available(cfg)
    if problems:
        raise BackendUnavailableError("; ".join(problems))
