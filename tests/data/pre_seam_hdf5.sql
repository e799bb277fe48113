-- hdf5.sqlite3 as written by dsa110-ingest before the storage seam (main e540ae0),
-- dumped with sqlite3 iterdump; PRAGMA user_version = 3
BEGIN TRANSACTION;
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
, attempt_token TEXT);
INSERT INTO "conversion_jobs" VALUES('2025-10-02T00:00:00','pending',60950.0,0,0,0.0,NULL,NULL,NULL,NULL,1759363300.0,1759363300.0,NULL,NULL,NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    group_id TEXT,
    payload TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
INSERT INTO "events" VALUES(1,'group.complete','2025-10-02T00:00:00','{"files": ["a", "b"]}',1759363300.0);
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
INSERT INTO "groups" VALUES('2025-10-02T00:00:00','collecting',2,16,0,1759363200.0,1759363201.0,60950.0,60950.0035,1759363300.0,1759363300.0,NULL,NULL,1759364000.0);
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
INSERT INTO "hdf5_file_index" VALUES('/data/incoming/2025-10-02T00:00:00_sb00.hdf5','2025-10-02T00:00:00_sb00.hdf5','2025-10-02T00:00:00','sb00',0,NULL,60950.0,1000,NULL,1759363300.0,1,NULL,NULL,NULL,NULL,60950.0,60950.0035,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,123,0,NULL);
INSERT INTO "hdf5_file_index" VALUES('/data/incoming/2025-10-02T00:00:01_sb01.hdf5','2025-10-02T00:00:01_sb01.hdf5','2025-10-02T00:00:00','sb01',1,NULL,60950.0,1000,NULL,1759363300.0,1,NULL,NULL,NULL,NULL,60950.0,60950.0035,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,123,0,NULL);
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    hostname TEXT,
    started_at REAL,
    updated_at REAL,
    status TEXT
);
INSERT INTO "heartbeat" VALUES(1,4242,'oldhost',1759363000.0,1759363300.0,'{"ok": true}');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO "meta" VALUES('max_group_span_mjd','0.00349999999889405');
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
, path_bytes BLOB);
INSERT INTO "rejected_files" VALUES('/data/incoming/bad_sb03.hdf5','unreadable','truncated',5,6,1759363300.0,1759363300.0,1,1,NULL);
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
INSERT INTO "schema_migrations" VALUES(1,'initial schema',1.79578883683687806128e+09);
INSERT INTO "schema_migrations" VALUES(2,'rejected_files.path_bytes',1.79578883685306429866e+09);
INSERT INTO "schema_migrations" VALUES(3,'conversion attempt token',1.79578883685691213607e+09);
CREATE TABLE storage_locations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL DEFAULT 'incoming',
    description TEXT
);
INSERT INTO "storage_locations" VALUES(1,'incoming','/data/incoming','incoming','the correlator''s output');
CREATE INDEX ix_file_group ON hdf5_file_index(group_id, subband_num);
CREATE INDEX ix_file_time ON hdf5_file_index(timestamp_mjd);
CREATE INDEX ix_file_name ON hdf5_file_index(filename);
CREATE INDEX ix_file_location ON hdf5_file_index(storage_location_id);
CREATE INDEX ix_group_max_ts ON groups(max_ts);
CREATE INDEX ix_group_start ON groups(start_mjd);
CREATE INDEX ix_group_state ON groups(state, deadline_at);
CREATE INDEX ix_event_group ON events(group_id);
CREATE INDEX ix_job_claim ON conversion_jobs(state, obs_mjd);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',1);
COMMIT;
