"""A disk that fills during a native conversion fails it cleanly: the worker's disk-full
error (transient, no attempt used), the temporary MS removed, the process alive.

casacore writes parts of a table from C++ destructors, where a full disk terminates the
process (exit 134); the writer keeps room for those writes (convert/native/msfile.py
``room``). Needs a real small filesystem: a tmpfs, mounted when this runs as root (the
test is skipped otherwise); the disk is filled by a real file at each stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsa110_ingest.tools.simulate import SimParams

from .test_native_backend import _group, _request

pytest.importorskip("casacore.tables")

CHILD = r"""
import json, sys
from pathlib import Path
from dsa110_ingest.convert import worker
from dsa110_ingest.convert.native import backend, subtables, tiles
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConversionError

req = ConversionRequest.from_json(json.loads(sys.stdin.read()))
stage, out = sys.argv[1], Path(req.output).parent

def fill():
    with open(out / "filler", "wb") as f:
        try:
            while True:
                f.write(b"x" * 65536)
                f.flush()
        except OSError:
            pass

def before(obj, name):
    real = getattr(obj, name)
    def hooked(*a, **k):
        fill()
        return real(*a, **k)
    setattr(obj, name, hooked)

if stage == "probe":
    before(tiles, "_check_dminfo")
elif stage == "tiles":
    before(tiles.TileFiles, "write")
elif stage == "subtables":
    before(subtables, "write_all")
elif stage == "weights":
    before(backend, "_put_weight_and_sigma")
try:
    worker.run(req)
    print(json.dumps({"ok": True}))
except ConversionError as e:
    print(json.dumps({"kind": e.kind, "counts": e.counts, "error": str(e)}))
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("stage", ["probe", "tiles", "subtables", "weights"])
def test_a_disk_filling_mid_conversion_is_the_disk_full_error(
    tmp_path: Path, small_disk: Path, stage: str
) -> None:
    files = _group(tmp_path / "in", SimParams(nants=10, nchan=8, ntimes=4))
    out = small_disk / "ms" / "x.ms"
    req = _request(files, out=str(out))
    p = subprocess.run(
        [sys.executable, "-c", CHILD, stage],
        input=json.dumps(req.to_json()),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]  # not terminated by casacore (134)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result.get("kind") == "node" and not result["counts"], result  # transient
    assert "output disk full" in result["error"]
    left = sorted(q.name for q in out.parent.iterdir())
    assert left in (["filler"], [".native-ms-templates", "filler"]), left
