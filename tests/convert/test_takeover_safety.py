"""A takeover of the output_dir never lets two indexes write the same MS (OPERATOR3
defect 4): ``claim-output --force`` refuses while the claiming index's daemon still runs
on this host, and a conversion whose claim was taken over while it ran discards its MS
instead of swapping it in over the new owner's."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.convert import worker
from dsa110_ingest.convert.claimfile import CLAIM_NAME, read_claim
from dsa110_ingest.convert.ownership import Identity, ensure_claim, fence
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import OutputClaimLostError

from ..conftest import Site, converter_script, write_site
from .conftest import retarget


def _deployment(root: Path, output: Path) -> Site:
    return write_site(root, convert=f'[convert]\noutput_dir = "{output}"\n')


def _hold_state_lock(site: Site) -> subprocess.Popen[str]:
    """A process holding the deployment's state_dir lock, as its running daemon does."""
    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from dsa110_ingest.nodes import state_path\n"
        "from dsa110_ingest.config import load_config\n"
        "from dsa110_ingest.statedir import StateLock\n"
        "StateLock(state_path(load_config(Path(sys.argv[1])))).acquire()\n"
        "print('held', flush=True)\ntime.sleep(600)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(site.config_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=site.env(),
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_force_refuses_while_the_claiming_daemon_runs_on_this_host(tmp_path: Path) -> None:
    out = tmp_path / "ms"
    a = _deployment(tmp_path / "a", out)
    b = _deployment(tmp_path / "b", out)
    a.cli("claim-output")
    a_id = read_claim(out / CLAIM_NAME).index_id  # type: ignore[union-attr]
    holder = _hold_state_lock(a)
    try:
        p = b.cli("claim-output", "--force", check=False)
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"pid {holder.pid} holds the lock" in p.stderr
        assert str(a.cfg.state_dir) in p.stderr and "Stop that daemon first" in p.stderr
        assert read_claim(out / CLAIM_NAME).index_id == a_id  # type: ignore[union-attr]
    finally:
        holder.kill()
        holder.wait()
    # the daemon is gone (SIGKILL: the kernel dropped its lock): the takeover goes through
    p = b.cli("claim-output", "--force")
    assert "is now claimed by this index" in p.stdout and a_id in p.stdout
    assert read_claim(out / CLAIM_NAME).index_id != a_id  # type: ignore[union-attr]


def test_force_after_rebuilding_the_index_in_place_is_not_refused(tmp_path: Path) -> None:
    """The claim names an index that lived in this very state_dir (rebuilt from scratch):
    the lock's holder is this deployment's own daemon, waiting on the claim."""
    site = _deployment(tmp_path / "a", tmp_path / "ms")
    cfg = site.cfg
    old = Identity("0ld1ndex", str(cfg.hdf5_db), str(cfg.state_dir), cfg.node)
    ensure_claim(cfg.convert.output_dir, old, "dsa110-ingest run")
    holder = _hold_state_lock(site)
    try:
        p = site.cli("claim-output", "--force")
        assert "is now claimed by this index" in p.stdout and "0ld1ndex" in p.stdout
    finally:
        holder.kill()
        holder.wait()


