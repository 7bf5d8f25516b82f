-- Named inputs of a stream (a second camera, a backup encoder): each publishes with its own key.
-- The stream's own key is its "main" input, which has no row here.
CREATE TABLE IF NOT EXISTS stream_inputs (
    stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    backup INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    PRIMARY KEY (stream_id, name)
);
