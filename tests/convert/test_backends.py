"""The backend registry: a backend that cannot run is found before any work (doctor
FAILs it, run refuses), and on a worker that lacks it the attempt waits for the node;
an output in place is judged by what its backend writes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dsa110_ingest import config
from dsa110_ingest.config import Config, load_config
from dsa110_ingest.convert.backends import (
    BACKENDS,
    backend_for,
    check_available,
    require_available,
    require_casacore,
)
from dsa110_ingest.doctor import run_checks
from dsa110_ingest.errors import BackendUnavailableError, TransientConversionError


def _cfg(tmp_path: Path, **convert: object) -> Config:
    cfg = load_config(env={"HOME": str(tmp_path)})
    return replace(cfg, convert=replace(cfg.convert, **convert))


def test_the_installed_backends_are_available(tmp_path: Path) -> None:
    assert check_available(_cfg(tmp_path)) == []
    assert check_available(_cfg(tmp_path, backend="pyuvdata")) == []


@pytest.mark.parametrize(
    ("backend", "module"),
    [
        ("native", "casacore"),
        ("native", "erfa"),
        ("native", "astropy_iers_data"),
        ("pyuvdata", "pyuvdata"),
        ("pyuvdata", "casacore"),
    ],
)
def test_a_backend_without_the_extra_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, module: str
) -> None:
    # None in sys.modules is how Python spells "this import fails"
    monkeypatch.setitem(sys.modules, module, None)
    (problem,) = check_available(_cfg(tmp_path, backend=backend))
    assert "pip install 'dsa110-ingest[convert]'" in problem and "--no-convert" in problem
    with pytest.raises(BackendUnavailableError, match=r"dsa110-ingest\[convert\]"):
        require_available(_cfg(tmp_path, backend=backend))


def test_the_native_backend_does_not_need_pyuvdata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyuvdata", None)
    assert check_available(_cfg(tmp_path)) == []


def test_command_backend_needs_an_executable(tmp_path: Path) -> None:
    script = tmp_path / "conv"
    script.write_text("#!/bin/sh\n")
    assert check_available(_cfg(tmp_path, backend="command", command=(str(script), "x")))
    script.chmod(0o755)
    assert check_available(_cfg(tmp_path, backend="command", command=(str(script), "x"))) == []
    assert check_available(_cfg(tmp_path, backend="command", command=("sh", "-c", "x"))) == []
    (p,) = check_available(_cfg(tmp_path, backend="command", command=("no-such-conv-xyz",)))
    assert "no-such-conv-xyz is not an executable file on PATH" in p
    (p,) = check_available(_cfg(tmp_path, backend="command", command=(str(tmp_path),)))
    assert "is not an executable file;" in p  # a directory is not a converter


def test_doctor_fails_a_missing_backend_and_passes_a_disabled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "casacore", None)
    checks = {c.name: c for c in run_checks(_cfg(tmp_path), tmp_path)}
    assert checks["converter"].level == "FAIL" and "[convert]" in checks["converter"].detail
    checks = {c.name: c for c in run_checks(_cfg(tmp_path, enabled=False), tmp_path)}
    assert checks["converter"].level == "OK"


def test_backend_names_match_the_config() -> None:
    assert set(BACKENDS) == set(config.BACKENDS)
    for backend in BACKENDS.values():
        # each names a module that converts (imported here, as on a worker)
        assert callable(backend.load().convert)


@pytest.mark.parametrize("name", ["native", "pyuvdata"])
def test_a_worker_without_casacore_is_the_nodes_condition(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setitem(sys.modules, "casacore", None)
    monkeypatch.setitem(sys.modules, "casacore.tables", None)
    with pytest.raises(TransientConversionError, match=rf"backend '{name}' needs python-casacore"):
        require_casacore(name)
    # the backends themselves ask before reading anything
    with pytest.raises(TransientConversionError, match=r"dsa110-ingest\[convert\]"):
        backend_for(name).load().convert(None, Path("unused"), None)  # type: ignore[arg-type]


def test_a_backend_unknown_here_is_the_nodes_condition() -> None:
    with pytest.raises(TransientConversionError, match="unknown to this installation"):
        backend_for("slurm-converter")


def test_an_output_in_place_is_judged_by_what_its_backend_writes(tmp_path: Path) -> None:
    from dsa110_ingest.convert.request import ConversionRequest, InputFile

    req = ConversionRequest("g", (InputFile("a", 0, 1.0e9, 4),), str(tmp_path / "g.ms"), "command")
    out = tmp_path / "g.ms"
    command, native = backend_for("command"), backend_for("native")
    assert command.validate(req, out) == "does not exist"
    out.mkdir()
    assert command.validate(req, out) == "is an empty directory"
    (out / "inputs.txt").write_text("x")
    assert command.validate(req, out) is None
    # a Measurement Set writer's output must be a readable MS with the planned channels
    why = native.validate(req, out)
    assert why is not None and "not a readable Measurement Set" in why
