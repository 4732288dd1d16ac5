//! DNSSEC for the [`crate::dns::TestDns`] server: a signed root of its own
//! (its DNSKEY is the trust anchor a resolver under test is given) that
//! delegates every zone (the last two labels of a name, or a zone made
//! with [`crate::dns::TestDns::sign_zone`]); signed zones get a DS from
//! the root and an RRSIG on every RRset, unsigned zones a signed proof
//! that they have no DS (so their answers are provably insecure, RFC 4035
//! §5.2), and a name can be given a broken signature (bogus).
//!
//! Signatures are made per query (Ed25519, through ring), valid from an
//! hour ago to a day ahead. Negative answers inside a signed zone carry an
//! NSEC for NODATA only; NXDOMAIN there is not proven (bogus).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_server::proto::dnssec::crypto::Ed25519SigningKey;
use hickory_server::proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, RRSIG, SigInput};
use hickory_server::proto::dnssec::{DigestType, DnssecSigner, SigningKey, TBS, Verifier};
use hickory_server::proto::rr::rdata::{NS, SOA};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};

/// The TTL of the records made here, in seconds.
const TTL: u32 = 1;

/// A zone's key: the signer and its DNSKEY.
pub(crate) struct ZoneKey {
    apex: Name,
    signer: DnssecSigner,
    dnskey: DNSKEY,
}

impl ZoneKey {
    /// A fresh Ed25519 key for `apex` (a key-signing and zone-signing key
    /// at once).
    fn generate(apex: Name) -> ZoneKey {
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().expect("TestDns: generate an Ed25519 key");
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).expect("TestDns: load the Ed25519 key");
        let public = key.to_public_key().expect("TestDns: public key");
        let dnskey = DNSKEY::new(true, true, false, public);
        let signer = DnssecSigner::new(
            dnskey.clone(),
            Box::new(key),
            apex.clone(),
            std::time::Duration::from_secs(86_400),
        );
        ZoneKey {
            apex,
            signer,
            dnskey,
        }
    }

    fn dnskey_record(&self) -> Record {
        Record::from_rdata(
            self.apex.clone(),
            TTL,
            RData::DNSSEC(DNSSECRData::DNSKEY(self.dnskey.clone())),
        )
    }

    fn ds_record(&self) -> Record {
        let digest = self
            .dnskey
            .to_digest(&self.apex, DigestType::SHA256)
            .expect("TestDns: DS digest");
        let tag = self.dnskey.calculate_key_tag().expect("TestDns: key tag");
        let ds = DS::new(
            tag,
            self.dnskey.algorithm(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        );
        Record::from_rdata(self.apex.clone(), TTL, RData::DNSSEC(DNSSECRData::DS(ds)))
    }

    /// The RRSIG over `rrset` (records of one name and type); `broken`
    /// flips a bit of the signature.
    fn sign(&self, rrset: &[Record], broken: bool) -> Record {
        let first = &rrset[0];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as u32;
        let input = SigInput {
            type_covered: first.record_type(),
            algorithm: self.dnskey.algorithm(),
            num_labels: first.name.num_labels(),
            original_ttl: first.ttl,
            sig_expiration: SerialNumber::new(now + 86_400),
            sig_inception: SerialNumber::new(now - 3_600),
            key_tag: self.dnskey.calculate_key_tag().expect("TestDns: key tag"),
            signer_name: self.apex.clone(),
        };
        let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, rrset.iter())
            .expect("TestDns: data to sign");
        let mut sig = self.signer.sign(&tbs).expect("TestDns: sign");
        if broken && let Some(byte) = sig.first_mut() {
            *byte ^= 1;
        }
        Record::from_rdata(
            first.name.clone(),
            first.ttl,
            RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
        )
    }
}

/// The DNSSEC state of the server: the root key, the signed zones, the
/// names whose signatures are broken.
pub(crate) struct Dnssec {
    root: Arc<ZoneKey>,
    zones: HashMap<String, Arc<ZoneKey>>,
    broken: HashSet<String>,
}

impl std::fmt::Debug for Dnssec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let zones: Vec<&String> = self.zones.keys().collect();
        f.debug_struct("Dnssec").field("zones", &zones).finish()
    }
}

impl Default for Dnssec {
    fn default() -> Dnssec {
        Dnssec {
            root: Arc::new(ZoneKey::generate(Name::root())),
            zones: HashMap::new(),
            broken: HashSet::new(),
        }
    }
}

/// Lowercase, without the trailing dot.
fn key(name: &Name) -> String {
    let text = name.to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase()
}

impl Dnssec {
    /// Signs `zone` (a new key; its DS is published by the root).
    pub(crate) fn sign_zone(&mut self, zone: &str) {
        let apex = crate::dns::fqdn(zone);
        self.zones
            .insert(key(&apex), Arc::new(ZoneKey::generate(apex)));
    }

    /// Makes the RRSIGs of `name` fail to verify.
    pub(crate) fn break_signature(&mut self, name: &str) {
        self.broken.insert(key(&crate::dns::fqdn(name)));
    }

    /// The trust anchor file's text: the root's DNSKEY in presentation
    /// format (what `[dns] trust_anchors` reads).
    pub(crate) fn trust_anchor(&self) -> String {
        format!(". {TTL} IN DNSKEY {}\n", self.root.dnskey)
    }

