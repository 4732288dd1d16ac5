//! The DNS lists against a real DNS server on loopback (`TestDns`),
//! through the production resolver, with an injected clock for the cache.

use super::*;
use crate::ScreenDns;
use portcullis_config::Dnsbl;
use portcullis_dns::HickoryResolver;
use portcullis_test_support::dns::{FailMode, TestDns};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// A clock the test moves by hand (Unix milliseconds).
#[derive(Debug)]
struct HandClock(AtomicU64);

impl HandClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

struct Fixture {
    dns: TestDns,
    lists: DnsLists,
}

async fn fixture() -> Fixture {
    fixture_with(Duration::from_secs(2), LOOKUP_TIMEOUT).await
}

async fn fixture_with(resolver_timeout: Duration, lookup_timeout: Duration) -> Fixture {
    let dns = TestDns::start().await;
    let resolver = HickoryResolver::new(&[dns.addr()], resolver_timeout).expect("resolver");
    let clock = Arc::new(HandClock(AtomicU64::new(1_700_000_000_000)));
    let screen_dns: Arc<dyn ScreenDns> = Arc::new(ResolverDns::new(resolver));
    let lists = DnsLists::new(Some(screen_dns), clock).with_timeout(lookup_timeout);
    Fixture { dns, lists }
}

/// The production resolver without its cache: a new one per lookup, so a
/// test sees every change of the server at once and only the lists' own
/// cache remembers anything.
struct Uncached(std::net::SocketAddr);

impl Uncached {
    fn resolver(&self) -> ResolverDns<HickoryResolver> {
        ResolverDns::new(HickoryResolver::new(&[self.0], Duration::from_secs(2)).expect("resolver"))
    }
}

impl ScreenDns for Uncached {
    fn ipv4_ttl<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::BoxFuture<'a, Result<(Vec<Ipv4Addr>, Duration), portcullis_dns::DnsError>> {
        Box::pin(async move { self.resolver().ipv4_ttl(name).await })
    }
    fn ipv4_cacheable<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::BoxFuture<'a, Result<(Vec<Ipv4Addr>, Duration), portcullis_dns::TtlError>> {
        Box::pin(async move { self.resolver().ipv4_cacheable(name).await })
    }
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::BoxFuture<'a, Result<Vec<String>, portcullis_dns::DnsError>> {
        Box::pin(async move { self.resolver().txt(name).await })
    }
}

