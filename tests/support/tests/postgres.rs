//! The test PostgreSQL server starts, answers SQL with password
//! authentication, survives a stop and a start on the same data, and
//! refuses a wrong password (so cluster tests really authenticate).

use portcullis_test_support::postgres::{ROLE, TestPostgres};
use std::process::Command;

#[test]
fn the_test_database_answers_keeps_its_data_and_checks_passwords() {
    let mut pg = TestPostgres::start();
    pg.sql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)");
    assert_eq!(pg.sql("SELECT v FROM t"), "42");
    pg.stop();
    assert!(std::net::TcpStream::connect(pg.addr()).is_err(), "still up");
    pg.start_again();
    assert_eq!(pg.sql("SELECT v FROM t"), "42");
    let wrong = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.addr().port().to_string()])
        .args(["-U", ROLE, "-d", ROLE, "-c", "SELECT 1"])
        .env("PGPASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "a wrong password was accepted");
}
