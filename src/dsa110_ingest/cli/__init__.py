"""``dsa110-ingest``: the command line. Parses arguments, builds the Config once and hands
it down; the environment is read here and nowhere deeper.

Every command is a module of this package with ``NAME``, ``HELP`` (one line for the list),
``DESCRIPTION`` (its own ``--help``), ``EXIT_CODES`` (beyond :data:`COMMON_EXIT_CODES`),
``add_arguments(parser)`` when it takes any, and ``run(cfg, args)``; a module may set
``NEEDS_CONFIG`` (a bool, or a function of the parsed arguments) to False when it works
without one (``config --example``, ``systemd-unit``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import structlog

from dsa110_ingest import __version__, logs
from dsa110_ingest.cli import (
    claim_output,
    config_cmd,
    convert,
    demo,
    doctor,
    events,
    groups,
    index_hdf5,
    migrate,
    prune,
    retry,
    run,
    simulate,
    status,
    systemd_unit,
)
from dsa110_ingest.cli._common import (
    COMMON_EXIT_CODES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Parser,
    error_line,
    global_options,
    print_text,
    say,
)
from dsa110_ingest.config import Config, load_config
from dsa110_ingest.errors import IngestError

__all__ = [
    "COMMANDS",
    "COMMON_EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

# in the order `--help` lists them: the daily ones first
COMMANDS: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        run,
        status,
        groups,
        events,
        convert,
        retry,
        claim_output,
        index_hdf5,
        prune,
        doctor,
        config_cmd,
        systemd_unit,
        migrate,
        simulate,
        demo,
    )
}

DESCRIPTION = """\
The ingest daemon of the DSA-110 continuum-imaging pipeline. It watches the folders the
correlator writes 16-subband UVH5 files to, indexes each file's header in the HDF5
database, groups the subbands of each ~5-minute observation, emits group.complete once
per group, converts complete groups to Measurement Sets and records them in the products
database. Run it under systemd (`dsa110-ingest systemd-unit`); everything else here
inspects or repairs what it did."""

EPILOG = """\
examples:
  dsa110-ingest --config /etc/dsa110-ingest/ingest.toml doctor   # is this install sound?
  dsa110-ingest status                                        # is the daemon running?
  dsa110-ingest groups --state failed                         # what failed, and why

Exit codes: 0 success, 1 runtime failure, 2 usage error; `status` 3 stopped, 4 stale.
The full table is in docs/operations.md. Settings: `dsa110-ingest config --example`."""


def build_parser() -> Parser:
    parents = [global_options()]
    p = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
    p.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version"
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", title="commands")
    for mod in COMMANDS.values():
        cmd = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.DESCRIPTION, parents=parents)
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(cmd)
    p.commands = dict(sub.choices)
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        # argparse would blame the top-level parser; the mistake is in the command's options
        p.commands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _needs_config(mod: ModuleType, args: argparse.Namespace) -> bool:
    need = getattr(mod, "NEEDS_CONFIG", True)
    return bool(need(args) if callable(need) else need)


def _format_given(argv: Sequence[str] | None) -> str:
    """``--log-format`` from the command line before it is parsed (usage errors)."""
    words = list(sys.argv[1:] if argv is None else argv)
    for i, w in enumerate(words):
        value = w.partition("=")[2] if w.startswith("--log-format=") else None
        if w == "--log-format" and i + 1 < len(words):
            value = words[i + 1]
        if value in ("auto", "json", "console"):
            return value
    return "auto"


def main(argv: Sequence[str] | None = None) -> int:
    # a usage error is printed before the config is read: as the command line says
    logs.choose_format(_format_given(argv), os.environ)
    args = parse(argv)
    mod = COMMANDS[args.cmd]
    level = getattr(args, "log_level", None)
    fmt = getattr(args, "log_format", None)
    # until the config is read, errors are logged with the command line's settings
    logs.setup(level or "info", fmt or "auto", env=os.environ)
    effective_level = level or "info"
    try:
        cfg: Config | None = None
        if _needs_config(mod, args):
            cfg = load_config(getattr(args, "config", None), os.environ)
            if level or fmt:
                cfg = cfg.with_overrides(
                    log_level=level or cfg.log_level, log_format=fmt or cfg.log_format
                )
            effective_level = cfg.log_level
            logs.setup(
                cfg.log_level,
                cfg.log_format,
                cfg.log_file if args.cmd == "run" else None,
                env=os.environ,
            )
        return int(mod.run(cfg, args) or 0)
    except IngestError as e:
        if args.cmd == doctor.NAME:
            # doctor's report is its stdout: the failure is said there once, as a check
            print_text(f"FAIL  config: {e}")
            say("doctor: 1 FAIL, 0 WARN, 0 OK (the other checks need a valid config)")
            return EXIT_ERROR
        error_line(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `dsa110-ingest events | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:
        # the disk, not the program: a folder not writable, a disk full
        where = f": {e.filename}" if e.filename else ""
        error_line(f"{e.strerror or e}{where}; check the path and its permissions")
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 -- the last line of defence against a bare traceback
        _report_crash(args.cmd, e, debug=effective_level == "debug")
        return EXIT_ERROR


def _report_crash(cmd: str, e: Exception, *, debug: bool) -> None:
    """A bug: a structured log line with a hint. The traceback goes into the structured
    line (JSON) off a terminal, and on one only with --log-level debug."""
    log = structlog.get_logger("dsa110_ingest.cli")
    show = debug or not sys.stderr.isatty()
    log.error(
        "cli.crashed",
        command=cmd,
        error=f"{type(e).__name__}: {e}",
        hint=f"a bug in {PROG} {__version__}: please report it with "
        + ("this line" if show else "the output of --log-level debug"),
        exc_info=e if show else None,
    )
