//! What makes a report ours, as the config in force says: the accepted
//! domains (a report about none of them is refused) and the `[publish]
//! tlsrpt_rua` `mailto:` addresses at one of them (mail to those is read,
//! not delivered). A reload replaces both at once.

use portcullis_types::{Address, Domain};
use std::sync::{Arc, RwLock};

/// Our domains and report mailboxes of one config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ours {
    /// `[relay] accepted_domains`.
    pub domains: Vec<Domain>,
    /// The `mailto:` addresses of `[publish] tlsrpt_rua` whose domain is
    /// one of `domains` (an address elsewhere is someone else's mailbox).
    pub mailboxes: Vec<Address>,
}

impl Ours {
    /// Ours from the accepted domains and the `tlsrpt_rua` mailboxes; a
    /// mailbox at a domain we do not accept is left out.
    pub fn new(domains: Vec<Domain>, mailboxes: Vec<Address>) -> Ours {
        let mailboxes = mailboxes
            .into_iter()
            .filter(|m| domains.contains(&m.domain))
            .collect();
        Ours { domains, mailboxes }
    }

    /// True when `rcpt` is one of our report mailboxes (the local part
    /// compared without regard to ASCII case, as for `postmaster`: a
    /// reporter may write it either way).
    pub fn is_mailbox(&self, rcpt: &Address) -> bool {
        self.mailboxes
            .iter()
            .any(|m| m.domain == rcpt.domain && m.local.eq_ignore_ascii_case(&rcpt.local))
    }
}

/// The [`Ours`] in force: cheap to clone, clones share it, and
/// [`LiveOurs::set`] replaces it for every clone.
#[derive(Debug, Clone, Default)]
pub struct LiveOurs(Arc<RwLock<Arc<Ours>>>);

impl LiveOurs {
    /// Shared, starting with `ours`.
    pub fn new(ours: Ours) -> LiveOurs {
        LiveOurs(Arc::new(RwLock::new(Arc::new(ours))))
    }

    /// The one in force now (one read, then no lock held).
    pub fn get(&self) -> Arc<Ours> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `ours` in force from now on.
    pub fn set(&self, ours: Ours) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ours);
    }
}
