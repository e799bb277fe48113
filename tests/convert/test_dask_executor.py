"""The Dask executor's own logic, without a cluster (test_dask.py runs a real one): the
slots the workers offer, the scheduler file read each time, and the reconnects put off
by the backoff while the scheduler is out of reach."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dsa110_ingest.config import ConvertConfig, load_config

dx = pytest.importorskip("dsa110_ingest.convert.dask_executor")


def _conv(tmp_path: Path, **kw: object) -> ConvertConfig:
    cfg = load_config(None, env={"HOME": str(tmp_path)})
    return replace(cfg.convert, executor="dask", **kw)


def test_slots_count_the_resource_or_else_the_threads() -> None:
    info = {
        "workers": {
            "a": {"nthreads": 4, "resources": {"conversion": 1}},
            "b": {"nthreads": 2, "resources": {}},
            "c": {"nthreads": 1, "resources": {"conversion": 2}},
        }
    }
    assert dx.slots(info, "conversion") == 3
    assert dx.slots(info, "") == 7
    assert dx.slots({}, "conversion") == 0


def test_the_scheduler_file_is_read_at_each_connect(tmp_path: Path) -> None:
    f = tmp_path / "scheduler.json"
    conv = _conv(tmp_path, dask_scheduler="", dask_scheduler_file=str(f))
    assert dx.where(conv) == f"scheduler file {f}"
    with pytest.raises(FileNotFoundError, match="does not exist \\(yet\\)"):
        dx.connect(conv)
    f.write_text('{"type": "Scheduler"}')
    with pytest.raises(ValueError, match="has no scheduler address"):
        dx.connect(conv)


def test_an_unreachable_scheduler_is_retried_with_the_backoff(tmp_path: Path) -> None:
    f = tmp_path / "scheduler.json"
    ex = dx.DaskExecutor(_conv(tmp_path, dask_scheduler="", dask_scheduler_file=str(f)))
    try:
        waits = []
        for _ in range(8):
            reason = ex.unavailable()
            assert reason is not None and "does not exist (yet)" in reason
            waits.append(reason.rsplit("next try in ", 1)[1])
            assert ex.unavailable() == reason  # no new attempt before its time
            ex._next_connect = 0.0  # time passes (fake time: the wait is seconds long)
        assert waits == ["1 s", "2 s", "4 s", "8 s", "16 s", "32 s", "60 s", "60 s"]
        assert ex.capacity() == 0
        with pytest.raises(OSError, match="unreachable"):
            ex.submit(None)  # type: ignore[arg-type]
        assert ex.describe()["connected"] is False
    finally:
        ex.close()
