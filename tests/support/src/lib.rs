//! Test support for Portcullis: the test PKI (rcgen), a real DNS server on
//! loopback, the real `portcullis` binary started on ephemeral ports, and a
//! small blocking SMTP client for raw-socket tests. Nothing here is used by
//! the server itself.

pub mod dns;
pub mod pki;
pub mod server;
pub mod smtp;
