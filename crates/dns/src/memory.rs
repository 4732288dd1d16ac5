//! An in-memory [`Resolver`] for unit tests of the crates above this one.
//! It is a public test seam (STYLE 8), not a `cfg(test)` switch.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hickory_resolver::proto::rr::Name;

use crate::dnssec::merge_addresses;
use crate::{
    DnsError, DnsSecurity, Mx, Resolver, Secured, Tlsa, TtlError, canonical, name_to_string,
};

/// The records of one name.
#[derive(Debug, Default, Clone)]
struct Records {
    mx: Vec<Mx>,
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    txt: Vec<String>,
    ptr: Vec<String>,
    tlsa: Vec<Tlsa>,
}

impl Records {
    fn is_empty(&self) -> bool {
        self.mx.is_empty()
            && self.a.is_empty()
            && self.aaaa.is_empty()
            && self.txt.is_empty()
            && self.ptr.is_empty()
            && self.tlsa.is_empty()
    }
}

/// The TTL a [`MemoryResolver`] reports until a test sets another one.
pub const MEMORY_TTL: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct State {
    names: HashMap<String, Records>,
    temp_fail: HashSet<String>,
    /// Names whose answers are DNSSEC-secure (the others are insecure).
    secure: HashSet<String>,
    /// Names whose answers are bogus.
    bogus: HashSet<String>,
    ttl: Duration,
}

impl Default for State {
    fn default() -> State {
        State {
            names: HashMap::new(),
            temp_fail: HashSet::new(),
            secure: HashSet::new(),
            bogus: HashSet::new(),
            ttl: MEMORY_TTL,
        }
    }
}

/// A [`Resolver`] answering from maps of records, plus a set of names whose
/// lookups fail temporarily.
///
/// Build it fluently (`MemoryResolver::new().mx("example.test", 10,
/// "mx.example.test").a("mx.example.test", ip)`), or change it while a test
/// runs with the `add_*`, [`remove`](Self::remove) and
/// [`set_temp_fail`](Self::set_temp_fail) methods; clones share the same
/// records. Names compare case-insensitively and ignore a trailing dot. A
/// name with no records of the asked type but other records gives
/// [`DnsError::NoRecords`], an unknown name [`DnsError::NxDomain`], a name
/// marked with [`temp_fail`](Self::temp_fail) [`DnsError::Temporary`] for
/// every type. [`Resolver::ipv4_ttl`] reports one TTL for every answer,
/// positive or negative ([`MEMORY_TTL`] unless [`ttl`](Self::ttl) set
/// another), as if every name had it and every zone's SOA said so.
///
/// Because the builder methods share their names with the [`Resolver`]
/// methods, call lookups generically or as `Resolver::mx(&r, "…")` /
/// `(&r).mx("…")`.
#[derive(Debug, Clone, Default)]
pub struct MemoryResolver {
    state: Arc<Mutex<State>>,
}

/// The canonical key of a name given by a test; names that would not parse
/// as domain names are kept lowercased so that a test can still set them up.
fn key(name: &str) -> String {
    canonical(name).unwrap_or_else(|_| name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase())
}

