-- The limits the nodes enforce together (issue 17): rates, AUTH
-- failures and lockouts, DNS-list answers. Written by
-- crates/cluster/src/rates.rs, lockouts.rs and lists.rs. Nodes count
-- locally and exchange these every [cluster] sync_interval; nothing here
-- is read on a connection's critical path.

-- Each node's counts of one client (IPv4 address: 4 octets, IPv6 /64: 8
-- octets) in one minute (Unix ms / 60000), replaced whole at each push:
-- absolute values, so a repeated push counts nothing twice. Minutes
-- before the previous one are swept.
CREATE TABLE IF NOT EXISTS rate_counts (
    node TEXT NOT NULL,
    client BYTEA NOT NULL,
    minute BIGINT NOT NULL,
    connections INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    PRIMARY KEY (node, client, minute)
);
CREATE INDEX IF NOT EXISTS rate_counts_minute ON rate_counts (minute);

-- Each node's failed AUTH attempts per address (scope 1, the address's
-- octets) or user (scope 2, the name's UTF-8) in its window, and its
-- lockout of the key; times on the database's clock. A row with no
-- failure and no lockout is deleted by its node's next push.
CREATE TABLE IF NOT EXISTS auth_failures (
    node TEXT NOT NULL,
    scope SMALLINT NOT NULL,
    key BYTEA NOT NULL,
    failures INTEGER NOT NULL,
    counts_until TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ,
    PRIMARY KEY (node, scope, key)
);
CREATE INDEX IF NOT EXISTS auth_failures_counts_until ON auth_failures (counts_until);

-- What a DNS list answered about a client (its address's octets), until
-- the answer's TTL ends: `listed` with the list's A records (4 octets
-- each), or not listed. A failed lookup is never written.
CREATE TABLE IF NOT EXISTS dnsbl_answers (
    client BYTEA NOT NULL,
    zone TEXT NOT NULL,
    listed BOOLEAN NOT NULL,
    answers BYTEA NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client, zone)
);
CREATE INDEX IF NOT EXISTS dnsbl_answers_expiry ON dnsbl_answers (expires_at);