fn list(zone: &str, weight: i32) -> Dnsbl {
    Dnsbl {
        zone: Domain::parse(zone).unwrap(),
        weight,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn zone(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

const LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The value of `portcullis_dnsbl_lookups_total{zone,outcome}`.
fn count(lists: &DnsLists, zone: &str, outcome: &str) -> u64 {
    let mut w = portcullis_metrics::MetricsWriter::new();
    lists.render_metrics(&mut w);
    let page = w.finish();
    let prefix =
        format!("portcullis_dnsbl_lookups_total{{zone=\"{zone}\",outcome=\"{outcome}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn listed_client_is_scored() {
    let f = fixture().await;
    f.dns.list("bl.test", ip("127.0.0.2"), LISTED, 600);
    let lists = [list("bl.test", 2)];
    let v = f.lists.verdict(&lists, ip("127.0.0.2")).await;
    assert_eq!(v.score, 2);
    assert_eq!(
        v.hits,
        vec![ListHit {
            zone: zone("bl.test"),
            weight: 2,
            answers: vec![LISTED]
        }]
    );
    assert!(v.failed.is_empty());
    assert_eq!(v.blocked_by(2), Some(&zone("bl.test")));
    assert_eq!(v.blocked_by(3), None);
    assert!(!v.allowlisted());
    assert_eq!(count(&f.lists, "bl.test", "listed"), 1);

    // Another client of the same zone is not listed.
    let v = f.lists.verdict(&lists, ip("127.0.0.3")).await;
    assert_eq!(v, ListsVerdict::default());
}

#[tokio::test]
async fn allowlisted_client_has_a_negative_score() {
    let f = fixture().await;
    f.dns.list(
        "wl.test",
        ip("127.0.0.5"),
        Ipv4Addr::new(127, 0, 10, 3),
        600,
    );
    let v = f
        .lists
        .verdict(&[list("wl.test", -5)], ip("127.0.0.5"))
        .await;
    assert_eq!(v.score, -5);
    assert!(v.allowlisted());
    assert_eq!(v.blocked_by(1), None);
    assert_eq!(v.hits[0].answers, vec![Ipv4Addr::new(127, 0, 10, 3)]);
}

/// Every list is asked; the weights of the lists the client is on add up
/// (an allow list takes away), in the order the lists are configured.
#[tokio::test]
async fn weights_of_several_lists_are_summed() {
    let f = fixture().await;
    let client = ip("127.0.0.7");
    f.dns.list("one.test", client, LISTED, 600);
    f.dns
        .list("two.test", client, Ipv4Addr::new(127, 0, 0, 4), 600);
    f.dns.list("wl.test", client, LISTED, 600);
    let lists = [
        list("one.test", 1),
        list("absent.test", 10),
        list("two.test", 3),
        list("wl.test", -2),
    ];
    let v = f.lists.verdict(&lists, client).await;
    assert_eq!(v.score, 2);
    let zones: Vec<&str> = v.hits.iter().map(|h| h.zone.as_str()).collect();
    assert_eq!(zones, ["one.test", "two.test", "wl.test"]);
    assert!(v.failed.is_empty());
    // The refusal names the heaviest block list.
    assert_eq!(v.blocked_by(2), Some(&zone("two.test")));
    assert!(v.allowlisted());
}

/// RFC 5782 §2.1: NXDOMAIN is "not listed", not a failure.
#[tokio::test]
async fn nxdomain_is_not_listed() {
    let f = fixture().await;
    let v = f
        .lists
        .verdict(&[list("bl.test", 1)], ip("192.0.2.1"))
        .await;
    assert_eq!(v, ListsVerdict::default());
    assert_eq!(count(&f.lists, "bl.test", "not_listed"), 1);
    assert_eq!(f.lists.cached(), 1);
}

/// A list that fails (SERVFAIL) scores nothing and is reported as failed,
/// beside a list that answers; the failure is not cached, so the list is
/// asked again at the next connection and its answer then counts.
#[tokio::test]
async fn servfail_is_a_failure_that_scores_nothing_and_is_not_cached() {
    let f = fixture().await;
    let client = ip("127.0.0.2");
    f.dns.list("down.test", client, LISTED, 600);
    f.dns.list("up.test", client, LISTED, 600);
    f.dns.fail_zone("down.test", FailMode::ServFail);
    let lists = [list("down.test", 5), list("up.test", 1)];
    let v = f.lists.verdict(&lists, client).await;
    assert_eq!(v.score, 1);
    assert_eq!(v.failed, vec![zone("down.test")]);
    assert_eq!(v.hits.len(), 1);
    assert_eq!(count(&f.lists, "down.test", "failed"), 1);
    assert_eq!(f.lists.cached(), 1, "only up.test's answer is cached");

    f.dns.clear_fail_zone("down.test");
    let v = f.lists.verdict(&lists, client).await;
    assert_eq!(v.score, 6);
    assert!(v.failed.is_empty());
    assert_eq!(count(&f.lists, "down.test", "listed"), 1);
    assert_eq!(count(&f.lists, "up.test", "cached"), 1);
}

/// A list that never answers is given up after the lookup timeout (here
/// shorter than the resolver's own): a failure, not a listing.
#[tokio::test]
async fn a_silent_list_times_out_as_a_failure() {
    let f = fixture_with(Duration::from_secs(30), Duration::from_millis(300)).await;
    let client = ip("127.0.0.2");
    f.dns.list("silent.test", client, LISTED, 600);
    f.dns.fail_zone("silent.test", FailMode::Timeout);
    let v = f.lists.verdict(&[list("silent.test", 5)], client).await;
    assert_eq!(v.score, 0);
    assert_eq!(v.failed, vec![zone("silent.test")]);
    assert_eq!(count(&f.lists, "silent.test", "failed"), 1);
    assert_eq!(f.lists.cached(), 0);
}

/// A resolver that answers with an address outside 127.0.0.0/8 (rewriting
/// NXDOMAIN into an advertising page, say) must not block the client.
#[tokio::test]
async fn answer_outside_127_8_is_ignored() {
    let f = fixture().await;
    let client = ip("127.0.0.2");
    f.dns
        .list("hijacked.test", client, Ipv4Addr::new(192, 0, 2, 80), 600);
    let v = f.lists.verdict(&[list("hijacked.test", 5)], client).await;
    assert_eq!(v, ListsVerdict::default());
    assert_eq!(count(&f.lists, "hijacked.test", "ignored"), 1);
}

/// Spamhaus answers 127.255.255.254 to queries through public resolvers:
/// the list did not look the client up, so it is a failure, never a
/// listing, and it is not cached.
#[tokio::test]
async fn list_error_code_is_a_failure() {
    let f = fixture().await;
    let client = ip("127.0.0.2");
    f.dns
        .list("zen.test", client, Ipv4Addr::new(127, 255, 255, 254), 600);
    let v = f.lists.verdict(&[list("zen.test", 5)], client).await;
    assert_eq!(v.score, 0);
    assert!(v.hits.is_empty());
    assert_eq!(v.failed, vec![zone("zen.test")]);
    assert_eq!(f.lists.cached(), 0);
}

/// RFC 5782 §2.4: an IPv6 client is looked up by its nibbles; an
/// IPv4-mapped client by its IPv4 address (and cached as it).
#[tokio::test]
async fn ipv6_and_ipv4_mapped_clients() {
    let f = fixture().await;
    let v6 = ip("2001:db8::25");
    f.dns.list("bl.test", v6, LISTED, 600);
    f.dns.list("bl.test", ip("192.0.2.9"), LISTED, 600);
    let lists = [list("bl.test", 1)];
    assert_eq!(f.lists.verdict(&lists, v6).await.score, 1);
    assert_eq!(f.lists.verdict(&lists, ip("2001:db8::26")).await.score, 0);
    assert_eq!(
        f.lists.verdict(&lists, ip("::ffff:192.0.2.9")).await.score,
        1
    );
    assert_eq!(f.lists.forget(ip("192.0.2.9")), 1);
}

/// An answer is served from the cache until its TTL (within [`MIN_TTL`] ..
/// [`MAX_TTL`]; "not listed" for the negative TTL) runs out on the
/// injected clock, then the list is asked again and its new answer
/// counts. The resolver keeps no cache here, so what stays is ours.
#[tokio::test]
async fn cached_within_ttl_and_looked_up_again_after_it() {
    let dns = TestDns::start().await;
    let clock = Arc::new(HandClock(AtomicU64::new(1_700_000_000_000)));
    let lists = DnsLists::new(Some(Arc::new(Uncached(dns.addr()))), clock.clone());
    let client = ip("127.0.0.2");
    let cfg = [list("bl.test", 1)];
    dns.list("bl.test", client, LISTED, 120);
    assert_eq!(lists.verdict(&cfg, client).await.score, 1);

    dns.unlist("bl.test", client);
    dns.list("bl.test", client, Ipv4Addr::new(127, 0, 0, 9), 0);
    clock.advance(Duration::from_secs(119));
    let v = lists.verdict(&cfg, client).await;
    assert_eq!(v.hits[0].answers, vec![LISTED], "from the cache");
    assert_eq!(count(&lists, "bl.test", "cached"), 1);

    clock.advance(Duration::from_secs(2));
    let v = lists.verdict(&cfg, client).await;
    assert_eq!(v.hits[0].answers, vec![Ipv4Addr::new(127, 0, 0, 9)]);
    assert_eq!(count(&lists, "bl.test", "listed"), 2);

    // TTL 0 is kept MIN_TTL.
    dns.unlist("bl.test", client);
    clock.advance(MIN_TTL - Duration::from_secs(1));
    assert_eq!(lists.verdict(&cfg, client).await.score, 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(lists.verdict(&cfg, client).await.score, 0);

    // "Not listed" is kept for the zone's negative TTL (RFC 2308 §5).
    dns.set_negative_ttl(600);
    let other = ip("127.0.0.3");
    assert_eq!(lists.verdict(&cfg, other).await.score, 0);
    dns.list("bl.test", other, LISTED, 600);
    clock.advance(Duration::from_secs(599));
    assert_eq!(lists.verdict(&cfg, other).await.score, 0, "cached");
    clock.advance(Duration::from_secs(2));
    assert_eq!(lists.verdict(&cfg, other).await.score, 1);
}

/// The cache never holds more than its capacity, however many clients
/// come: the newest answers stay, the oldest go.
#[tokio::test]
async fn cache_is_bounded() {
    let f = fixture().await;
    let lists_cfg = [list("bl.test", 1), list("wl.test", -1)];
    let lists = f.lists.with_capacity(5);
    for i in 1..=20u8 {
        lists
            .verdict(&lists_cfg, IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
            .await;
        assert!(lists.cached() <= 5, "{} cached", lists.cached());
    }
    assert_eq!(lists.cached(), 5);
    // The last client is still cached, the first is not.
    lists.verdict(&lists_cfg, ip("192.0.2.20")).await;
    assert_eq!(count(&lists, "bl.test", "cached"), 1);
    assert_eq!(count(&lists, "wl.test", "cached"), 1);
    lists.verdict(&lists_cfg, ip("192.0.2.1")).await;
    assert_eq!(count(&lists, "bl.test", "cached"), 1);
    assert_eq!(count(&lists, "bl.test", "not_listed"), 21);
}

/// `forget` drops every zone's answer for the client (`screen clear IP`),
/// so the next verdict asks the lists again.
#[tokio::test]
async fn forget_drops_the_clients_answers() {
    let f = fixture().await;
    let client = ip("127.0.0.2");
    // The resolver must not keep "not listed" either.
    f.dns.set_negative_ttl(0);
    let lists = [list("bl.test", 1), list("wl.test", -1)];
    f.lists.verdict(&lists, client).await;
    f.lists.verdict(&lists, ip("127.0.0.3")).await;
    assert_eq!(f.lists.cached(), 4);
    assert_eq!(f.lists.forget(client), 2);
    assert_eq!(f.lists.forget(client), 0);
    assert_eq!(f.lists.cached(), 2);
    f.dns.list("bl.test", client, LISTED, 600);
    assert_eq!(f.lists.verdict(&lists, client).await.score, 1);
}

#[tokio::test]
async fn without_dns_nothing_is_looked_up() {
    let clock: Arc<dyn Clock> = Arc::new(HandClock(AtomicU64::new(0)));
    let lists = DnsLists::new(None, clock);
    let v = lists.verdict(&[list("bl.test", 1)], ip("127.0.0.2")).await;
    assert_eq!(v, ListsVerdict::default());
    assert_eq!(lists.cached(), 0);
}

/// Cluster mode's shared answers, in memory: what one node's lookups put
/// is what the other's get.
#[derive(Default)]
struct Board(std::sync::Mutex<std::collections::HashMap<(IpAddr, Domain), SharedAnswer>>);

impl SharedLists for Board {
    fn get<'a>(
        &'a self,
        ip: IpAddr,
        zone: &'a Domain,
    ) -> crate::BoxFuture<'a, Option<SharedAnswer>> {
        Box::pin(async move { self.0.lock().unwrap().get(&(ip, zone.clone())).cloned() })
    }
    fn put<'a>(
        &'a self,
        ip: IpAddr,
        zone: &'a Domain,
        answer: SharedAnswer,
    ) -> crate::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0.lock().unwrap().insert((ip, zone.clone()), answer);
        })
    }
    fn forget(&self, ip: IpAddr) -> crate::BoxFuture<'_, u64> {
        Box::pin(async move {
            let mut map = self.0.lock().unwrap();
            let before = map.len();
            map.retain(|(i, _), _| *i != ip);
            (before - map.len()) as u64
        })
    }
}

