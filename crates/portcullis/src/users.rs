//! `portcullis user add|passwd|remove|list|app`: edits the users file named by
//! `[submission] users_file` directly (it is a plain file, not the sled
//! store, so no server is needed); the running server reloads it.

use crate::cli::{AppCmd, UserCmd};
use crate::config_cmd::load_config;
use portcullis_submission::{AppPassword, Users, validate_label, validate_name};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

/// Runs a `user` subcommand.
pub fn main(cmd: UserCmd, config: Option<&Path>, json: bool) -> ExitCode {
    match run(cmd, config, json) {
        Ok(text) => {
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: UserCmd, config: Option<&Path>, json: bool) -> Result<String, String> {
    let config = load_config(config).map_err(|e| e.to_string())?;
    let path = config
        .users_file
        .ok_or("the config names no users file ([submission] users_file)")?;
    // One editor at a time: two concurrent `portcullis user` runs would
    // otherwise each rewrite the file and one change would be lost.
    let _lock = lock(&path)?;
    let mut users = Users::load(&path, true).map_err(|e| e.to_string())?;
    let done = match cmd {
        UserCmd::List => return list(&users, json),
        UserCmd::Add { name } => {
            validate_name(&name)?;
            if users.contains(&name) {
                return Err(format!("user {name:?} already exists"));
            }
            let password = read_password()?;
            users.add(&name, &password).map_err(|e| e.to_string())?;
            format!("user {name} added")
        }
        UserCmd::Passwd { name } => {
            if !users.contains(&name) {
                return Err(format!("no user {name:?}"));
            }
            let password = read_password()?;
            users
                .set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            format!("password of {name} changed")
        }
        UserCmd::Remove { name } => {
            users.remove(&name).map_err(|e| e.to_string())?;
            format!("user {name} removed")
        }
        UserCmd::App {
            cmd: AppCmd::Add { name, label },
        } => {
            validate_label(&label)?;
            let today = portcullis_types::date::ymd(std::time::SystemTime::now());
            let password = users
                .add_app_password(&name, &label, &today)
                .map_err(|e| e.to_string())?;
            users.save(&path).map_err(|e| e.to_string())?;
            if json {
                return serde_json::to_string_pretty(&serde_json::json!({
                    "user": name,
                    "label": label,
                    "password": password,
                }))
                .map_err(|e| e.to_string());
            }
            return Ok(format!(
                "app password {label} of {name}: {password}\n\
                 (shown once; use it instead of the password in that one application)"
            ));
        }
        UserCmd::App {
            cmd: AppCmd::Remove { name, label },
        } => {
            users
                .remove_app_password(&name, &label)
                .map_err(|e| e.to_string())?;
            format!("app password {label} of {name} revoked")
        }
    };
    users.save(&path).map_err(|e| e.to_string())?;
    Ok(done)
}

/// `user list`: a table (USER, SCRAM, APP PASSWORDS) or JSON objects.
fn list(users: &Users, json: bool) -> Result<String, String> {
    let rows: Vec<(String, bool, Vec<AppPassword>)> = users
        .names()
        .map(|n| {
            (
                n.to_string(),
                users.has_scram(n),
                users.app_passwords(Some(n)).collect(),
            )
        })
        .collect();
    if json {
        let value: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, scram, apps)| {
                serde_json::json!({
                    "name": name,
                    "scram": scram,
                    "app_passwords": apps
                        .iter()
                        .map(|a| serde_json::json!({"label": a.label, "created": a.created}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        return serde_json::to_string_pretty(&value).map_err(|e| e.to_string());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, scram, apps)| {
            vec![
                name.clone(),
                if *scram {
                    "yes"
                } else {
                    "no (set the password again)"
                }
                .to_string(),
                apps.iter()
                    .map(|a| format!("{} ({})", a.label, a.created))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    Ok(portcullis_admin::render_table(
        &["USER", "SCRAM", "APP PASSWORDS"],
        &table,
    ))
}

/// An exclusive lock on `<users file>.lock`, held until dropped.
fn lock(path: &Path) -> Result<std::fs::File, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    // Opened read-only when it exists (flock needs no write access), so a
    // lock file root created does not stop the service user's edits.
    let file = match std::fs::File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?,
        Err(e) => return Err(format!("{}: {e}", lock_path.display())),
    };
    file.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    Ok(file)
}

/// The new password: one line from standard input when it is not a
/// terminal, else typed twice at the terminal without echo.
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let second = prompt("Password (again): ")?;
        if first != second {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from standard input: {e}"))?;
        strip_newline(line)
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}

fn strip_newline(mut line: String) -> String {
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    line
}

/// Prompts on the terminal with echo off (`stty -echo` on /dev/tty: no
/// extra dependency and no unsafe code), restoring echo afterwards.
fn prompt(text: &str) -> Result<String, String> {
    let tty = |what: &str| {
        std::fs::File::open("/dev/tty")
            .map(|f| {
                Command::new("stty")
                    .arg(what)
                    .stdin(Stdio::from(f))
                    .status()
            })
            .ok()
    };
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let _ = tty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let _ = tty("echo");
    eprintln!();
    read.map_err(|e| format!("reading the password: {e}"))?;
    Ok(strip_newline(line))
}
