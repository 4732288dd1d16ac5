//! A `[recipients] files` file (written by an operator, or generated from a
//! directory export): arbitrary text is parsed or refused with a line
//! number, never a panic; every address it accepts is found again, folded
//! or not, and an address of another domain never makes it in.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_screen::recipients::{AddressList, fold_local};
use portcullis_types::{Address, Domain};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(domain) = Domain::parse("example.test") else {
        return;
    };
    match AddressList::parse(&text, &domain, Path::new("fuzz")) {
        Ok(list) => {
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
                    continue;
                }
                let address = Address::parse(line)
                    .unwrap_or_else(|e| panic!("accepted a line that is no address: {line:?}: {e}"));
                assert_eq!(address.domain, domain, "accepted another domain: {line:?}");
                assert!(list.contains(&address.local), "{line:?} not found");
                assert!(list.contains(&fold_local(&address.local)));
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!((1..=lines).contains(&e.line), "line {} of {lines}", e.line);
        }
    }
});
