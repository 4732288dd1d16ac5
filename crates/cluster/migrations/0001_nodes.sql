-- The nodes of the cluster and when each was last seen.
CREATE TABLE IF NOT EXISTS portcullis_nodes (
    node TEXT PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL
);
