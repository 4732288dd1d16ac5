//! The MTA-STS policy we serve for one of our domains (RFC 8461 §3.2),
//! and the `id` we publish for it (§3.1).

use portcullis_config::{Publish, PublishMode};
use portcullis_policy::{Mode, MxPattern, Policy};

/// The policy served at `https://mta-sts.<domain>/.well-known/mta-sts.txt`
/// and the TXT records that announce it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnPolicy {
    /// The domain it is for.
    pub domain: String,
    /// The policy body, exactly as served (LF line ends).
    pub text: String,
    /// The `id` for `_mta-sts.<domain>`: the first 20 hex digits of the
    /// SHA-256 of `text` (RFC 8461 §3.1: 1 to 32 alphanumerics), so it
    /// changes exactly when the policy does.
    pub id: String,
}

impl OwnPolicy {
    /// The TXT record to publish at `_mta-sts.<domain>`.
    pub fn txt_record(&self) -> String {
        format!("v=STSv1; id={}", self.id)
    }

    /// The record as a zone-file line.
    pub fn zone_line(&self) -> String {
        format!("_mta-sts.{}. IN TXT \"{}\"", self.domain, self.txt_record())
    }
}

/// The policy for `domain` under `publish`: its `mx` patterns, or when
/// `[publish] mx` is absent, `mx_from_dns` (the domain's MX host names,
/// lower-cased, in the order given, duplicates dropped). Fails when the
/// result would be unservable: a pattern that does not parse, or no
/// pattern at all in a mode other than `none`.
pub fn own_policy(
    publish: &Publish,
    domain: &str,
    mx_from_dns: &[String],
) -> Result<OwnPolicy, String> {
    let names: Vec<String> = match &publish.mx {
        Some(list) => list.clone(),
        None => mx_from_dns
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
    };
    let mut patterns: Vec<MxPattern> = Vec::new();
    for name in &names {
        let p = MxPattern::parse(name).map_err(|e| format!("mx {name:?}: {e}"))?;
        if !patterns.contains(&p) {
            patterns.push(p);
        }
    }
    let mode = match publish.mode {
        PublishMode::Enforce => Mode::Enforce,
        PublishMode::Testing => Mode::Testing,
        PublishMode::None => Mode::None,
    };
    if patterns.is_empty() && mode != Mode::None {
        return Err(format!(
            "{domain}: no mx for the policy ([publish] mx is absent and DNS has no MX host)"
        ));
    }
    let text = Policy::render(mode, &patterns, publish.max_age.as_secs());
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let id: String = digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(OwnPolicy {
        domain: domain.to_ascii_lowercase(),
        text,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(mode: PublishMode, mx: Option<&[&str]>) -> Publish {
        Publish {
            mode,
            mx: mx.map(|l| l.iter().map(|s| s.to_string()).collect()),
            ..Publish::default()
        }
    }

    #[test]
    fn the_policy_parses_back_and_its_id_follows_its_content() {
        let p = own_policy(
            &publish(
                PublishMode::Enforce,
                Some(&["mx1.example.test", "*.example.test"]),
            ),
            "example.test",
            &[],
        )
        .unwrap();
        let parsed = Policy::parse(&p.text).unwrap();
        assert_eq!(parsed.mode, Mode::Enforce);
        assert_eq!(parsed.max_age, 7 * 86_400);
        assert!(parsed.matches_mx("mx1.example.test"));
        assert!(parsed.matches_mx("mx9.example.test"));
        assert_eq!(p.id.len(), 20);
        assert!(p.id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(p.txt_record(), format!("v=STSv1; id={}", p.id));
        let same = own_policy(
            &publish(
                PublishMode::Enforce,
                Some(&["mx1.example.test", "*.example.test"]),
            ),
            "other.test",
            &[],
        )
        .unwrap();
        assert_eq!(same.id, p.id, "the id depends on the policy's content only");
        let testing = own_policy(
            &publish(
                PublishMode::Testing,
                Some(&["mx1.example.test", "*.example.test"]),
            ),
            "example.test",
            &[],
        )
        .unwrap();
        assert_ne!(testing.id, p.id, "a changed mode changes the id");
    }

    #[test]
    fn without_configured_mx_the_dns_names_are_used_and_none_is_an_error() {
        let dns = vec![
            "MX2.Example.Test.".to_string(),
            "mx2.example.test".to_string(),
        ];
        let p = own_policy(&publish(PublishMode::Enforce, None), "example.test", &dns).unwrap();
        assert_eq!(p.text.matches("mx: mx2.example.test").count(), 1);
        let err =
            own_policy(&publish(PublishMode::Enforce, None), "example.test", &[]).unwrap_err();
        assert!(err.contains("no mx"), "{err}");
        let none = own_policy(&publish(PublishMode::None, None), "example.test", &[]).unwrap();
        assert_eq!(Policy::parse(&none.text).unwrap().mode, Mode::None);
    }
}
