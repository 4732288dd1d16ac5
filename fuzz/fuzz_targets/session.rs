//! A whole sans-IO SMTP session on arbitrary octets in arbitrary splits:
//! greeting, feed, step until it needs input, the driver's part played
//! (STARTTLS "succeeds", SPF passes, AUTH succeeds for alice, messages are
//! stored). Nothing may panic, and output stays bounded by the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

mod smtp;
mod split;

use smtp::{Drained, MAX_MESSAGE_SIZE};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    let mut s = smtp::session(pick, &mut out);
    let mut ids = 0u64;
    for chunk in split::chunks(rest) {
        s.feed(chunk);
        let drained = smtp::drain(&mut s, &mut out, &mut ids, &mut |m| {
            // The limit applies before `normalize`, which at most doubles it.
            assert!(
                m.data.len() <= 2 * MAX_MESSAGE_SIZE,
                "message over the limit kept"
            );
        });
        // Replies are bounded by what came in (no reply storms).
        assert!(out.len() <= 4096 + 256 * (data.len() + 1));
        out.clear();
        if let Drained::Closed = drained {
            break;
        }
    }
});
