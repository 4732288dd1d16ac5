//! Large messages through the whole session with a real store (sled on
//! disk, message files beside it): the data is written to the message's
//! file as it arrives, the session's
//! memory stays within `spool_threshold` plus one read plus one chunk
//! ([`Session::message_memory_peak`]), a refused or abandoned message
//! leaves no chunk behind, and bare newlines are found or normalised the
//! same however the data is split, across the spool boundary too.

use super::*;
use crate::body;
use crate::spooler::Spooler;
use portcullis_queue::Queue;
use portcullis_store::{MAX_VALUE, Store, TreeName};
use portcullis_types::SystemClock;

const THRESHOLD: usize = 16 * 1024;
const HEADER_LIMIT: usize = 8 * 1024;

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    spooler: Spooler,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = Queue::open(&store).unwrap();
    let spooler = Spooler::new(queue, Arc::new(SystemClock), 7);
    Env {
        _dir: dir,
        store,
        spooler,
    }
}

impl Env {
    /// Spooled data of messages in progress, in [`MAX_VALUE`] blocks: the
    /// blocks in message files plus any body chunk in the store (there
    /// should be none before a commit).
    fn chunks(&self) -> usize {
        let in_store = self.store.tree(TreeName::QueueBodies).unwrap().len();
        let in_files: usize = std::fs::read_dir(self.store.path().join("bodies"))
            .unwrap()
            .map(|e| (e.unwrap().metadata().unwrap().len() as usize).div_ceil(MAX_VALUE))
            .sum();
        in_store + in_files
    }
}

fn big_config(bare: BareNewline) -> Arc<SessionConfig> {
    let mut cfg = (*config(Role::Smtp, bare)).clone();
    cfg.limits.max_message_size = 4 * 1024 * 1024;
    cfg.limits.spool_threshold = THRESHOLD;
    cfg.limits.max_header_size = HEADER_LIMIT;
    Arc::new(cfg)
}

const HEAD: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n";

/// `content` as DATA: dot-stuffed, then the end marker and a NOOP.
fn transaction(content: &[u8]) -> Vec<u8> {
    let mut input = HEAD.to_vec();
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            input.push(b'.');
        }
        input.push(b);
        at_line_start = b == b'\n';
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    input
}

/// A message of about `len` octets: a header section, then lines of text.
fn message(len: usize) -> Vec<u8> {
    let mut m = b"From: a@b.test\r\nSubject: big\r\n\r\n".to_vec();
    let mut i = 0u32;
    while m.len() < len {
        m.extend_from_slice(format!("line {i} .... {}\r\n", "x".repeat(60)).as_bytes());
        i += 1;
    }
    m
}

#[derive(Debug, Default)]
struct Outcome {
    replies: Vec<String>,
    /// Each message reassembled: the session's part, then the spooled part.
    messages: Vec<Vec<u8>>,
    /// Per message: how many octets were spooled.
    spooled: Vec<u64>,
    refusals: Vec<&'static str>,
    peak: usize,
    /// Chunks in the store when the data was half-way through.
    chunks_midway: usize,
}