impl MemoryResolver {
    /// An empty resolver: every name is NXDOMAIN.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread must not hide the records.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Records)) {
        let mut state = self.state();
        f(state.names.entry(key(name)).or_default());
    }

    /// Adds an MX record (`exchange` `"."` is the null MX, RFC 7505).
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        self.add_mx(name, preference, exchange);
        self
    }

    /// Adds an A record.
    pub fn a(self, name: &str, ip: Ipv4Addr) -> Self {
        self.add_a(name, ip);
        self
    }

    /// Adds an AAAA record.
    pub fn aaaa(self, name: &str, ip: Ipv6Addr) -> Self {
        self.add_aaaa(name, ip);
        self
    }

    /// Adds a TXT record (the whole text, as [`Resolver::txt`] returns it).
    pub fn txt(self, name: &str, text: &str) -> Self {
        self.add_txt(name, text);
        self
    }

    /// Adds a PTR record for `ip`.
    pub fn ptr(self, ip: IpAddr, target: &str) -> Self {
        self.add_ptr(ip, target);
        self
    }

    /// Makes every lookup of `name` fail temporarily.
    pub fn temp_fail(self, name: &str) -> Self {
        self.set_temp_fail(name, true);
        self
    }

    /// Adds a TLSA record (at `_25._tcp.<host>`).
    pub fn tlsa(self, name: &str, record: Tlsa) -> Self {
        self.add_tlsa(name, record);
        self
    }

    /// Makes the answers for `name` DNSSEC-secure (in `mx_secured`,
    /// `addresses_secured`, `tlsa`); every other name is insecure.
    pub fn secure(self, name: &str) -> Self {
        self.set_secure(name, true);
        self
    }

    /// Makes every lookup of `name` fail as DNSSEC-bogus
    /// ([`DnsError::Bogus`], temporary).
    pub fn bogus(self, name: &str) -> Self {
        self.set_bogus(name, true);
        self
    }

    /// Adds a TLSA record to a running resolver.
    pub fn add_tlsa(&self, name: &str, record: Tlsa) {
        self.edit(name, |r| r.tlsa.push(record));
    }

    /// Marks `name`'s answers secure (`true`) or insecure (`false`).
    pub fn set_secure(&self, name: &str, secure: bool) {
        let mut state = self.state();
        if secure {
            state.secure.insert(key(name));
        } else {
            state.secure.remove(&key(name));
        }
    }

    /// Marks `name`'s answers bogus (`true`) or not (`false`).
    pub fn set_bogus(&self, name: &str, bogus: bool) {
        let mut state = self.state();
        if bogus {
            state.bogus.insert(key(name));
        } else {
            state.bogus.remove(&key(name));
        }
    }

    /// The DNSSEC status of `name`'s answers.
    fn security(&self, name: &str) -> DnsSecurity {
        let secure = canonical(name).is_ok_and(|k| self.state().secure.contains(&k));
        if secure {
            DnsSecurity::Secure
        } else {
            DnsSecurity::Insecure
        }
    }

    /// Sets the TTL every answer reports ([`Resolver::ipv4_ttl`]).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.set_ttl(ttl);
        self
    }

    /// Sets the TTL every answer of a running resolver reports.
    pub fn set_ttl(&self, ttl: Duration) {
        self.state().ttl = ttl;
    }

    /// Adds an MX record to a running resolver.
    pub fn add_mx(&self, name: &str, preference: u16, exchange: &str) {
        let exchange = key(exchange);
        self.edit(name, |r| {
            r.mx.push(Mx {
                preference,
                exchange,
            })
        });
    }

    /// Adds an A record to a running resolver.
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.edit(name, |r| r.a.push(ip));
    }

    /// Adds an AAAA record to a running resolver.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.edit(name, |r| r.aaaa.push(ip));
    }

    /// Adds a TXT record to a running resolver.
    pub fn add_txt(&self, name: &str, text: &str) {
        let text = text.to_owned();
        self.edit(name, |r| r.txt.push(text));
    }

    /// Adds a PTR record for `ip` to a running resolver.
    pub fn add_ptr(&self, ip: IpAddr, target: &str) {
        let target = key(target);
        self.edit(&reverse_name(ip), |r| r.ptr.push(target));
    }

    /// Removes the records of type `rtype` (`"MX"`, `"A"`, `"AAAA"`,
    /// `"TXT"`, `"PTR"`, or `"*"` for all) from `name`. A name left without
    /// records becomes unknown (NXDOMAIN).
    pub fn remove(&self, name: &str, rtype: &str) {
        let mut state = self.state();
        let key = key(name);
        let Some(records) = state.names.get_mut(&key) else {
            return;
        };
        match rtype.to_ascii_uppercase().as_str() {
            "MX" => records.mx.clear(),
            "A" => records.a.clear(),
            "AAAA" => records.aaaa.clear(),
            "TXT" => records.txt.clear(),
            "PTR" => records.ptr.clear(),
            "TLSA" => records.tlsa.clear(),
            "*" => *records = Records::default(),
            _ => {}
        }
        if records.is_empty() {
            state.names.remove(&key);
        }
    }

    /// Marks `name` as failing temporarily (`true`) or answering again
    /// (`false`).
    pub fn set_temp_fail(&self, name: &str, failing: bool) {
        let mut state = self.state();
        if failing {
            state.temp_fail.insert(key(name));
        } else {
            state.temp_fail.remove(&key(name));
        }
    }

    /// The answer for `name` and `rtype`, taken from its records by `pick`.
    fn answer<T: Clone>(
        &self,
        name: &str,
        rtype: &'static str,
        pick: impl FnOnce(&Records) -> &Vec<T>,
    ) -> Result<Vec<T>, DnsError> {
        let key = canonical(name)?;
        if key.is_empty() {
            return Err(DnsError::InvalidName {
                name: name.to_owned(),
            });
        }
        let state = self.state();
        if state.temp_fail.contains(&key) {
            return Err(DnsError::Temporary {
                name: key,
                reason: "temporary failure (MemoryResolver::temp_fail)".to_owned(),
            });
        }
        if state.bogus.contains(&key) {
            return Err(DnsError::Bogus {
                name: key,
                reason: "bogus (MemoryResolver::bogus)".to_owned(),
            });
        }
        let Some(records) = state.names.get(&key) else {
            return Err(DnsError::NxDomain { name: key });
        };
        let found = pick(records);
        if found.is_empty() {
            Err(DnsError::NoRecords { name: key, rtype })
        } else {
            Ok(found.clone())
        }
    }
}

