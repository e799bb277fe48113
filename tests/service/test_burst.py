"""`run --rescan` reports the conversions of its own pass, not the database's totals."""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import Site, converter_script, write_site


def _command_site(root: Path) -> Site:
    script = converter_script(root / "convert-ok")
    return write_site(
        root,
        convert=f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", '
        '"{inputs}"]\noutput_dir = "ms"\n',
    )


def _pass_conversions(site: Site) -> dict[str, int]:
    p = site.cli("run", "--rescan")
    (done,) = [json.loads(ln) for ln in p.stderr.splitlines() if '"rescan.conversions"' in ln]
    return {k: done[k] for k in ("converted", "failed", "not_done")}


def test_a_second_pass_counts_only_what_it_converted(tmp_path: Path, sim_groups) -> None:
    site = _command_site(tmp_path)
    sim_groups(site.incoming, n=2)
    assert _pass_conversions(site) == {"converted": 2, "failed": 0, "not_done": 0}
    sim_groups(site.incoming, n=1, start="2025-10-02T01:00:00")
    p = site.cli("run", "--rescan", "--log-format", "console")
    assert "rescan: conversions in this pass: 1 converted, 0 failed, 0 not done" in p.stderr
    assert site.cli_json("status", "--json")["conversions"] == {"converted": 3}
