//! One recipients file parsed: the valid local parts of one domain, or the
//! whole domain. Strict: a line that is not an address of the file's own
//! domain refuses the whole file, so a typo never silently turns a valid
//! user into "user unknown" (or a whole domain into "accept everything").

use super::FileError;
use portcullis_types::{Address, Domain};
use std::collections::HashSet;
use std::path::Path;

/// The largest recipients file read (a directory of a million users is
/// about 40 MiB); a larger one is refused rather than read into memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The longest line accepted: a 64-octet local part, `@` and a 253-octet
/// domain fit with room for surrounding whitespace.
pub const MAX_LINE_BYTES: usize = 512;

/// The addresses one file accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressList {
    /// `@domain` was listed: every local part exists.
    whole_domain: bool,
    /// The listed local parts, folded by [`fold_local`].
    locals: HashSet<String>,
}

impl AddressList {
    /// Parses `text`, the content of the file at `path` for `domain`.
    pub fn parse(text: &str, domain: &Domain, path: &Path) -> Result<AddressList, FileError> {
        let mut list = AddressList::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |message: String| FileError {
                path: path.display().to_string(),
                line,
                message,
            };
            if raw.len() > MAX_LINE_BYTES {
                return Err(fail(format!("line longer than {MAX_LINE_BYTES} octets")));
            }
            let entry = raw.trim();
            // Only whole lines are comments: `#` is a valid local-part
            // character (RFC 5322 atext), so `a#b@example.test` is an address.
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            list.add(entry, domain).map_err(fail)?;
        }
        Ok(list)
    }

    /// Adds one entry (`user@domain` or `@domain`).
    fn add(&mut self, entry: &str, domain: &Domain) -> Result<(), String> {
        if entry.chars().any(char::is_whitespace) {
            return Err(format!(
                "{entry:?}: one address per line, without spaces or trailing comments"
            ));
        }
        if let Some(whole) = entry.strip_prefix('@') {
            let parsed = Domain::parse(whole).map_err(|e| format!("{entry:?}: {e}"))?;
            if &parsed != domain {
                return Err(not_ours(entry, domain));
            }
            self.whole_domain = true;
            return Ok(());
        }
        let address = Address::parse(entry).map_err(|e| format!("{entry:?}: {e}"))?;
        if &address.domain != domain {
            return Err(not_ours(entry, domain));
        }
        self.locals.insert(fold_local(&address.local));
        Ok(())
    }

    /// True when `local` (of the file's domain) exists.
    pub fn contains(&self, local: &str) -> bool {
        self.whole_domain || self.locals.contains(&fold_local(local))
    }

    /// How many addresses are listed (the whole domain counts as none).
    pub fn addresses(&self) -> usize {
        self.locals.len()
    }
}

fn not_ours(entry: &str, domain: &Domain) -> String {
    format!("{entry:?} is not an address of {domain}, the domain this file is for")
}

/// The form local parts are compared in. RFC 5321 §2.4 leaves a local part
/// to its domain, and every mail store we route to (Dovecot, Exchange,
/// Cyrus, Postfix's maps) treats it case-insensitively, so we do too:
/// refusing `John@` when `john@` exists would reject real mail.
pub fn fold_local(local: &str) -> String {
    local.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain {
        Domain::parse("example.test").unwrap()
    }

    #[track_caller]
    fn parse(text: &str) -> Result<AddressList, FileError> {
        AddressList::parse(text, &domain(), Path::new("/etc/r/example.test"))
    }

    #[track_caller]
    fn refused_at(text: &str, line: usize, needle: &str) {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{e}");
        assert_eq!(e.path, "/etc/r/example.test");
        assert!(e.message.contains(needle), "{e}");
    }

    #[test]
    fn addresses_comments_blank_lines_and_whitespace() {
        let list = parse("# staff\n\n  alice@example.test \r\n\tBob@EXAMPLE.test\n#x@y\n").unwrap();
        assert!(list.contains("alice"));
        assert!(
            list.contains("ALICE"),
            "local parts compare case-insensitively"
        );
        assert!(list.contains("bob"));
        assert!(!list.contains("carol"));
        assert!(!list.contains("x"));
        assert_eq!(list.addresses(), 2);
    }

    #[test]
    fn whole_domain() {
        let list = parse("@Example.Test\n").unwrap();
        assert!(list.contains("anyone"));
        assert!(!parse("").unwrap().contains("anyone"));
    }

    #[test]
    fn hash_inside_an_address_is_part_of_it() {
        let list = parse("a#b@example.test\n").unwrap();
        assert!(list.contains("a#b"));
        assert!(!list.contains("a"));
    }

    #[test]
    fn idn_domain_in_either_form() {
        let d = Domain::parse("bücher.test").unwrap();
        let list = AddressList::parse(
            "anna@bücher.test\nbo@xn--bcher-kva.test\n",
            &d,
            Path::new("f"),
        )
        .unwrap();
        assert!(list.contains("anna") && list.contains("bo"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_line() {
        refused_at(
            "a@example.test\nb@other.test\n",
            2,
            "not an address of example.test",
        );
        refused_at("@other.test\n", 1, "not an address of example.test");
        refused_at("@sub.example.test\n", 1, "not an address");
        refused_at(
            "ok@example.test\nnot-an-address\n",
            2,
            "not local-part@domain",
        );
        refused_at("user@[127.0.0.1]\n", 1, "literal");
        refused_at("a@example.test # trailing\n", 1, "one address per line");
        refused_at("a b@example.test\n", 1, "without spaces");
        refused_at("@\n", 1, "empty");
        refused_at(&format!("{}@example.test\n", "x".repeat(65)), 1, "too long");
        refused_at(
            &format!("{}\n", "x".repeat(MAX_LINE_BYTES + 1)),
            1,
            "longer than",
        );
    }
}
