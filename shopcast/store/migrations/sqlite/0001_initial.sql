-- The schema as the embedded store had it before versioned migrations (files from those
-- versions already hold these tables: IF NOT EXISTS keeps them).
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    stream_key TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    record INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS tags (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT,
    data TEXT NOT NULL,
    duration REAL,
    pts INTEGER NOT NULL,
    program_date_time REAL NOT NULL,
    source TEXT NOT NULL,
    late INTEGER NOT NULL DEFAULT 0,
    clicks INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_by_stream ON tags (stream_id, program_date_time);
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    state TEXT NOT NULL,
    store TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration REAL NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    renditions TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    degraded TEXT
);
CREATE INDEX IF NOT EXISTS recordings_by_stream ON recordings (stream_id, started_at);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
