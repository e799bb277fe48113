-- products.sqlite3 as written by dsa110-ingest before the storage seam (main e540ae0),
-- dumped with sqlite3 iterdump; PRAGMA user_version = 1
BEGIN TRANSACTION;
CREATE TABLE ms_index (
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
, ra_deg REAL, dec_deg REAL, group_id TEXT, n_subbands INTEGER, missing_subbands TEXT, n_channels INTEGER, freq_min_hz REAL, freq_max_hz REAL);
INSERT INTO "ms_index" VALUES('/ms/2025-10-02T00:00:00.ms',NULL,NULL,60950.002,NULL,'converted',NULL,NULL,NULL,NULL,NULL,NULL,'2025-10-02T00:00:00',NULL,NULL,NULL,NULL,NULL);
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
INSERT INTO "schema_migrations" VALUES(1,'ms_index',1.7957888369126496315e+09);
CREATE INDEX ix_ms_group ON ms_index(group_id);
CREATE INDEX ix_ms_mid ON ms_index(mid_mjd);
COMMIT;
