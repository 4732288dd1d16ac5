-- The daily reports several nodes make together (TLS-RPT, DMARC
-- aggregates): each node's own counts, and who sends each report.
-- Written by crates/cluster/src/reports.rs.

-- Each node's counts of one (kind, day, domain, key), replaced whole at
-- each sync: a value is the node's total so far, never a delta, so a sync
-- repeated after a crash or an outage counts nothing twice, and counts a
-- node kept while the database was down arrive with its next sync.
-- `kind` is 'tlsrpt' or 'dmarc'; `day` is the UTC day 'YYYY-MM-DD';
-- `key` is what the kind aggregates by (a policy hash, a DMARC row);
-- `value` is the kind's own encoding of the count.
CREATE TABLE IF NOT EXISTS report_counts (
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    node TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, day, domain, node, key)
);

-- One row per report to send: the node holding it (while its lease runs)
-- is the only one sending it; a lapsed lease lets another node take it
-- over; 'done' is never claimed again. `record` is the kind's own send
-- state (report id, destinations and their attempts).
CREATE TABLE IF NOT EXISTS report_claims (
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    holder TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    record BYTEA,
    PRIMARY KEY (kind, day, domain)
);
