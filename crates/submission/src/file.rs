//! The users file: parse with line numbers, edit, write atomically.

use crate::password::{hash_password, is_argon2id, verify_password};
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
    /// A user and the PHC string of their password.
    User { name: String, hash: String },
}

/// The parsed users file, comments kept so that edits rewrite it faithfully.
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
                users.lines.push(Line::Other(raw.to_string()));
                continue;
            }
            let Some((name, hash)) = trimmed.split_once(':') else {
                return Err(err("expected name:argon2id-hash".into()));
            };
            validate_name(name).map_err(err)?;
            if !is_argon2id(hash) {
                return Err(err(format!(
                    "the hash of {name:?} is not an argon2id PHC string"
                )));
            }
            if users.get(name).is_some() {
                return Err(err(format!("user {name:?} appears twice")));
            }
            users.lines.push(Line::User {
                name: name.to_string(),
                hash: hash.to_string(),
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
            Line::Other(_) => None,
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
            Line::User { name: n, hash } if n == name => Some(hash.as_str()),
            _ => None,
        })
    }

    /// True when `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// True when `name` exists and `password` is theirs. Slow (argon2):
    /// call it off the async runtime. Unknown users take as long.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.get(name) {
            Some(hash) => verify_password(hash, password),
            None => {
                let _ = verify_password(&DUMMY, password);
                false
            }
        }
    }

    /// Adds a user; fails when the name is invalid or taken.
    pub fn add(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        validate_name(name).map_err(UsersError::Edit)?;
        if self.contains(name) {
            return Err(UsersError::Edit(format!("user {name:?} already exists")));
        }
        self.lines.push(Line::User {
            name: name.to_string(),
            hash: hash_password(password).map_err(UsersError::Edit)?,
        });
        Ok(())
    }

    /// Sets a user's password; fails when the user does not exist.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        for line in &mut self.lines {
            if let Line::User { name: n, hash } = line
                && n == name
            {
                *hash = hash_password(password).map_err(UsersError::Edit)?;
                return Ok(());
            }
        }
        Err(UsersError::Edit(format!("no user {name:?}")))
    }

    /// Removes a user; fails when the user does not exist.
    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::User { name: n, .. } if n == name));
        if self.lines.len() == before {
            return Err(UsersError::Edit(format!("no user {name:?}")));
        }
        Ok(())
    }

    /// Writes the file atomically: a temporary file (mode 0600) in the same
    /// directory, fsynced, renamed over `path`, directory fsynced.
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

impl fmt::Display for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            match line {
                Line::Other(text) => writeln!(f, "{text}")?,
                Line::User { name, hash } => writeln!(f, "{name}:{hash}")?,
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
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Comments survive an edit.
        let text = format!("# our users\n{}", std::fs::read_to_string(&path).unwrap());
        std::fs::write(&path, text).unwrap();
        let mut users = Users::load(&path, false).unwrap();
        assert!(users.verify("alice", "a-pw"));
        assert!(!users.verify("alice", "b-pw"));
        assert!(!users.verify("nobody", "a-pw"));
        users.set_password("alice", "new").unwrap();
        users.remove("bob").unwrap();
        users.save(&path).unwrap();
        let users = Users::load(&path, false).unwrap();
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice"]);
        assert!(users.verify("alice", "new"));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("# our users\n")
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
