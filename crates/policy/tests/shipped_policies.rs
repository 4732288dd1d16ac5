//! Every policy file shipped in the repository's `policies/` directory
//! parses, and loads as a pin (STYLE 13).

use portcullis_policy::{Mode, Policy, load_pins_dir};
use std::path::Path;

#[test]
fn every_shipped_policy_parses_and_loads_as_a_pin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/pins");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(&path).unwrap();
            Policy::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no policy files found in {}", dir.display());
    let pins = load_pins_dir(&dir, 0).unwrap();
    assert_eq!(pins.len(), seen);
    let example = pins
        .iter()
        .find(|p| p.domain.as_str() == "example.net")
        .unwrap();
    assert_eq!(example.mode, Mode::Enforce);
}
