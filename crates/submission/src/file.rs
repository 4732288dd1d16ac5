//! The users file: parse with line numbers, edit, write atomically.

use crate::app;
use crate::password::{HashMemory, hash_password, is_argon2id, verify_password_in};
use crate::scram::{DEFAULT_ITERATIONS, ScramSecret};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Why the users file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file (empty when parsing text).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An edit was refused (bad name, user exists, user missing).
    #[error("{0}")]
    Edit(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A comment or blank line, kept as written.
    Other(String),
    /// A user, the PHC string of their password and its SCRAM-SHA-256
    /// secret (none for users made before SCRAM, until `user passwd`).
    User {
        name: String,
        hash: String,
        scram: Option<String>,
    },
    /// An app password of a user: a label, the digest and the day it was
    /// made.
    App {
        name: String,
        label: String,
        digest: String,
        created: String,
    },
}

/// Which credential a successful login used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The user's password.
    Password,
    /// The app password with this label.
    App(String),
}

/// One app password, as `user list` shows it (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPassword {
    /// The user it belongs to.
    pub user: String,
    /// Its label.
    pub label: String,
    /// The day it was made (`YYYY-MM-DD`).
    pub created: String,
}

/// The parsed users file, comments kept so that edits rewrite it faithfully.
///
/// Lines: `name:<argon2id PHC>[:<SCRAM-SHA-256 secret>]` for a user and
/// `name:app:<label>:<digest>:<YYYY-MM-DD>` for an app password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    lines: Vec<Line>,
}

/// Checks a user name: 1 to 64 characters of `A-Z a-z 0-9 . _ - + @`, not
/// starting with `-` or `.` (so it can be neither an option nor hidden).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("invalid user name {name:?}: 1 to 64 characters"));
    }
    if name.starts_with(['-', '.']) {
        return Err(format!(
            "invalid user name {name:?}: must not start with '-' or '.'"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'))
    {
        return Err(format!(
            "invalid user name {name:?}: only letters, digits and . _ - + @"
        ));
    }
    Ok(())
}

/// Checks an app password label: 1 to 32 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_label(label: &str) -> Result<(), String> {
    if label.is_empty()
        || label.len() > 32
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "invalid app password label {label:?}: 1 to 32 letters, digits, . _ -"
        ));
    }
    Ok(())
}

/// The argon2id hash and the SCRAM-SHA-256 secret of a new password.
fn hashes(password: &str) -> Result<(String, String), UsersError> {
    let hash = hash_password(password).map_err(UsersError::Edit)?;
    let scram = ScramSecret::derive(password, DEFAULT_ITERATIONS)
        .map_err(|e| UsersError::Edit(format!("SCRAM secret: {e}")))?;
    Ok((hash, scram.to_string()))
}

/// A hash that is verified for unknown users, so that an unknown name costs
/// as much time as a wrong password.
// A failure leaves an empty hash, which never verifies: unknown users
// are still refused, only the timing equalisation would be lost.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash_password("portcullis-dummy").unwrap_or_default());

