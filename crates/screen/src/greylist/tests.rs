//! The greylisting table, on a real sled store with the injected clock.

use super::*;
use crate::testkit::{MemDns, TestClock, store};
use portcullis_dns::MemoryResolver;

const DELAY: u64 = 300;
const WINDOW: u64 = 3600;
const TTL: u64 = 10 * 86_400;

struct Fixture {
    _dir: tempfile::TempDir,
    clock: Arc<TestClock>,
    grey: Greylister,
    settings: Settings,
}

fn fixture(dns: MemoryResolver) -> Fixture {
    let (dir, store) = store();
    let clock = Arc::new(TestClock::at_millis(1_700_000_000_000));
    let dns: Arc<dyn ScreenDns> = Arc::new(MemDns(dns));
    Fixture {
        _dir: dir,
        grey: Greylister::new(store, clock.clone(), Some(dns)),
        clock,
        settings: Settings {
            enabled: true,
            delay: Duration::from_secs(DELAY),
            retry_window: Duration::from_secs(WINDOW),
            pass_ttl: Duration::from_secs(TTL),
            trust_after: 3,
        },
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn domain(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

impl Fixture {
    /// The decision for one attempt (`spf`: the verified domain).
    async fn try_rcpt(
        &self,
        client: &str,
        sender: &str,
        spf: Option<&str>,
        rcpt: &str,
    ) -> Decision {
        let sender = ReversePath::parse(sender).unwrap();
        let spf = spf.map(domain);
        let rcpt = addr(rcpt);
        let attempt = Attempt {
            ip: ip(client),
            sender: &sender,
            spf_pass: spf.as_ref(),
            recipient: &rcpt,
        };
        self.grey.check(&self.settings, &attempt).await.unwrap()
    }

    fn wait(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Greylists `rcpt` once and passes it after the delay.
    async fn pass(&self, client: &str, sender: &str, spf: Option<&str>, rcpt: &str) {
        assert_eq!(
            self.try_rcpt(client, sender, spf, rcpt).await.outcome(),
            Outcome::New
        );
        self.wait(DELAY);
        assert_eq!(
            self.try_rcpt(client, sender, spf, rcpt).await,
            Decision::Pass(Outcome::Passed)
        );
    }
}

fn waits(outcome: Outcome, secs: u64) -> Decision {
    Decision::Wait {
        outcome,
        retry_in: Duration::from_secs(secs),
    }
}

const S: &str = "s@them.test";
const R: &str = "u@ours.test";

#[tokio::test]
async fn first_sight_waits_then_too_early_waits_then_passes_after_the_delay() {
    let f = fixture(MemoryResolver::new());
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await,
        waits(Outcome::New, DELAY)
    );
    f.wait(100);
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await,
        waits(Outcome::Early, DELAY - 100)
    );
    f.wait(DELAY - 100);
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await,
        Decision::Pass(Outcome::Passed)
    );
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await,
        Decision::Pass(Outcome::PassHit)
    );
    // The classic triplet is per /24: a neighbour passes, another network
    // or another sender or recipient does not.
    assert_eq!(
        f.try_rcpt("192.0.2.99", S, None, R).await,
        Decision::Pass(Outcome::PassHit)
    );
    assert_eq!(
        f.try_rcpt("192.0.3.1", S, None, R).await.outcome(),
        Outcome::New
    );
    assert_eq!(
        f.try_rcpt("192.0.2.1", "x@them.test", None, R)
            .await
            .outcome(),
        Outcome::New
    );
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, "v@ours.test")
            .await
            .outcome(),
        Outcome::New
    );
}

#[tokio::test]
async fn a_pass_lasts_pass_ttl_after_its_last_use() {
    let f = fixture(MemoryResolver::new());
    f.pass("2001:db8::1", S, None, R).await;
    // Used again after five days: its life starts again from then.
    f.wait(5 * 86_400);
    assert_eq!(
        f.try_rcpt("2001:db8::2", S, None, R).await,
        Decision::Pass(Outcome::PassHit)
    );
    f.wait(TTL - 1);
    assert_eq!(
        f.try_rcpt("2001:db8::1", S, None, R).await,
        Decision::Pass(Outcome::PassHit)
    );
    f.wait(TTL);
    assert_eq!(
        f.try_rcpt("2001:db8::1", S, None, R).await.outcome(),
        Outcome::New
    );
}

#[tokio::test]
async fn a_retry_after_the_retry_window_starts_again() {
    let f = fixture(MemoryResolver::new());
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await.outcome(),
        Outcome::New
    );
    f.wait(WINDOW);
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await,
        waits(Outcome::New, DELAY)
    );
    f.wait(DELAY);
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await,
        Decision::Pass(Outcome::Passed)
    );
}

#[tokio::test]
async fn a_verified_domain_retrying_from_another_address_is_not_delayed_again() {
    let f = fixture(MemoryResolver::new());
    let spf = Some("them.test");
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, spf, R).await.outcome(),
        Outcome::New
    );
    f.wait(DELAY);
    // Another network of the sender's pool, another local part of the
    // verified domain: the pair (domain, recipient) has waited.
    assert_eq!(
        f.try_rcpt("198.51.100.7", "bounces-1@them.test", spf, R)
            .await,
        Decision::Pass(Outcome::Passed)
    );
    assert_eq!(
        f.try_rcpt("2001:db8::9", S, spf, R).await,
        Decision::Pass(Outcome::PassHit)
    );
    // Without SPF the same retry is a new triplet.
    assert_eq!(
        f.try_rcpt("198.51.100.7", S, None, R).await.outcome(),
        Outcome::New
    );
}

