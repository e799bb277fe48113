"""structlog set-up: JSON lines for journald and tailing, key=value on a terminal."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _ReopenableStream:
    """A log file that SIGHUP can reopen after logrotate moved it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, s: str) -> int:
        return self.f.write(s)

    def flush(self) -> None:
        self.f.flush()

    def reopen(self) -> None:
        old = self.f
        self.f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        old.close()


_file_stream: _ReopenableStream | None = None


def setup(
    level: str = "info",
    fmt: str = "auto",
    log_file: Path | None = None,
    stream: TextIO | None = None,
) -> None:
    global _file_stream
    out: TextIO | _ReopenableStream
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _file_stream = out = _ReopenableStream(log_file)
    else:
        out = stream or sys.stderr
    tty = log_file is None and hasattr(out, "isatty") and out.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def reopen() -> None:
    if _file_stream is not None:
        _file_stream.reopen()
