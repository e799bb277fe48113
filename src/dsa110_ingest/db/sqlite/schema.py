"""The SQLite schemas: named forward migrations per database, version in PRAGMA user_version.

Append a migration at the end of a list, never edit or reorder one that has shipped: a
database made by any earlier release must open and migrate. (``tests/db/test_sqlite_schema``
opens databases made with the pre-refactor schemas.)
"""

from __future__ import annotations

import sqlite3
import uuid

from dsa110_ingest.db.records import INDEX_ID_KEY
from dsa110_ingest.db.sqlite.migrations import Migration, script

INDEX_SCHEMA_V1 = """
CREATE TABLE storage_locations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL DEFAULT 'incoming',
    description TEXT
);
CREATE TABLE hdf5_file_index (
    path TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    group_id TEXT,
    subband_code TEXT,
    subband_num INTEGER,
    timestamp_iso TEXT,
    timestamp_mjd REAL,
    file_size_bytes INTEGER,
    modified_time REAL,
    indexed_at REAL,
    stored INTEGER NOT NULL DEFAULT 1,
    ra_deg REAL,
    dec_deg REAL,
    obs_date TEXT,
    obs_time TEXT,
    start_mjd REAL,
    end_mjd REAL,
    mid_mjd REAL,
    freq_min_hz REAL,
    freq_max_hz REAL,
    channel_width_hz REAL,
    integration_time_s REAL,
    n_freqs INTEGER,
    n_times INTEGER,
    n_ants INTEGER,
    n_pols INTEGER,
    n_blts INTEGER,
    telescope_name TEXT,
    storage_location_id INTEGER REFERENCES storage_locations(id),
    mtime_ns INTEGER,
    is_duplicate INTEGER NOT NULL DEFAULT 0,
    legacy_extra TEXT
);
CREATE INDEX ix_file_group ON hdf5_file_index(group_id, subband_num);
CREATE INDEX ix_file_time ON hdf5_file_index(timestamp_mjd);
CREATE INDEX ix_file_name ON hdf5_file_index(filename);
CREATE INDEX ix_file_location ON hdf5_file_index(storage_location_id);
CREATE TABLE groups (
    group_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    n_subbands INTEGER NOT NULL DEFAULT 0,
    expected_subbands INTEGER NOT NULL,
    n_conflicts INTEGER NOT NULL DEFAULT 0,
    min_ts REAL NOT NULL,
    max_ts REAL NOT NULL,
    start_mjd REAL,
    end_mjd REAL,
    first_seen_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    completed_at REAL,
    incomplete_at REAL,
    deadline_at REAL NOT NULL
);
CREATE INDEX ix_group_max_ts ON groups(max_ts);
CREATE INDEX ix_group_start ON groups(start_mjd);
CREATE INDEX ix_group_state ON groups(state, deadline_at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    group_id TEXT,
    payload TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX ix_event_group ON events(group_id);
CREATE TABLE rejected_files (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    file_size_bytes INTEGER,
    mtime_ns INTEGER,
    first_seen_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    storage_location_id INTEGER REFERENCES storage_locations(id)
);
CREATE TABLE conversion_jobs (
    group_id TEXT PRIMARY KEY REFERENCES groups(group_id) ON UPDATE CASCADE,
    state TEXT NOT NULL,
    obs_mjd REAL,
    partial INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at REAL,
    last_error TEXT,
    ms_path TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX ix_job_claim ON conversion_jobs(state, obs_mjd);
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    hostname TEXT,
    started_at REAL,
    updated_at REAL,
    status TEXT
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)
"""


def add_index_id(conn: sqlite3.Connection) -> None:
    """Give the index its identity unless it has one (also for a lost row)."""
    conn.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
        (INDEX_ID_KEY, uuid.uuid4().hex),
    )


INDEX_MIGRATIONS: tuple[Migration, ...] = (
    Migration("initial schema", script(INDEX_SCHEMA_V1)),
    # a name that is not UTF-8: ``path`` holds it escaped, ``path_bytes`` the exact bytes
    Migration(
        "rejected_files.path_bytes",
        script("ALTER TABLE rejected_files ADD COLUMN path_bytes BLOB"),
    ),
    # fencing: a result is registered only by the attempt that holds the current token
    Migration(
        "conversion attempt token",
        script("ALTER TABLE conversion_jobs ADD COLUMN attempt_token TEXT"),
    ),
    # the ingest node watching a location. A SQLite index serves one host, so names and
    # paths stay unique across nodes here (PostgreSQL scopes them per node)
    Migration(
        "storage_locations.node",
        script("ALTER TABLE storage_locations ADD COLUMN node TEXT NOT NULL DEFAULT ''"),
    ),
    # one heartbeat row per node instead of the single id = 1 row; the existing row keeps
    # its daemon's host name as node (the default node name)
    Migration(
        "heartbeat per node",
        script(
            "CREATE TABLE heartbeat_by_node (node TEXT PRIMARY KEY, pid INTEGER, "
            "hostname TEXT, started_at REAL, updated_at REAL, status TEXT);"
            "INSERT INTO heartbeat_by_node SELECT COALESCE(hostname, ''), pid, hostname, "
            "started_at, updated_at, status FROM heartbeat;"
            "DROP TABLE heartbeat;"
            "ALTER TABLE heartbeat_by_node RENAME TO heartbeat"
        ),
    ),
    # the identity the output_dir's ownership claim names (convert/ownership.py): random,
    # made once here, so two indexes never share one by accident
    Migration("index identity", add_index_id),
)


PRODUCTS_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS ms_index (
    path TEXT PRIMARY KEY,
    start_mjd REAL,
    end_mjd REAL,
    mid_mjd REAL,
    processed_at REAL,
    status TEXT,
    stage TEXT,
    stage_updated_at REAL,
    cal_applied INTEGER DEFAULT 0,
    imagename TEXT
);
ALTER TABLE ms_index ADD COLUMN ra_deg REAL;
ALTER TABLE ms_index ADD COLUMN dec_deg REAL;
ALTER TABLE ms_index ADD COLUMN group_id TEXT;
ALTER TABLE ms_index ADD COLUMN n_subbands INTEGER;
ALTER TABLE ms_index ADD COLUMN missing_subbands TEXT;
ALTER TABLE ms_index ADD COLUMN n_channels INTEGER;
ALTER TABLE ms_index ADD COLUMN freq_min_hz REAL;
ALTER TABLE ms_index ADD COLUMN freq_max_hz REAL;
CREATE INDEX IF NOT EXISTS ix_ms_group ON ms_index(group_id);
CREATE INDEX IF NOT EXISTS ix_ms_mid ON ms_index(mid_mjd)
"""


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Upstream deployments have ms_index with some of these columns already: add the rest."""
    conn.execute(PRODUCTS_SCHEMA_V1.split(";")[0])
    have = {r[1] for r in conn.execute("PRAGMA table_info(ms_index)")}
    for stmt in PRODUCTS_SCHEMA_V1.split(";")[1:]:
        stmt = stmt.strip()
        if stmt.startswith("ALTER"):
            col = stmt.split("ADD COLUMN")[1].split()[0]
            if col in have:
                continue
        conn.execute(stmt)


PRODUCTS_MIGRATIONS: tuple[Migration, ...] = (Migration("ms_index", _add_missing_columns),)
