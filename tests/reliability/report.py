"""Write docs/reliability.md from the figures the reliability tests recorded.

python tests/reliability/report.py RESULTS_DIR docs/reliability.md [SCALE]
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

OUTCOME_KEYS = (
    "lost",
    "duplicated",
    "rejected",
    "daemon_exits",
    "valid_groups_lost",
    "half_written_ms",
    "shells_run",
    "files_read_outside",
    "early_timeouts",
    "missed_timeouts",
    "marked_deleted_while_away",
    "order_inversions",
    "second_daemons_started",
    "ids_reused",
    "daemon_exit_code",
)


def fmt(v: object) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {n}" for k, n in sorted(v.items()))
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def main() -> int:
    results, out = Path(sys.argv[1]) / "results.jsonl", Path(sys.argv[2])
    scale = sys.argv[3] if len(sys.argv) > 3 else "day"
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = [
        "# Reliability",
        "",
        "Can it lose an observation? These are the figures of the project's own reliability",
        "tests (`tests/reliability/`, real processes, real files, real SQLite), written by",
        f"`make soak` from the run's own output. This run: soak of one {scale} of observations,",
        f"{platform.machine()}, {rows[0]['at'][:10] if rows else ''}. `make test` runs the same",
        "tests on every change, the soak at a third of a day's scale; `make soak` runs a week",
        "and rewrites this page.",
        "",
        "| scenario | what ran | outcome |",
        "|---|---|---|",
    ]
    for r in rows:
        ran = {k: v for k, v in r.items() if k not in ("scenario", "at", "classes", *OUTCOME_KEYS)}
        if "classes" in r:
            ran["classes"] = f"{len(r['classes'])} (below)"
        outcome = {k: r[k] for k in OUTCOME_KEYS if k in r}
        lines.append(
            f"| {r['scenario']} | {'; '.join(f'{k}: {fmt(v)}' for k, v in ran.items())}"
            f" | {'; '.join(f'{k}: {fmt(v)}' for k, v in outcome.items())} |"
        )
    for r in rows:
        if not r.get("classes"):
            continue
        lines += [
            "",
            f"### Classes tried: {r['scenario']}",
            "",
            "| class | tried | result |",
            "|---|---|---|",
        ]
        for kind, outcomes in sorted(r["classes"].items()):
            tried = sum(outcomes.values())
            result = "; ".join(f"{o}: {n}" for o, n in sorted(outcomes.items()))
            lines.append(f"| {kind} | {tried} | {result} |")
    lines += [
        "",
        "Every stream scenario ends with the same ledger check (`tests/reliability/conftest.py`):",
        "each file indexed exactly once, each group complete with exactly one `group.complete`",
        "and one `group.converted` event, one `ms_index` row per group, every conversion job",
        "`converted`. A scenario that lost or doubled anything fails, and its row is not written.",
        "",
    ]
    out.write_text("\n".join(lines))
    print(f"wrote {out} ({len(rows)} scenarios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
