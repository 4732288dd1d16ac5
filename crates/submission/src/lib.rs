//! Submission users: the users file of `[submission] users_file` (one
//! `name:argon2id-PHC-hash` per line, `#` comments), password hashing and
//! verification (argon2id, default parameters), atomic rewriting (temp file
//! + rename, mode 0600) and a reloading handle for the running server.

#![forbid(unsafe_code)]

mod file;
mod password;
mod reload;

pub use file::{Users, UsersError, validate_name};
pub use password::{hash_password, verify_password};
pub use reload::UsersDb;
