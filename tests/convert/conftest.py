from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.convert.request import ConversionRequest, build_request
from dsa110_ingest.db import IndexStore, open_index_at
from dsa110_ingest.tools.simulate import simulate

from ..conftest import SMALL, Site, converter_script, wait_for, write_site


def command_site(root: Path, script: Path, extra: str = "") -> Site:
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", "{{inputs}}"]\n'
        'output_dir = "ms"\nbackoff_initial_seconds = 0.2\nbackoff_max_seconds = 0.5\n'
        "lease_seconds = 3\n" + extra
    )
    return write_site(root, convert=conv)


def indexed_site(root: Path, script: Path, extra: str = "") -> Site:
    """A command-backend site with one small complete group indexed, its conversion job
    waiting in the queue (nothing converted)."""
    site = command_site(root, script, extra)
    simulate(site.incoming, 1, params=SMALL)
    site.cli("run", "--rescan", "--no-convert")
    return site


def claim(db: IndexStore, owner: str, now: float) -> tuple[str, str]:
    """Claim the waiting job as ``owner`` at ``now``: (group id, attempt token)."""
    job = db.claim_job(owner, now, 3.0, False)
    assert job is not None
    return job.group_id, job.attempt_token


@pytest.fixture(scope="module")
def group_request(tmp_path_factory: pytest.TempPathFactory) -> ConversionRequest:
    """The request of one indexed small group (command backend, the ok converter), built
    once per module; tests point ``output`` (and ``command``) where they need them."""
    root = tmp_path_factory.mktemp("request")
    site = indexed_site(root, converter_script(root / "convert-ok"))
    with open_index_at(site.cfg.hdf5_db, readonly=True) as db:
        (group,) = db.list_groups(None, None, None)
        return build_request(site.cfg, db, group.group_id)


def retarget(
    base: ConversionRequest, folder: Path, script: Path | None = None
) -> ConversionRequest:
    """``base`` writing ``folder/ms/g.ms``, with ``script`` as the converter if given."""
    command = (str(script), "{output}", "{inputs}") if script else base.command
    return replace(base, output=str(folder / "ms" / "g.ms"), command=command)


@pytest.fixture
def ok_script(tmp_path: Path) -> Path:
    return converter_script(tmp_path / "convert-ok")


@dataclass(frozen=True)
class SlowConverter:
    """A stand-in converter that appends one ``x`` to ``marker`` as each run starts, then
    takes its time: a conversion that is visibly running, and a count of how many ran."""

    script: Path
    marker: Path

    def started(self) -> bool:
        return self.marker.exists()

    def runs(self) -> int:
        return len(self.marker.read_text()) if self.marker.exists() else 0


@pytest.fixture
def slow_converter(tmp_path: Path) -> Callable[[float], SlowConverter]:
    """``slow_converter(seconds)``: a :class:`SlowConverter` taking that long per run."""

    def make(seconds: float) -> SlowConverter:
        marker = tmp_path / "started"
        body = f"open({str(marker)!r}, 'a').write('x'); time.sleep({seconds})"
        return SlowConverter(converter_script(tmp_path / "slow", body), marker)

    return make


class DaskCluster:
    """A real Dask cluster on 127.0.0.1: ``dask scheduler`` and ``dask worker`` processes
    (each worker under its nanny, so a killed worker comes back), one conversion slot each."""

    def __init__(self, root: Path, n_workers: int = 2, port: int = 0) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = root / "scheduler.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = root / "cluster.log"
        self._logf = open(self.log, "ab")  # noqa: SIM115
        self._start(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--scheduler-file",
            str(self.scheduler_file),
        )
        wait_for(lambda: self.scheduler_file.exists(), 60, self._log_tail)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for _ in range(n_workers):
            self.add_worker()
        import distributed

        self.client = distributed.Client(self.address, timeout=30, set_as_default=False)
        self.wait_workers(n_workers)

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [str(Path(sys.executable).with_name("dask")), *args],
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # killed as a group at teardown: nanny and worker
            # the scheduler has no --local-directory: without this it leaves a
            # dask-scratch-space folder in the system temp dir
            env={**os.environ, "DASK_TEMPORARY_DIRECTORY": str(self.root)},
        )
        self.procs.append(p)
        return p

    def add_worker(self) -> subprocess.Popen[bytes]:
        return self._start(
            "worker",
            self.address,
            "--nthreads",
            "1",
            "--resources",
            "conversion=1",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--local-directory",
            str(self.root / "workers"),
        )

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def workers(self) -> dict[str, Any]:
        return dict(self.client.scheduler_info(n_workers=-1)["workers"])

    def worker_pids(self) -> set[int]:
        return set(self.client.run(os.getpid).values())

    def wait_workers(self, n: int, timeout: float = 120) -> None:
        wait_for(lambda: len(self.workers()) == n, timeout, self._log_tail)

    def close(self) -> None:
        self.client.close()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self._logf.close()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """One cluster per test module: starting one costs seconds of CPU on a shared machine."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    yield cluster
    cluster.close()


def dask_site(root: Path, script: Path, scheduler: str, extra: str = "") -> Site:
    return command_site(
        root, script, f'executor = "dask"\ndask_scheduler = "{scheduler}"\n' + extra
    )


# a stand-in converter body that logs one JSON line per run: its pid, its process
# ancestry (pid, ppid, ... up to init) and "start"/"done", to a file given by path
def ancestry_body(log: Path, sleep: float = 0.0) -> str:
    code = (
        "import json\n"
        "anc, p = [], os.getpid()\n"
        "while p > 1:\n"
        "    anc.append(p)\n"
        "    p = int(open(f'/proc/{p}/stat').read().rsplit(') ', 1)[1].split()[1])\n"
        f"rec = lambda what: open({str(log)!r}, 'a').write(json.dumps("
        "{'what': what, 'pid': os.getpid(), 'anc': anc, 'out': out}) + '\\n')\n"
        "rec('start')\n"
        f"time.sleep({sleep})\n"
        "rec('done')\n"
    )
    return f"exec({code!r})"  # converter_script takes one line


def read_runs(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
