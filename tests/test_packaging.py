"""Smoke test of what users install: build the wheel from a copy of this tree, install it
(not editable) into a fresh venv, run the README's commands.

The venv gets the runtime dependencies from this test environment through a folder of
links that leaves out the ``convert`` extra (pyuvdata, python-casacore), so it is also a
real installation without that extra: ``doctor`` must FAIL it and ``run`` refuse it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from .conftest import TINY_SIM_ARGS

REPO = Path(__file__).resolve().parents[1]
SKIP = (".venv", ".git", "build", "dist", "demo-run", "__pycache__", "*.egg-info", ".*_cache")
CONVERT_EXTRA = ("pyuvdata", "casacore", "python_casacore")


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src-copy"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(*SKIP))
    p = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(src),
        ],
    )
    assert p.returncode == 0, p.stderr
    (wheel,) = (root / "dist").glob("dsa110_ingest-*.whl")
    venv = root / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    py = venv / "bin" / "python"
    p = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ]
    )
    assert p.returncode == 0, p.stderr
    # the dependencies, minus this package's editable install and the convert extra
    deps = root / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        name = entry.name.lower()
        if name.startswith(("dsa110", "__editable__", "_dsa110", *CONVERT_EXTRA)) or name.endswith(
            ".pth"
        ):
            continue
        (deps / entry.name).symlink_to(entry)
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    (site / "zz-test-deps.pth").write_text(f"{deps}\n")
    return root


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = root / "home"
    home.mkdir(exist_ok=True)
    return _run(
        [str(root / "venv" / "bin" / "dsa110-ingest"), *args],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd=root,
    )


def test_the_wheel_carries_data_types_and_license(installed: Path) -> None:
    (wheel,) = (installed / "dist").glob("dsa110_ingest-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("data/ingest.toml", "data/dsa110-ingest.service", "py.typed"):
        assert f"dsa110_ingest/{f}" in names, f
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: BSD-3-Clause" in text and "Project-URL: " in text
    assert "Classifier: Typing :: Typed" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_version_and_location(installed: Path) -> None:
    p = _cli(installed, "--version")
    assert p.returncode == 0 and p.stdout.strip() == f"dsa110-ingest {version('dsa110-ingest')}"
    py = installed / "venv" / "bin" / "python"
    where = _run([str(py), "-c", "import dsa110_ingest; print(dsa110_ingest.__file__)"]).stdout
    assert str(installed / "venv") in where  # the wheel, not this checkout


def test_readme_commands_in_a_fresh_install_without_the_convert_extra(installed: Path) -> None:
    assert _cli(installed, "config", "--example").stdout.startswith("# dsa110-ingest")
    assert str(installed / "venv/bin/dsa110-ingest") in _cli(installed, "systemd-unit").stdout
    (installed / "incoming").mkdir(exist_ok=True)
    conf = installed / "ingest.toml"
    conf.write_text(
        'state_dir = "state"\n[[storage_locations]]\nname = "in"\npath = "incoming"\n'
        '[convert]\noutput_dir = "ms"\n'  # backend "native", the default
    )
    c = ("--config", str(conf))

    p = _cli(installed, *c, "doctor")
    assert p.returncode == 1
    assert 'FAIL  converter: [convert] backend = "native" needs python-casacore' in p.stdout
    assert "pip install 'dsa110-ingest[convert]'" in p.stdout
    p = _cli(installed, *c, "run", "--rescan")
    assert p.returncode == 1 and "pip install 'dsa110-ingest[convert]'" in p.stderr
    assert not (installed / "state").exists()  # refused before any work

    conf.write_text(conf.read_text().replace("[convert]\n", "[convert]\nenabled = false\n"))
    p = _cli(installed, *c, "doctor")
    assert p.returncode == 0, p.stdout + p.stderr
    sim = ("simulate", "--out", str(installed / "incoming"), "--groups", "2", *TINY_SIM_ARGS)
    assert _cli(installed, *sim).returncode == 0
    p = _cli(installed, *c, "run", "--rescan")
    assert p.returncode == 0 and '"groups_completed": 2' in p.stderr, p.stderr
    groups = json.loads(_cli(installed, *c, "groups", "--json").stdout)
    assert [g["state"] for g in groups] == ["complete", "complete"]
    assert _cli(installed, *c, "status").returncode == 3  # no daemon: stopped
    assert json.loads(_cli(installed, *c, "status", "--json").stdout)["version"] == version(
        "dsa110-ingest"
    )


def test_changelog_has_a_section_for_this_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert f"## [{version('dsa110-ingest')}]" in text and "## [Unreleased]" in text
