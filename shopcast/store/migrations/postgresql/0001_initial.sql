-- Streams, their hashed publish keys, tags, recordings and settings.
CREATE TABLE streams (
    id TEXT PRIMARY KEY,
    stream_key TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    record BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE TABLE tags (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT,
    data TEXT NOT NULL,  -- the JSON text as given (jsonb would reorder its keys)
    duration DOUBLE PRECISION,
    pts BIGINT NOT NULL,
    program_date_time DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    late BOOLEAN NOT NULL DEFAULT FALSE,
    clicks BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX tags_by_stream ON tags (stream_id, program_date_time);
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    state TEXT NOT NULL,
    store TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    duration DOUBLE PRECISION NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    renditions TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    degraded TEXT
);
CREATE INDEX recordings_by_stream ON recordings (stream_id, started_at);
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
