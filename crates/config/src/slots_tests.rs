//! `[[listen]] max_connections` and the session limits of `[limits]`:
//! defaults, shares and errors with their key and line.

use super::*;
use std::time::Duration;

#[track_caller]
fn ok(text: &str) -> Config {
    parse(text, None, "h.example.test").unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn error_text(text: &str) -> String {
    parse(text, Some(Path::new("x.toml")), "h.example.test")
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

fn listeners(roles: &[(&str, Option<u32>)]) -> String {
    roles
        .iter()
        .enumerate()
        .map(|(i, (role, max))| {
            let max = max
                .map(|m| format!("max_connections = {m}\n"))
                .unwrap_or_default();
            format!(
                "[[listen]]\naddress = \"127.0.0.1:{}\"\nrole = \"{role}\"\n{max}",
                2525 + i
            )
        })
        .collect()
}

fn maxima(c: &Config) -> Vec<u32> {
    c.listeners.iter().map(|l| l.max_connections).collect()
}

#[test]
fn one_listener_takes_the_whole_total() {
    assert_eq!(maxima(&ok("")), [1000]);
    assert_eq!(maxima(&ok(&listeners(&[("smtp", None)]))), [1000]);
}

/// Unset listeners share the total evenly, so filling one leaves the
/// others their places.
#[test]
fn unset_listeners_share_the_total() {
    let text = listeners(&[("smtp", None), ("submission", None), ("submissions", None)]);
    assert_eq!(maxima(&ok(&text)), [333, 333, 333]);
    let text = format!(
        "{}[limits]\nmax_connections = 10\n",
        listeners(&[("smtp", None), ("submission", None)])
    );
    assert_eq!(maxima(&ok(&text)), [5, 5]);
}

/// A listener that sets its own keeps it; the others share what is left.
#[test]
fn set_listeners_keep_theirs_and_the_rest_share_the_remainder() {
    let text = listeners(&[
        ("smtp", Some(800)),
        ("submission", None),
        ("submissions", None),
    ]);
    assert_eq!(maxima(&ok(&text)), [800, 100, 100]);
    // Set values may add up to more than the total (which still caps them all).
    let text = listeners(&[("smtp", Some(900)), ("submission", Some(900))]);
    assert_eq!(maxima(&ok(&text)), [900, 900]);
}

#[test]
fn listener_limit_errors_name_key_and_line() {
    let text = listeners(&[("smtp", Some(0))]);
    let e = error_text(&text);
    assert!(
        e.contains("x.toml:4: listen[0].max_connections: must be greater than zero"),
        "{e}"
    );

    let text = listeners(&[("smtp", Some(2000))]);
    let e = error_text(&text);
    assert!(
        e.contains(
            "x.toml:4: listen[0].max_connections: 2000 is more than limits.max_connections (1000)"
        ),
        "{e}"
    );

    // Nothing left for the unset listener: its own [[listen]] is named.
    let text = listeners(&[("smtp", Some(1000)), ("submission", None)]);
    let e = error_text(&text);
    assert!(
        e.contains("x.toml:5: listen[1].max_connections: unset, and the other listeners"),
        "{e}"
    );
}

#[test]
fn session_limits_defaults_and_values() {
    let c = ok("");
    assert_eq!(c.limits.max_session_duration, Duration::from_secs(3600));
    assert_eq!(c.limits.max_junk_commands, 100);
    let c = ok("[limits]\nmax_session_duration = \"90s\"\nmax_junk_commands = 20\n");
    assert_eq!(c.limits.max_session_duration, Duration::from_secs(90));
    assert_eq!(c.limits.max_junk_commands, 20);
}

#[test]
fn session_limit_errors_name_key_and_line() {
    let e = error_text("[limits]\nmax_session_duration = \"0s\"\nmax_junk_commands = 0\n");
    assert!(
        e.contains("x.toml:2: limits.max_session_duration: must be greater than zero"),
        "{e}"
    );
    assert!(
        e.contains("x.toml:3: limits.max_junk_commands: must be greater than zero"),
        "{e}"
    );
    let e = error_text("[limits]\nmax_session_duration = \"forever\"\n");
    assert!(e.contains("x.toml:2: limits.max_session_duration:"), "{e}");
}
