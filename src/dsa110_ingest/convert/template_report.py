"""A conversion template in a person's words (convert/template_client.py describes it):
whether it answers, for ``/healthz``, the heartbeat and ``status``."""

from __future__ import annotations

import time
from typing import Any

# a fork request unanswered this long is reported (/healthz, `status`) while it waits
SILENT_REPORT_S = 5.0


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def template_problem(d: dict[str, Any], now: float | None = None) -> str | None:
    """A hung template in one line, from :meth:`Template.describe` (None: it answers)."""
    since = d.get("silent_since")
    now = time.time() if now is None else now
    if since is None or now - since < d.get("silent_after_s", SILENT_REPORT_S):
        return None
    return (
        f"conversion template pid {d['pid']} has not answered a fork request for "
        f"{now - since:.0f} s (since {utc(since)}): hung? it is killed and replaced at "
        f"{d.get('answer_timeout_s', 15.0):g} s (restarts {d['restarts']}, "
        f"hung kills {d['killed_hung']} so far)"
    )
