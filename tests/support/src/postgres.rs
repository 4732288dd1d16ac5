//! A real PostgreSQL server for cluster-mode tests: `initdb` into a
//! temporary directory (as the unprivileged `postgres` user when the tests
//! run as root, since PostgreSQL refuses to run as root), `postgres` on a
//! loopback port with password (SCRAM) authentication, and a database
//! named `portcullis` owned by the role `portcullis`. Debian's
//! `postgresql` package provides the binaries (`.ci/run` installs it).
//!
//! The server can be stopped and started again on the same port and data
//! (the "database unreachable" tests); it is stopped when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The role and database the tests use.
pub const ROLE: &str = "portcullis";
/// Its password (given to Portcullis by `PGPASSWORD` or a file).
pub const PASSWORD: &str = "test-only-password";

/// A running test PostgreSQL server.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    tls: bool,
}

impl TestPostgres {
    /// Creates the cluster, starts the server and creates the database.
    /// Panics with what to install when the binaries are missing.
    pub fn start() -> TestPostgres {
        TestPostgres::start_with(None)
    }

    /// [`TestPostgres::start`] with TLS only: the server presents
    /// `certificate` and its `pg_hba.conf` accepts TCP sessions only over
    /// TLS (`hostssl`), so a client that connects at all spoke TLS, and one
    /// that does not (`tls = "disable"`) is refused.
    pub fn start_tls(certificate: &crate::pki::Issued) -> TestPostgres {
        TestPostgres::start_with(Some(certificate))
    }

    fn start_with(certificate: Option<&crate::pki::Issued>) -> TestPostgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("pwfile"), PASSWORD).expect("pwfile");
        if let Some(issued) = certificate {
            // PostgreSQL refuses a key file others can read: Issued::write
            // makes it 0600, and the chown below gives it to the server.
            issued.write(root, "server");
        }
        give_to_postgres(root);
        let status = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(root.join("data"))
            .args(["-U", ROLE, "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", root.join("pwfile").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        if certificate.is_some() {
            // Replaces initdb's rules: TCP only over TLS. The file keeps
            // its owner (postgres), so the server can read it.
            std::fs::write(
                root.join("data/pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .expect("pg_hba.conf");
        }
        let mut pg = TestPostgres {
            dir,
            bin,
            port: crate::server::free_port(),
            child: None,
            tls: certificate.is_some(),
        };
        pg.start_again();
        let out = Command::new(pg.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                ROLE,
                ROLE,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// The `[cluster] database` URL (no password in it).
    pub fn url(&self) -> String {
        format!("postgresql://{ROLE}@127.0.0.1:{}/{ROLE}", self.port)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the server (again) on the same port and data; returns when
    /// it accepts connections.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        let root = self.dir.path();
        let mut command = as_postgres(&self.bin.join("postgres"));
        if self.tls {
            command
                .args(["-c", "ssl=on", "-c"])
                .arg(format!(
                    "ssl_cert_file={}",
                    root.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    root.join("server.key").display()
                ));
        }
        let child = command
            .arg("-D")
            .arg(root.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(root)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting TCP is not yet accepting sessions: wait for pg_isready.
        while !Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "postgres not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: PostgreSQL's "fast" shutdown (std can only SIGKILL).
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }

    /// Runs one SQL statement as the test role (through `psql`), for tests
    /// that look at or change the shared state directly; its output
    /// (unaligned, tuples only).
    pub fn sql(&self, statement: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .args(["-d", ROLE, "-At", "-v", "ON_ERROR_STOP=1", "-c", statement])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {statement:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries under /usr/lib/postgresql: install Debian's `postgresql` package (.ci/run does)")
    })
}

/// True when the tests run as root (PostgreSQL then runs as `postgres`).
fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `dir` (and what is in it) owned by `postgres` when running as root.
fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown to postgres failed");
    }
}

/// `program`, as `postgres` when running as root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        // setpriv execs the program itself (runuser would fork and wait),
        // so the child's pid is PostgreSQL's and a signal reaches it.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}
