"""The output_dir's ownership claim (convert/ownership.py, convert/claimfile.py): made
once and atomically, recognised as ours, refused when another index's, unusable claim
files (corrupt, hostile) refused without harm, takeover, and the dispatcher's guard."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa110_ingest.config import Config
from dsa110_ingest.convert.claimfile import CLAIM_NAME, MAX_BYTES, Claim, read_claim
from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.convert.ownership import (
    ClaimGuard,
    Identity,
    ensure_claim,
    inspect,
    take_over,
    verdict,
)
from dsa110_ingest.db import open_index_at
from dsa110_ingest.errors import OutputClaimError

from ..conftest import converter_script, run_without_dac, wait_for, write_site
from .conftest import indexed_site

ROOT = Path(__file__).resolve().parents[2] / "src"


def _cfg(root: Path) -> Config:
    return write_site(root, convert='[convert]\noutput_dir = "ms"\n').cfg


def ident(index_id: str, where: str = "/srv/a/state/hdf5.sqlite3") -> Identity:
    return Identity(index_id, where, str(Path(where).parent), "node-a")


def test_first_claim_is_made_then_recognised(tmp_path: Path) -> None:
    out = tmp_path / "ms"  # not there yet: made, as the first conversion would
    claim, made = ensure_claim(out, ident("aaaa1111"), "dsa110-ingest run")
    assert made and claim.index_id == "aaaa1111"
    path = out / CLAIM_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    d = json.loads(path.read_text())
    assert d["index_id"] == "aaaa1111" and d["index"] == "/srv/a/state/hdf5.sqlite3"
    assert d["host"] and d["created_at"] > 0 and d["created_by"] == "dsa110-ingest run"
    # a restart, or another node of the same (shared) index: ours, left as it is
    before = path.read_bytes()
    again, made = ensure_claim(out, ident("aaaa1111", "postgresql://x@db/idx"), "run")
    assert not made and again == claim and path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [CLAIM_NAME]  # nothing left aside


def test_another_index_is_refused_naming_both_and_the_fix(tmp_path: Path) -> None:
    out = tmp_path / "ms"
    ensure_claim(out, ident("aaaa1111"), "dsa110-ingest run")
    with pytest.raises(OutputClaimError) as e:
        ensure_claim(out, ident("bbbb2222", "/srv/b/state/hdf5.sqlite3"), "run")
    msg = str(e.value)
    assert e.value.kind == "conflict"
    for part in (
        "aaaa1111",
        "bbbb2222",
        "/srv/a/state/hdf5.sqlite3",
        "/srv/b/state/hdf5.sqlite3",
        str(out / CLAIM_NAME),
        "dsa110-ingest claim-output --force",
        "indexing and events go on",
    ):
        assert part in msg, part
    assert json.loads((out / CLAIM_NAME).read_text())["index_id"] == "aaaa1111"


_RACE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from dsa110_ingest.convert.ownership import Identity, ensure_claim
    from dsa110_ingest.errors import OutputClaimError
    out, me, go = Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    while time.time() < go:
        time.sleep(0.001)
    try:
        claim, made = ensure_claim(out, Identity(me, me, "/s", "n"), "race")
        print("won" if made else "ours", claim.index_id)
    except OutputClaimError as e:
        print("refused", e.kind)
    """
)