/// `4.3.2.1.in-addr.arpa` / `…ip6.arpa` for `ip`.
fn reverse_name(ip: IpAddr) -> String {
    name_to_string(&Name::from(ip))
}

impl Resolver for MemoryResolver {
    async fn mx_secured(&self, name: &str) -> Result<Secured<Vec<Mx>>, DnsError> {
        let value = Resolver::mx(self, name).await?;
        Ok(Secured {
            value,
            security: self.security(name),
        })
    }

    async fn addresses_secured(&self, name: &str) -> Result<Secured<Vec<IpAddr>>, DnsError> {
        let security = self.security(name);
        let found = |ips: Vec<IpAddr>| Secured {
            value: ips,
            security,
        };
        let v4 = self.answer(name, "A", |r| &r.a);
        let v6 = self.answer(name, "AAAA", |r| &r.aaaa);
        merge_addresses(
            v4.map(|a| found(a.into_iter().map(IpAddr::V4).collect())),
            v6.map(|a| found(a.into_iter().map(IpAddr::V6).collect())),
        )
    }

    async fn tlsa(&self, name: &str) -> Result<Secured<Vec<Tlsa>>, DnsError> {
        let value = self.answer(name, "TLSA", |r| &r.tlsa)?;
        Ok(Secured {
            value,
            security: self.security(name),
        })
    }

    async fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError> {
        let mut found = self.answer(name, "MX", |r| &r.mx)?;
        found.sort_by_key(|mx| mx.preference);
        Ok(found)
    }

