//! The top-level keys: `hostname` and `data_dir`.

use crate::check::Checker;
use portcullis_types::Domain;
use std::path::PathBuf;

/// `hostname`: our name in the greeting, EHLO and Received; absent: the
/// machine's name (`system_hostname`). A written one must be fully
/// qualified (or `localhost`).
pub(crate) fn hostname(written: Option<String>, system_hostname: &str, c: &mut Checker) -> String {
    match written {
        Some(h) => {
            if Domain::parse(&h).is_err() || !h.contains('.') && h != "localhost" {
                c.fail(
                    "hostname",
                    format!("{h:?} is not a fully qualified host name"),
                );
            }
            h
        }
        None => system_hostname.to_string(),
    }
}

/// `data_dir`: where the store, generated certificates and the admin
/// socket live (default `data`, relative to the working directory).
pub(crate) fn data_dir(written: Option<String>) -> PathBuf {
    PathBuf::from(written.unwrap_or_else(|| "data".into()))
}
