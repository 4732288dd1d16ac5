//! `cluster migrate` and the cluster block of `status`. Node names come
//! from other nodes' configs and errors from the database: escaped before
//! they reach the terminal.

use super::text::escape_terminal;
use portcullis_admin::{ClusterMigrated, ClusterShow, render_table};

/// `cluster migrate` without `--json`: one row per version.
pub fn migrated(m: &ClusterMigrated) -> String {
    let rows: Vec<Vec<String>> = m
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                escape_terminal(&v.name),
                if v.applied_now {
                    "applied now"
                } else {
                    "already applied"
                }
                .to_owned(),
            ]
        })
        .collect();
    let now = m.versions.iter().filter(|v| v.applied_now).count();
    format!(
        "{}\n{now} applied now, {} already",
        render_table(&["VERSION", "NAME", "STATE"], &rows),
        m.versions.len() - now
    )
}

/// The cluster rows of `status`: node, database, reachable (or the
/// error), schema version, one row per node seen.
pub fn status_rows(c: &ClusterShow) -> Vec<Vec<String>> {
    let mut rows = vec![
        vec!["cluster node".into(), escape_terminal(&c.node)],
        vec!["cluster database".into(), escape_terminal(&c.database)],
        vec![
            "cluster database state".into(),
            match (&c.reachable, &c.error) {
                (true, _) => "reachable".into(),
                (false, Some(e)) => format!("unreachable: {}", escape_terminal(e)),
                (false, None) => "unreachable".into(),
            },
        ],
        vec![
            "cluster schema".into(),
            if c.reachable {
                format!("version {}", c.schema_version)
            } else {
                "unknown".into()
            },
        ],
    ];
    if c.reachable && c.nodes.is_empty() {
        rows.push(vec![
            "cluster nodes".into(),
            "none seen in the last minute".into(),
        ]);
    }
    for n in &c.nodes {
        rows.push(vec![
            "cluster node seen".into(),
            format!("{} ({}s ago)", escape_terminal(&n.node), n.seconds_ago),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_admin::{ClusterNode, ClusterVersion};

    #[test]
    fn migrate_names_each_version_and_its_state() {
        let text = migrated(&ClusterMigrated {
            versions: vec![
                ClusterVersion {
                    version: 1,
                    name: "nodes".into(),
                    applied_now: false,
                },
                ClusterVersion {
                    version: 2,
                    name: "screen".into(),
                    applied_now: true,
                },
            ],
        });
        assert!(text.contains("already applied"), "{text}");
        assert!(text.contains("applied now"), "{text}");
        assert!(text.ends_with("1 applied now, 1 already"), "{text}");
    }

    #[test]
    fn status_shows_the_error_or_the_nodes() {
        let mut c = ClusterShow {
            node: "a".into(),
            database: "postgresql://p@db/p".into(),
            reachable: false,
            error: Some("database unreachable: \u{1b}[2J refused".into()),
            schema_version: 0,
            nodes: Vec::new(),
        };
        let rows = status_rows(&c);
        let text = format!("{rows:?}");
        assert!(
            text.contains("unreachable: database unreachable: \\\\x1b[2J"),
            "{text}"
        );
        c.reachable = true;
        c.error = None;
        c.schema_version = 2;
        c.nodes = vec![ClusterNode {
            node: "b".into(),
            seconds_ago: 3,
        }];
        let text = format!("{:?}", status_rows(&c));
        assert!(
            text.contains("reachable") && text.contains("version 2"),
            "{text}"
        );
        assert!(text.contains("b (3s ago)"), "{text}");
    }
}