impl Users {
    /// Parses the text of a users file; errors name the line.
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut users = Users::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| UsersError::Parse {
                path: PathBuf::new(),
                line: i + 1,
                message,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                // A CR left at the end (`\r\r\n`, or `\r` at the end of the
                // file) would be written back as a CRLF line end and read as
                // one: drop it, so that a rewrite is a fixed point.
                users
                    .lines
                    .push(Line::Other(raw.trim_end_matches('\r').to_string()));
                continue;
            }
            let fields: Vec<&str> = trimmed.split(':').collect();
            let name = fields[0];
            validate_name(name).map_err(err)?;
            if fields.get(1) == Some(&"app") {
                let [_, _, label, digest, created] = fields[..] else {
                    return Err(err("expected name:app:label:digest:date".into()));
                };
                validate_label(label).map_err(err)?;
                if !app::is_digest(digest) {
                    return Err(err(format!("app password {label:?}: malformed digest")));
                }
                if !users.contains(name) {
                    return Err(err(format!(
                        "app password {label:?} of {name:?} before (or without) the user's line"
                    )));
                }
                if users.apps(name).any(|a| a.label == label) {
                    return Err(err(format!(
                        "app password {label:?} of {name:?} appears twice"
                    )));
                }
                users.lines.push(Line::App {
                    name: name.to_string(),
                    label: label.to_string(),
                    digest: digest.to_string(),
                    created: created.to_string(),
                });
                continue;
            }
            let (hash, scram) = match fields[..] {
                [_, hash] => (hash, None),
                [_, hash, scram] => (hash, Some(scram)),
                _ => return Err(err("expected name:argon2id-hash[:scram-secret]".into())),
            };
            if !is_argon2id(hash) {
                return Err(err(format!(
                    "the hash of {name:?} is not an argon2id PHC string"
                )));
            }
            if let Some(secret) = scram
                && let Err(e) = ScramSecret::parse(secret)
            {
                return Err(err(format!("the SCRAM secret of {name:?}: {e}")));
            }
            if users.contains(name) {
                return Err(err(format!("user {name:?} appears twice")));
            }
            users.lines.push(Line::User {
                name: name.to_string(),
                hash: hash.to_string(),
                scram: scram.map(str::to_string),
            });
        }
        Ok(users)
    }

    /// Loads the file; a missing file is an empty users list when
    /// `missing_ok`.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Users, UsersError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Users::default());
            }
            Err(source) => {
                return Err(UsersError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Users::parse(&text).map_err(|e| match e {
            UsersError::Parse { line, message, .. } => UsersError::Parse {
                path: path.to_path_buf(),
                line,
                message,
            },
            other => other,
        })
    }

    /// The user names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            Line::User { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    /// The app passwords of `name` (all users' with `None`), in file order.
    pub fn app_passwords<'a>(
        &'a self,
        name: Option<&'a str>,
    ) -> impl Iterator<Item = AppPassword> + 'a {
        self.lines.iter().filter_map(move |l| match l {
            Line::App {
                name: n,
                label,
                created,
                ..
            } if name.is_none_or(|want| want == n) => Some(AppPassword {
                user: n.clone(),
                label: label.clone(),
                created: created.clone(),
            }),
            _ => None,
        })
    }

    fn apps<'a>(&'a self, name: &'a str) -> impl Iterator<Item = AppPassword> + 'a {
        self.app_passwords(Some(name))
    }

    /// True when `name` has a SCRAM-SHA-256 secret.
    pub fn has_scram(&self, name: &str) -> bool {
        self.scram_secret(name).is_some()
    }

    /// The SCRAM-SHA-256 secret of `name` (none for an unknown user or one
    /// whose password was set before SCRAM existed).
    pub fn scram_secret(&self, name: &str) -> Option<ScramSecret> {
        self.lines.iter().find_map(|l| match l {
            Line::User {
                name: n,
                scram: Some(secret),
                ..
            } if n == name => ScramSecret::parse(secret).ok(),
            _ => None,
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.names().count()
    }

    /// True with no users.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            Line::User { name: n, hash, .. } if n == name => Some(hash.as_str()),
            _ => None,
        })
    }

    /// True when `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Which of `name`'s credentials `password` is: one of their app
    /// passwords (checked first: a digest comparison) or their password
    /// (argon2, slow: call this off the async runtime). Unknown users take
    /// as long as a wrong password.
    pub fn verify(&self, name: &str, password: &str) -> Option<Credential> {
        self.verify_in(name, password, &mut HashMemory::new())
    }

    /// [`Users::verify`] with argon2's working memory taken from `memory`
    /// (reused across checks: see [`HashMemory`]).
    pub fn verify_in(
        &self,
        name: &str,
        password: &str,
        memory: &mut HashMemory,
    ) -> Option<Credential> {
        let Some(hash) = self.get(name) else {
            let _ = verify_password_in(&DUMMY, password, memory);
            return None;
        };
        let candidate = app::digest(password);
        for line in &self.lines {
            if let Line::App {
                name: n,
                label,
                digest,
                ..
            } = line
                && n == name
                && app::digest_matches(digest, &candidate)
            {
                return Some(Credential::App(label.clone()));
            }
        }
        verify_password_in(hash, password, memory).then_some(Credential::Password)
    }

    /// Adds a user with an argon2id hash and a SCRAM-SHA-256 secret of
    /// `password`; fails when the name is invalid or taken.
    pub fn add(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        validate_name(name).map_err(UsersError::Edit)?;
        if self.contains(name) {
            return Err(UsersError::Edit(format!("user {name:?} already exists")));
        }
        let (hash, scram) = hashes(password)?;
        self.lines.push(Line::User {
            name: name.to_string(),
            hash,
            scram: Some(scram),
        });
        Ok(())
    }

    /// Sets a user's password (hash and SCRAM secret); fails when the user
    /// does not exist. App passwords stay.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        if !self.contains(name) {
            return Err(UsersError::Edit(format!("no user {name:?}")));
        }
        let (new_hash, new_scram) = hashes(password)?;
        for line in &mut self.lines {
            if let Line::User {
                name: n,
                hash,
                scram,
            } = line
                && n == name
            {
                *hash = new_hash;
                *scram = Some(new_scram);
                break;
            }
        }
        Ok(())
    }

    /// Removes a user and their app passwords; fails when the user does
    /// not exist.
    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        if !self.contains(name) {
            return Err(UsersError::Edit(format!("no user {name:?}")));
        }
        self.lines.retain(|l| match l {
            Line::User { name: n, .. } | Line::App { name: n, .. } => n != name,
            Line::Other(_) => true,
        });
        Ok(())
    }

    /// Makes a new app password for `name` labelled `label` (made on
    /// `created`, `YYYY-MM-DD`) and returns it: it is shown once and only
    /// its digest is kept.
    pub fn add_app_password(
        &mut self,
        name: &str,
        label: &str,
        created: &str,
    ) -> Result<String, UsersError> {
        if !self.contains(name) {
            return Err(UsersError::Edit(format!("no user {name:?}")));
        }
        validate_label(label).map_err(UsersError::Edit)?;
        if self.apps(name).any(|a| a.label == label) {
            return Err(UsersError::Edit(format!(
                "{name:?} already has an app password labelled {label:?}"
            )));
        }
        let password = app::generate();
        let line = Line::App {
            name: name.to_string(),
            label: label.to_string(),
            digest: app::stored_digest(&password),
            created: created.to_string(),
        };
        // Kept after the user's other lines, so the file reads by user.
        let at = self
            .lines
            .iter()
            .rposition(|l| {
                matches!(l, Line::User { name: n, .. } | Line::App { name: n, .. } if n == name)
            })
            .map_or(self.lines.len(), |i| i + 1);
        self.lines.insert(at, line);
        Ok(password)
    }

    /// Revokes the app password `label` of `name`.
    pub fn remove_app_password(&mut self, name: &str, label: &str) -> Result<(), UsersError> {
        let before = self.lines.len();
        self.lines.retain(
            |l| !matches!(l, Line::App { name: n, label: l2, .. } if n == name && l2 == label),
        );
        if self.lines.len() == before {
            return Err(UsersError::Edit(format!(
                "{name:?} has no app password labelled {label:?}"
            )));
        }
        Ok(())
    }

    /// Writes the file atomically: a temporary file in the same directory,
    /// fsynced, renamed over `path`, directory fsynced.
    ///
    /// The server must go on reading the file whoever edits it (an admin
    /// running `portcullis user` as root, say), so an existing file keeps
    /// its owner, group and mode; a new one gets the directory's group and
    /// mode 0640 (0600 when that group cannot be given). Never readable by
    /// others.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let io = |source| UsersError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            file_name.unwrap_or_else(|| "users".into()),
            std::process::id()
        ));
        let result = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            #[cfg(unix)]
            keep_ownership(&f, path, &dir)?;
            f.write_all(self.to_string().as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

/// Gives the new file `f` the owner, group and mode of the file at `path`
/// (or, for a new file, the group of `dir` and 0640). Failing to keep an
/// existing owner is an error: the server might no longer read the file.
#[cfg(unix)]
fn keep_ownership(f: &std::fs::File, path: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, fchown};
    match std::fs::metadata(path) {
        Ok(old) => {
            if old.uid() != f.metadata()?.uid() || old.gid() != f.metadata()?.gid() {
                fchown(f, Some(old.uid()), Some(old.gid())).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot keep the file's owner {}:{} ({e}); run as that user or root",
                            old.uid(),
                            old.gid()
                        ),
                    )
                })?;
            }
            // Never readable by others, whatever it was.
            let mode = old.mode() & 0o770;
            f.set_permissions(std::fs::Permissions::from_mode(mode))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let gid = std::fs::metadata(dir)?.gid();
            let grouped = gid == f.metadata()?.gid() || fchown(f, None, Some(gid)).is_ok();
            let mode = if grouped { 0o640 } else { 0o600 };
            f.set_permissions(std::fs::Permissions::from_mode(mode))
        }
        Err(e) => Err(e),
    }
}

