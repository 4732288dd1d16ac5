//! Submission: the users file of `[submission] users_file` (a user per
//! line with an argon2id hash and a SCRAM-SHA-256 secret, app passwords,
//! `#` comments), password hashing and verification, atomic rewriting
//! (temp file + rename, ownership kept) and a reloading handle for the running
//! server; SCRAM-SHA-256 and OAuth bearer-token mechanisms; the
//! brute-force lockout, the bound on concurrent password hashing and the
//! per-user sending rate.

#![forbid(unsafe_code)]

mod app;
pub mod breaker;
mod file;
pub mod hashing;
pub mod lockout;
pub mod oauth;
mod password;
pub mod rate;
mod reload;
pub mod scram;

pub use file::{AppPassword, Credential, Users, UsersError, validate_label, validate_name};
pub use password::{HashMemory, hash_password, verify_password, verify_password_in};
pub use reload::UsersDb;