def test_daemons_starting_at_once_make_one_claim(tmp_path: Path) -> None:
    """Real processes, each its own index, all claiming at the same instant: one wins,
    every other one is refused (never half a file, never two winners)."""
    out = tmp_path / "ms"
    go = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(ROOT), str(out), f"index{i:04d}", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    lines = [o.strip() for o, _ in results]
    assert all(p.returncode == 0 for p in procs), results
    winners = [ln for ln in lines if ln.startswith("won")]
    assert len(winners) == 1 and lines.count("refused conflict") == 5, lines
    assert read_claim(out / CLAIM_NAME) == read_claim(out / CLAIM_NAME)
    assert read_claim(out / CLAIM_NAME).index_id == winners[0].split()[1]  # type: ignore[union-attr]
    assert [p.name for p in out.iterdir()] == [CLAIM_NAME]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"{not json", "is not JSON"),
        (b"\xff\xfe\x00garbage", "is not JSON"),
        (b'{"index_id": "aaaa1111"}', "not a dsa110-ingest claim"),
        (b"[1, 2, 3]", "not a dsa110-ingest claim"),
        (b'{"claim": "dsa110-ingest output_dir claim", "index_id": 7}', "no valid index_id"),
        (b'{"claim": "dsa110-ingest output_dir claim", "index_id": "../../x y"}', "no valid"),
    ],
)
def test_a_corrupt_claim_stops_conversions_and_names_the_fix(
    tmp_path: Path, content: bytes, why: str
) -> None:
    out = tmp_path / "ms"
    out.mkdir()
    (out / CLAIM_NAME).write_bytes(content)
    with pytest.raises(OutputClaimError) as e:
        ensure_claim(out, ident("aaaa1111"), "run")
    assert e.value.kind == "unreadable" and why in str(e.value)
    assert "dsa110-ingest claim-output --force" in str(e.value)
    assert (out / CLAIM_NAME).read_bytes() == content  # never replaced silently


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_a_claim_or_a_clear_refusal(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / CLAIM_NAME
    path.write_bytes(raw)
    try:
        claim = read_claim(path)
    except OutputClaimError as e:
        assert e.kind == "unreadable" and str(path) in str(e)
    else:
        assert isinstance(claim, Claim) and claim.index_id and claim.describe()


@pytest.mark.parametrize("created", ["1e400", "-1", "NaN", "Infinity", "true", '"soon"'])
def test_a_claim_with_an_absurd_time_still_reads_and_describes(
    tmp_path: Path, created: str
) -> None:
    path = tmp_path / CLAIM_NAME
    path.write_text(
        '{"claim": "dsa110-ingest output_dir claim", "index_id": "aaaa1111", '
        f'"host": "h\\u001b[2J", "created_at": {created}}}'
    )
    claim = read_claim(path)
    assert claim is not None and claim.created_at == 0.0
    shown = claim.describe()
    # the escape sequence is shown, never sent to a terminal
    assert "1970-01-01" in shown and "\\x1b[2J" in shown and "\x1b" not in shown


def test_hostile_claim_files_are_refused_without_following_or_blocking(tmp_path: Path) -> None:
    out = tmp_path / "ms"
    out.mkdir()
    path = out / CLAIM_NAME
    elsewhere = tmp_path / "secret"
    # a link to a perfectly valid claim elsewhere is still not a claim file
    ensure_claim(tmp_path / "other", ident("aaaa1111"), "run")
    os.symlink(tmp_path / "other" / CLAIM_NAME, path)
    with pytest.raises(OutputClaimError, match="is a symbolic link"):
        ensure_claim(out, ident("aaaa1111"), "run")
    path.unlink()
    # a FIFO: opening it for reading would wait for a writer forever
    os.mkfifo(path)
    t0 = time.monotonic()
    with pytest.raises(OutputClaimError, match="is a FIFO"):
        read_claim(path)
    assert time.monotonic() - t0 < 10
    path.unlink()
    path.mkdir()
    with pytest.raises(OutputClaimError, match="is a folder"):
        read_claim(path)
    path.rmdir()
    # a huge (sparse) file is refused from its size, never read
    with open(path, "wb") as f:
        f.truncate(10 * 2**30)
    with pytest.raises(OutputClaimError, match=f"more than any claim \\({MAX_BYTES} bytes"):
        read_claim(path)
    path.unlink()
    # a takeover replaces a link itself: its target is never written
    elsewhere.write_text("do not touch")
    os.symlink(elsewhere, path)
    claim, before = take_over(out, ident("bbbb2222"), "claim-output --force")
    assert elsewhere.read_text() == "do not touch" and not path.is_symlink()
    assert read_claim(path) == claim and "symbolic link" in before


def test_take_over_replaces_another_index_and_records_it(tmp_path: Path) -> None:
    out = tmp_path / "ms"
    ensure_claim(out, ident("aaaa1111"), "dsa110-ingest run")
    new, before = take_over(out, ident("bbbb2222"), "dsa110-ingest claim-output --force")
    assert new.index_id == "bbbb2222" and "aaaa1111" in before
    assert read_claim(out / CLAIM_NAME) == new and new.took_over_from == before
    with pytest.raises(OutputClaimError, match="belongs to another index"):
        ensure_claim(out, ident("aaaa1111"), "run")  # the old index now stops
    assert sorted(p.name for p in out.iterdir()) == [CLAIM_NAME]
    (out / CLAIM_NAME).unlink()
    (out / CLAIM_NAME).mkdir()
    with pytest.raises(OutputClaimError, match="remove it by hand"):
        take_over(out, ident("bbbb2222"), "claim-output --force")


def test_an_output_dir_that_cannot_be_written_is_a_clear_refusal(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputClaimError) as e:
        ensure_claim(blocker / "ms", ident("aaaa1111"), "run")
    assert e.value.kind == "unwritable" and "Not a directory" in str(e.value)
    assert "Make" in str(e.value) and "writable by this user" in str(e.value)
    # a read-only folder, as the daemon's user sees it (root's override dropped)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    p = run_without_dac(
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\n"
        "from dsa110_ingest.convert.ownership import Identity, ensure_claim\n"
        "from dsa110_ingest.errors import OutputClaimError\n"
        "try:\n"
        f"    ensure_claim(Path({str(ro)!r}), Identity('a1b2c3d4', 'x', 's', 'n'), 'run')\n"
        "except OutputClaimError as e:\n"
        "    print(e.kind, e)\n"
    )
    assert p.stdout.startswith("unwritable") and "Permission denied" in p.stdout, p
    assert not (ro / CLAIM_NAME).exists() and list(ro.iterdir()) == []


