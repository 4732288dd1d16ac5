//! The Prometheus endpoint over real TCP connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_admin::bind_metrics;
use portcullis_metrics::MetricsWriter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Endpoint {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start() -> Endpoint {
    let listener = bind_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let render = Arc::new(|| {
        let mut w = MetricsWriter::new();
        w.gauge("portcullis_queue_size", "Messages queued.", &[], 3u64);
        w.finish()
    });
    let task = tokio::spawn(listener.run(render, shutdown.clone()));
    Endpoint {
        addr,
        shutdown,
        task,
    }
}

impl Endpoint {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("prompt shutdown")
            .unwrap();
    }
}

/// Writes `request` and reads until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        // Keep the write side open: a scraper does not half-close.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(wr);
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut answer))
        .await
        .expect("server closes")
        .unwrap();
    writer.abort();
    String::from_utf8(answer).unwrap()
}

fn status_line(answer: &str) -> &str {
    answer.split("\r\n").next().unwrap()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

#[tokio::test]
async fn get_metrics_returns_the_rendered_page() {
    let ep = start().await;
    let answer = exchange(
        ep.addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Prometheus/2\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    assert_eq!(
        header(&answer, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(header(&answer, "connection"), Some("close"));
    let expected = "# HELP portcullis_queue_size Messages queued.\n\
                    # TYPE portcullis_queue_size gauge\n\
                    portcullis_queue_size 3\n";
    assert_eq!(body(&answer), expected);
    assert_eq!(
        header(&answer, "content-length"),
        Some(expected.len().to_string().as_str())
    );

    // HTTP/1.0 without Host, and a query string, are fine.
    let answer = exchange(ep.addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");

    // HEAD: the headers without the body.
    let answer = exchange(ep.addr, b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    assert_eq!(body(&answer), "");
    ep.stop().await;
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let ep = start().await;
    let answer = exchange(ep.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 404 Not Found");
    let answer = exchange(ep.addr, b"GET /metricsx HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 404 Not Found");

    let answer = exchange(
        ep.addr,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(header(&answer, "allow"), Some("GET, HEAD"));
    ep.stop().await;
}

#[tokio::test]
async fn malformed_heads_are_400() {
    let ep = start().await;
    for request in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost : a\r\n\r\n",
        b"G\xffT /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\n\r\n",
        b"GET /metrics FTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = exchange(ep.addr, request).await;
        assert_eq!(
            status_line(&answer),
            "HTTP/1.1 400 Bad Request",
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    let answer = exchange(ep.addr, b"GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        status_line(&answer),
        "HTTP/1.1 505 HTTP Version Not Supported"
    );
    ep.stop().await;
}

#[tokio::test]
async fn oversized_head_is_400() {
    let ep = start().await;
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..400 {
        request.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    assert!(request.len() > 16 * 1024);
    let answer = exchange(ep.addr, &request).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request");
    assert!(body(&answer).contains("too large"), "{answer}");
    ep.stop().await;
}

#[tokio::test]
async fn a_client_closing_early_gets_no_answer_and_no_harm() {
    let ep = start().await;
    let mut s = TcpStream::connect(ep.addr).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(answer.is_empty());
    let mut s = TcpStream::connect(ep.addr).await.unwrap();
    s.write_all(b"GET /met").await.unwrap();
    drop(s);
    let answer = exchange(ep.addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    ep.stop().await;
}

/// A head that never completes gets 408 after 10 s (paused clock: the
/// runtime skips ahead once every task waits).
#[tokio::test(start_paused = true)]
async fn slow_head_is_408() {
    let ep = start().await;
    let mut s = TcpStream::connect(ep.addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert_eq!(status_line(&answer), "HTTP/1.1 408 Request Timeout");
    assert!(started.elapsed() >= Duration::from_secs(10));
    ep.stop().await;
}
