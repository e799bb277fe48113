"""The command line's shape: help for every option, global options anywhere, argument
types that turn bad values into one-line usage errors (exit 2)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa110_ingest import __version__
from dsa110_ingest.cli import COMMANDS, build_parser, main, parse
from dsa110_ingest.cli._common import subband_list

from ..conftest import Site


def _parsers() -> list[argparse.ArgumentParser]:
    p = build_parser()
    return [p, *p.commands.values()]


def test_every_command_is_registered_and_parsable() -> None:
    assert set(build_parser().commands) == set(COMMANDS)


@pytest.mark.parametrize("parser", _parsers(), ids=lambda p: p.prog)
def test_every_option_and_argument_has_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        assert action.help and action.help.strip(), f"{parser.prog}: {action.option_strings}"


def test_top_level_help_is_for_an_operator_with_three_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:", 1)[1].split("\n\n", 1)[0]
    assert len([ln for ln in examples.splitlines() if ln.strip().startswith("dsa110-ingest")]) == 3
    assert "watches the folders" in out and "Exit codes" in out
    assert "Parses arguments" not in out  # the developer docstring is not the help


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dsa110-ingest {version('dsa110-ingest')}"
    assert __version__ == version("dsa110-ingest")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "x.toml", "--log-level", "debug", "status"],
        ["status", "--config", "x.toml", "--log-level", "debug"],
        ["--config", "y.toml", "status", "--config", "x.toml", "--log-level", "debug"],
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    args = parse(argv)
    assert (args.cmd, args.config, args.log_level) == ("status", "x.toml", "debug")


def test_global_options_absent_stay_absent() -> None:
    args = parse(["groups"])
    assert getattr(args, "config", None) is None and getattr(args, "log_level", None) is None


def test_status_config_after_the_command_is_used(site: Site, tmp_path) -> None:
    # the config names the DB: status must read that one, not the default
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsa110_ingest",
            "status",
            "--json",
            "--config",
            str(site.config_path),
        ],
        env={"HOME": str(tmp_path / "elsewhere"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 3 and str(site.root / "state" / "hdf5.sqlite3") in p.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["groups", "--since", "yesterday"], "argument --since: 'yesterday' is not an ISO 8601"),
        (["groups", "--until", "2025-13-01"], "argument --until"),
        (["groups", "--state", "bogus"], "argument --state: invalid choice: 'bogus'"),
        (["groups", "--limit", "0"], "argument --limit: '0' is not a whole number >= 1"),
        (["groups", "--limit", "ten"], "argument --limit"),
        (["simulate", "--out", "x", "--groups", "1", "--start", "tomorrow"], "--start"),
        (["simulate", "--out", "x", "--groups", "1", "--missing", "x"], "'x' is not a subband"),
        (["simulate", "--out", "x", "--groups", "1", "--missing", "16"], "'16' is not a subband"),
        (["simulate", "--out", "x", "--groups", "-1"], "argument --groups"),
        (["simulate", "--out", "x", "--groups", "1", "--interval", "nan"], "--interval"),
        (["simulate", "--out", "x", "--groups", "1", "--jitter-seconds", "-1"], "--jitter"),
        (["simulate", "--groups", "1"], "the following arguments are required: --out"),
        (["index-hdf5", "/nonexistent"], "/nonexistent does not exist"),
        (["index-hdf5", "/etc/hostname"], "/etc/hostname is not a directory"),
        (["events", "--after", "-3"], "argument --after"),
        (["run", "--metrics-listen", "9108"], "is not HOST:PORT"),
        (["demo", "--groups", "0"], "argument --groups"),
        (["config", "--json", "--example"], "not allowed with argument"),
        (["bogus-command"], "invalid choice: 'bogus-command'"),
        ([], "the following arguments are required: COMMAND"),
        (["--log-level", "loud", "status"], "argument --log-level: invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "--help`)" in err


@given(st.lists(st.integers(0, 15), max_size=16))
def test_subband_lists_parse_back(subbands: list[int]) -> None:
    text = ",".join(f"sb{s:02d}" if s % 2 else str(s) for s in subbands)
    assert subband_list(text) == subbands


@given(st.text(alphabet="0123456789,sbx- ", max_size=12))
def test_subband_list_accepts_or_rejects_never_crashes(text: str) -> None:
    try:
        out = subband_list(text)
    except argparse.ArgumentTypeError as e:
        assert "is not a subband number" in str(e)
    else:
        assert all(0 <= s <= 15 for s in out)
