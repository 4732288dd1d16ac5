//! The body of `policy own`: what we publish for our own domains, checked
//! from the outside in (the publish crate's `DomainReport`, field for
//! field: the JSON is the same).

use serde::{Deserialize, Serialize};

/// `portcullis policy own [DOMAIN]`: one report per domain checked.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PolicyOwn {
    /// The accepted domains checked (or the one asked about), in config
    /// order.
    pub domains: Vec<OwnDomain>,
}

impl PolicyOwn {
    /// True when every check of every domain passed.
    pub fn all_ok(&self) -> bool {
        self.domains.iter().all(|d| d.checks.iter().all(|c| c.ok))
    }
}

/// The checks of one domain.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OwnDomain {
    /// The domain.
    pub domain: String,
    /// `mta-sts record`, `policy served`, `mx covered`, one `mx
    /// certificate` per MX host, `tls-rpt record`.
    pub checks: Vec<OwnCheck>,
    /// Zone-file lines that fix the DNS gaps (empty when DNS is right).
    pub records_to_publish: Vec<String>,
    /// What the policy file must contain, when it is not served as it is.
    pub policy_file: Option<String>,
}

/// One check.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OwnCheck {
    /// The check's name.
    pub name: String,
    /// The MX host, for `mx certificate`.
    #[serde(default)]
    pub host: Option<String>,
    /// True when it passed.
    pub ok: bool,
    /// `ok`, `gap` or `temporary` (a temporary DNS failure: not known now).
    pub outcome: String,
    /// What was found; for a gap, what is wrong and how to fix it.
    pub detail: String,
    /// For `policy served`: the line diff served → ours.
    #[serde(default)]
    pub diff: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Answer, Request};

    /// `policy own --json` prints the body as the server sent it; the typed
    /// form reads it back whole, and one failed check fails the command.
    #[test]
    fn policy_own_round_trips_and_a_gap_fails() {
        let check = |ok: bool| OwnCheck {
            name: "mx certificate".into(),
            host: Some("mx1.a.test".into()),
            ok,
            outcome: if ok { "ok" } else { "gap" }.into(),
            detail: "mx1.a.test: expires in 5 days".into(),
            diff: None,
        };
        let own = |ok: bool| PolicyOwn {
            domains: vec![OwnDomain {
                domain: "a.test".into(),
                checks: vec![check(true), check(ok)],
                records_to_publish: vec![],
                policy_file: None,
            }],
        };
        let request = Request::PolicyOwn { domain: None };
        let wire = serde_json::to_value(own(false)).unwrap();
        assert_eq!(wire["domains"][0]["checks"][1]["ok"], false);
        assert_eq!(wire["domains"][0]["checks"][1]["host"], "mx1.a.test");
        let back = Answer::decode(&request, wire).unwrap();
        assert_eq!(back, Answer::PolicyOwn(own(false)));
        assert!(!back.all_succeeded());
        let good = Answer::decode(&request, serde_json::to_value(own(true)).unwrap()).unwrap();
        assert!(good.all_succeeded());
    }
}
