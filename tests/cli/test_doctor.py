"""`doctor` in-process: one line per check, the tally on stderr, exit 1 on any FAIL only."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from dsa110_ingest.cli import doctor
from dsa110_ingest.cli._common import EXIT_ERROR, EXIT_OK

from ..conftest import Site

LINE = re.compile(r"^(OK  |WARN|FAIL)  [^:]+: .+$")


def test_a_sound_site_passes_with_one_line_per_check(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert doctor.run(site.cfg, argparse.Namespace()) == EXIT_OK
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines and all(LINE.match(line) for line in lines), out.out
    assert not any(line.startswith("FAIL") for line in lines)
    fails, warns, oks = map(int, re.findall(r"(\d+) FAIL, (\d+) WARN, (\d+) OK", out.err)[0])
    assert (fails, warns + oks) == (0, len(lines))


def test_one_fail_makes_the_exit_status_1_and_is_counted(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.incoming.rmdir()
    assert doctor.run(site.cfg, argparse.Namespace()) == EXIT_ERROR
    out = capsys.readouterr()
    assert f"FAIL  location incoming: {site.incoming} does not exist" in out.out
    assert "doctor: 1 FAIL" in out.err


def test_an_invalid_config_is_one_fail_line_not_repeated_on_stderr(site: Site) -> None:
    site.config_path.write_text("[groups]\nexpected_subbands = -1\n")
    p = site.cli("doctor", check=False)
    assert p.returncode == EXIT_ERROR
    (line,) = p.stdout.splitlines()
    assert line.startswith("FAIL  config: ") and "expected_subbands" in line
    assert "expected_subbands" not in p.stderr and "cli.error" not in p.stderr
    # off a terminal the summary is one JSON object, as every stderr line
    (summary,) = [json.loads(x) for x in p.stderr.splitlines()]
    assert summary["event"] == "cli.message"
    assert (
        summary["message"] == "doctor: 1 FAIL, 0 WARN, 0 OK (the other checks need a valid config)"
    )