impl fmt::Display for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            match line {
                Line::Other(text) => writeln!(f, "{text}")?,
                Line::User {
                    name,
                    hash,
                    scram: None,
                } => writeln!(f, "{name}:{hash}")?,
                Line::User {
                    name,
                    hash,
                    scram: Some(scram),
                } => writeln!(f, "{name}:{hash}:{scram}")?,
                Line::App {
                    name,
                    label,
                    digest,
                    created,
                } => writeln!(f, "{name}:app:{label}:{digest}:{created}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["alice", "a.b", "alice@example.test", "x_1-2+3"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "-x", ".x", "a:b", "a b", "ü", long.as_str()] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Regression test (found by the `users_file` fuzz target): a comment
    /// ending in a CR (`\r` at the end of the file, or `\r\r\n`) was kept
    /// with it, written back as `comment\r\n` and then read as `comment`,
    /// so the second rewrite of the file differed from the first.
    #[test]
    fn comments_ending_in_cr_rewrite_stably() {
        let h = hash_password("pw").unwrap();
        for text in [
            format!("alice:{h}\n# last\r"),
            format!("# first\r\r\nalice:{h}\n"),
            format!("alice:{h}\n \r\r"),
        ] {
            let once = Users::parse(&text).unwrap().to_string();
            let twice = Users::parse(&once).unwrap().to_string();
            assert_eq!(twice, once, "{text:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_line() {
        let h = hash_password("pw").unwrap();
        let cases = [
            ("# c\n\nalice\n".to_string(), 3, "expected name"),
            (format!("bad name:{h}\n"), 1, "invalid user name"),
            (
                format!("alice:{h}\nbob:$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n"),
                2,
                "not an argon2id",
            ),
            (format!("alice:{h}\n# x\nalice:{h}\n"), 3, "twice"),
            (format!("alice:{h}:SCRAM-SHA-256$1$x\n"), 1, "SCRAM secret"),
            (format!("alice:{h}:a:b\n"), 1, "expected name"),
            (
                "bob:app:phone:$sha256$x:2026-01-01\n".to_string(),
                1,
                "malformed digest",
            ),
            (
                format!(
                    "bob:app:phone:{}:2026-01-01\n",
                    crate::app::stored_digest("p")
                ),
                1,
                "without",
            ),
            (format!("bob:{h}\nbob:app:a b:x:y\n"), 2, "label"),
            (
                format!("bob:{h}\nbob:app:phone:x\n"),
                2,
                "expected name:app",
            ),
            ("alice:plain\n".to_string(), 1, "not an argon2id"),
        ];
        for (text, line, msg) in cases {
            match Users::parse(&text) {
                Err(UsersError::Parse {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(message.contains(msg), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn edit_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::load(&path, true).unwrap();
        assert!(users.is_empty());
        assert!(Users::load(&path, false).is_err());
        users.add("alice", "a-pw").unwrap();
        users.add("bob", "b-pw").unwrap();
        assert!(users.add("alice", "x").is_err());
        assert!(users.add("bad name", "x").is_err());
        assert!(users.set_password("carol", "x").is_err());
        assert!(users.remove("carol").is_err());
        users.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            // New: the directory's group may read it, others may not.
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o640);
            assert_eq!(meta.gid(), std::fs::metadata(dir.path()).unwrap().gid());
            // Existing: its mode is kept (less "other" bits) on every edit.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
            let mut again = Users::load(&path, false).unwrap();
            again.set_password("bob", "b-pw").unwrap();
            again.save(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
            again.save(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o660);
        }
        // Comments survive an edit.
        let text = format!("# our users\n{}", std::fs::read_to_string(&path).unwrap());
        std::fs::write(&path, text).unwrap();
        let mut users = Users::load(&path, false).unwrap();
        assert_eq!(users.verify("alice", "a-pw"), Some(Credential::Password));
        assert_eq!(users.verify("alice", "b-pw"), None);
        assert_eq!(users.verify("nobody", "a-pw"), None);
        assert!(users.has_scram("alice"));
        users.set_password("alice", "new").unwrap();
        users.remove("bob").unwrap();
        users.save(&path).unwrap();
        let users = Users::load(&path, false).unwrap();
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(users.verify("alice", "new"), Some(Credential::Password));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("# our users\n")
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn app_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::default();
        users.add("alice", "main-pw").unwrap();
        users.add("bob", "bob-pw").unwrap();
        let phone = users
            .add_app_password("alice", "phone", "2026-11-23")
            .unwrap();
        let laptop = users
            .add_app_password("alice", "laptop", "2026-11-24")
            .unwrap();
        assert!(users.add_app_password("alice", "phone", "x").is_err());
        assert!(users.add_app_password("carol", "phone", "x").is_err());
        assert!(users.add_app_password("alice", "bad label", "x").is_err());
        users.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Only digests are stored, right after alice's line.
        assert!(!text.contains(&phone) && !text.contains(&laptop));
        let kinds: Vec<&str> = text
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(kinds[1], "app");
        assert_eq!(kinds[2], "app");
        let mut users = Users::load(&path, false).unwrap();
        assert_eq!(
            users.verify("alice", &phone),
            Some(Credential::App("phone".into()))
        );
        assert_eq!(
            users.verify("alice", &laptop.to_uppercase().replace('-', " ")),
            Some(Credential::App("laptop".into()))
        );
        assert_eq!(users.verify("alice", "main-pw"), Some(Credential::Password));
        // Another user's app password is not yours.
        assert_eq!(users.verify("bob", &phone), None);
        let listed: Vec<(String, String)> = users
            .app_passwords(None)
            .map(|a| (a.user, a.label))
            .collect();
        assert_eq!(
            listed,
            [
                ("alice".into(), "phone".into()),
                ("alice".into(), "laptop".into())
            ]
        );
        // A password change keeps app passwords; a revoked one stops working.
        users.set_password("alice", "new-pw").unwrap();
        users.remove_app_password("alice", "phone").unwrap();
        assert!(users.remove_app_password("alice", "phone").is_err());
        assert_eq!(users.verify("alice", &phone), None);
        assert!(users.verify("alice", &laptop).is_some());
        // Removing the user removes their app passwords.
        users.remove("alice").unwrap();
        assert_eq!(users.app_passwords(None).count(), 0);
        users.save(&path).unwrap();
        assert!(Users::load(&path, false).is_ok());
    }

    #[test]
    fn files_without_scram_secrets_still_load() {
        let h = hash_password("pw").unwrap();
        let users = Users::parse(&format!("alice:{h}\n")).unwrap();
        assert_eq!(users.verify("alice", "pw"), Some(Credential::Password));
        assert!(!users.has_scram("alice"));
        assert_eq!(users.to_string(), format!("alice:{h}\n"));
    }
}
