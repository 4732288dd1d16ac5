//! The shared schema, versioned. A migration is never edited once
//! released: a change is a new version. Each is one SQL text run in one
//! transaction; the versions applied are in `portcullis_schema`.

/// One version of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version, from 1, without gaps.
    pub version: u32,
    /// A short name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "nodes",
        sql: include_str!("../migrations/0001_nodes.sql"),
    },
    Migration {
        version: 2,
        name: "screen",
        sql: include_str!("../migrations/0002_screen.sql"),
    },
    Migration {
        version: 3,
        name: "reports",
        sql: include_str!("../migrations/0003_reports.sql"),
    },
    Migration {
        version: 4,
        name: "policy",
        sql: include_str!("../migrations/0004_policy.sql"),
    },
    Migration {
        version: 5,
        name: "limits",
        sql: include_str!("../migrations/0005_limits.sql"),
    },
];

/// The newest version this binary knows.
pub fn latest() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}
