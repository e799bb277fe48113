"""Shared by the benchmarks: write a benchmark's section of docs/performance.md."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

PERF = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
HEADER = """# Performance

Figures written by the benchmarks themselves (`make bench`); each section is replaced
when its benchmark runs. Targets are ratios against a baseline measured in the same run,
on the same files, so they hold across machines; absolute numbers are for this machine.
"""


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {time.strftime('%Y-%m-%d', time.gmtime())}"
    )


def write_section(name: str, body: str) -> None:
    text = PERF.read_text() if PERF.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    PERF.write_text(text)


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"
