-- The MTA-STS policy cache and operator pins several nodes share, and the
-- election of the one node that fetches a domain's policy. Written by
-- crates/cluster/src/policy.rs. Times are Unix seconds (BIGINT) where they
-- compare with a policy's own times, timestamptz (the database's clock)
-- for leases.

-- One cached policy per domain; `value` is the policy's JSON (the same
-- record a single node keeps in sled). A row is only ever replaced by a
-- policy fetched no earlier (`fetched_at`), and never by one fetched
-- before the domain was evicted (`policy_evictions`).
CREATE TABLE IF NOT EXISTS policy_cache (
    domain TEXT PRIMARY KEY,
    fetched_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    value TEXT NOT NULL
);

-- An operator's eviction (`policy evict`): a policy fetched before it (a
-- node's copy kept through an outage, a fetch in flight) must not bring
-- the evicted policy back. Purged once older than the longest max_age.
CREATE TABLE IF NOT EXISTS policy_evictions (
    domain TEXT PRIMARY KEY,
    evicted_at BIGINT NOT NULL
);

-- Operator pins (`policy pin`); `value` is the pin's JSON. The table is
-- the truth while the database answers: a pin removed on one node stops
-- governing every node.
CREATE TABLE IF NOT EXISTS policy_pins (
    domain TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Who fetches a domain's policy now: the holder until `until`, after
-- which (a crashed fetcher) another node may take it over.
CREATE TABLE IF NOT EXISTS policy_fetch_leases (
    domain TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL
);
