//! Pinned policies: a policy for a remote domain that wins over what DNS and
//! the policy host say.
//!
//! Two sources: files `<domain>.txt` in the policy format in a pins
//! directory, loaded at start (a defence for important partners before the
//! first fetch: MTA-STS is otherwise trust on first use), and operator pins
//! set through the admin CLI with an expiry and a reason, kept in the
//! engine's [`PolicyStore`](crate::PolicyStore) (sled,
//! [`TreeName::MtaStsPins`], on a single node; the cluster's database in
//! cluster mode) so they survive restarts (the escape hatch for
//! a partner whose enforcement breaks, and the way to require TLS for a
//! domain without a policy). An operator pin wins over a file pin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use portcullis_store::{Store, StoreError, Tree, TreeName};
use portcullis_types::Domain;
use serde::{Deserialize, Serialize};

use crate::{CachedPolicy, Mode, MxPattern, Policy, StsError};

/// The `id` a pinned policy carries where a fetched one has the TXT id.
pub const PIN_ID: &str = "pinned";

/// Where a pin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinSource {
    /// A file in the pins directory.
    File(PathBuf),
    /// `portcullis policy pin`.
    Operator,
}

/// A pinned policy for one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The policy domain.
    pub domain: Domain,
    /// The mode to apply.
    pub mode: Mode,
    /// The MX patterns to allow (may be empty only for mode `none`).
    pub mx: Vec<MxPattern>,
    /// Unix seconds until which the pin wins; `None` for a file pin, which
    /// lasts as long as its file.
    pub until: Option<u64>,
    /// Why it was pinned (shown by the CLI and in the logs).
    pub reason: String,
    /// Where it came from.
    pub source: PinSource,
    /// When it was set or loaded (Unix seconds).
    pub created_at: u64,
}

impl Pin {
    /// True while the pin wins over DNS.
    pub fn is_active(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }

    /// The pin as a policy in force, so that delivery handles pinned and
    /// fetched policies alike (id [`PIN_ID`], text in the §3.2 format).
    pub fn to_cached(&self) -> CachedPolicy {
        let expires_at = self.until.unwrap_or(u64::MAX);
        let max_age = expires_at.saturating_sub(self.created_at);
        let text = Policy::render(self.mode, &self.mx, max_age.min(crate::MAX_MAX_AGE));
        CachedPolicy {
            domain: self.domain.clone(),
            id: PIN_ID.to_owned(),
            text,
            mode: self.mode,
            mx: self.mx.clone(),
            max_age,
            fetched_at: self.created_at,
            expires_at,
            last_error: None,
            last_checked: self.created_at,
        }
    }
}

/// Checks the parts of a pin: mode `enforce` and `testing` need at least
/// one MX pattern.
pub(crate) fn check_pin_parts(mode: Mode, mx: &[MxPattern]) -> Result<(), String> {
    if mx.is_empty() && mode != Mode::None {
        return Err(format!(
            "a pin in mode {mode} needs at least one mx pattern"
        ));
    }
    Ok(())
}

/// Loads every `<domain>.txt` in `dir` as a pin (files with other names are
/// ignored; a missing directory holds no pins). Each file must be a valid
/// §3.2 policy and its name a valid domain; the first bad file is the
/// error, so that a broken pin stops the start rather than silently not
/// protecting.
pub fn load_pins_dir(dir: &Path, now: u64) -> Result<Vec<Pin>, StsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StsError::PinFile {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StsError::PinFile {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "txt") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut pins = Vec::new();
    for path in paths {
        pins.push(load_pin_file(&path, now)?);
    }
    Ok(pins)
}

fn load_pin_file(path: &Path, now: u64) -> Result<Pin, StsError> {
    let bad = |reason: String| StsError::PinFile {
        path: path.to_path_buf(),
        reason,
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| bad("file name is not UTF-8".to_owned()))?;
    let domain = Domain::parse(stem).map_err(|e| bad(format!("{stem:?} is not a domain: {e}")))?;
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let policy = Policy::parse(&text).map_err(|e| bad(e.to_string()))?;
    Ok(Pin {
        domain,
        mode: policy.mode,
        mx: policy.mx,
        until: None,
        reason: format!("pinned by {}", path.display()),
        source: PinSource::File(path.to_path_buf()),
        created_at: now,
    })
}

