"""A backend that cannot run is found before any work: doctor FAILs it, run refuses."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dsa110_ingest.config import Config, load_config
from dsa110_ingest.convert.backends import check_available, require_available
from dsa110_ingest.doctor import run_checks
from dsa110_ingest.errors import BackendUnavailableError


def _cfg(tmp_path: Path, **convert: object) -> Config:
    cfg = load_config(env={"HOME": str(tmp_path)})
    return replace(cfg, convert=replace(cfg.convert, **convert))


def test_pyuvdata_installed_is_available(tmp_path: Path) -> None:
    assert check_available(_cfg(tmp_path)) == []


@pytest.mark.parametrize("module", ["pyuvdata", "casacore"])
def test_pyuvdata_backend_without_the_extra_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    # None in sys.modules is how Python spells "this import fails"
    monkeypatch.setitem(sys.modules, module, None)
    (problem,) = check_available(_cfg(tmp_path))
    assert "pip install 'dsa110-ingest[convert]'" in problem and "--no-convert" in problem
    with pytest.raises(BackendUnavailableError, match=r"dsa110-ingest\[convert\]"):
        require_available(_cfg(tmp_path))


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
    monkeypatch.setitem(sys.modules, "pyuvdata", None)
    checks = {c.name: c for c in run_checks(_cfg(tmp_path), tmp_path)}
    assert checks["converter"].level == "FAIL" and "[convert]" in checks["converter"].detail
    checks = {c.name: c for c in run_checks(_cfg(tmp_path, enabled=False), tmp_path)}
    assert checks["converter"].level == "OK"