def test_guard_rechecks_logs_once_and_follows_a_takeover(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(tmp_path)
    out = cfg.convert.output_dir
    caplog.set_level(logging.INFO)
    now = [0.0]
    guard = ClaimGuard(cfg, "bbbb2222", clock=lambda: now[0], recheck_s=30.0)
    ensure_claim(out, ident("aaaa1111"), "someone else")
    assert "belongs to another index" in (guard.check() or "")
    take_over(out, ident("bbbb2222"), "claim-output --force")
    now[0] = 4.0
    assert guard.check() is not None  # cached: read again only after a while...
    now[0] = 5.5
    assert guard.check() is None  # ...soon while conversions wait on it
    take_over(out, ident("cccc3333"), "claim-output --force")  # another index takes it
    now[0] = 35.0
    assert guard.check() is None  # while ours, every recheck_s
    now[0] = 36.0
    assert "cccc3333" in (guard.check() or "")
    now[0] = 93.0
    guard.check()
    err = caplog.text
    # each change said once: refused, ours again, refused (not once per check)
    assert err.count("convert.output_dir_refused") == 2, err
    assert err.count("convert.output_dir_ours") == 1, err


def test_status_and_doctor_read_the_claim_without_making_it(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    out = cfg.convert.output_dir
    assert inspect(out, "aaaa1111", cfg) == (None, None)
    assert verdict(cfg, "aaaa1111")[0] == "OK" and not out.exists()
    ensure_claim(out, ident("bbbb2222"), "run")
    claim, problem = inspect(out, "aaaa1111", cfg)
    assert claim is not None and "belongs to another index" in (problem or "")
    assert verdict(cfg, "aaaa1111")[0] == "FAIL"
    assert verdict(cfg, "bbbb2222")[0] == "OK"
    assert verdict(cfg, None)[0] == "WARN"  # an index without its identity yet


def test_dispatcher_converts_nothing_into_another_indexs_output_dir(tmp_path: Path) -> None:
    site = indexed_site(tmp_path, converter_script(tmp_path / "ok"))
    cfg = site.cfg
    ensure_claim(cfg.convert.output_dir, ident("ffff0000"), "another deployment")
    d = Dispatcher(cfg)
    d.start()
    try:
        wait_for(lambda: d.claim_problem, 60, "the dispatcher never checked the claim")
        time.sleep(1.0)  # several turns of its loop: still nothing claimed
        assert d.alive() and not d.running
        assert "ffff0000" in d.describe()["output_dir_problem"]
    finally:
        d.stop()
    with open_index_at(cfg.hdf5_db, readonly=True) as db:
        (job,) = [db.job(g.group_id) for g in db.list_groups(None, None, None)]
        assert job is not None and job.state == "pending" and job.attempts == 0
        mine = db.index_id()
    assert sorted(p.name for p in cfg.convert.output_dir.iterdir()) == [CLAIM_NAME]
    # taken over by this index: the next dispatcher converts
    take_over(cfg.convert.output_dir, Identity.of(cfg, mine or ""), "claim-output --force")
    d = Dispatcher(cfg)
    d.start()
    try:
        with open_index_at(cfg.hdf5_db, readonly=True) as db:
            wait_for(lambda: db.state_counts()[1].get("converted") == 1, 120, "not converted")
        assert d.claim_problem is None
    finally:
        d.stop()


def test_rescan_beside_another_indexs_claim_indexes_and_exits_1(tmp_path: Path) -> None:
    site = indexed_site(tmp_path, converter_script(tmp_path / "ok"))
    ensure_claim(site.cfg.convert.output_dir, ident("ffff0000"), "another deployment")
    p = site.cli("run", "--rescan", check=False, timeout=300)
    assert p.returncode == 1, p.stderr
    assert "belongs to another index" in p.stderr and "ffff0000" in p.stderr
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "pending"
