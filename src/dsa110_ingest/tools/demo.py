"""``dsa110-ingest demo``: the whole chain on this machine in a minute.

A simulated correlator writes groups into a watched folder while the real daemon runs
(SQLite, inotify, pyuvdata conversion); the demo prints the events as they happen and
ends with the groups table and the Measurement Sets written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dsa110_ingest.config import Config
from dsa110_ingest.db import open_index_at
from dsa110_ingest.events import event_dict
from dsa110_ingest.tools.simulate import SimParams, simulate, spread_offsets

DEMO_TOML = """\
# written by `dsa110-ingest demo`
state_dir = "state"
log_format = "json"
log_file = "daemon.log"

[[storage_locations]]
name = "incoming"
path = "incoming"

[watch]
settle_seconds = 2

[convert]
backend = "{backend}"
output_dir = "ms"
"""


def main(cfg: Config, args: argparse.Namespace) -> int:
    root = Path(args.dir).absolute()
    _fresh(root)
    try:
        import casacore.tables  # noqa: F401
        import pyuvdata  # noqa: F401

        backend = "pyuvdata"
    except ImportError:
        print(
            "demo: pyuvdata/python-casacore missing; install the 'convert' extra", file=sys.stderr
        )
        return 1
    conf = root / "ingest.toml"
    conf.write_text(DEMO_TOML.format(backend=backend))
    env = {**os.environ, "DSA110_INGEST_CONFIG": str(conf)}
    env.pop("HDF5_DB_PATH", None)
    env.pop("PRODUCTS_DB_PATH", None)
    print(f"demo: daemon starting on {root / 'incoming'} (log: {root / 'daemon.log'})")
    daemon = subprocess.Popen([sys.executable, "-m", "dsa110_ingest", "run"], env=env)
    try:
        if not _wait_ready(daemon, root / "daemon.log"):
            print("demo: the daemon did not start; see daemon.log", file=sys.stderr)
            return 1
        _correlator(root / "incoming", args.groups)
        if not _show_events(daemon, root / "state" / "hdf5.sqlite3", args.groups):
            return 1
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    _summary(root, env)
    print(f"demo: daemon exit code {daemon.returncode} (0 = clean shutdown on SIGTERM)")
    return 0 if daemon.returncode == 0 else 1


def _fresh(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("incoming", "state", "ms"):
        target = root / sub
        if target.exists():
            subprocess.run(["rm", "-rf", str(target)], check=True)
        target.mkdir()


def _wait_ready(daemon: subprocess.Popen[bytes], log: Path) -> bool:
    deadline = time.monotonic() + 60
    while not log.exists() or "service.ready" not in log.read_text():
        if daemon.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _correlator(incoming: Path, n: int) -> None:
    print(f"demo: simulated correlator writing {n} groups of 16 subbands, 2 s apart")
    simulate(
        incoming,
        n,
        "2025-10-02T00:00:00",
        2.0,
        # DSA-110-like: channels descending in each file, subbands' integrations up
        # to 3 s apart; the MS must come out ascending, on one grid, meridian-phased
        params=SimParams(nants=12, nchan=8, ntimes=6, time_offsets_s=spread_offsets(3.0)),
        realtime_interval_s=2.0,
        mode="tmp_rename",
    )


def _show_events(daemon: subprocess.Popen[bytes], hdf5: Path, n: int) -> bool:
    """Print events as they come until ``n`` groups are converted (or failed)."""
    last = 0
    converted = 0
    deadline = time.monotonic() + 300
    with open_index_at(hdf5, readonly=True) as db:
        while converted < n and time.monotonic() < deadline:
            for row in db.events_after(last):
                last = row.id
                event = event_dict(row)
                print(_event_line(event))
                if event["type"] in ("group.converted", "group.failed"):
                    converted += 1
            if daemon.poll() is not None:
                print("demo: the daemon exited; see daemon.log", file=sys.stderr)
                return False
            time.sleep(0.2)
    if converted < n:
        print("demo: conversions did not finish within 5 minutes", file=sys.stderr)
        return False
    return True


def _event_line(event: dict[str, Any]) -> str:
    payload = event["payload"]
    extra = payload.get("ms_path") or f"{len(payload.get('files', []))} files"
    if "phasing" in payload:
        extra += (
            f" ({payload['phasing']} at dec {payload['pointing_dec_deg']:.1f} deg from "
            f"{payload['pointing_dec_source']}, subbands up to "
            f"{payload['max_time_offset_s']:.1f} s apart)"
        )
    if event["type"] == "group.failed":
        extra = f"{payload.get('kind')}: {payload.get('error')}"
    return f"  event {event['id']:>3} {event['type']:16} {event['group_id']}  {extra}"


def _summary(root: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "dsa110_ingest", "groups"], env=env, check=False)
    out = subprocess.run(
        [sys.executable, "-m", "dsa110_ingest", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    st = json.loads(out.stdout or "{}")
    print(f"demo: files {st.get('files')}, conversions {st.get('conversions')}")
    print(
        f"demo: Measurement Sets in {root / 'ms'}: "
        f"{', '.join(sorted(p.name for p in (root / 'ms').glob('*.ms')))}"
    )
