"""Two ingest nodes on one PostgreSQL index: each group's 16 subbands split between
them, written concurrently by two writers, one node SIGKILLed half way and restarted.

Real parts only: a PostgreSQL server (tests/pg_server.py), two `dsa110-ingest run`
daemons as subprocesses with their own state dirs and storage folders, real h5py files,
a real converter subprocess. The ledger must be exact: every file indexed once, every
group one `group.complete`, one conversion, one `ms_index` row.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dsa110_ingest.convert.claimfile import CLAIM_NAME, read_claim
from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.tools.simulate import plan_groups, write_file

from ..conftest import SMALL, Daemon, Site, wait_for, write_site
from ..pg_server import PgDatabases
from .conftest import stand_in_converter

N_GROUPS = 8
SPLIT = 8  # subbands 0-7 land on node A's folder, 8-15 on node B's


def node_site(root: Path, dbs: PgDatabases, node: str, converter: Path, output: Path) -> Site:
    """One node's deployment: its state dir and folder, the shared index and output."""
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{converter}", "{{output}}", '
        f'"{{inputs}}"]\noutput_dir = "{output}"\nworkers = 2\nbackoff_initial_seconds = 0.3\n'
        "backoff_max_seconds = 2\nlease_seconds = 3\nmax_attempts = 20\n"
    )
    site = write_site(root, convert=conv)
    text = site.config_path.read_text().replace('log_level = "debug"', 'log_level = "info"')
    site.config_path.write_text(
        f'node = "{node}"\nhdf5_db = "{dbs.index}"\nproducts_db = "{dbs.products}"\n' + text
    )
    return site


def writer(dest: Path, subbands: range, start: str, pause: float, seed: int) -> threading.Thread:
    """One correlator host: writes its subbands of every group, group after group."""
    rng = random.Random(seed)

    def run() -> None:
        for plan in plan_groups(N_GROUPS, start, 3.0):
            for sb, t in sorted(plan.files.items()):
                if sb in subbands:
                    mode = rng.choice(["inplace", "tmp_rename"])
                    write_file(dest, t, sb, SMALL, mode, plan.start_unix)
            time.sleep(pause)

    th = threading.Thread(target=run, name=f"writer-{dest.name}")
    th.start()
    return th


def lock_free(index: Any, node: str) -> bool:
    if index.try_lock_node(node):
        index.unlock_node(node)
        return True
    return False


def ledger(index: Any, products: Any) -> dict[str, Any]:
    counts = index.counts()
    events: list[Any] = []
    while batch := index.events_after(events[-1].id if events else 0):
        events += batch
    per_type = Counter(e.type for e in events)
    complete_per_group = Counter(e.group_id for e in events if e.type == "group.complete")
    converted_per_group = Counter(e.group_id for e in events if e.type == "group.converted")
    ms = products.all_ms()
    names = [f.filename for g in index.list_groups(None, None, None) for f in
             index.group_files(g.group_id, members_only=False)]  # fmt: skip
    return {
        "files": counts.files,
        "file_names": len(names),
        "distinct_file_names": len(set(names)),
        "groups": counts.groups,
        "jobs": counts.conversions,
        "complete_events": per_type["group.complete"],
        "converted_events": per_type["group.converted"],
        "incomplete_events": per_type["group.incomplete"],
        "max_complete_per_group": max(complete_per_group.values(), default=0),
        "max_converted_per_group": max(converted_per_group.values(), default=0),
        "ms_rows": len(ms),
        "ms_groups": len({m.group_id for m in ms}),
        "event_ids_increasing": [e.id for e in events] == sorted({e.id for e in events}),
    }


def test_two_nodes_one_killed_every_group_once(
    tmp_path: Path, pg_dbs: PgDatabases, daemon_factory, record
) -> None:
    conv = stand_in_converter(tmp_path / "conv", "time.sleep(0.1)")
    output = tmp_path / "ms"
    a = node_site(tmp_path / "a", pg_dbs, "node-a", conv, output)
    b = node_site(tmp_path / "b", pg_dbs, "node-b", conv, output)
    t0 = time.monotonic()
    da: Daemon = daemon_factory(a)
    db: Daemon = daemon_factory(b)
    da.wait_ready(60)
    db.wait_ready(60)
    with (
        open_index_at(pg_dbs.index, readonly=True) as index,
        open_products_at(pg_dbs.products, readonly=True) as products,
    ):

        def complete() -> int:
            return index.count_events("group.complete")

        def converted() -> int:
            return index.state_counts()[1].get("converted", 0)

        phases = {"both_ready": time.monotonic() - t0}
        start = "2025-10-02T00:00:00"
        writers = [
            writer(a.incoming, range(0, SPLIT), start, 0.25, 1),
            writer(b.incoming, range(SPLIT, 16), start, 0.25, 2),
        ]
        # mid-way: some groups complete (some converting), more still being written
        wait_for(lambda: complete() >= N_GROUPS // 4, 60, lambda: db.log.read_text()[-3000:])
        killed_at = complete()
        phases["killed"] = time.monotonic() - t0
        db.proc.send_signal(signal.SIGKILL)
        db.proc.wait(10)
        # the server drops the dead session's node lock; then node B comes back
        wait_for(lambda: lock_free(index, "node-b"), 30, "node-b's lock outlived its daemon")
        db2 = daemon_factory(b)
        db2.wait_ready(60)
        phases["restarted_ready"] = time.monotonic() - t0
        for th in writers:
            th.join(60)
        wait_for(
            lambda: converted() == N_GROUPS,
            60,
            lambda: (
                f"{index.state_counts()}\n{da.log.read_text()[-2000:]}\n"
                f"{db2.log.read_text()[-2000:]}"
            ),
        )
        seconds = time.monotonic() - t0
        assert da.stop() == 0 and db2.stop() == 0
        led = ledger(index, products)
        heartbeats = {hb.node for hb in index.heartbeats()}
        locations = {(loc.node, Path(loc.path).parent.name) for loc in index.locations()}
        index_id = index.index_id()
        claim = read_claim(output / CLAIM_NAME)
        refused = [d.log for d in (da, db, db2) if "output_dir_refused" in d.log.read_text()]

    n = N_GROUPS
    assert led["files"] == {"indexed": 16 * n, "rejected": 0}, led
    assert led["file_names"] == led["distinct_file_names"] == 16 * n, led
    assert led["groups"] == {"complete": n}, led
    assert led["jobs"] == {"converted": n}, led
    assert led["complete_events"] == led["converted_events"] == n, led
    assert led["max_complete_per_group"] == led["max_converted_per_group"] == 1, led
    assert led["ms_rows"] == led["ms_groups"] == n, led
    assert led["incomplete_events"] == 0 and led["event_ids_increasing"], led
    assert heartbeats == {"node-a", "node-b"}
    assert locations == {("node-a", "a"), ("node-b", "b")}
    # one index, one output_dir: the claim names the shared index and no node refused it
    assert claim is not None and claim.index_id == index_id and not refused, (claim, refused)
    record(
        "two nodes on one PostgreSQL index, one SIGKILLed and restarted",
        groups=n,
        files=16 * n,
        split="sb00-07 on node A, sb08-15 on node B",
        complete_when_killed=killed_at,
        lost=0,
        duplicated=0,
        seconds_to_all_converted=round(seconds, 1),
        phases_s={k: round(v, 1) for k, v in phases.items()},
    )
