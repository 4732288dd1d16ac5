//! Log injection against the real binary with its default text log: bytes a
//! client chooses (here the user name of a failed AUTH PLAIN, which base64
//! lets carry CR, LF and ESC) are escaped, so a client can neither start a
//! log line of its own nor send control sequences to an operator's
//! terminal (issue 11, item 5).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_test_support::server::TlsServer;
use portcullis_test_support::smtp::Client;
use std::time::Duration;

const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO forged: user=root authenticated";

#[test]
fn hostile_user_names_stay_on_their_own_log_line() {
    let mx = TlsServer::start(
        &["submissions"],
        "[submission]\nusers_file = \"{dir}/users\"\nauth_failure_delay = \"10ms\"\n[log]\nformat = \"text\"\n",
    );
    let mut c = Client::connect_tls(
        mx.server.addr("submissions"),
        mx.pki.client_config(),
        "mx.example.test",
    );
    c.ehlo("client.test");
    let user = format!("mallory\r\n{FORGED}\x1b[2J");
    let plain = STANDARD.encode(format!("\0{user}\0wrong"));
    let reply = c.cmd(&format!("AUTH PLAIN {plain}"), 535);
    assert!(reply.text.contains("5.7.8"), "{}", reply.text);
    let line = mx
        .server
        .wait_for_log("authentication failed", Duration::from_secs(10));
    // The whole hostile name is on the server's line, escaped.
    assert!(
        line.contains(&format!(r"mallory\r\n{FORGED}\x1b[2J")),
        "{line}"
    );
    for l in mx.server.logs() {
        assert!(
            !l.starts_with("2026-01-01"),
            "a client forged a log line: {l}"
        );
        assert!(
            !l.contains('\x1b') && !l.contains('\r'),
            "control bytes in: {l:?}"
        );
    }
}