def test_a_conversion_whose_claim_was_taken_over_discards_its_ms(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    """While the converter runs, another index takes the claim over and writes its MS at
    the same path: ours is discarded, theirs stays as it is."""
    out = tmp_path / "ms"
    mine, theirs = "aaaa1111", "bbbb2222"
    ensure_claim(out, Identity(mine, "/srv/a/hdf5.sqlite3", "/srv/a", "a"), "run")
    body = "; ".join(
        [
            "from pathlib import Path",
            "from dsa110_ingest.convert.ownership import Identity, take_over",
            f"who = Identity({theirs!r}, '/srv/b/hdf5.sqlite3', '/srv/b', 'b')",
            f"take_over(Path({str(out)!r}), who, 'claim-output --force')",
            f"os.makedirs({str(out / 'g.ms')!r})",
            f"open({str(out / 'g.ms' / 'theirs')!r}, 'w').write('the new owner')",
        ]
    )
    req = retarget(group_request, tmp_path, converter_script(tmp_path / "conv", body))
    meta = {**req.meta, "output_owner": mine, "claim_file": str(out / CLAIM_NAME)}
    req = replace(req, meta=meta)
    with pytest.raises(OutputClaimLostError, match="discarded") as e:
        worker.run(req)
    assert theirs in str(e.value) and e.value.kind == "claim_lost" and not e.value.counts
    assert sorted(p.name for p in (out / "g.ms").iterdir()) == ["theirs"]
    assert sorted(p.name for p in out.iterdir()) == [CLAIM_NAME, "g.ms"]  # no temporaries


def test_requests_carry_the_claim_they_are_moved_in_under(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    # build_request (the dispatcher's and `convert`'s) fences every conversion
    assert group_request.meta["output_owner"]
    assert group_request.meta["claim_file"].endswith(CLAIM_NAME)
    cfg = _deployment(tmp_path, tmp_path / "ms").cfg
    assert fence(cfg, "x1") == {
        "output_owner": "x1",
        "claim_file": str(tmp_path / "ms" / CLAIM_NAME),
    }


def test_a_lost_claim_is_recorded_as_a_wait_not_a_failure(tmp_path: Path, ok_script: Path) -> None:
    """Through the child's JSON, as the executors report it: the group waits (the attempt
    is refunded), no group.failed, and the log line says the MS was discarded."""
    from structlog.testing import capture_logs

    from dsa110_ingest.convert.recorder import Recorder
    from dsa110_ingest.db import open_index_at, open_products_at
    from dsa110_ingest.errors import ConversionError

    from .conftest import claim, indexed_site

    site = indexed_site(tmp_path, ok_script, "max_attempts = 1\n")
    cfg = site.cfg
    lost = OutputClaimLostError("output_dir claim lost while converting: ... was discarded")
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        gid, _ = claim(db, "daemon-a", time.time())
        with capture_logs() as seen:
            outcome = Recorder(cfg, db, products).failure(
                gid, "daemon-a", ConversionError.from_json(lost.to_json())
            )
        assert outcome == "wait" and db.job(gid).state == "pending"
        assert db.count_events("group.failed") == 0
    (line,) = [x for x in seen if x["event"] == "convert.output_claim_lost"]
    assert "discarded" in line["error"] and line["kind"] == "claim_lost"


def test_a_takeover_between_the_check_and_the_rename_waits_for_the_rename(
    group_request: ConversionRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instant between the claim's last check and the MS's rename into place: a
    takeover (another process, as `claim-output --force` is) started right there waits
    until the MS is in place, so the MS moved in is never one of a lost claim."""
    out = tmp_path / "ms"
    mine, theirs = "aaaa1111", "bbbb2222"
    ensure_claim(out, Identity(mine, "/srv/a/hdf5.sqlite3", "/srv/a", "a"), "run")
    done = tmp_path / "taken-over-at"
    code = "; ".join(
        [
            "import sys, time",
            "from pathlib import Path",
            "from dsa110_ingest.convert.ownership import Identity, take_over",
            f"who = Identity({theirs!r}, '/srv/b/hdf5.sqlite3', '/srv/b', 'b')",
            "print('ready', flush=True)",
            f"take_over(Path({str(out)!r}), who, 'claim-output --force')",
            f"Path({str(done)!r}).write_text(repr(time.time()))",
        ]
    )
    req = retarget(group_request, tmp_path, converter_script(tmp_path / "conv"))
    req = replace(req, meta={**req.meta, "output_owner": mine, "claim_file": str(out / CLAIM_NAME)})
    rename, renamed_at = os.rename, []
    takeover: list[subprocess.Popen[str]] = []

    def rename_after_a_takeover(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if Path(dst) == out / "g.ms" and not takeover:
            # the claim was checked a moment ago: now another process takes it over
            p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            takeover.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(3)  # it finishes in milliseconds unless it waits for this rename
        rename(src, dst, *a, **kw)
        if Path(dst) == out / "g.ms":
            renamed_at.append(time.time())

    monkeypatch.setattr(os, "rename", rename_after_a_takeover)
    worker.run(req)
    monkeypatch.undo()
    assert takeover and renamed_at
    assert takeover[0].wait(60) == 0
    # the MS went in under our claim, and the takeover came after it
    assert (out / "g.ms" / "inputs.txt").exists()
    assert float(done.read_text()) > renamed_at[0], "the takeover ran before the rename"
    assert read_claim(out / CLAIM_NAME).index_id == theirs  # type: ignore[union-attr]


def test_a_lock_that_stays_held_delays_nothing_for_ever_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something holding the output_dir's lock (a stuck takeover): the MS is not moved
    in (retried, uncounted; the finished output kept where it was), a takeover says the
    lock is busy, both after the wait."""
    import fcntl

    from dsa110_ingest.convert import claimfile, ownership
    from dsa110_ingest.errors import OutputClaimError, TransientConversionError

    out = tmp_path / "ms"
    mine = Identity("aaaa1111", "/srv/a/hdf5.sqlite3", "/srv/a", "a")
    ensure_claim(out, mine, "run")
    tmp = out / ".g.ms.tmp-1"
    tmp.mkdir()
    monkeypatch.setattr(claimfile, "LOCK_WAIT_S", 0.3)
    meta = {"output_owner": mine.index_id, "claim_file": str(out / CLAIM_NAME)}
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TransientConversionError, match="not moved into place") as e:
            ownership.place(meta, tmp, out / "g.ms")
        assert not e.value.counts and tmp.is_dir() and not (out / "g.ms").exists()
        other = Identity("bbbb2222", "/srv/b/hdf5.sqlite3", "/srv/b", "b")
        with pytest.raises(OutputClaimError, match="still held") as busy:
            ownership.take_over(out, other, "claim-output --force")
        assert busy.value.kind == "busy"
    finally:
        os.close(fd)
    assert ownership.place(meta, tmp, out / "g.ms") is None  # free again: moved in
    assert (out / "g.ms").is_dir() and not tmp.exists()
    assert read_claim(out / CLAIM_NAME).index_id == mine.index_id  # type: ignore[union-attr]


def test_force_refuses_when_the_claiming_daemons_lock_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The claiming index's lock is 0640, its daemon another user's: whether it runs
    cannot be told, so --force refuses saying so (it went ahead as if none ran: review4
    finding 1). The EACCES is injected: the tests run as root, whom no mode stops."""
    import argparse
    import errno

    from dsa110_ingest.cli import claim_output
    from dsa110_ingest.statedir import StateLock

    out = tmp_path / "ms"
    a = _deployment(tmp_path / "a", out)
    b = _deployment(tmp_path / "b", out)
    a.cli("claim-output")
    a_id = read_claim(out / CLAIM_NAME).index_id  # type: ignore[union-attr]

    def unreadable(self: StateLock) -> int | None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    monkeypatch.setattr(StateLock, "holder", unreadable)
    assert claim_output.run(b.cfg, argparse.Namespace(force=True)) == 1
    err = capsys.readouterr().err
    assert "cannot tell whether" in err and "Permission denied" in err
    assert str(a.cfg.state_dir) in err and "as that daemon's user" in err
    assert read_claim(out / CLAIM_NAME).index_id == a_id  # type: ignore[union-attr]