/// Feeds `input` in reads of `read` octets to a session with a spooler.
fn run(env: &Env, cfg: Arc<SessionConfig>, input: &[u8], read: usize) -> Outcome {
    let mut s = Session::new(cfg, OUTSIDE.parse().unwrap()).with_spooler(env.spooler.clone());
    let mut out = Vec::new();
    let mut o = Outcome::default();
    let mut ids = 0;
    for (n, piece) in input.chunks(read).enumerate() {
        s.feed(piece);
        loop {
            let event = s.step(&mut out);
            o.refusals.extend(s.take_refusals());
            match event {
                Event::NeedInput | Event::Close => break,
                Event::Message(mut m) => {
                    let mut whole = m.data.clone();
                    o.spooled.push(m.spooled.as_ref().map_or(0, |s| s.len()));
                    if let Some(spool) = m.spooled.as_mut() {
                        spool.read_into(&mut whole).unwrap();
                    }
                    o.messages.push(whole);
                    ids += 1;
                    s.message_stored(QueueId::generate(ids, 0), &mut out);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if n == input.len() / read / 2 {
            o.chunks_midway = env.chunks();
        }
    }
    o.peak = s.message_memory_peak();
    o.replies = String::from_utf8_lossy(&out)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l[..3].to_string())
        .collect();
    o
}

/// The replies to the DATA and to the NOOP after it.
fn last_two(o: &Outcome) -> &[String] {
    &o.replies[o.replies.len() - 2..]
}

/// The bound the session promises for reads of `read` octets: the larger
/// of the threshold and the header limit, plus the read twice (the read's
/// content, and `head` overshooting by it before it spills), plus one
/// store chunk being filled.
fn bound(read: usize) -> usize {
    THRESHOLD.max(HEADER_LIMIT) + 2 * (read + 1) + MAX_VALUE
}

/// A 2 MiB message is written to the store while it arrives: half-way
/// through, chunks are already there; the session never holds more than
/// the bound (a small fraction of the message); what comes out is the
/// message, byte for byte, with only the header section in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_is_streamed_within_the_bound() {
    let env = env();
    let content = message(2 * 1024 * 1024);
    let header_len = b"From: a@b.test\r\nSubject: big\r\n\r\n".len();
    for read in [1000, 4096, 65_543] {
        let o = run(
            &env,
            big_config(BareNewline::Reject),
            &transaction(&content),
            read,
        );
        assert_eq!(o.replies.last().map(String::as_str), Some("250"));
        assert_eq!(o.messages.len(), 1, "{:?}", o.replies);
        assert!(o.messages[0] == content, "read {read}: content differs");
        assert_eq!(o.spooled[0], (content.len() - header_len) as u64);
        assert!(o.chunks_midway > 8, "read {read}: nothing spooled midway");
        assert!(
            o.peak <= bound(read),
            "read {read}: held {} octets, bound {}",
            o.peak,
            bound(read)
        );
        // The spool went with the message (the driver would commit it).
        assert_eq!(env.chunks(), 0);
    }
}

/// A small message stays in memory and never touches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_message_is_not_spooled() {
    let env = env();
    let content = message(THRESHOLD - 100);
    let o = run(
        &env,
        big_config(BareNewline::Reject),
        &transaction(&content),
        512,
    );
    assert!(o.messages[0] == content);
    assert_eq!(o.spooled, [0]);
    assert_eq!(o.chunks_midway, 0);
}

/// Refused after spooling began (too big, bare LF late in the data), or
/// abandoned (the client goes away, verification refuses it): no chunk
/// stays in the store, and the reply is the one the whole message earns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_or_abandoned_big_message_leaves_no_chunks() {
    let env = env();
    let cfg = big_config(BareNewline::Reject);
    // Too big: 552 after the data.
    let o = run(
        &env,
        cfg.clone(),
        &transaction(&message(5 * 1024 * 1024)),
        8192,
    );
    assert!(o.chunks_midway > 0, "spooling never started");
    assert_eq!(last_two(&o), ["552", "250"]);
    assert_eq!(o.refusals, ["message_too_big"]);
    assert_eq!(env.chunks(), 0);
    // A bare LF near the end: 550 after the data.
    let mut bare = message(1024 * 1024);
    bare.extend_from_slice(b"late\nbare\r\n");
    let o = run(&env, cfg.clone(), &transaction(&bare), 8192);
    assert!(o.chunks_midway > 0);
    assert_eq!(last_two(&o), ["550", "250"]);
    assert_eq!(env.chunks(), 0);
    // The client goes away in the middle of the data.
    {
        let mut s =
            Session::new(cfg.clone(), OUTSIDE.parse().unwrap()).with_spooler(env.spooler.clone());
        let input = transaction(&message(1024 * 1024));
        s.feed(&input[..input.len() / 2]);
        let mut out = Vec::new();
        assert!(matches!(s.step(&mut out), Event::NeedInput));
        assert!(env.chunks() > 0);
    }
    assert_eq!(env.chunks(), 0);
    // The message is complete but refused by the driver (verification):
    // dropping it removes its data.
    {
        let mut s =
            Session::new(cfg.clone(), OUTSIDE.parse().unwrap()).with_spooler(env.spooler.clone());
        s.feed(&transaction(&message(1024 * 1024)));
        let mut out = Vec::new();
        let Event::Message(m) = s.step(&mut out) else {
            panic!("no message");
        };
        assert!(m.spooled.is_some());
        assert!(env.chunks() > 0);
        drop(m);
        assert_eq!(env.chunks(), 0);
    }
}

