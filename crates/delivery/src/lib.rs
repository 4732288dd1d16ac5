//! Outbound delivery for Portcullis: how accepted mail leaves. The
//! [`plan`] module makes the outbound decision (route or MX, implicit and
//! null MX, MTA-STS per RFC 8461, loops to ourselves) as one pure function
//! that the [`Deliverer`] executes and `policy explain` prints. The
//! [`client`] module speaks SMTP to one already-connected host (RFC 5321,
//! STARTTLS per RFC 3207) with the TLS decision and the TLS outcome as
//! explicit values, ready for TLS-RPT (RFC 8460). The [`RouteProbe`]
//! asks a domain's route whether a recipient exists (the screen's
//! recipient verification), with the same planner and client.
//!
//! Threat model: every byte from the remote host is hostile input; a
//! failure to secure a session that the caller required is a failed
//! delivery, never a reason to continue in clear.

#![forbid(unsafe_code)]

pub mod client;
mod connect;
mod deliverer;
mod destinations;
mod execute;
pub mod loops;
mod metrics;
pub mod plan;
mod probe;
mod requiretls;
mod results;
mod settings;

pub use client::Timeouts;
pub use connect::{Connector, TcpConnector};
pub use deliverer::Deliverer;
pub use destinations::{Destinations, LiveDestinations};
pub use loops::SelfAddresses;
pub use metrics::DeliveryMetrics;
pub use plan::Planner;
pub use portcullis_tlsrpt::{LogTlsResults, TlsResultSink, TlsSessionResult};
pub use probe::{ProbeSettings, RouteProbe};
pub use settings::DelivererSettings;
