//! `[[listen]]`: the listening sockets, each with its role and its share
//! of `[limits] max_connections`.

use crate::check::Checker;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[[listen]]`: one listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// `address`: IP and port, e.g. `"0.0.0.0:25"` or `"[::]:25"`.
    pub address: String,
    /// `role`: `smtp` (port 25, opportunistic STARTTLS), `submission` (587,
    /// STARTTLS required before MAIL), `submissions` (465, implicit TLS) or
    /// `mta-sts` (HTTPS: our MTA-STS policy and TLS-RPT POSTs).
    #[serde(default = "default_role")]
    pub role: String,
    /// `certificate`: PEM chain this listener presents instead of the
    /// `[tls]` one (`mta-sts` listeners only: the name there is
    /// `mta-sts.<domain>`, not the MX name).
    pub certificate: Option<String>,
    /// `private_key`: the PEM key of `certificate`.
    pub private_key: Option<String>,
    /// `max_connections`: open connections on this listener; past it a new
    /// connection gets 421 4.7.0. Default: an even share of what
    /// `[limits] max_connections` leaves after the listeners that set
    /// theirs, so no listener can take another's slots.
    pub max_connections: Option<u32>,
}

fn default_role() -> String {
    "smtp".into()
}

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Port 25: MX service, opportunistic STARTTLS.
    Smtp,
    /// Port 587: STARTTLS required before MAIL (RFC 6409).
    Submission,
    /// Port 465: TLS from the first byte (RFC 8314).
    Submissions,
    /// HTTPS (usually 443): our MTA-STS policy (RFC 8461 §3.3) and TLS-RPT
    /// reports POSTed to us (RFC 8460 §3). Never serves SMTP.
    #[serde(rename = "mta-sts")]
    MtaSts,
}

impl Role {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Smtp => "smtp",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
            Role::MtaSts => "mta-sts",
        }
    }

    /// True for the roles that speak SMTP (every role but `mta-sts`).
    pub fn is_smtp(self) -> bool {
        self != Role::MtaSts
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listener {
    /// Address to bind (port 0: an ephemeral port).
    pub address: SocketAddr,
    /// What the listener is for.
    pub role: Role,
    /// Open connections this listener takes at most (`[[listen]]
    /// max_connections`, or its share of `[limits] max_connections`).
    pub max_connections: u32,
    /// Its own certificate chain and key (`mta-sts` only); `None`: the
    /// `[tls]` certificate.
    pub certificate: Option<(PathBuf, PathBuf)>,
}

/// A checked listener before the connection slots are shared out: the
/// `max_connections` it sets, and its index for errors.
type Unshared = (Listener, Option<u32>, usize);

/// `[[listen]]` (absent: the development listener 127.0.0.1:2525, smtp),
/// each listener given its share of `total` (`[limits] max_connections`).
pub(crate) fn build(list: Option<&[ListenFile]>, total: u32, c: &mut Checker) -> Vec<Listener> {
    let listeners: Vec<Unshared> = match list {
        None => vec![(
            Listener {
                address: SocketAddr::from(([127, 0, 0, 1], 2525)),
                role: Role::Smtp,
                max_connections: 0,
                certificate: None,
            },
            None,
            0,
        )],
        Some(list) => {
            if list.is_empty() {
                c.fail("listen", "at least one [[listen]] is needed");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, l)| listener(i, l, c))
                .collect()
        }
    };
    refuse_duplicates(&listeners, c);
    share_connections(listeners, total, c)
}

/// `listen[i]`: its address, role and own `max_connections`; `None` when
/// the address or role is unusable (the problem is recorded).
fn listener(i: usize, l: &ListenFile, c: &mut Checker) -> Option<Unshared> {
    let address = c.socket_addr(&format!("listen[{i}].address"), &l.address);
    let role = match l.role.as_str() {
        "smtp" => Some(Role::Smtp),
        "submission" => Some(Role::Submission),
        "submissions" => Some(Role::Submissions),
        "mta-sts" => Some(Role::MtaSts),
        other => {
            c.fail(
                format!("listen[{i}].role"),
                format!("unknown role {other:?} (smtp, submission, submissions or mta-sts)"),
            );
            None
        }
    };
    let certificate = own_certificate(i, l, role, c);
    let max = l.max_connections;
    if max == Some(0) {
        c.fail(
            format!("listen[{i}].max_connections"),
            "must be greater than zero",
        );
    }
    Some((
        Listener {
            address: address?,
            role: role?,
            max_connections: 0,
            certificate,
        },
        max.filter(|&m| m > 0),
        i,
    ))
}

/// `listen[i].certificate` and `private_key`: both or neither, and only on
/// an `mta-sts` listener (SMTP listeners present the `[tls]` certificate,
/// which a reload swaps for all of them at once).
fn own_certificate(
    i: usize,
    l: &ListenFile,
    role: Option<Role>,
    c: &mut Checker,
) -> Option<(PathBuf, PathBuf)> {
    let pair = match (&l.certificate, &l.private_key) {
        (None, None) => return None,
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (Some(_), None) => {
            c.fail(
                format!("listen[{i}].private_key"),
                "certificate is set but private_key is not",
            );
            return None;
        }
        (None, Some(_)) => {
            c.fail(
                format!("listen[{i}].certificate"),
                "private_key is set but certificate is not",
            );
            return None;
        }
    };
    if role.is_some_and(Role::is_smtp) {
        c.fail(
            format!("listen[{i}].certificate"),
            "only an mta-sts listener has a certificate of its own; SMTP listeners use [tls]",
        );
        return None;
    }
    Some(pair)
}

/// The same address twice would fail to bind at start; port 0 (an
/// ephemeral port each) may repeat.
fn refuse_duplicates(listeners: &[Unshared], c: &mut Checker) {
    for (n, (a, _, i)) in listeners.iter().enumerate() {
        if a.address.port() != 0
            && listeners[..n]
                .iter()
                .any(|(b, _, _)| b.address == a.address)
        {
            c.fail(
                format!("listen[{i}].address"),
                format!("{} is listed twice", a.address),
            );
        }
    }
}

/// Gives every listener its `max_connections`: the value it sets, or an
/// even share of what `[limits] max_connections` leaves after the
/// listeners that set theirs. With the defaults the shares add up to at
/// most the total, so filling one listener (port 25) never takes the
/// slots of another (587, 465).
fn share_connections(listeners: Vec<Unshared>, total: u32, c: &mut Checker) -> Vec<Listener> {
    let set: u32 = listeners
        .iter()
        .filter_map(|(_, m, _)| *m)
        .fold(0, u32::saturating_add);
    let unset = listeners.iter().filter(|(_, m, _)| m.is_none()).count() as u32;
    let left = total.saturating_sub(set);
    let share = left.checked_div(unset).unwrap_or(0);
    listeners
        .into_iter()
        .map(|(mut l, max, i)| {
            l.max_connections = match max {
                Some(m) => {
                    if m > total {
                        c.fail(
                            format!("listen[{i}].max_connections"),
                            format!(
                                "{m} is more than limits.max_connections ({total}), which caps all listeners together"
                            ),
                        );
                    }
                    m
                }
                None if share == 0 => {
                    c.fail(
                        format!("listen[{i}].max_connections"),
                        format!(
                            "unset, and the other listeners' max_connections ({set}) leave no share of limits.max_connections ({total}): set it, or raise limits.max_connections"
                        ),
                    );
                    1
                }
                None => share,
            };
            l
        })
        .collect()
}
