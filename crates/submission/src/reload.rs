//! The users file as the running server sees it: reloaded when its
//! modification time, size or inode changes, checked at most once per second,
//! on AUTH. A file that fails to parse keeps the previous users (logged).

use crate::file::Users;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the file's metadata is looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A reloading handle on the users file.
#[derive(Debug)]
pub struct UsersDb {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    users: Arc<Users>,
    stamp: Option<(SystemTime, u64, u64)>,
    checked: Option<Instant>,
}

impl UsersDb {
    /// A handle on `path` (none: no users at all). The file is read on the
    /// first [`UsersDb::current`].
    pub fn new(path: Option<PathBuf>) -> UsersDb {
        UsersDb {
            path,
            state: Mutex::new(State {
                users: Arc::new(Users::default()),
                stamp: None,
                checked: None,
            }),
        }
    }

    /// A fixed set of users (tests).
    pub fn fixed(users: Users) -> UsersDb {
        UsersDb {
            path: None,
            state: Mutex::new(State {
                users: Arc::new(users),
                stamp: None,
                checked: None,
            }),
        }
    }

    /// The current users, reloading the file first when it changed (looked
    /// at no more than once per second).
    pub fn current(&self) -> Arc<Users> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return st.users.clone();
        };
        let now = Instant::now();
        if st
            .checked
            .is_some_and(|t| now.duration_since(t) < CHECK_EVERY)
        {
            return st.users.clone();
        }
        st.checked = Some(now);
        let stamp = std::fs::metadata(path).ok().map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                inode(&m),
            )
        });
        if stamp == st.stamp && (stamp.is_some() || st.users.is_empty()) {
            return st.users.clone();
        }
        match Users::load(path, true) {
            Ok(users) => {
                tracing::info!(path = %path.display(), users = users.len(), "users file loaded");
                st.users = Arc::new(users);
                st.stamp = stamp;
            }
            Err(e) => {
                tracing::warn!(error = %e, "users file not reloaded; keeping the previous users");
                st.stamp = stamp;
            }
        }
        st.users.clone()
    }
}

/// The inode: `portcullis user` replaces the file by rename, so a new
/// inode marks a change even within the mtime's resolution.
#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let db = UsersDb::new(Some(path.clone()));
        assert!(db.current().is_empty());
        let mut users = Users::default();
        users.add("alice", "pw").unwrap();
        users.save(&path).unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert!(db.current().contains("alice"));
        // A broken file keeps the previous users.
        std::fs::write(&path, "garbage\n").unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert!(db.current().contains("alice"));
        users.add("bob", "pw").unwrap();
        users.save(&path).unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert!(db.current().contains("bob"));
    }
}
