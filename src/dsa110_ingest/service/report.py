"""What a one-shot pass tells its operator: plain lines for a person on a terminal, one
JSON object per line off it (where rejections are already logged one by one as
``file.rejected``). ``run --rescan`` and ``index-hdf5`` print the same summary.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest import logs
from dsa110_ingest.ingest.indexer import BatchResult
from dsa110_ingest.naming import printable

log = structlog.get_logger("dsa110_ingest.service")

REJECTIONS_SHOWN = 20


def tell(text: str, event: str, level: str = "info", **fields: Any) -> None:
    """``text`` on a terminal, else ``event`` with ``fields`` as a log record."""
    if logs.human():
        print(text, file=sys.stderr)
    else:
        getattr(log, level)(event, **fields)


def error_line(e: BaseException | str, event: str) -> None:
    """One line for a person on a terminal, one JSON object off it (on stderr even when
    the log goes to a file)."""
    tell(f"dsa110-ingest: error: {e}", event, "error", error=str(e))
    logs.fatal_to_stderr(str(e), event)


def batch_summary(what: str, r: BatchResult, seconds: float, **extra: str) -> None:
    """The counts of one pass over files (``what``: rescan, index-hdf5)."""
    rate = r.seen / seconds if seconds > 0 else 0.0
    completed = sum(1 for e in r.events if e[0] == ev.GROUP_COMPLETE)
    incomplete = sum(1 for e in r.events if e[0] == ev.GROUP_INCOMPLETE)
    tail = "".join(f"; {k.replace('_', ' ')} {v}" for k, v in extra.items())
    tell(
        f"{what}: {r.seen} files seen ({r.indexed} indexed, {r.updated} updated, "
        f"{r.moved} moved, {r.unchanged} unchanged, {r.rejected} rejected, {r.missing} "
        f"missing, {len(r.deferred)} busy (still being written)) in {seconds:.2f} s "
        f"({rate:.0f} files/s); {completed} groups completed, {incomplete} incomplete{tail}",
        f"{what}.summary",
        seen=r.seen,
        indexed=r.indexed,
        updated=r.updated,
        moved=r.moved,
        unchanged=r.unchanged,
        rejected=r.rejected,
        missing=r.missing,
        busy=len(r.deferred),
        seconds=round(seconds, 3),
        files_per_s=round(rate),
        groups_completed=completed,
        groups_incomplete=incomplete,
        **extra,
    )
    if not logs.human():
        return
    for path, msg in r.rejections[:REJECTIONS_SHOWN]:
        print(printable(f"  rejected {path}: {msg}"), file=sys.stderr)
    if len(r.rejections) > REJECTIONS_SHOWN:
        more = len(r.rejections) - REJECTIONS_SHOWN
        print(f"  ... and {more} more (see `dsa110-ingest status`)", file=sys.stderr)
