"""Logging set-up, done by the CLI only: JSON lines off a terminal (each with a journald
``<N>`` priority prefix when stderr is the journal), key=value on a terminal.

As a library (``import dsa110_ingest``) nothing is configured: records go to the
standard ``logging`` module under ``dsa110_ingest.*``, which prints nothing unless the
host application adds a handler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from dsa110_ingest.config.targets import redact_text
from dsa110_ingest.statedir import open_private

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog priorities, as journald reads them from a `<N>` line prefix
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2}


class _ReopenableStream:
    """A log file that SIGHUP can reopen after logrotate moved it (created 0640)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f: TextIO = self._open()

    def _open(self) -> TextIO:
        return open(open_private(self.path), "a", encoding="utf-8", closefd=True)

    def write(self, s: str) -> int:
        return self.f.write(s)

    def flush(self) -> None:
        self.f.flush()

    def reopen(self) -> None:
        old = self.f
        self.f = self._open()
        old.close()


class _BarAwareStream:
    """A terminal stream under a progress bar: a log line clears the bar, is printed, and
    the bar is drawn again below it (tqdm's ``write`` pattern)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._line_start = True  # a log line arrives in pieces (text, then "\n")

    def write(self, s: str) -> int:
        bar = _active_bar
        if bar is not None and self._line_start:
            self.out.write("\r\x1b[K")  # wipe the bar; the log line takes its place
        n = self.out.write(s)
        self._line_start = s.endswith("\n")
        if bar is not None and self._line_start:
            self.out.write(bar.line())
        return n

    def flush(self) -> None:
        self.out.flush()


_file_stream: _ReopenableStream | None = None
_active_bar: ProgressBar | None = None
_json = True
_stderr_journal = False


def journal_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True when ``stream`` is connected to journald (systemd sets JOURNAL_STREAM=dev:ino
    of the stream it hands us; a redirect elsewhere changes the device/inode)."""
    want = env.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """No password of a PostgreSQL URI in any line, whichever message carries it."""
    for k, v in event.items():
        if isinstance(v, str):
            event[k] = redact_text(v)
    return event


def _priority_prefix(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["_priority"] = PRIORITIES.get(event.get("level", method), 6)
    return event


class _JournalJSON:
    """JSON renderer that prefixes ``<N>`` so `journalctl -p err` filters by level."""

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> str:
        prio = event.pop("_priority", 6)
        return f"<{prio}>" + json.dumps(event, default=str)


def setup(
    level: str = "info",
    fmt: str = "auto",
    log_file: Path | None = None,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    global _file_stream, _json, _stderr_journal
    out: TextIO | _ReopenableStream | _BarAwareStream
    if log_file is not None:
        _file_stream = out = _ReopenableStream(log_file)
    else:
        _file_stream = None
        out = stream or sys.stderr
    _stderr_journal = env is not None and journal_stream(sys.stderr, env)
    tty = log_file is None and hasattr(out, "isatty") and out.isatty()
    journal = log_file is None and env is not None and journal_stream(out, env)  # type: ignore[arg-type]
    _json = use_json = fmt == "json" or (fmt == "auto" and not tty)
    if tty:
        out = _BarAwareStream(out)  # type: ignore[arg-type]
    renderer: structlog.typing.Processor = (
        (_JournalJSON() if journal else structlog.processors.JSONRenderer(sort_keys=False))
        if use_json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            # one time format everywhere: ISO 8601, UTC, with its `Z`
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            *([_priority_prefix] if journal and use_json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def choose_format(fmt: str, env: Mapping[str, str]) -> None:
    """Decide text or JSON for stderr as ``setup`` would, without configuring the
    loggers: for what is printed before ``setup`` runs (usage errors)."""
    global _json, _stderr_journal
    _json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    _stderr_journal = journal_stream(sys.stderr, env)


def library_default() -> None:
    """Until the CLI (or the host application) configures structlog, hand our records to
    the standard ``logging`` module, where a library's records belong; never stdout."""
    if structlog.is_configured():
        return
    logging.getLogger("dsa110_ingest").addHandler(logging.NullHandler())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            # one JSON string as the record's message: no key can clash with LogRecord's
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def human() -> bool:
    """True when stderr shows a person text (a terminal, console format), False when every
    line must be a JSON object."""
    return not _json


def fatal_to_stderr(message: str, event: str) -> None:
    """With ``log_file`` set, records go to the file, not where the person (or systemd)
    that started the command looks: an error that stops the command goes to stderr too,
    one line (text on a terminal, a JSON object off it)."""
    if _file_stream is None or not _json:
        return  # no file, or console format: the caller printed it on stderr
    message = redact_text(message)
    if sys.stderr.isatty():
        line = f"dsa110-ingest: error: {message}"
    else:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as TimeStamper
        record = {
            "event": event,
            "level": "error",
            "error": message,
            "log_file": _file_stream.path,
            "timestamp": now,
        }
        line = ("<3>" if _stderr_journal else "") + json.dumps(record, default=str)
    print(line, file=sys.stderr, flush=True)


def stderr_record(event: str, level: str, **fields: Any) -> None:
    """One JSON object on stderr, shaped as the log lines (with the journal's ``<N>``
    prefix when stderr is the journal), whatever stream the logger writes to: what a
    command tells its user belongs where its user looks."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as TimeStamper
    record = {"event": event, "level": level, **_redact(None, "", fields), "timestamp": now}
    prefix = f"<{PRIORITIES.get(level, 6)}>" if _stderr_journal else ""
    print(prefix + json.dumps(record, default=str), file=sys.stderr, flush=True)


def reopen() -> None:
    if _file_stream is not None:
        _file_stream.reopen()


class ProgressBar:
    """A progress bar on a terminal that owns its line: logs print above it."""

    def __init__(self, label: str = "files", out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.label = label
        self.t0 = time.monotonic()
        self.done_n = self.total = 0

    def __enter__(self) -> ProgressBar:
        global _active_bar
        _active_bar = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active_bar
        _active_bar = None
        self.out.write("\r\x1b[K" + self.line().rstrip("\r") + "\n")
        self.out.flush()

    def line(self) -> str:
        if not self.total:
            return f"[{'.' * 30}] looking for {self.label} ...\r"
        width = 30
        frac = self.done_n / self.total if self.total else 1.0
        dt = max(1e-6, time.monotonic() - self.t0)
        rate = self.done_n / dt
        left = (self.total - self.done_n) / rate if rate > 0 else 0.0
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if rate > 0 else "--:--:--"
        fill = int(frac * width)
        return (
            f"[{'#' * fill}{'.' * (width - fill)}] {self.done_n}/{self.total} {self.label}"
            f"  {rate:.0f}/s  ETA {eta}\r"
        )

    def __call__(self, done: int, total: int) -> None:
        self.done_n, self.total = done, total
        self.out.write("\r\x1b[K" + self.line())
        self.out.flush()
