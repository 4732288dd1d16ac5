//! The recipients files of one configuration, each watched on disk: on use,
//! at most once per [`RECHECK`], its size, modification time and inode are
//! compared with the version in force, and a changed file is read again
//! (off the async threads). A broken new version keeps the old one in force
//! and is logged once; so does a file that vanished.

use super::FileError;
use super::list::{AddressList, MAX_FILE_BYTES};
use portcullis_types::{Address, Domain};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How often a file is checked for a change, at most: an edit is in force
/// within about this long, without a reload.
pub const RECHECK: Duration = Duration::from_secs(1);

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: inode(meta),
        }
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// The version in force and what was last seen on disk.
struct Loaded {
    list: Arc<AddressList>,
    /// The last version seen (in force, or refused): a refused version is
    /// not read (nor logged) again until it changes.
    seen: Option<Stamp>,
    checked: Instant,
}

/// One domain's file.
struct Watched {
    domain: Domain,
    path: PathBuf,
    state: Mutex<Loaded>,
}

impl Watched {
    fn state(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True (and the check time reset) when the file is due for a check.
    fn due(&self, every: Duration) -> bool {
        let mut state = self.state();
        if state.checked.elapsed() < every {
            return false;
        }
        state.checked = Instant::now();
        true
    }

    /// Compares the file on disk with the version seen, and reads a
    /// changed one. Blocking: run off the async threads.
    fn refresh(&self) {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(Stamp::of(&meta)),
            Err(e) => {
                if self.state().seen.take().is_some() {
                    warn!(domain = %self.domain, path = %self.path.display(), error = %e,
                        "recipients file unreadable; the addresses loaded before stay in force");
                }
                return;
            }
        };
        if stamp == self.state().seen {
            return;
        }
        match read(&self.domain, &self.path) {
            Ok((list, stamp)) => {
                info!(domain = %self.domain, path = %self.path.display(), addresses = list.addresses(),
                    "recipients file changed; new version in force");
                let mut state = self.state();
                state.list = Arc::new(list);
                state.seen = Some(stamp);
            }
            Err(e) => {
                warn!(domain = %self.domain, error = %e,
                    "recipients file changed but is refused; the previous version stays in force");
                self.state().seen = stamp;
            }
        }
    }
}

/// The recipients files of one configuration, each re-read when it
/// changes on disk (a broken new version keeps the old one in force and
/// is logged).
pub struct RecipientFiles {
    files: BTreeMap<Domain, Arc<Watched>>,
    recheck: Duration,
}

impl RecipientFiles {
    /// Reads every file of `[recipients] files`; the first file that cannot
    /// be read, or has a bad line, is the error (with its path and line).
    pub fn load(files: &BTreeMap<Domain, PathBuf>) -> Result<RecipientFiles, FileError> {
        let mut watched = BTreeMap::new();
        for (domain, path) in files {
            let (list, stamp) = read(domain, path)?;
            let state = Loaded {
                list: Arc::new(list),
                seen: Some(stamp),
                checked: Instant::now(),
            };
            let file = Watched {
                domain: domain.clone(),
                path: path.clone(),
                state: Mutex::new(state),
            };
            watched.insert(domain.clone(), Arc::new(file));
        }
        Ok(RecipientFiles {
            files: watched,
            recheck: RECHECK,
        })
    }

    /// Checks the files for a change at most once per `every` instead of
    /// once per [`RECHECK`] (`Duration::ZERO`: on every use).
    pub fn recheck_every(mut self, every: Duration) -> RecipientFiles {
        self.recheck = every;
        self
    }

    /// True when `domain` has a file (its recipients are never probed).
    pub fn covers(&self, domain: &Domain) -> bool {
        self.files.contains_key(domain)
    }

    /// Whether `address` is listed in its domain's file, as the file is on
    /// disk now (checked at most once per [`RECHECK`]); `None` when its
    /// domain has no file.
    pub async fn lookup(&self, address: &Address) -> Option<bool> {
        let file = self.files.get(&address.domain)?;
        if file.due(self.recheck) {
            let watched = Arc::clone(file);
            if let Err(e) = tokio::task::spawn_blocking(move || watched.refresh()).await {
                warn!(domain = %address.domain, error = %e, "recipients file check failed");
            }
        }
        let list = Arc::clone(&file.state().list);
        Some(list.contains(&address.local))
    }
}

/// Reads and parses `path` for `domain`, with the stamp of what was read.
fn read(domain: &Domain, path: &Path) -> Result<(AddressList, Stamp), FileError> {
    let whole = |message: String| FileError {
        path: path.display().to_string(),
        line: 0,
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| whole(e.to_string()))?;
    let meta = file.metadata().map_err(|e| whole(e.to_string()))?;
    if !meta.is_file() {
        return Err(whole("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    // `take` bounds the read even if the file grows after the check.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(whole(format!("larger than {MAX_FILE_BYTES} octets")));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return Err(FileError {
                path: path.display().to_string(),
                line,
                message: "not UTF-8".to_owned(),
            });
        }
    };
    let list = AddressList::parse(&text, domain, path)?;
    Ok((list, Stamp::of(&meta)))
}
