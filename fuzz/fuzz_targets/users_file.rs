//! The users file (`[submission] users_file`, edited by `portcullis user`
//! and by hand): arbitrary text must parse or be refused with a line number,
//! never panic; a parsed file written back parses to the same users.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_submission::{Users, UsersError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Users::parse(&text) {
        Ok(users) => {
            let written = users.to_string();
            let again = Users::parse(&written)
                .unwrap_or_else(|e| panic!("written file does not parse: {e}\n{written:?}"));
            assert_eq!(again.to_string(), written, "writing is not stable");
            let names: Vec<&str> = users.names().collect();
            assert_eq!(names, again.names().collect::<Vec<_>>());
            assert_eq!(users.len(), names.len());
            for name in names {
                assert!(users.contains(name));
                // The SCRAM secret, if any, was checked when parsing.
                let _ = users.scram_secret(name);
                let _ = users.app_passwords(Some(name)).count();
            }
        }
        Err(UsersError::Parse { line, .. }) => {
            let lines = text.lines().count().max(1);
            assert!((1..=lines).contains(&line), "line {line} of {lines}");
        }
        Err(e) => panic!("parsing text gave {e}"),
    }
});