/// A listing looked up by one node answers the other without a DNS
/// query (the list changed meanwhile, and the other node still sees the
/// shared answer); a failed lookup is never shared.
#[tokio::test]
async fn an_answer_looked_up_by_one_node_answers_the_other() {
    let dns = TestDns::start().await;
    let board = Arc::new(Board::default());
    let node = || {
        let clock = Arc::new(HandClock(AtomicU64::new(1_700_000_000_000)));
        let screen_dns: Arc<dyn ScreenDns> = Arc::new(Uncached(dns.addr()));
        DnsLists::new(Some(screen_dns), clock).with_shared(board.clone())
    };
    let (a, b) = (node(), node());
    let client = ip("192.0.2.99");
    dns.list("bl.test", client, Ipv4Addr::new(127, 0, 0, 2), 600);
    let lists = [list("bl.test", 10)];
    assert_eq!(a.verdict(&lists, client).await.score, 10);
    let shared = board
        .0
        .lock()
        .unwrap()
        .get(&(client, zone("bl.test")))
        .cloned();
    let shared = shared.expect("shared");
    assert_eq!(shared.listed, Some(vec![Ipv4Addr::new(127, 0, 0, 2)]));
    dns.unlist("bl.test", client);
    assert_eq!(b.verdict(&lists, client).await.score, 10, "from A's answer");
    // A clear on one node removes the shared answer: the other node, with
    // nothing cached, asks DNS (which no longer lists the client).
    assert_eq!(a.forget(client) + a.forget_shared(client).await, 2);
    let c = node();
    assert_eq!(c.verdict(&lists, client).await.score, 0);
    // A failure is not shared.
    dns.fail_zone("bad.test", FailMode::ServFail);
    let bad = [list("bad.test", 10)];
    assert_eq!(a.verdict(&bad, client).await.failed.len(), 1);
    assert!(
        !board
            .0
            .lock()
            .unwrap()
            .contains_key(&(client, zone("bad.test")))
    );
}
