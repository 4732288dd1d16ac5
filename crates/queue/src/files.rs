//! The data of large messages, one file per message beside the store.
//!
//! Why files and not store values: sled 0.34 keeps every value written in
//! memory until its node is paged out, whatever its cache capacity, so 200
//! clients sending 25 MiB each held over a gigabyte of written body chunks
//! (measured with heaptrack; README, Benchmark). A file's written pages
//! belong to the kernel's page cache, which the kernel writes back and
//! reclaims on its own; the process keeps only the file descriptor.
//!
//! A file is named by its queue id (16 hex digits, as `queue list` shows
//! it) and holds what a [`crate::Spool`] wrote: everything of the message
//! after its header section, as received. It is created with `O_EXCL`,
//! never changed after the commit, and removed after its record. The
//! commit makes it durable (fsync of the file and of the directory entry)
//! before the record that names it is written: a record never points at a
//! file a crash could lose. A file without a record (a crash before the
//! 250, or between removing a record and its file) is removed at open.

use crate::QueueError;
use portcullis_store::StoreError;
use portcullis_types::QueueId;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the directory, inside the store's directory.
pub(crate) const DIR_NAME: &str = "bodies";

/// The directory of message files. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct BodyFiles {
    dir: Arc<PathBuf>,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> QueueError {
    QueueError::Store(StoreError::Io(format!("{what} {}: {e}", path.display())))
}

impl BodyFiles {
    /// Opens (creating, mode 0700) the directory `dir`.
    pub(crate) fn open(dir: PathBuf) -> Result<BodyFiles, QueueError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error("cannot create the message file directory", &dir, e))?;
        Ok(BodyFiles { dir: Arc::new(dir) })
    }

    /// The file of message `id`.
    pub(crate) fn path(&self, id: QueueId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Creates the file of `id` for writing (mode 0600). An existing file
    /// is never reused or truncated: [`QueueError::Exists`] then.
    pub(crate) fn create(&self, id: QueueId) -> Result<File, QueueError> {
        let path = self.path(id);
        OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => QueueError::Exists(id),
                _ => io_error("cannot create the message file", &path, e),
            })
    }

    /// Opens the file of `id` for reading; `None` when there is none. An
    /// open file stays readable whole even if the message is removed
    /// meanwhile (the name goes, the data stays until it is closed).
    pub(crate) fn open_read(&self, id: QueueId) -> Result<Option<File>, QueueError> {
        let path = self.path(id);
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("cannot open the message file", &path, e)),
        }
    }

    /// Removes the file of `id`, if any.
    pub(crate) fn remove(&self, id: QueueId) -> Result<(), QueueError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("cannot remove the message file", &path, e)),
        }
    }

    /// Makes the directory's entries durable (a new file's name survives a
    /// crash only once its directory is synced).
    pub(crate) fn sync_dir(&self) -> io::Result<()> {
        File::open(self.dir.as_path())?.sync_all()
    }

    /// Removes every message file for which `queued` is false, and every
    /// entry whose name is not a queue id (a leftover of nothing we write);
    /// returns how many were removed.
    pub(crate) fn sweep(
        &self,
        mut queued: impl FnMut(QueueId) -> Result<bool, QueueError>,
    ) -> Result<usize, QueueError> {
        let entries = std::fs::read_dir(self.dir.as_path())
            .map_err(|e| io_error("cannot list the message files in", &self.dir, e))?;
        let mut swept = 0;
        for entry in entries {
            let entry =
                entry.map_err(|e| io_error("cannot list the message files in", &self.dir, e))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .filter(|s| s.len() == 16)
                .and_then(|s| s.parse::<QueueId>().ok());
            let keep = match id {
                Some(id) => queued(id)?,
                None => false,
            };
            if keep {
                continue;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tracing::warn!(path = %path.display(), "unexpected directory among the message files; left alone");
                continue;
            }
            std::fs::remove_file(&path)
                .map_err(|e| io_error("cannot remove the orphan message file", &path, e))?;
            swept += 1;
        }
        Ok(swept)
    }
}
