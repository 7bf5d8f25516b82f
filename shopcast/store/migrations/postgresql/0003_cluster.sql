-- The cluster: every node's heartbeat row and every live stream's owner (a lease). Times are
-- the database's clock in epoch seconds (cluster_now()), so the nodes' clocks do not matter.
CREATE FUNCTION cluster_now() RETURNS DOUBLE PRECISION
    LANGUAGE sql STABLE AS 'SELECT EXTRACT(EPOCH FROM now())::DOUBLE PRECISION';
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,               -- "origin" or "edge"
    http_url TEXT NOT NULL,
    rtmp_url TEXT NOT NULL,
    capacity DOUBLE PRECISION NOT NULL,
    load DOUBLE PRECISION NOT NULL,
    viewers TEXT NOT NULL DEFAULT '{}',  -- edges: {"<stream id>": distinct viewers}
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
-- One row per stream ever leased: the row stays after a release so that epoch (the fencing
-- token) only ever grows.
CREATE TABLE stream_leases (
    stream_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    show_started_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX stream_leases_by_node ON stream_leases (node_id);