    /// The apex of the zone `name` is in: the closest signed zone at or
    /// above it, else its last two labels (the root delegates every such
    /// zone).
    fn apex(&self, name: &Name) -> Name {
        let mut current = name.clone();
        while !current.is_root() {
            if self.zones.contains_key(&key(&current)) {
                return current;
            }
            current = current.base_name();
        }
        if name.num_labels() <= 2 {
            name.clone()
        } else {
            name.trim_to(2)
        }
    }

    /// The key that signs the zone `name` is in, if that zone is signed.
    fn zone_key(&self, name: &Name) -> Option<&Arc<ZoneKey>> {
        self.zones.get(&key(&self.apex(name)))
    }

    /// Answers the questions only DNSSEC validation asks (the root's and
    /// zones' DNSKEY, DS at a zone cut, NS at a zone apex), or `None`
    /// when the zone's records answer.
    pub(crate) fn special(&self, qname: &Name, qtype: RecordType) -> Option<Vec<Record>> {
        let apex = self.apex(qname);
        let at_apex = &apex == qname;
        match qtype {
            RecordType::DNSKEY if qname.is_root() => {
                Some(self.signed(vec![self.root.dnskey_record()]))
            }
            RecordType::DNSKEY if at_apex => {
                let zone = self.zone_key(qname)?;
                Some(self.signed(vec![zone.dnskey_record()]))
            }
            RecordType::NS if at_apex || qname.is_root() => Some(vec![Record::from_rdata(
                qname.clone(),
                TTL,
                RData::NS(NS(crate::dns::fqdn("ns.test"))),
            )]),
            _ => None,
        }
    }

    /// The DS answer at a zone cut (signed by the root): the DS of a
    /// signed zone, else a NODATA whose NSEC proves there is none.
    /// `None` for names that are not a zone apex.
    pub(crate) fn ds(&self, qname: &Name) -> Option<(Vec<Record>, Vec<Record>)> {
        if &self.apex(qname) != qname || qname.is_root() {
            return None;
        }
        if let Some(zone) = self.zone_key(qname) {
            return Some((self.signed(vec![zone.ds_record()]), Vec::new()));
        }
        let nsec = NSEC::new_cover_self(
            crate::dns::fqdn(&format!("0.{}", key(qname))),
            [RecordType::NS],
        );
        let nsec = Record::from_rdata(qname.clone(), TTL, RData::DNSSEC(DNSSECRData::NSEC(nsec)));
        let mut authority = self.signed(vec![nsec]);
        authority.extend(self.signed(vec![root_soa(Name::root())]));
        Some((Vec::new(), authority))
    }

    /// `records` (grouped into RRsets) with an RRSIG for every RRset whose
    /// zone is signed (the root's records by the root key).
    pub(crate) fn signed(&self, records: Vec<Record>) -> Vec<Record> {
        let mut sets: Vec<Vec<Record>> = Vec::new();
        for record in records {
            match sets.iter_mut().find(|set| {
                set[0].name == record.name && set[0].record_type() == record.record_type()
            }) {
                Some(set) => set.push(record),
                None => sets.push(vec![record]),
            }
        }
        let mut out = Vec::new();
        for set in sets {
            let first = &set[0];
            let at_cut = self.apex(&first.name) == first.name;
            let signer = match first.record_type() {
                // DS belongs to the parent side of the cut: the root.
                RecordType::DS => Some(&self.root),
                _ if first.name.is_root() => Some(&self.root),
                // So does the NSEC denying the DS of an unsigned zone.
                RecordType::NSEC => self.zone_key(&first.name).or(at_cut.then_some(&self.root)),
                _ => self.zone_key(&first.name),
            };
            let sig = signer.map(|k| k.sign(&set, self.broken.contains(&key(&first.name))));
            out.extend(set);
            out.extend(sig);
        }
        out
    }

    /// The authority section of a negative answer for `qname` in its
    /// zone: the zone's SOA and, in a signed zone, for NODATA, an NSEC
    /// listing the types `qname` has (`present`).
    pub(crate) fn negative(
        &self,
        qname: &Name,
        present: Option<Vec<RecordType>>,
        minimum: u32,
    ) -> Vec<Record> {
        let apex = self.apex(qname);
        let mut soa = root_soa(apex.clone());
        if let RData::SOA(s) = &mut soa.data {
            s.minimum = minimum;
        }
        soa.ttl = minimum;
        let mut records = vec![soa];
        if let (Some(present), Some(_)) = (present, self.zone_key(qname)) {
            let nsec =
                NSEC::new_cover_self(crate::dns::fqdn(&format!("0.{}", key(qname))), present);
            records.push(Record::from_rdata(
                qname.clone(),
                TTL,
                RData::DNSSEC(DNSSECRData::NSEC(nsec)),
            ));
        }
        self.signed(records)
    }
}

/// An SOA record at `apex`.
fn root_soa(apex: Name) -> Record {
    let soa = SOA::new(
        crate::dns::fqdn("ns.test"),
        crate::dns::fqdn("hostmaster.test"),
        1,
        60,
        60,
        600,
        TTL,
    );
    Record::from_rdata(apex, TTL, RData::SOA(soa))
}
