//! Test support for Portcullis: the test PKI (rcgen), a real DNS server on
//! loopback, the real `portcullis` binary started on ephemeral ports, a
//! small blocking SMTP client for raw-socket tests, and a scriptable SMTP
//! sink for delivery tests, and a real PostgreSQL server for cluster mode.
//! Nothing here is used by
//! the server itself.

pub mod dns;
mod dnssec;
pub mod https;
pub mod keys;
pub mod pki;
pub mod postgres;
pub mod scram;
pub mod server;
pub mod sink;
pub mod smtp;
