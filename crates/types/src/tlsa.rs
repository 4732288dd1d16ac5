//! TLSA records (RFC 6698 §2.1) as DANE for SMTP (RFC 7672) reads them,
//! and the DNSSEC status of a DNS answer.

/// The DNSSEC status of an answer (RFC 4035 §4.3). A bogus answer is not a
/// status but an error of the lookup (a temporary failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsSecurity {
    /// Validated from a trust anchor.
    Secure,
    /// Provably not signed (or validation is off): no DANE.
    Insecure,
}

/// One TLSA record: certificate usage, selector, matching type and the
/// certificate association data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the full certificate, 1 the SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// True when SMTP can use the record (RFC 7672 §3.1): DANE-TA(2) or
    /// DANE-EE(3), selector 0 or 1, matching 0, 1 or 2, and data of the
    /// length its matching type implies. PKIX-TA(0) and PKIX-EE(1) are
    /// unusable for SMTP (§3.1.3).
    pub fn usable(&self) -> bool {
        let length_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, 2 | 3) && matches!(self.selector, 0 | 1) && length_ok
    }
}

impl std::fmt::Display for Tlsa {
    /// Presentation form: `3 1 1 <hex>`, as TLS-RPT's policy-string wants.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_records_are_dane_ta_or_ee_with_known_selector_and_matching() {
        let r = |usage, selector, matching, len| Tlsa {
            usage,
            selector,
            matching,
            data: vec![0xab; len],
        };
        assert!(r(3, 1, 1, 32).usable());
        assert!(r(2, 0, 2, 64).usable());
        assert!(r(3, 0, 0, 300).usable());
        assert!(!r(1, 1, 1, 32).usable(), "PKIX-EE is unusable for SMTP");
        assert!(!r(0, 1, 1, 32).usable(), "PKIX-TA is unusable for SMTP");
        assert!(!r(3, 2, 1, 32).usable());
        assert!(!r(3, 1, 3, 32).usable());
        assert!(!r(3, 1, 1, 31).usable(), "SHA-256 data is 32 octets");
        assert_eq!(r(3, 1, 1, 2).to_string(), "3 1 1 abab");
    }
}
