"""MAIN copied from a per-shape template (convert/native/mstemplate.py): built once, its
zero-filled tiles kept sparse, rebuilt when damaged, bypassed when unusable; the MS is
the one casacore writes either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert.native import mstemplate
from dsa110_ingest.tools.simulate import SimParams

from .test_native_backend import _group, _request

casacore_tables = pytest.importorskip("casacore.tables")
native = pytest.importorskip("dsa110_ingest.convert.native.backend")


def _columns(path: Path) -> dict[str, np.ndarray]:
    with casacore_tables.table(str(path), ack=False) as t:
        return {c: t.getcol(c) for c in t.colnames() if t.iscelldefined(c, 0)}


def _same(a: Path, b: Path) -> None:
    ca, cb = _columns(a), _columns(b)
    assert ca.keys() == cb.keys()
    for c in ca:
        np.testing.assert_array_equal(ca[c], cb[c], err_msg=c)


@pytest.fixture
def group(tmp_path: Path) -> object:
    files = _group(tmp_path / "in", SimParams(nants=5, nchan=4, ntimes=3))
    return native.plan_group(recipe.plan_for_request(_request(files)))


def test_built_once_then_copied(tmp_path: Path, group: object) -> None:
    cache = tmp_path / "cache"
    native.write_ms(group, tmp_path / "ref.ms", direct_tiles=False)
    with capture_logs() as logs:
        for name in ("a.ms", "b.ms"):
            native.write_ms(group, tmp_path / name, template_cache=cache)
    assert not [e for e in logs if e["event"] == "ms.template_unusable"]
    (kept,) = list(cache.iterdir())
    assert (kept / "manifest.json").exists()
    built = (kept / "manifest.json").stat().st_mtime_ns
    _same(tmp_path / "a.ms", tmp_path / "ref.ms")
    _same(tmp_path / "b.ms", tmp_path / "ref.ms")
    assert (kept / "manifest.json").stat().st_mtime_ns == built  # not rebuilt for b


def test_a_damaged_template_is_rebuilt(tmp_path: Path, group: object) -> None:
    cache = tmp_path / "cache"
    native.write_ms(group, tmp_path / "a.ms", template_cache=cache)
    (kept,) = list(cache.iterdir())
    (kept / "MAIN" / "table.dat").write_bytes(b"garbage")
    with capture_logs() as logs:
        native.write_ms(group, tmp_path / "b.ms", template_cache=cache)
    (event,) = [e for e in logs if e["event"] == "ms.template_unusable"]
    assert "differs from the template's manifest" in event["reason"]
    _same(tmp_path / "b.ms", tmp_path / "a.ms")
    assert (kept / "MAIN" / "table.dat").read_bytes() != b"garbage"  # rebuilt


def test_an_unusable_cache_falls_back_to_casacore(tmp_path: Path, group: object) -> None:
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")
    with capture_logs() as logs:
        info = native.write_ms(group, tmp_path / "a.ms", template_cache=cache)
    assert info["tiles"] == "direct"
    assert [e["attempt"] for e in logs if e["event"] == "ms.template_unusable"] == [1, 2]
    native.write_ms(group, tmp_path / "ref.ms", direct_tiles=False)
    _same(tmp_path / "a.ms", tmp_path / "ref.ms")


def test_the_daemons_conversion_keeps_templates_beside_its_outputs(tmp_path: Path) -> None:
    from dsa110_ingest.convert import worker

    files = _group(tmp_path / "in", SimParams(nants=4, nchan=2, ntimes=2))
    out = tmp_path / "out" / "x.ms"
    worker.run(_request(files, out=str(out)))
    assert (tmp_path / "out" / mstemplate.CACHE_DIR).is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [mstemplate.CACHE_DIR, "x.ms"]
