"""`groups` reflects `prune`: an MS found gone is not shown as converted with a dead path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..conftest import Site, converter_script
from ..convert.conftest import command_site


@pytest.mark.parametrize("delete_rows", [False, True])
def test_a_pruned_ms_shows_as_ms_missing(tmp_path: Path, sim_groups, delete_rows: bool) -> None:
    site = command_site(tmp_path / "site", converter_script(tmp_path / "conv"))
    sim_groups(site.incoming, n=2)
    site.cli("run", "--rescan")
    first, second = site.cli_json("groups", "--json")
    assert first["conversion"] == second["conversion"] == "converted"
    assert first["ms_status"] == "converted"

    shutil.rmtree(first["ms_path"])
    site.cli("prune", *(["--delete-rows"] if delete_rows else []))

    gone, kept = site.cli_json("groups", "--json")
    assert gone["conversion"] == "ms-missing" and kept["conversion"] == "converted"
    assert gone["ms_status"] == (None if delete_rows else "missing")
    assert [g["group_id"] for g in site.cli_json("groups", "--json", "--state", "converted")] == [
        kept["group_id"]
    ]
    assert [g["group_id"] for g in site.cli_json("groups", "--json", "--state", "ms-missing")] == [
        gone["group_id"]
    ]
    table = site.cli("groups").stdout
    assert "ms-missing" in table and "convert --force" in table
    # `convert` without --force does not call a vanished MS "already converted"
    p = site.cli("convert", gone["group_id"], check=False)
    assert p.returncode == 1 and "already converted" not in p.stderr
    assert (
        f"is recorded as converted to {gone['ms_path']}, but that Measurement Set is missing "
        f"on disk; `dsa110-ingest convert --force {gone['group_id']}` writes it again"
    ) in p.stderr
    # the operator rewrites it; groups shows it converted again
    site.cli("convert", "--force", gone["group_id"])
    assert site.cli_json("groups", "--json")[0]["conversion"] == "converted"


def test_limit_applies_after_the_ms_filter(tmp_path: Path, sim_groups) -> None:
    site = command_site(tmp_path / "site", converter_script(tmp_path / "conv"))
    sim_groups(site.incoming, n=3)
    site.cli("run", "--rescan")
    groups = site.cli_json("groups", "--json")
    shutil.rmtree(groups[0]["ms_path"])
    site.cli("prune")
    got = site.cli_json("groups", "--json", "--state", "converted", "--limit", "1")
    assert [g["group_id"] for g in got] == [groups[1]["group_id"]]


def test_since_later_than_until_is_a_usage_error_naming_both(site: Site) -> None:
    site.db().close()
    p = site.cli(
        "groups", "--since", "2025-10-03T00:00:00", "--until", "2025-10-02T00:00:00", check=False
    )
    assert p.returncode == 2 and p.stdout == ""
    assert "--since 2025-10-03T00:00:00 is later than --until 2025-10-02T00:00:00" in p.stderr, (
        p.stderr
    )
    ok = site.cli("groups", "--since", "2025-10-02T00:00:00", "--until", "2025-10-02T00:00:00")
    assert ok.returncode == 0


def test_a_group_says_why_a_subband_is_missing(site: Site, sim_groups) -> None:
    """sb04 arrived truncated, sb05 was deleted after indexing: `groups` names both, in
    JSON and in the table, instead of a bare "missing sb04,sb05"."""
    files = {int(p.name[-7:-5]): p for p in sim_groups(site.incoming, n=1)}
    with open(files[4], "r+b") as f:
        f.truncate(files[4].stat().st_size // 2)
    site.cli("index-hdf5", str(site.incoming))
    files[5].unlink()
    site.cli("prune")
    (g,) = site.cli_json("groups", "--json")
    assert (g["state"], g["n_subbands"]) == ("collecting", 14)
    assert g["missing_subbands"] == ["sb04", "sb05"]
    assert g["files_gone"] == [str(files[5])]
    assert str(files[5]) not in g["files"]
    (why,) = g["rejected"]
    assert (why["path"], why["subband"]) == (str(files[4]), "sb04") and why["reason"]
    row = next(x for x in site.cli("groups").stdout.splitlines() if x.startswith(g["group_id"]))
    assert f"missing sb04,sb05 (sb04 rejected: {why['reason']}: " in row
    assert "1 gone from disk" in row
