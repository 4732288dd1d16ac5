//! The site: which hosts are ours, the policy made from DNS's MX names,
//! the last good answer kept through a DNS failure, a reload.

use super::*;
use portcullis_config::PublishMode;
use portcullis_dns::MemoryResolver;
use portcullis_policy::Policy;

fn domains(list: &[&str]) -> Vec<Domain> {
    list.iter().map(|d| Domain::parse(d).unwrap()).collect()
}

fn site(dns: &Arc<MemoryResolver>, mx: Option<&[&str]>) -> Arc<Site<Arc<MemoryResolver>>> {
    let publish = Publish {
        mx: mx.map(|l| l.iter().map(|s| s.to_string()).collect()),
        ..Publish::default()
    };
    Site::new(
        dns.clone(),
        publish,
        &domains(&["example.test", "other.test"]),
    )
}

#[track_caller]
fn policy(l: Lookup) -> Policy {
    match l {
        Lookup::Policy(p) => Policy::parse(&p.text).unwrap(),
        other => panic!("no policy: {other:?}"),
    }
}

#[test]
fn host_names_are_compared_without_port_case_or_trailing_dot() {
    assert_eq!(
        host_name("MTA-STS.Example.Test:443").as_deref(),
        Some("mta-sts.example.test")
    );
    assert_eq!(
        host_name("mta-sts.example.test.").as_deref(),
        Some("mta-sts.example.test")
    );
    assert_eq!(host_name("[::1]:443"), None);
    assert_eq!(host_name("a:b"), None);
    assert_eq!(host_name(""), None);
    let dns = Arc::new(MemoryResolver::new());
    let s = site(&dns, Some(&["mx.example.test"]));
    assert_eq!(
        s.domain_for_host("mta-sts.EXAMPLE.test:8443").as_deref(),
        Some("example.test")
    );
    assert_eq!(s.domain_for_host("example.test"), None);
    assert_eq!(s.domain_for_host("mta-sts.evil.test"), None);
    assert_eq!(s.domain_for_host("mta-sts.mta-sts.example.test"), None);
}

#[tokio::test]
async fn without_configured_mx_the_policy_lists_the_dns_mx_hosts() {
    let dns = Arc::new(
        MemoryResolver::new()
            .mx("example.test", 10, "mx1.example.test")
            .mx("example.test", 20, "mx2.example.test"),
    );
    let s = site(&dns, None);
    let p = policy(s.policy_for_host("mta-sts.example.test").await);
    assert!(p.matches_mx("mx1.example.test") && p.matches_mx("mx2.example.test"));
    assert!(!p.matches_mx("mx3.example.test"));
    // other.test is NXDOMAIN: ours, but no policy can be made.
    match s.policy_for_host("mta-sts.other.test").await {
        Lookup::Unavailable { domain, reason } => {
            assert_eq!(domain, "other.test");
            assert!(reason.contains("no mx"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.policy_for_host("mta-sts.nope.test").await,
        Lookup::NotOurs
    );
}

#[tokio::test]
async fn a_dns_failure_keeps_the_last_good_answer_and_no_mx_replaces_it() {
    let dns = Arc::new(MemoryResolver::new().mx("example.test", 10, "mx1.example.test"));
    let s = site(&dns, None);
    let first = policy(s.policy_for_host("mta-sts.example.test").await);
    dns.set_temp_fail("example.test", true);
    s.look_up("example.test").await;
    assert_eq!(
        policy(s.policy_for_host("mta-sts.example.test").await),
        first
    );
    dns.set_temp_fail("example.test", false);
    dns.remove("example.test", "MX");
    s.look_up("example.test").await;
    assert!(matches!(
        s.policy_for_host("mta-sts.example.test").await,
        Lookup::Unavailable { .. }
    ));
}

#[tokio::test]
async fn a_failure_before_any_answer_is_unavailable_until_dns_answers() {
    let dns = Arc::new(MemoryResolver::new().mx("example.test", 10, "mx1.example.test"));
    dns.set_temp_fail("example.test", true);
    let s = site(&dns, None);
    assert!(matches!(
        s.policy_for_host("mta-sts.example.test").await,
        Lookup::Unavailable { .. }
    ));
    dns.set_temp_fail("example.test", false);
    s.look_up("example.test").await;
    assert!(policy(s.policy_for_host("mta-sts.example.test").await).matches_mx("mx1.example.test"));
}

#[tokio::test]
async fn configured_mx_needs_no_dns_and_a_reload_replaces_settings_and_domains() {
    let dns = Arc::new(MemoryResolver::new());
    let s = site(&dns, Some(&["*.example.test"]));
    let p = policy(s.policy_for_host("mta-sts.other.test").await);
    assert!(p.matches_mx("a.example.test"));
    s.update(
        Publish {
            mode: PublishMode::Testing,
            mx: Some(vec!["mx.new.test".into()]),
            ..Publish::default()
        },
        &domains(&["new.test"]),
    );
    assert_eq!(
        s.policy_for_host("mta-sts.other.test").await,
        Lookup::NotOurs
    );
    let p = policy(s.policy_for_host("mta-sts.new.test").await);
    assert_eq!(p.mode, portcullis_policy::Mode::Testing);
    assert!(p.matches_mx("mx.new.test"));
}

/// A listener with no accepted domain is fine: it answers 404 to all.
#[tokio::test]
async fn without_accepted_domains_nothing_is_ours() {
    let dns = Arc::new(MemoryResolver::new().mx("example.test", 10, "mx1.example.test"));
    let s = Site::new(dns, Publish::default(), &[]);
    assert_eq!(
        s.policy_for_host("mta-sts.example.test").await,
        Lookup::NotOurs
    );
    s.refresh_due().await;
    assert!(s.lock_mx().is_empty());
}
