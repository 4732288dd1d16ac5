//! Domain names as Portcullis compares them: lowercase A-labels, no trailing
//! dot (RFC 5890/5891 via the `idna` crate, UTS #46 processing).

use std::fmt;

/// Why a string is not a usable domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The name is empty (or only a dot).
    #[error("empty domain name")]
    Empty,
    /// The name is longer than 253 octets in A-label form.
    #[error("domain name too long ({len} octets)")]
    TooLong {
        /// Length in octets of the A-label form.
        len: usize,
    },
    /// IDNA processing rejected the name, or a label is empty or too long.
    #[error("invalid domain name {name:?}")]
    Invalid {
        /// The name as given.
        name: String,
    },
}

/// A DNS domain in canonical form: ASCII (A-labels for IDNs), lowercase, no
/// trailing dot. Two `Domain`s are equal exactly when they name the same
/// domain, whatever case, trailing dot or U-label/A-label form they were
/// written in.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    /// Parses and canonicalises a domain name. Accepts U-labels and A-labels
    /// in any case, with or without one trailing dot.
    pub fn parse(input: &str) -> Result<Domain, DomainError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(DomainError::Empty);
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(trimmed).map_err(|_| DomainError::Invalid {
                name: input.to_string(),
            })?
        };
        if ascii.len() > 253 {
            return Err(DomainError::TooLong { len: ascii.len() });
        }
        let labels_ok = ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !labels_ok {
            return Err(DomainError::Invalid {
                name: input.to_string(),
            });
        }
        // A-labels given directly must be valid punycode too.
        if ascii.split('.').any(|l| l.starts_with("xn--")) {
            let (_, result) = idna::domain_to_unicode(&ascii);
            if result.is_err() {
                return Err(DomainError::Invalid {
                    name: input.to_string(),
                });
            }
        }
        Ok(Domain(ascii))
    }

    /// The canonical ASCII form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `parent` or a subdomain of it.
    pub fn is_within(&self, parent: &Domain) -> bool {
        self.0 == parent.0
            || (self.0.len() > parent.0.len()
                && self.0.ends_with(&parent.0)
                && self.0.as_bytes()[self.0.len() - parent.0.len() - 1] == b'.')
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Domain::parse(&value)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

impl std::str::FromStr for Domain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn same(a: &str, b: &str) {
        assert_eq!(
            Domain::parse(a).unwrap(),
            Domain::parse(b).unwrap(),
            "{a} vs {b}"
        );
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter() {
        same("Example.TEST", "example.test");
        same("example.test.", "example.test");
    }

    #[test]
    fn u_label_and_a_label_are_the_same_domain() {
        same("bücher.example", "xn--bcher-kva.example");
        same("BÜCHER.example.", "xn--bcher-kva.example");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.test",
            "a-.test",
            "a b.test",
            "a@b.test",
            "xn--zz--.test",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Domain::parse(&format!("{}.test", "a".repeat(64))).is_err());
        assert!(Domain::parse(&["abcdefghij"; 30].join(".")).is_err());
    }

    #[test]
    fn subdomain_check() {
        let parent = Domain::parse("example.test").unwrap();
        assert!(Domain::parse("mx.example.test").unwrap().is_within(&parent));
        assert!(parent.is_within(&parent));
        assert!(!Domain::parse("badexample.test").unwrap().is_within(&parent));
    }
}