#[tokio::test]
async fn a_verified_domain_is_trusted_after_trust_after_passes() {
    let f = fixture(MemoryResolver::new());
    let spf = Some("them.test");
    f.pass("192.0.2.1", S, spf, "a@ours.test").await;
    f.pass("192.0.2.1", S, spf, "b@ours.test").await;
    // Two passes: a third recipient still waits.
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, spf, "c@ours.test")
            .await
            .outcome(),
        Outcome::New
    );
    f.wait(DELAY);
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, spf, "c@ours.test").await,
        Decision::Pass(Outcome::Passed)
    );
    assert_eq!(
        f.try_rcpt("203.0.113.5", S, spf, "z@ours.test").await,
        Decision::Pass(Outcome::Trusted)
    );
    // Trust is the verified domain's, not a name anyone can claim.
    assert_eq!(
        f.try_rcpt("203.0.113.5", S, None, "z@ours.test")
            .await
            .outcome(),
        Outcome::New
    );
    assert_eq!(
        f.try_rcpt("203.0.113.5", S, Some("other.test"), "z@ours.test")
            .await
            .outcome(),
        Outcome::New
    );
}

#[tokio::test]
async fn a_dmarc_reject_domain_is_trusted_after_its_first_pass() {
    let dns = MemoryResolver::new()
        .txt(
            "_dmarc.bank.test",
            "v=DMARC1; p=reject; rua=mailto:d@bank.test",
        )
        .txt("_dmarc.lax.test", "v=DMARC1; p=none")
        .temp_fail("_dmarc.flaky.test");
    let f = fixture(dns);
    for d in ["bank.test", "lax.test", "flaky.test"] {
        f.pass("192.0.2.1", &format!("s@{d}"), Some(d), "a@ours.test")
            .await;
    }
    let second = |d: &'static str| {
        let f = &f;
        async move {
            let sender = format!("s@{d}");
            f.try_rcpt("192.0.2.1", &sender, Some(d), "b@ours.test")
                .await
                .outcome()
        }
    };
    assert_eq!(second("bank.test").await, Outcome::Trusted);
    assert_eq!(second("lax.test").await, Outcome::New);
    // A DNS failure says nothing: no shortcut.
    assert_eq!(second("flaky.test").await, Outcome::New);
}

#[tokio::test]
async fn entries_of_a_network_are_listed_and_cleared_by_prefix() {
    let f = fixture(MemoryResolver::new());
    f.pass("192.0.2.1", S, None, R).await;
    f.try_rcpt("192.0.2.200", "", None, "v@ours.test").await;
    f.try_rcpt("192.0.3.1", S, None, R).await;
    f.pass("192.0.2.1", S, Some("them.test"), R).await;
    let listed = f
        .grey
        .entries(ip("192.0.2.5"), Duration::from_secs(DELAY))
        .await
        .unwrap();
    let now = f.clock.unix_secs();
    assert_eq!(
        listed,
        vec![
            Entry {
                key: "192.0.2.0/24 <> -> v@ours.test".into(),
                passed: false,
                first_seen: now - DELAY,
                passes_at: now,
                expires: now - DELAY + WINDOW,
            },
            Entry {
                key: "192.0.2.0/24 <s@them.test> -> u@ours.test".into(),
                passed: true,
                first_seen: now - 2 * DELAY,
                passes_at: now - 2 * DELAY,
                expires: now - DELAY + TTL,
            },
        ]
    );
    assert_eq!(f.grey.clear_network(ip("192.0.2.77")).await.unwrap(), 2);
    assert!(
        f.grey
            .entries(ip("192.0.2.1"), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, None, R).await.outcome(),
        Outcome::New
    );
    // The other network and the verified pair stayed.
    assert_eq!(
        f.grey
            .entries(ip("192.0.3.1"), Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, Some("them.test"), R)
            .await
            .outcome(),
        Outcome::PassHit
    );
}

#[tokio::test]
async fn clearing_a_domain_removes_its_pairs_and_its_trust() {
    let f = fixture(MemoryResolver::new());
    let spf = Some("them.test");
    for r in ["a@ours.test", "b@ours.test", "c@ours.test"] {
        f.pass("192.0.2.1", S, spf, r).await;
    }
    f.pass("192.0.2.1", "s@them.testing", Some("them.testing"), R)
        .await;
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, spf, R).await.outcome(),
        Outcome::Trusted
    );
    assert_eq!(f.grey.clear_domain(&domain("them.test")).await.unwrap(), 4);
    assert_eq!(
        f.try_rcpt("192.0.2.1", S, spf, "a@ours.test")
            .await
            .outcome(),
        Outcome::New
    );
    assert_eq!(
        f.try_rcpt("192.0.2.1", "s@them.testing", Some("them.testing"), R)
            .await
            .outcome(),
        Outcome::PassHit
    );
}

#[tokio::test]
async fn outcomes_are_counted() {
    let f = fixture(MemoryResolver::new());
    f.pass("192.0.2.1", S, None, R).await;
    f.try_rcpt("192.0.2.1", S, None, R).await;
    let mut w = MetricsWriter::new();
    f.grey.render_metrics(&mut w);
    let page = w.finish();
    for line in [
        "portcullis_greylist_total{outcome=\"new\"} 1",
        "portcullis_greylist_total{outcome=\"early\"} 0",
        "portcullis_greylist_total{outcome=\"passed\"} 1",
        "portcullis_greylist_total{outcome=\"pass_hit\"} 1",
    ] {
        assert!(page.contains(line), "{line} not in {page}");
    }
}
