//! One module per part of the file: the top-level keys (`top`), then one
//! per TOML section. Each module holds the three steps for its section:
//! the serde model as written (`XFile`, `deny_unknown_fields`, a doc
//! comment per key), the typed runtime value (`X`, defaults in its
//! `Default` where it has one), and `build`, which turns the first into
//! the second and records every problem with its key path.
//!
//! To add a section: write its module here, add its field to
//! `file::Sections` and its name to the match in
//! `Sections::insert`, and add its runtime value to
//! [`crate::Config`] and to `runtime::build`.

pub mod admin;
pub mod cluster;
pub mod delivery;
pub mod dmarc_reports;
pub mod dns;
pub mod dnsbl;
pub mod greylist;
pub mod limits;
pub mod listen;
pub mod log;
pub mod mta_sts;
pub mod publish;
pub mod queue;
pub mod recipients;
pub mod relay;
pub mod routes;
pub mod screen;
pub mod smtp;
pub mod submission;
pub mod tls;
pub mod tlsrpt;
pub mod top;
pub mod verify;
