//! The MTA-STS policy file (RFC 8461 §3.2), fetched over HTTPS from a host
//! the recipient domain names: arbitrary text must parse or be refused
//! without a panic, and an accepted policy must mean what it says. The
//! last line of the input doubles as an MX host name to match (§4.1).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{MAX_MAX_AGE, Mode, MxPattern, Policy};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let host = text.rsplit('\n').next().unwrap_or("");
    let Ok(p) = Policy::parse(&text) else {
        return;
    };
    assert!(p.max_age <= MAX_MAX_AGE);
    assert!(
        p.mode == Mode::None || !p.mx.is_empty(),
        "mode {} without mx",
        p.mode
    );
    assert_eq!(p.text, text, "the policy text is kept as served");
    // What we render (pins, `policy show`) parses back to the same policy.
    let again = Policy::parse(&Policy::render(p.mode, &p.mx, p.max_age))
        .unwrap_or_else(|e| panic!("rendered policy does not parse: {e}"));
    assert_eq!(
        (again.mode, &again.mx, again.max_age),
        (p.mode, &p.mx, p.max_age)
    );
    for pattern in &p.mx {
        let shown = pattern.to_string();
        assert_eq!(MxPattern::parse(&shown).ok().as_ref(), Some(pattern));
        let name = shown.strip_prefix("*.").unwrap_or(&shown);
        // §4.1: a wildcard matches exactly one more label, never the name itself.
        assert_eq!(
            pattern.matches(name),
            !pattern.is_wildcard(),
            "{shown} vs {name}"
        );
        assert_eq!(pattern.matches(&format!("x.{name}")), pattern.is_wildcard());
        assert!(
            !pattern.matches(&format!("a.b.{name}")),
            "{shown} matched two labels"
        );
    }
    // Matching is case-insensitive and ignores one trailing dot.
    let m = p.matches_mx(host);
    assert_eq!(
        m,
        p.matches_mx(&host.to_ascii_uppercase()),
        "case: {host:?}"
    );
    if !host.ends_with('.') {
        assert_eq!(
            m,
            p.matches_mx(&format!("{host}.")),
            "trailing dot: {host:?}"
        );
    }
});
