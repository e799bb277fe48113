"""Security: nothing outside the storage locations is read through links or `..`; file
names never reach a shell; DB files are 0640; the unit's systemd exposure score."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from dsa110_ingest.convert.command_backend import expand
from dsa110_ingest.convert.request import ConversionRequest, InputFile

from ..conftest import write_site
from .conftest import reliability_site, stand_in_converter

EVIL = [
    "a b.hdf5",
    "$(touch PWNED).hdf5",
    "`id`.hdf5",
    "x; rm -rf ~.hdf5",
    "q'uote\".hdf5",
    "new\nline.hdf5",
    "--flag.hdf5",
    "*.hdf5",
    "|pipe.hdf5",
    "&amp.hdf5",
]


def test_links_and_dotdot_never_lead_outside(tmp_path: Path, sim_groups, record) -> None:
    site = write_site(tmp_path, extra_locations=())
    secret = tmp_path / "secret"
    files = sim_groups(secret, n=1)
    text = site.config_path.read_text().replace(
        'path = "incoming"', 'path = "x/../incoming"\nrecursive = true'
    )
    site.config_path.write_text(text)
    (site.incoming / "linkdir").symlink_to(secret, target_is_directory=True)  # a dir link
    (site.incoming / files[0].name).symlink_to(files[0])  # a file link
    (site.incoming / "dotdot").mkdir()
    (site.incoming / "dotdot" / files[1].name).symlink_to(Path("../..") / "secret" / files[1].name)
    assert site.cfg.storage_locations[0].path == site.incoming
    site.cli("run", "--rescan")
    st = site.cli_json("status", "--json")
    indexed = st["files"].get("indexed", 0)
    reasons = sorted(r["reason"] for r in st["rejected_files"])
    assert indexed == 0 and reasons == ["symlink_outside", "symlink_outside"]
    record(
        "security: links and `..` out of the storage locations",
        attempts=3,
        files_read_outside=0,
        rejected=len(reasons),
    )


def test_file_names_never_reach_a_shell(tmp_path: Path, record) -> None:
    inputs = tuple(InputFile(str(tmp_path / n), i, 1e9 + i, 4) for i, n in enumerate(EVIL))
    req = ConversionRequest(
        "g",
        inputs,
        str(tmp_path / "o.ms"),
        "command",
        command=("conv", "--out", "{output}", "{inputs}", "{inputs_json}"),
    )
    argv = expand(req.command, req, tmp_path / "o.ms")
    assert argv[3 : 3 + len(EVIL)] == [str(tmp_path / n) for n in EVIL]  # one argument each
    # and for real: a converter given these names sees them verbatim, and no shell ran
    conv = stand_in_converter(tmp_path / "c")
    r = subprocess.run(
        [str(conv), str(tmp_path / "out"), *argv[3 : 3 + len(EVIL)]], capture_output=True, text=True
    )
    assert r.returncode == 0
    assert (tmp_path / "out" / "inputs.txt").read_text().split("\n")[0] == str(tmp_path / EVIL[0])
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    record("security: shell metacharacters in file names", names=len(EVIL), shells_run=0)


def test_db_files_0640_even_with_a_permissive_umask(tmp_path: Path, sim_groups, record) -> None:
    site = reliability_site(tmp_path, stand_in_converter(tmp_path / "c"))
    sim_groups(site.incoming, n=1)
    env = site.env()
    r = subprocess.run(
        ["sh", "-c", f"umask 000 && exec {sys.executable} -m dsa110_ingest run --rescan"],
        env=env,
        cwd=site.root,
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (site.root / "state").iterdir()
        if p.name.endswith((".sqlite3", ".sqlite3-wal", ".sqlite3-shm"))
    }
    assert modes and all(m == 0o640 for m in modes.values()), modes
    record("security: database file modes (umask 000)", files=len(modes), mode="0640")


def test_systemd_exposure_score(tmp_path: Path, record) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        import pytest

        pytest.skip("systemd-analyze is not installed")
    unit = Path(__file__).resolve().parents[2] / "systemd" / "dsa110-ingest.service"
    local = tmp_path / unit.name
    local.write_text(
        unit.read_text().replace(
            "/opt/dsa110-ingest/.venv/bin/dsa110-ingest",
            str(Path(sys.executable).with_name("dsa110-ingest")),
        )
    )
    out = subprocess.run(
        [analyze, "security", "--offline=yes", str(local)], capture_output=True, text=True
    )
    score = float(re.search(r"exposure level for \S+: ([\d.]+)", out.stdout + out.stderr)[1])
    assert score < 5
    record("security: systemd-analyze security", exposure=score, limit=5)


def test_nothing_is_read_from_outside_through_hdf5(tmp_path: Path, sim_groups, record) -> None:
    """Issue 9: external links, external raw storage and virtual datasets pointed a file in
    incoming/ at a 0600 secret, whose content ended up in `telescope_name`. Through the
    real CLI (`run --rescan`, `index-hdf5`), with hostile names beside them."""
    import os
    import sqlite3

    from dsa110_ingest.tools.simulate import write_file

    from .. import hostile
    from ..conftest import SMALL

    site = write_site(tmp_path)
    sim_groups(site.incoming, n=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    t0 = 1759381200.0 + 7200  # two hours after the valid group
    for i, make in enumerate(hostile.MAKERS.values()):
        for v in range(2):
            p = write_file(site.incoming, t0 + 1000 * (2 * i + v), 3, SMALL)
            make(p, v, elsewhere)
    with open(os.fsencode(site.incoming) + b"/\xff\xfe2025-10-02T00:00:01_sb00.hdf5", "wb") as f:
        f.write(b"x")
    (site.incoming / "2025-10-02T00:00:01_sb00.hdf5\n").write_bytes(b"x")
    site.cli("run", "--rescan", timeout=300)
    # from another folder, too: `..` must not make a second spelling of the same files
    (tmp_path / "cli").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "dsa110_ingest", "index-hdf5", "../incoming"],
        env=site.env(),
        cwd=tmp_path / "cli",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    st = site.cli_json("status", "--json")
    assert st["files"].get("indexed", 0) == 16
    reasons = sorted(x["reason"] for x in st["rejected_files"])
    assert len(reasons) == 2 * len(hostile.MAKERS) + 2
    con = sqlite3.connect(site.cfg.hdf5_db)
    dump = "\n".join(con.iterdump())
    con.close()
    assert hostile.SECRET.decode() not in dump
    assert "group.conflict" not in dump  # index-hdf5 ../incoming made no duplicates
    record(
        "security: nothing read from outside through HDF5 links or storage",
        attempts=2 * len(hostile.MAKERS),
        names_not_utf8_or_newline=2,
        rejected=len(reasons),
        files_read_outside=0,
    )
