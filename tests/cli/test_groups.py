"""`groups` reflects `prune`: an MS found gone is not shown as converted with a dead path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..conftest import converter_script
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
