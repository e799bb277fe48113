"""What every command shares: exit codes, argument types, the global options."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import structlog

from dsa110_ingest import logs
from dsa110_ingest.config.targets import redact_text
from dsa110_ingest.naming import printable

EXIT_OK = 0
EXIT_ERROR = 1  # a runtime failure: the input was fine, the work could not be done
EXIT_USAGE = 2  # a wrong command line: nothing was done
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT, as a shell reports it (128 + 2)

PROG = "dsa110-ingest"

# Exit codes every command can return; a command module adds its own in EXIT_CODES.
COMMON_EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success (also: nothing to do)",
    EXIT_ERROR: "runtime failure, one line on stderr naming what and the fix",
    EXIT_USAGE: "usage error (unknown option, bad value): nothing was done",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT)",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``PROG CMD: error: ... (see PROG CMD --help)``."""

    # name -> the command's parser, so that errors found after parsing name the command
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        text = redact_text(f"{self.prog}: error: {message} (see `{self.prog} --help`)")
        if logs.human():
            self.exit(EXIT_USAGE, text + "\n")
        # off a terminal a usage error is one JSON object too (`main` set the format from
        # the command line before parsing: the config is not read yet)
        logs.stderr_record("cli.usage_error", "error", error=text)
        self.exit(EXIT_USAGE)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def print_text(line: str = "", *, file: TextIO | None = None) -> None:
    """One line of a text report. Paths, names and messages in it come from file names
    and the databases: non-printable characters are escaped (naming.printable), so a name
    holding a newline or an escape sequence cannot forge a line or repaint the terminal."""
    print(printable(line), file=file or sys.stdout)


def say(line: str, level: str = "info") -> None:
    """A line for the person who ran the command, on stderr: text on a terminal (or with
    the console format), else one JSON object (``cli.message``, the text in ``message``)
    like every other line there, so `jq` never meets plain text."""
    if logs.human():
        print(printable(redact_text(line)), file=sys.stderr)
    else:
        logs.stderr_record("cli.message", level, message=line)


def error_line(message: str) -> None:
    """The single line a runtime failure leaves on stderr: text for a person on a
    terminal, a JSON object (``cli.error``) off it, like every other line there; with
    ``log_file`` set, in the file and on stderr."""
    if logs.human():
        print(f"{PROG}: error: {redact_text(message)}", file=sys.stderr)
    else:
        structlog.get_logger("dsa110_ingest.cli").error("cli.error", error=message)
        logs.fatal_to_stderr(message, "cli.error")


def abs_path(p: str) -> Path:
    """A path typed on the command line is relative to where it was typed."""
    return Path(p).expanduser().absolute()


# -- argument types: a wrong value is a usage error (exit 2) naming the fix -------------


def iso_time(s: str) -> str:
    """An ISO 8601 time; naive means UTC. Returned unchanged once it parses."""
    try:
        datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{s!r} is not an ISO 8601 UTC time; write e.g. 2025-10-02T00:00:00"
        ) from None
    return s


def _number(s: str, kind: type, what: str, ok: Any) -> Any:
    try:
        v = kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not {what}") from None
    if (isinstance(v, float) and not math.isfinite(v)) or not ok(v):
        raise argparse.ArgumentTypeError(f"{s!r} is not {what}")
    return v


def positive_int(s: str) -> int:
    return int(_number(s, int, "a whole number >= 1", lambda v: v >= 1))


def non_negative_int(s: str) -> int:
    return int(_number(s, int, "a whole number >= 0", lambda v: v >= 0))


def non_negative_float(s: str) -> float:
    return float(_number(s, float, "a number of seconds >= 0", lambda v: v >= 0))


def existing_dir(s: str) -> Path:
    p = abs_path(s)
    if not p.is_dir():
        what = "is not a directory" if p.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{p} {what}; give the folder holding the subband files")
    return p


def subband_list(s: str) -> list[int]:
    """``3,7`` or ``sb03,sb07``: subband numbers 0-15."""
    out: list[int] = []
    for part in (x.strip() for x in s.split(",")):
        if not part:
            continue
        digits = part[2:] if part.lower().startswith("sb") else part
        if not digits.isdigit() or not 0 <= int(digits) <= 15:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a subband number; give numbers 0-15 separated by commas, e.g. 3,7"
            )
        out.append(int(digits))
    return out


def host_port(s: str) -> str:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{s!r} is not HOST:PORT, e.g. 127.0.0.1:9108")
    return s


def global_options() -> argparse.ArgumentParser:
    """Options valid before and after the command (``--config x status`` and
    ``status --config x``): a parent parser every subcommand shares. SUPPRESS keeps a
    subcommand from overwriting a value given before it with its own default."""
    g = argparse.ArgumentParser(add_help=False)
    opts = g.add_argument_group("global options (before or after the command)")
    opts.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML config file (default: $DSA110_INGEST_CONFIG, else built-in defaults)",
    )
    opts.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=argparse.SUPPRESS,
        help="override the config's log_level",
    )
    opts.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=argparse.SUPPRESS,
        help="override the config's log_format (auto: JSON unless stderr is a terminal)",
    )
    return g
