//! Mailbox addresses from SMTP paths (RFC 5321 §4.1.2) and the reverse path,
//! which may be null (`MAIL FROM:<>`).

use crate::domain::{Domain, DomainError};
use std::fmt;

/// Why an SMTP path does not hold a usable mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// There is no `@`, or the local part is empty.
    #[error("address {0:?} is not local-part@domain")]
    NotAMailbox(String),
    /// The local part is longer than 64 octets (RFC 5321 §4.5.3.1.1).
    #[error("local part too long")]
    LocalPartTooLong,
    /// The local part has control characters or unbalanced quoting.
    #[error("invalid local part")]
    InvalidLocalPart,
    /// The domain part is not a valid domain.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Address literals (`user@[1.2.3.4]`) are not accepted.
    #[error("address literals are not accepted")]
    AddressLiteral,
}

/// A mailbox: a local part, kept exactly as received (it is the receiving
/// domain's to interpret, RFC 5321 §2.4), and a canonical domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Address {
    /// The local part as the client sent it (quotes removed by the parser).
    pub local: String,
    /// The canonical domain.
    pub domain: Domain,
}

impl Address {
    /// Parses `local@domain`. The split is at the last `@`, so a local part
    /// with `%` or `!` (old relay hacks) stays a local part of *this* domain
    /// and never selects another destination.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let (local, domain) = input
            .rsplit_once('@')
            .ok_or_else(|| AddressError::NotAMailbox(input.to_string()))?;
        if local.is_empty() {
            return Err(AddressError::NotAMailbox(input.to_string()));
        }
        if local.len() > 64 {
            return Err(AddressError::LocalPartTooLong);
        }
        if local.chars().any(|c| c.is_control()) {
            return Err(AddressError::InvalidLocalPart);
        }
        if domain.starts_with('[') {
            return Err(AddressError::AddressLiteral);
        }
        Ok(Address {
            local: local.to_string(),
            domain: Domain::parse(domain)?,
        })
    }

    /// True when the address needs SMTPUTF8 to be transmitted (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs_quotes = self.local.starts_with('.')
            || self.local.ends_with('.')
            || self.local.contains("..")
            || self.local.chars().any(|c| {
                c.is_ascii() && !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            });
        if needs_quotes {
            write!(f, "\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// The reverse path of `MAIL FROM`: null for bounces, or a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications; never bounced to.
    Null,
    /// A mailbox.
    Mailbox(Address),
}

impl ReversePath {
    /// Parses the inside of `<...>`; empty means null.
    pub fn parse(input: &str) -> Result<ReversePath, AddressError> {
        if input.is_empty() {
            Ok(ReversePath::Null)
        } else {
            Address::parse(input).map(ReversePath::Mailbox)
        }
    }

    /// The mailbox, if not null.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    /// Formats as it appears inside angle brackets: empty for null.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(a) => a.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_at_sign() {
        let a = Address::parse("user%other.test@example.test").unwrap();
        assert_eq!(a.local, "user%other.test");
        assert_eq!(a.domain.as_str(), "example.test");
        let a = Address::parse("other.test!user@Example.TEST").unwrap();
        assert_eq!(a.domain.as_str(), "example.test");
    }

    #[test]
    fn rejects_non_mailboxes() {
        for bad in [
            "user",
            "@example.test",
            "user@",
            "user@[127.0.0.1]",
            "us\u{1}er@example.test",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Address::parse(&format!("{}@example.test", "a".repeat(65))).is_err());
    }

    #[test]
    fn null_reverse_path() {
        assert_eq!(ReversePath::parse("").unwrap(), ReversePath::Null);
        assert_eq!(ReversePath::Null.to_string(), "");
    }

    #[test]
    fn display_quotes_when_needed() {
        let a = Address::parse("a b@example.test").unwrap();
        assert_eq!(a.to_string(), "\"a b\"@example.test");
        assert_eq!(
            Address::parse("a.b@example.test").unwrap().to_string(),
            "a.b@example.test"
        );
    }
}
