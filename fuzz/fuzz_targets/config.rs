//! The config loader: TOML text → validated config. The file is the
//! operator's, but a typo must give an error naming the key and the line,
//! never a panic (the server would not start, and `config check` and
//! `reload` would crash instead of explaining).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::ConfigError;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // A file that is not UTF-8 is refused when it is read.
        return;
    };
    match portcullis_config::parse(text, None, "host.example.test") {
        Ok(_) => {}
        Err(ConfigError::Invalid { issues, .. }) => {
            assert!(!issues.is_empty(), "invalid without a reason");
            // A line number may point one past the last line (at EOF).
            let lines = text.lines().count() + 1;
            for i in &issues {
                if let Some(l) = i.line {
                    assert!((1..=lines).contains(&l), "{}: line {l} of {lines}", i.key);
                }
                assert!(!i.message.is_empty(), "{}: empty message", i.key);
            }
        }
        Err(e) => panic!("parsing text gave {e}"),
    }
});