/// The file pins of this node, in memory (each node loads its own
/// directory at start).
#[derive(Clone, Default)]
pub(crate) struct FilePins(Arc<RwLock<HashMap<Domain, Pin>>>);

impl FilePins {
    /// Replaces the file pins.
    pub(crate) fn set(&self, pins: Vec<Pin>) {
        let map = pins.into_iter().map(|p| (p.domain.clone(), p)).collect();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    /// The file pin of `domain` if active at `now`.
    pub(crate) fn active(&self, domain: &Domain, now: u64) -> Option<Pin> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
            .filter(|p| p.is_active(now))
            .cloned()
    }

    /// Every file pin, sorted by domain.
    pub(crate) fn list(&self) -> Vec<Pin> {
        let files = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut pins: Vec<Pin> = files.values().cloned().collect();
        pins.sort_by(|a, b| a.domain.cmp(&b.domain));
        pins
    }
}

/// Operator pins in sled ([`TreeName::MtaStsPins`]), one JSON value per
/// domain, written durably.
#[derive(Clone)]
pub(crate) struct SledPins {
    store: Store,
    tree: Tree,
}

const TREE: &str = "mta_sts.pins";

impl SledPins {
    pub(crate) fn open(store: &Store) -> Result<SledPins, StsError> {
        Ok(SledPins {
            store: store.clone(),
            tree: store.tree(TreeName::MtaStsPins)?,
        })
    }

    /// The operator pin of `domain`, active or not.
    pub(crate) fn get(&self, domain: &Domain) -> Result<Option<Pin>, StsError> {
        match self.tree.get(domain.as_str()).map_err(StoreError::from)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn put(&self, pin: &Pin) -> Result<(), StsError> {
        let key = pin.domain.as_str();
        crate::stored::put_stored(&self.store, &self.tree, TREE, key, pin).await
    }

    pub(crate) async fn remove(&self, domain: &Domain) -> Result<bool, StsError> {
        crate::stored::remove_stored(&self.store, &self.tree, domain.as_str()).await
    }

    /// Every operator pin, active or expired, sorted by domain.
    pub(crate) fn list(&self) -> Result<Vec<Pin>, StsError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (_, value) = item.map_err(StoreError::from)?;
            out.push(decode(&value)?);
        }
        Ok(out)
    }
}

fn decode(bytes: &[u8]) -> Result<Pin, StsError> {
    crate::stored::decode_stored(TREE, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_dir_loads_txt_files_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Partner.Example.txt"),
            "version: STSv1\nmode: enforce\nmx: *.partner.example\nmax_age: 86400\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a pin").unwrap();
        let pins = load_pins_dir(dir.path(), 1000).unwrap();
        assert_eq!(pins.len(), 1);
        let pin = &pins[0];
        assert_eq!(pin.domain.as_str(), "partner.example");
        assert_eq!(pin.mode, Mode::Enforce);
        assert!(pin.is_active(u64::MAX - 1));
        let cached = pin.to_cached();
        assert_eq!(cached.id, PIN_ID);
        assert!(cached.matches_mx("mx1.partner.example"));
        assert!(Policy::parse(&cached.text).is_ok());
    }

    #[test]
    fn missing_dir_has_no_pins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            load_pins_dir(&dir.path().join("nope"), 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_pin_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.example.txt");
        std::fs::write(&path, "version: STSv1\nmode: enforce\nmax_age: 5\n").unwrap();
        match load_pins_dir(dir.path(), 0) {
            Err(StsError::PinFile { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(reason.contains("mx"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("not a domain.txt"),
            "version: STSv1\nmode: none\nmax_age: 5\n",
        )
        .unwrap();
        assert!(matches!(
            load_pins_dir(dir.path(), 0),
            Err(StsError::PinFile { .. })
        ));
    }

    #[test]
    fn operator_pin_expires() {
        let pin = Pin {
            domain: Domain::parse("a.example").unwrap(),
            mode: Mode::None,
            mx: Vec::new(),
            until: Some(100),
            reason: "broken partner".into(),
            source: PinSource::Operator,
            created_at: 0,
        };
        assert!(pin.is_active(99));
        assert!(!pin.is_active(100));
        assert_eq!(pin.to_cached().expires_at, 100);
    }
}
