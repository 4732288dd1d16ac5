//! TLS for Portcullis: the server's certificate (operator files or a
//! self-signed development certificate, reloadable on SIGHUP), the outbound
//! client configurations, and the classification of TLS failures.
//!
//! Standards: STARTTLS for SMTP (RFC 3207) and implicit TLS for submission
//! (RFC 8314) use the acceptor from [`ServerTls`]; outbound delivery uses
//! [`ClientTls`], PKIX-verifying when an MTA-STS policy is enforced (RFC 8461
//! §4.2) and opportunistic otherwise; [`classify`] maps a failed handshake
//! onto the RFC 8460 §4.3 [`TlsResultType`] recorded for TLS-RPT, beside
//! the [`ReportPolicy`] facts a session result carries.
//!
//! Threat model: the network between MTAs is hostile. Only TLS 1.3 and 1.2
//! are offered, always with the ring provider chosen explicitly (never a
//! process-wide default). An opportunistic session protects only against
//! passive eavesdroppers — an active attacker can present any certificate —
//! which is why enforced policies must use the PKIX configuration and treat
//! every verification failure as a failed delivery, never as a reason to fall
//! back to plaintext. Private keys are written with mode 0600 and a reload that
//! fails (missing file, garbage, key that does not match) leaves the previous
//! certificate in force. This crate knows nothing about SMTP.

#![forbid(unsafe_code)]

mod client;
mod dane;
mod error;
mod info;
mod pem;
mod provider;
mod report_policy;
mod result_type;
mod selfsigned;
mod server;
mod summary;

pub use client::{ClientTls, VerificationRecord, WouldVerify, add_roots_from_file, web_roots};
pub use dane::{DaneAuthority, inspect_chain};
pub use error::TlsError;
pub use info::TlsInfo;
pub use pem::{load_certs, load_key};
pub use provider::{PROTOCOL_VERSIONS, provider};
pub use report_policy::{ReportPolicy, ReportPolicyType};
pub use result_type::{TlsResultType, classify, reason_code};
pub use selfsigned::{CERT_FILE, KEY_FILE};
pub use server::{ServerTls, ServerTlsSource};
pub use summary::{CertSummary, rfc3339};

/// Re-exported so that users name the same rustls and tokio-rustls versions.
pub use {rustls, tokio_rustls};

#[cfg(test)]
mod tests;
