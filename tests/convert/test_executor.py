"""Executors: which one the config builds, and the local one's child process (real
worker processes, real converters): its result, its classified errors, a kill by signal
named, and its death with the process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest import config
from dsa110_ingest.config import load_config
from dsa110_ingest.convert.executor import (
    EXECUTORS,
    Handle,
    LocalProcess,
    LocalProcessExecutor,
    make_executor,
)
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConfigError, ConversionError

from ..conftest import converter_script, wait_for
from .conftest import retarget


def test_the_local_executor_is_the_default(tmp_path: Path) -> None:
    cfg = load_config(None, env={"HOME": str(tmp_path)})
    assert cfg.convert.executor == "local"
    ex = make_executor(cfg.convert)
    assert isinstance(ex, LocalProcessExecutor)
    assert ex.unavailable() is None and ex.capacity() is None
    assert ex.describe() == {
        "executor": "local",
        "template": {  # started on first use
            "pid": None,
            "started_at": None,
            "restarts": 0,
            "killed_hung": 0,
            "silent_since": None,
            "silent_after_s": 5.0,
            "answer_timeout_s": 15.0,
            "last_hung": None,
        },
    }


@pytest.mark.parametrize(
    ("convert", "needle"),
    [
        ('executor = "slurm"', "executor must be one of"),
        ('executor = "dask"', "needs exactly one of dask_scheduler"),
        (
            'executor = "dask"\ndask_scheduler = "tcp://h:8786"\ndask_scheduler_file = "s.json"',
            "needs exactly one of dask_scheduler",
        ),
        ("dask_resource = 1", "dask_resource must be a string"),
    ],
)
def test_bad_executor_settings_name_the_key(tmp_path: Path, convert: str, needle: str) -> None:
    f = tmp_path / "ingest.toml"
    f.write_text(f"[convert]\n{convert}\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(f, env={"HOME": str(tmp_path)})


def test_a_relative_scheduler_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "etc" / "ingest.toml"
    f.parent.mkdir()
    f.write_text('[convert]\nexecutor = "dask"\ndask_scheduler_file = "dask/scheduler.json"\n')
    cfg = load_config(f, env={"HOME": str(tmp_path)})
    assert cfg.convert.dask_scheduler_file == str(tmp_path / "etc" / "dask" / "scheduler.json")


def test_executor_names_match_the_config(tmp_path: Path) -> None:
    assert set(EXECUTORS) == set(config.EXECUTORS)
    cfg = load_config(None, env={"HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"executor 'slurm' is unknown; use one of"):
        make_executor(replace(cfg.convert, executor="slurm"))


def test_the_dask_executor_is_built_without_connecting(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    cfg = load_config(None, env={"HOME": str(tmp_path)})
    conv = replace(cfg.convert, executor="dask", dask_scheduler="tcp://127.0.0.1:9")
    ex = make_executor(conv)
    try:
        assert ex.name == "dask" and ex.remote
        assert ex.describe()["connected"] is False
    finally:
        ex.close()


# -- the local child process, on a real worker process -------------------------------


def _finish(h: Handle) -> tuple[dict[str, Any] | None, str | ConversionError | None]:
    wait_for(h.poll, 120, "the conversion process did not finish")
    return h.result()


def test_a_finished_conversion_hands_back_the_workers_result(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = retarget(group_request, tmp_path)
    ex = LocalProcessExecutor()
    try:
        h = ex.submit(req)
        result, error = _finish(h)
    finally:
        ex.close()  # its template process goes now, not with the test process
    assert error is None and result is not None
    assert result["ms_path"] == req.output and result["skipped"] is False
    assert not h.transient
    # the converter's own output reaches the log through the worker's stderr
    assert any("converting 16 files" in line for line in h.tail)


@pytest.mark.parametrize(("code", "permanent", "counts"), [(65, True, True), (75, False, False)])
def test_a_classified_failure_keeps_its_class(
    group_request: ConversionRequest, tmp_path: Path, code: int, permanent: bool, counts: bool
) -> None:
    script = converter_script(tmp_path / "c", f"sys.exit({code})")
    ex = LocalProcessExecutor()
    try:
        _, error = _finish(ex.submit(retarget(group_request, tmp_path, script)))
    finally:
        ex.close()
    assert isinstance(error, ConversionError) and f"status {code}" in str(error)
    assert (error.permanent, error.counts) == (permanent, counts)


@pytest.mark.parametrize(
    ("how", "needle"),
    [("kill", "killed by SIGTERM"), ("sigkill", "killed by SIGKILL (out of memory?)")],
)
def test_a_killed_conversion_names_the_signal(
    group_request: ConversionRequest, tmp_path: Path, how: str, needle: str
) -> None:
    script = converter_script(tmp_path / "hang", "time.sleep(600)")
    h = LocalProcess(retarget(group_request, tmp_path, script))
    if how == "kill":
        h.kill()
    else:
        os.kill(h.proc.pid, signal.SIGKILL)
    result, error = _finish(h)
    assert result is None and isinstance(error, str) and needle in error


def test_the_conversion_dies_with_the_process_that_started_it(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    pids = tmp_path / "converter.pid"
    script = converter_script(
        tmp_path / "hang", f"open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    req = retarget(group_request, tmp_path, script)
    # a stand-in daemon: starts the conversion, says the worker's pid, waits
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys, time\n"
            "from dsa110_ingest.convert.executor import LocalProcess\n"
            "from dsa110_ingest.convert.request import ConversionRequest\n"
            "h = LocalProcess(ConversionRequest.from_json(json.loads(sys.stdin.readline())))\n"
            "print(h.proc.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdin is not None and parent.stdout is not None
    parent.stdin.write(json.dumps(req.to_json()) + "\n")
    parent.stdin.flush()
    worker_pid = int(parent.stdout.readline())
    wait_for(lambda: pids.exists() and pids.read_text(), 120, "the converter did not start")
    converter_pid = int(pids.read_text())
    parent.kill()  # SIGKILL: no cleanup of its own runs
    parent.wait()
    # PR_SET_PDEATHSIG: the worker goes with its parent, the converter with the worker
    wait_for(lambda: not _alive(worker_pid) and not _alive(converter_pid), 60)


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(") ", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (FileNotFoundError, ProcessLookupError):
        return False