    async fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        self.answer(name, "A", |r| &r.a)
    }

    async fn ipv4_ttl(&self, name: &str) -> Result<(Vec<Ipv4Addr>, Duration), TtlError> {
        let ttl = self.state().ttl;
        match self.answer(name, "A", |r| &r.a) {
            Ok(found) => Ok((found, ttl)),
            Err(error) => {
                // Like a zone whose SOA gives the same negative TTL.
                let negative_ttl = error.is_not_found().then_some(ttl);
                Err(TtlError {
                    error,
                    negative_ttl,
                })
            }
        }
    }

    async fn ipv6(&self, name: &str) -> Result<Vec<Ipv6Addr>, DnsError> {
        self.answer(name, "AAAA", |r| &r.aaaa)
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.answer(name, "TXT", |r| &r.txt)
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        self.answer(&reverse_name(ip), "PTR", |r| &r.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> MemoryResolver {
        MemoryResolver::new()
            .mx("example.test", 20, "mx2.example.test")
            .mx("Example.Test.", 10, "MX1.example.test.")
            .a("mx1.example.test", Ipv4Addr::new(192, 0, 2, 1))
            .aaaa("mx1.example.test", "2001:db8::1".parse().unwrap())
            .txt("_mta-sts.example.test", "v=STSv1; id=1")
            .mx("nullmx.test", 0, ".")
            .a("addr-only.test", Ipv4Addr::new(192, 0, 2, 9))
            .ptr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), "mx1.example.test.")
            .temp_fail("flaky.test")
    }

    #[tokio::test]
    async fn mx_sorted_and_case_insensitive() {
        let r = fixture();
        let mx = Resolver::mx(&r, "EXAMPLE.test.").await.unwrap();
        assert_eq!(
            mx,
            vec![
                Mx {
                    preference: 10,
                    exchange: "mx1.example.test".into()
                },
                Mx {
                    preference: 20,
                    exchange: "mx2.example.test".into()
                },
            ]
        );
    }

    #[tokio::test]
    async fn null_mx_is_reported() {
        let r = fixture();
        let mx = Resolver::mx(&r, "nullmx.test").await.unwrap();
        assert_eq!(mx.len(), 1);
        assert!(mx[0].is_null());
    }

    #[tokio::test]
    async fn addresses_txt_ptr() {
        let r = fixture();
        assert_eq!(
            r.ipv4("mx1.example.test").await.unwrap(),
            vec![Ipv4Addr::new(192, 0, 2, 1)]
        );
        assert_eq!(
            r.ipv6("mx1.example.test").await.unwrap(),
            vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(
            Resolver::txt(&r, "_MTA-STS.example.test").await.unwrap(),
            vec!["v=STSv1; id=1".to_owned()]
        );
        assert_eq!(
            Resolver::ptr(&r, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
                .await
                .unwrap(),
            vec!["mx1.example.test".to_owned()]
        );
    }

    /// RFC 5321 §5.1: the implicit MX needs "no MX records" to be told apart
    /// from "no such domain".
    #[tokio::test]
    async fn known_name_without_type_is_no_records() {
        let r = fixture();
        let err = Resolver::mx(&r, "addr-only.test").await.unwrap_err();
        assert_eq!(
            err,
            DnsError::NoRecords {
                name: "addr-only.test".into(),
                rtype: "MX"
            }
        );
    }

    #[tokio::test]
    async fn unknown_name_is_nxdomain() {
        let r = fixture();
        let err = r.ipv4("nowhere.test").await.unwrap_err();
        assert_eq!(
            err,
            DnsError::NxDomain {
                name: "nowhere.test".into()
            }
        );
        let err = Resolver::ptr(&r, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)))
            .await
            .unwrap_err();
        assert!(err.is_not_found());
    }

    #[tokio::test]
    async fn temp_fail_is_temporary_for_every_type() {
        let r = fixture().a("flaky.test", Ipv4Addr::LOCALHOST);
        assert!(
            Resolver::mx(&r, "flaky.test")
                .await
                .unwrap_err()
                .is_temporary()
        );
        assert!(r.ipv4("flaky.test").await.unwrap_err().is_temporary());
        assert!(
            Resolver::txt(&r, "FLAKY.test.")
                .await
                .unwrap_err()
                .is_temporary()
        );
        r.set_temp_fail("flaky.test", false);
        assert_eq!(
            r.ipv4("flaky.test").await.unwrap(),
            vec![Ipv4Addr::LOCALHOST]
        );
    }

    /// Every answer reports the resolver's TTL; a negative one as its
    /// negative TTL, a temporary failure none (it must not be cached).
    #[tokio::test]
    async fn ipv4_ttl_reports_the_set_ttl() {
        let r = fixture();
        let (found, ttl) = r.ipv4_ttl("mx1.example.test").await.unwrap();
        assert_eq!(found, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(ttl, MEMORY_TTL);
        r.set_ttl(Duration::from_secs(42));
        assert_eq!(
            r.ipv4_ttl("mx1.example.test").await.unwrap().1,
            Duration::from_secs(42)
        );
        let nx = r.ipv4_ttl("nowhere.test").await.unwrap_err();
        assert!(matches!(nx.error, DnsError::NxDomain { .. }), "{nx:?}");
        assert_eq!(nx.negative_ttl, Some(Duration::from_secs(42)));
        let none = r.ipv4_ttl("example.test").await.unwrap_err();
        assert!(matches!(none.error, DnsError::NoRecords { rtype: "A", .. }));
        assert_eq!(none.negative_ttl, Some(Duration::from_secs(42)));
        let temp = r.ipv4_ttl("flaky.test").await.unwrap_err();
        assert!(temp.error.is_temporary());
        assert_eq!(temp.negative_ttl, None);
    }

    #[tokio::test]
    async fn invalid_name() {
        let r = fixture();
        let err = r.ipv4("a..b").await.unwrap_err();
        assert!(matches!(err, DnsError::InvalidName { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn changes_are_seen_by_clones() {
        let r = fixture();
        let shared = Arc::new(r.clone());
        r.remove("_mta-sts.example.test", "TXT");
        assert!(matches!(
            Resolver::txt(&shared, "_mta-sts.example.test").await,
            Err(DnsError::NxDomain { .. })
        ));
        r.add_txt("_mta-sts.example.test", "v=STSv1; id=2");
        assert_eq!(
            Resolver::txt(&shared, "_mta-sts.example.test")
                .await
                .unwrap(),
            vec!["v=STSv1; id=2".to_owned()]
        );
        r.remove("example.test", "MX");
        assert!(Resolver::mx(&shared, "example.test").await.is_err());
    }

    #[tokio::test]
    async fn u_labels_match_a_labels() {
        let r = MemoryResolver::new().a("bücher.example", Ipv4Addr::LOCALHOST);
        assert_eq!(
            r.ipv4("xn--bcher-kva.example").await.unwrap(),
            vec![Ipv4Addr::LOCALHOST]
        );
    }

    /// Secure only where the test said so; bogus fails every lookup
    /// temporarily; TLSA records come back as added.
    #[tokio::test]
    async fn secured_answers_tlsa_and_bogus() {
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![7; 32],
        };
        let r = MemoryResolver::new()
            .mx("signed.test", 10, "mx.signed.test")
            .a("mx.signed.test", Ipv4Addr::LOCALHOST)
            .tlsa("_25._tcp.mx.signed.test", record.clone())
            .secure("signed.test")
            .secure("mx.signed.test")
            .a("mx.plain.test", Ipv4Addr::LOCALHOST)
            .aaaa("mx.plain.test", Ipv6Addr::LOCALHOST)
            .a("mx.bogus.test", Ipv4Addr::LOCALHOST)
            .bogus("mx.bogus.test");
        let mx = r.mx_secured("signed.test").await.unwrap();
        assert_eq!(mx.security, DnsSecurity::Secure);
        let addrs = r.addresses_secured("mx.signed.test").await.unwrap();
        assert_eq!(addrs.security, DnsSecurity::Secure);
        assert_eq!(addrs.value, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let tlsa = Resolver::tlsa(&r, "_25._tcp.mx.signed.test").await.unwrap();
        assert_eq!(tlsa.value, vec![record]);
        assert_eq!(tlsa.security, DnsSecurity::Insecure, "not marked secure");
        let plain = r.addresses_secured("mx.plain.test").await.unwrap();
        assert_eq!(plain.security, DnsSecurity::Insecure);
        assert_eq!(plain.value.len(), 2);
        let err = r.addresses_secured("mx.bogus.test").await.unwrap_err();
        assert!(matches!(err, DnsError::Bogus { .. }) && err.is_temporary());
        assert!(r.ipv4("mx.bogus.test").await.unwrap_err().is_temporary());
        assert!(
            Resolver::tlsa(&r, "_25._tcp.mx.plain.test")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}
