//! The admin socket over real Unix sockets in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_admin::{
    AdminError, Handler, ListenerStatus, MAX_REQUEST_LINE, Request, Response, StatusReport, bind,
    call, call_as, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Echo;

fn status() -> StatusReport {
    StatusReport {
        version: "0.1.0".into(),
        hostname: "mx.example.test".into(),
        uptime_secs: 42,
        listeners: vec![ListenerStatus {
            address: "127.0.0.1:2525".into(),
            role: "smtp".into(),
            certificate_not_after: Some(1_900_000_000),
        }],
        open_sessions: 1,
        queue_size: 2,
        data_dir: "data".into(),
        cluster: None,
    }
}

impl Handler for Echo {
    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => Response::ok(&status()),
            Request::QueueShow { id } => Response::error(format!("no queue entry {id}")),
            other => Response::ok(&other),
        }
    }
}

struct Server {
    path: PathBuf,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AdminError>>,
}

impl Server {
    fn start(path: &Path) -> Server {
        let listener = bind(path).expect("bind");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(listener.run(Arc::new(Echo), shutdown.clone()));
        Server {
            path: path.to_path_buf(),
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("run");
        assert!(!self.path.exists(), "socket removed at shutdown");
    }
}

/// Sends raw bytes and returns the raw answer, writing and reading
/// concurrently so a server that answers early cannot deadlock the test.
async fn raw_exchange(path: &Path, bytes: Vec<u8>) -> String {
    let stream = UnixStream::connect(path).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        let _ = wr.shutdown().await;
    });
    let mut answer = String::new();
    rd.read_to_string(&mut answer).await.expect("read");
    let _ = writer.await;
    answer
}

fn error_message(answer: &str) -> String {
    assert!(answer.ends_with('\n'), "one response line: {answer:?}");
    match serde_json::from_str::<Response>(answer).expect("a Response") {
        Response::Error { message } => message,
        Response::Ok { body } => panic!("expected an error, got {body}"),
    }
}

#[tokio::test]
async fn request_round_trip_and_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/admin.sock");
    let server = Server::start(&path);

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let report: StatusReport = call_as(&path, &Request::Status).await.unwrap();
    assert_eq!(report, status());

    let req = Request::QueueDelete {
        id: "Q1".into(),
        bounce: true,
    };
    let body = call(&path, &req).await.unwrap();
    assert_eq!(serde_json::from_value::<Request>(body).unwrap(), req);

    let err = call(&path, &Request::QueueShow { id: "Q9".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdminError::Server { message } if message == "no queue entry Q9"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_connections_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let server = Server::start(&path);
    // A client that connects and stays silent must not block the others.
    let _idle = UnixStream::connect(&path).await.unwrap();
    let calls = (0..20).map(|i| {
        let path = path.clone();
        tokio::spawn(async move {
            let id = format!("Q{i}");
            let body = call(
                &path,
                &Request::QueueRetry {
                    id: Some(id.clone()),
                },
            )
            .await
            .unwrap();
            assert_eq!(body["id"], id);
        })
    });
    for c in calls.collect::<Vec<_>>() {
        c.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn call_without_server_says_not_running_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let err = call(&path, &Request::Status).await.unwrap_err();
    assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("no portcullis server is running"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");

    // A stale socket file: connection refused.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = call(&path, &Request::Status).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no portcullis server is running (admin socket {}: connection refused)",
            path.display()
        )
    );
}

#[tokio::test]
async fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    // What a killed server leaves behind: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::start(&path);
    call(&path, &Request::Status).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn second_server_on_a_live_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let server = Server::start(&path);
    let err = bind(&path).unwrap_err();
    assert!(matches!(err, AdminError::AlreadyRunning { .. }), "{err:?}");
    assert!(err.to_string().contains("already running"), "{err}");
    // The first server is untouched.
    call(&path, &Request::Status).await.unwrap();

    // serve() refuses the same way.
    let err = serve(&path, Arc::new(Echo), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::AlreadyRunning { .. }), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_regular_file_in_the_way_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, "precious").unwrap();
    let err = bind(&path).unwrap_err();
    assert!(matches!(err, AdminError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test]
async fn malformed_json_gets_an_error_response() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let server = Server::start(&path);
    for (input, expect) in [
        (&b"{not json\n"[..], "malformed request"),
        (b"{\"op\":\"launch_missiles\"}\n", "unknown variant"),
        (b"{\"op\":\"queue_show\"}\n", "missing field `id`"),
        (b"\n", "malformed request"),
        (b"\xff\xfe\n", "malformed request"),
    ] {
        let message = error_message(&raw_exchange(&path, input.to_vec()).await);
        assert!(
            message.contains(expect),
            "{input:?}: {message:?} lacks {expect:?}"
        );
    }
    // A request without its final newline is still answered.
    let answer = raw_exchange(&path, b"{\"op\":\"status\"}".to_vec()).await;
    assert!(answer.starts_with("{\"status\":\"ok\""), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn over_long_line_gets_an_error_response() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let server = Server::start(&path);
    let mut big = vec![b'a'; MAX_REQUEST_LINE + 10_000];
    big.push(b'\n');
    let message = error_message(&raw_exchange(&path, big).await);
    assert!(message.contains("longer than 65536 bytes"), "{message}");

    // Exactly the limit is still read (and then fails as JSON, not length).
    let mut edge = vec![b' '; MAX_REQUEST_LINE - 16];
    edge.extend_from_slice(b"{\"op\":\"status\"}");
    edge.resize(MAX_REQUEST_LINE, b' ');
    edge.push(b'\n');
    let answer = raw_exchange(&path, edge).await;
    assert!(answer.starts_with("{\"status\":\"ok\""), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_serving_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let server = Server::start(&path);
    call(&path, &Request::Status).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("shutdown is prompt");
    let err = call(&path, &Request::Status).await.unwrap_err();
    assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");
    // The path is free for the next start.
    Server::start(&path).stop().await;
}
