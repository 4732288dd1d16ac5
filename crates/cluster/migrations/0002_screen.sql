-- The screen's shared state (greylist entries, cached recipient-probe
-- answers), written by the screen's PostgreSQL store
-- (crates/cluster/src/screen.rs). One row per entry; `tbl` names the
-- table (1 greylist, 2 recipients), `key` and `value` are the screen's
-- bytes, `expires_at` Unix seconds (an entry is live while now < it).
CREATE TABLE IF NOT EXISTS screen_entries (
    tbl SMALLINT NOT NULL,
    key BYTEA NOT NULL,
    value BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tbl, key)
);

-- The sweep finds expired rows by this index, not by a whole-table walk.
CREATE INDEX IF NOT EXISTS screen_entries_expiry ON screen_entries (expires_at);

-- How many rows each table holds, kept by the triggers below, so the
-- capacity bound (a new key refused past it) is checked without a count
-- over a million rows on every write.
CREATE TABLE IF NOT EXISTS screen_counts (
    tbl SMALLINT PRIMARY KEY,
    entries BIGINT NOT NULL
);
INSERT INTO screen_counts (tbl, entries) VALUES (1, 0), (2, 0)
    ON CONFLICT (tbl) DO NOTHING;

-- An insert counts one (an upsert that updates an existing row fires no
-- INSERT trigger, so a rewrite counts nothing).
CREATE OR REPLACE FUNCTION screen_counts_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE screen_counts SET entries = entries + 1 WHERE tbl = NEW.tbl;
    RETURN NULL;
END;
$$;

-- A delete (sweep, clear) subtracts what the statement removed, once per
-- statement rather than once per row.
CREATE OR REPLACE FUNCTION screen_counts_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE screen_counts c SET entries = GREATEST(c.entries - g.n, 0)
    FROM (SELECT tbl, count(*) AS n FROM screen_gone GROUP BY tbl) g
    WHERE c.tbl = g.tbl;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS screen_entries_counted_insert ON screen_entries;
CREATE TRIGGER screen_entries_counted_insert
    AFTER INSERT ON screen_entries
    FOR EACH ROW EXECUTE FUNCTION screen_counts_insert();

DROP TRIGGER IF EXISTS screen_entries_counted_delete ON screen_entries;
CREATE TRIGGER screen_entries_counted_delete
    AFTER DELETE ON screen_entries
    REFERENCING OLD TABLE AS screen_gone
    FOR EACH STATEMENT EXECUTE FUNCTION screen_counts_delete();