/// A header section over `max_header_size` is refused with 552 5.3.4 after
/// the data, and nothing of it is kept past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_section_is_refused() {
    let env = env();
    let mut content = Vec::new();
    while content.len() < 3 * HEADER_LIMIT {
        content.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    content.extend_from_slice(b"\r\nbody\r\n");
    let o = run(
        &env,
        big_config(BareNewline::Reject),
        &transaction(&content),
        1000,
    );
    assert!(o.messages.is_empty());
    assert_eq!(last_two(&o), ["552", "250"]);
    assert_eq!(o.refusals, ["header_too_big"]);
    assert!(o.peak <= bound(1000), "held {}", o.peak);
    // Just under the limit is accepted.
    let mut content = Vec::new();
    while content.len() < HEADER_LIMIT - 200 {
        content.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    content.extend_from_slice(b"\r\nbody\r\n");
    let o = run(
        &env,
        big_config(BareNewline::Reject),
        &transaction(&content),
        1000,
    );
    assert!(o.messages[0] == content);
}

/// Split table: bare CR and bare LF placed at, just before and just after
/// the spool threshold and a read boundary, with reads of several sizes,
/// give what the whole-message functions give: the same refusal under
/// `reject`, the same normalised octets under `normalize`; and a CRLF that
/// a read boundary cuts in two is a line ending, not a bare newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_newlines_across_reads_and_the_spool_boundary() {
    let env = env();
    let base = message(3 * THRESHOLD);
    let header_len = b"From: a@b.test\r\nSubject: big\r\n\r\n".len();
    // Positions in the content (the DATA input adds HEAD's length before
    // it): around the threshold and in the spooled part.
    let spots = [
        THRESHOLD - 1,
        THRESHOLD,
        THRESHOLD + 1,
        THRESHOLD + header_len,
        2 * THRESHOLD + 3,
    ];
    for &spot in &spots {
        for insert in [&b"\n"[..], b"\r", b"\r\r\n", b"\n\n"] {
            let mut content = base.clone();
            // Keep the insert away from the header section and line ends.
            let at = spot.max(header_len + 1);
            content.splice(at..at, insert.iter().copied());
            let bare = body::has_bare_newline(&content);
            assert!(bare, "the table must test bare newlines");
            for read in [1, 7, 1000, 4096, THRESHOLD + 1] {
                if read == 1 && spot != THRESHOLD {
                    continue; // byte by byte is slow in debug; once is enough
                }
                let input = transaction(&content);
                let o = run(&env, big_config(BareNewline::Reject), &input, read);
                assert_eq!(
                    last_two(&o),
                    ["550", "250"],
                    "{insert:?} at {at}, reads of {read}"
                );
                assert_eq!(env.chunks(), 0);
                let o = run(&env, big_config(BareNewline::Normalize), &input, read);
                assert_eq!(o.messages.len(), 1, "{insert:?} at {at}, reads of {read}");
                assert!(
                    o.messages[0] == body::normalize(&content),
                    "{insert:?} at {at}, reads of {read}: normalised differently"
                );
                assert!(o.spooled[0] > 0);
            }
        }
    }
    // No bare newline: CRLFs cut by every read size stay line endings.
    for read in [2, 3, 4096, THRESHOLD - 1] {
        let o = run(
            &env,
            big_config(BareNewline::Reject),
            &transaction(&base),
            read,
        );
        assert!(o.messages[0] == base, "reads of {read}");
    }
}
