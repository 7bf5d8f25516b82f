-- The cluster: every node's heartbeat row and every live stream's owner (a lease). On SQLite
-- all nodes share one machine, so its clock is the store's clock.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    http_url TEXT NOT NULL,
    rtmp_url TEXT NOT NULL,
    capacity REAL NOT NULL,
    load REAL NOT NULL,
    viewers TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
-- The row stays after a release so that epoch (the fencing token) only ever grows.
CREATE TABLE stream_leases (
    stream_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    show_started_at REAL NOT NULL
);
CREATE INDEX stream_leases_by_node ON stream_leases (node_id);
