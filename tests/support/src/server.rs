//! The real `portcullis` binary as a child process: written config, its own
//! data directory, ephemeral ports read back from its JSON log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::pki::TestPki;

/// Path of the `portcullis` binary built alongside the running test:
/// `$PORTCULLIS_BIN`, else `<target>/<profile>/portcullis` next to the
/// test executable's `deps/` directory.
pub fn portcullis_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PORTCULLIS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("portcullis");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it) or set PORTCULLIS_BIN",
        bin.display()
    );
    bin
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

type Logs = Arc<(Mutex<LogState>, Condvar)>;

/// A running `portcullis serve`.
pub struct Portcullis {
    child: Option<Child>,
    /// The test's directory: config file, data dir, anything else.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config_path: PathBuf,
    logs: Logs,
    /// Listeners as (address, role), from the "listening" log lines.
    pub listeners: Vec<(SocketAddr, String)>,
    /// Metrics address, when enabled.
    pub metrics: Option<SocketAddr>,
    /// True when the config asks for text logs (`[log] format = "text"`);
    /// otherwise the server logs JSON, which the helpers here parse.
    text_logs: bool,
}

impl Portcullis {
    /// Writes `config` (TOML; `data_dir` and `[admin] socket` are added
    /// unless present, pointing into a fresh temp dir) and starts the server.
    /// `{dir}` in the text is replaced by the temp dir path.
    pub fn start(config: &str) -> Portcullis {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config)
    }

    /// Like [`Portcullis::start`] in a given directory.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Portcullis {
        let d = dir.path().display().to_string();
        let mut text = config.replace("{dir}", &d);
        if !text.contains("data_dir") {
            text = format!("data_dir = \"{d}/data\"\n{text}");
        }
        if !text.contains("[dns]") {
            // Tests never send DNS off this machine: without a test DNS
            // server, lookups go to a closed loopback port and fail fast.
            text.push_str("\n[dns]\nnameservers = [\"127.0.0.1:1\"]\ntimeout = \"1s\"\n");
        }
        if !text.contains("dnssec") {
            // The test DNS server's zones are unsigned, and no chain from
            // the real root reaches them: validation would make every
            // answer bogus. A test of DNSSEC sets `dnssec` itself.
            text = text.replacen("[dns]\n", "[dns]\ndnssec = \"off\"\n", 1);
        }
        if !text.contains("[verify]") {
            // Sender verification is tested in e2e/tests/verify.rs with its
            // own DNS records; elsewhere it would turn every message from a
            // domain without a reachable DNS into a 451 (DMARC temperror).
            text.push_str("\n[verify]\nenabled = false\n");
        }
        if !text.contains("[admin]") {
            text.push_str(&format!("\n[admin]\nsocket = \"{d}/admin.sock\"\n"));
        }
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let mut p = Portcullis {
            child: None,
            dir,
            config_path,
            logs: Arc::new((Mutex::new(LogState::default()), Condvar::new())),
            listeners: vec![],
            metrics: None,
            text_logs: text.contains("format = \"text\""),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        self.logs = Arc::new((Mutex::new(LogState::default()), Condvar::new()));
        let mut command = Command::new(portcullis_bin());
        command.arg("serve").arg("--config").arg(&self.config_path);
        if !self.text_logs {
            command.arg("--log-format").arg("json");
        }
        let mut child = command
            .env("RUST_LOG", "debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let stderr = child.stderr.take().expect("stderr");
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("PORTCULLIS_TEST_LOG").is_some() {
                    eprintln!("[portcullis] {line}");
                }
                let (m, cv) = &*logs;
                m.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*logs;
            m.lock().unwrap().closed = true;
            cv.notify_all();
        });
        self.child = Some(child);
        self.wait_for_log("portcullis ready", Duration::from_secs(20));
        if self.text_logs {
            self.listeners = self
                .logs()
                .iter()
                .filter(|l| l.contains(" listening "))
                .map(|l| {
                    (
                        text_field(l, "address").parse().unwrap(),
                        text_field(l, "role"),
                    )
                })
                .collect();
            return;
        }
        self.listeners = self
            .log_events("listening")
            .iter()
            .map(|v| {
                (
                    v["address"].as_str().unwrap().parse().unwrap(),
                    v["role"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        self.metrics = self
            .log_events("metrics at /metrics")
            .first()
            .map(|v| v["address"].as_str().unwrap().parse().unwrap());
    }

    /// The first listener with `role`.
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(_, r)| r == role)
            .unwrap_or_else(|| panic!("no {role} listener in {:?}", self.listeners))
            .0
    }

    /// The `smtp` listener.
    pub fn smtp(&self) -> SocketAddr {
        self.addr("smtp")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.0.lock().unwrap().lines.clone()
    }

    /// Parsed JSON log events whose message is `message`.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message || v["fields"]["message"] == message)
            .collect()
    }

    /// Waits until a log line contains `needle`; panics with the log if not.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.logs;
        let mut state = m.lock().unwrap();
        loop {
            if let Some(l) = state.lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline || state.closed {
                panic!(
                    "no log line with {needle:?} (server {}):\n{}",
                    if state.closed {
                        "exited"
                    } else {
                        "still running"
                    },
                    state.lines.join("\n")
                );
            }
            state = cv.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A memory field of the server's `/proc/PID/status` in KiB (`VmRSS`:
    /// resident now; `VmHWM`: the peak since it started).
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY-free: libc::kill is a plain syscall wrapper.
        let rc = unsafe_free_kill(self.pid(), sig);
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "server did not exit within {timeout:?}:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rewrites the config file with `edit` (given the text as the server
    /// read it, with this harness's additions), for a reload to read.
    pub fn edit_config(&self, edit: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        std::fs::write(&self.config_path, edit(&text)).expect("write config");
    }

    /// Starts the server again with the same config and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    /// `portcullis ARGS --config <this config>`, run in the test directory.
    fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(portcullis_bin());
        command
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path());
        command
    }

    /// Runs `portcullis ARGS --config <this config>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run portcullis cli")
    }

    /// Like [`Portcullis::cli`] with stdin, stdout and stderr piped: `stdin`
    /// is written to the command when given (a write error is ignored: the
    /// command may refuse before it reads, e.g. `user add` of a user that
    /// exists), then stdin is closed.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .cli_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run portcullis cli");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            let _ = pipe.write_all(text.as_bytes());
        }
        drop(pipe);
        child.wait_with_output().expect("portcullis cli output")
    }

    /// Runs [`Portcullis::cli`] and returns its stdout; panics with the
    /// command's stderr and stdout when it fails.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "portcullis {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out.stdout
    }

    /// Runs [`Portcullis::cli`] (give it `--json`) and parses its stdout;
    /// panics with the command's stderr and stdout when it fails, and with
    /// its stdout when that is not JSON.
    #[track_caller]
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli_ok(args);
        serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "portcullis {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        })
    }

    /// `queue list --json`: one object per queued message.
    #[track_caller]
    pub fn queue_list(&self) -> Vec<serde_json::Value> {
        match self.cli_json(&["queue", "list", "--json"]) {
            serde_json::Value::Array(list) => list,
            other => panic!("queue list --json is not an array: {other}"),
        }
    }

    /// The stored header section of queued message `id` (`queue show ID
    /// --json`, its `headers`).
    #[track_caller]
    pub fn stored_headers(&self, id: &str) -> String {
        let detail = self.cli_json(&["queue", "show", id, "--json"]);
        detail["headers"]
            .as_str()
            .unwrap_or_else(|| panic!("no headers in {detail}"))
            .to_owned()
    }

    /// The Prometheus text of `GET /metrics` (status line and headers
    /// included) from the metrics endpoint, which must be enabled; asserts
    /// a 200. The endpoint closes the connection after one response.
    #[track_caller]
    pub fn metrics_page(&self) -> String {
        let addr = self.metrics.expect("metrics endpoint enabled");
        let mut s = TcpStream::connect(addr).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .expect("send metrics request");
        let mut page = String::new();
        s.read_to_string(&mut page).expect("read metrics");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        page
    }

    /// The log events whose message is `message` (see
    /// [`Portcullis::log_events`]), once there are at least `n`: the server
    /// logs before it answers, but its stderr is read on another thread.
    /// Waits at most 10 s, then returns what there is.
    pub fn wait_log_events(&self, message: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.log_events(message);
            if found.len() >= n || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn unsafe_free_kill(pid: u32, sig: i32) -> i32 {
    // `kill(1)` keeps the test crates free of `unsafe`.
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    if status.success() { 0 } else { -1 }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The name the certificate of a [`TlsServer`] is issued for.
pub const MX_NAME: &str = "mx.example.test";

/// The binary with a certificate for [`MX_NAME`] from a test PKI.
pub struct TlsServer {
    /// The running server.
    pub server: Portcullis,
    /// The PKI that issued its certificate (clients trust its CA).
    pub pki: TestPki,
    /// The CA certificate (PEM file) in the server's test directory.
    pub ca: PathBuf,
}

impl TlsServer {
    /// [`TlsServer::start_in`] a fresh temp dir with a new PKI.
    pub fn start(roles: &[&str], extra: &str) -> TlsServer {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            TestPki::new(),
            roles,
            extra,
        )
    }

    /// [`TlsServer::start`] with loopback in `[relay] trusted_networks`:
    /// for tests of TLS with real clients on the submission listeners,
    /// which take mail without AUTH only from trusted networks.
    pub fn start_trusted(roles: &[&str], extra: &str) -> TlsServer {
        Self::start_with(
            tempfile::tempdir().expect("tempdir"),
            TestPki::new(),
            roles,
            "trusted_networks = [\"127.0.0.0/8\"]\n",
            extra,
        )
    }

    /// Writes `pki`'s certificate for [`MX_NAME`] (`mx.crt`, `mx.key`) and
    /// its CA (`ca.pem`) into `dir`, and starts the binary there
    /// ([`Portcullis::start_in`]) with `hostname = "mx.example.test"`, one
    /// listener on an ephemeral loopback port per role in `roles`, that
    /// certificate, `example.test` accepted, metrics on an ephemeral port,
    /// and `extra` TOML appended (whole tables only; `{dir}` is replaced
    /// there too).
    pub fn start_in(
        dir: tempfile::TempDir,
        pki: TestPki,
        roles: &[&str],
        extra: &str,
    ) -> TlsServer {
        Self::start_with(dir, pki, roles, "", extra)
    }

    fn start_with(
        dir: tempfile::TempDir,
        pki: TestPki,
        roles: &[&str],
        relay: &str,
        extra: &str,
    ) -> TlsServer {
        pki.issue(&[MX_NAME]).write(dir.path(), "mx");
        let ca = pki.write_ca(dir.path());
        let mut config = format!("hostname = \"{MX_NAME}\"\n");
        for role in roles {
            config.push_str(&format!(
                "[[listen]]\naddress = \"127.0.0.1:0\"\nrole = \"{role}\"\n"
            ));
        }
        config.push_str(
            r#"[tls]
certificate = "{dir}/mx.crt"
private_key = "{dir}/mx.key"
[relay]
accepted_domains = ["example.test"]
"#,
        );
        config.push_str(relay);
        config.push_str(
            r#"[admin]
socket = "{dir}/admin.sock"
metrics = "127.0.0.1:0"
"#,
        );
        config.push_str(extra);
        let server = Portcullis::start_in(dir, &config);
        TlsServer { server, pki, ca }
    }
}

/// The config head of the delivery tests: hostname `mx.portcullis.test`,
/// one `smtp` listener on `listen` (`"127.0.0.1:0"` for an ephemeral
/// port), `example.test` accepted, loopback trusted to relay, and names
/// resolved by the test DNS server at `dns`. Append the tables a test
/// needs (`[delivery]`, `[routes]`, ...).
pub fn relay_config(listen: &str, dns: SocketAddr) -> String {
    format!(
        r#"hostname = "mx.portcullis.test"
[[listen]]
address = "{listen}"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[dns]
nameservers = ["{dns}"]
timeout = "2s"
dnssec = "off"
"#
    )
}

/// The value of `name=` in a text log line, without quotes.
fn text_field(line: &str, name: &str) -> String {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + name.len()
        + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].trim_matches('"').to_string()
}

/// A multi-thread runtime with one worker, for the test DNS, policy and
/// report servers that run beside the binary (keep it alive as long as they
/// serve).
pub fn background_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A free TCP port on 127.0.0.1 (bound then released; tests that need a
/// fixed port across restarts use this).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of the sample `series` (metric name with its labels, exactly as
/// printed: `name{label="value"}`) in a Prometheus text page: the part of a
/// line before its last space must equal `series`. Comment lines are
/// skipped; `None` when there is no such sample or its value is not a number.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.trim().parse().ok())?
    })
}

/// A field of a JSON log event: at the top level, else under `fields`
/// (where the JSON log puts an event's fields depends on the formatter).
pub fn log_field<'a>(event: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    match &event[name] {
        serde_json::Value::Null => &event["fields"][name],
        v => v,
    }
}

/// Calls `f` every 50 ms until it returns `Some`, and returns that; panics
/// naming `what` when `timeout` has passed.
#[track_caller]
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}
