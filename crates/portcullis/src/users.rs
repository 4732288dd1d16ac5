//! `portcullis user add|passwd|remove|list`: edits the users file named by
//! `[submission] users_file` directly (it is a plain file, not the sled
//! store, so no server is needed); the running server reloads it.

use crate::cli::UserCmd;
use crate::commands::load_config;
use portcullis_submission::{Users, validate_name};
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
    let mut users = Users::load(&path, true).map_err(|e| e.to_string())?;
    match cmd {
        UserCmd::List => {
            let names: Vec<&str> = users.names().collect();
            if json {
                return serde_json::to_string_pretty(&names).map_err(|e| e.to_string());
            }
            let rows: Vec<Vec<String>> = names.iter().map(|n| vec![n.to_string()]).collect();
            Ok(portcullis_admin::render_table(&["USER"], &rows))
        }
        UserCmd::Add { name } => {
            validate_name(&name)?;
            if users.contains(&name) {
                return Err(format!("user {name:?} already exists"));
            }
            let password = read_password()?;
            users.add(&name, &password).map_err(|e| e.to_string())?;
            users.save(&path).map_err(|e| e.to_string())?;
            Ok(format!("user {name} added"))
        }
        UserCmd::Passwd { name } => {
            if !users.contains(&name) {
                return Err(format!("no user {name:?}"));
            }
            let password = read_password()?;
            users
                .set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            users.save(&path).map_err(|e| e.to_string())?;
            Ok(format!("password of {name} changed"))
        }
        UserCmd::Remove { name } => {
            users.remove(&name).map_err(|e| e.to_string())?;
            users.save(&path).map_err(|e| e.to_string())?;
            Ok(format!("user {name} removed"))
        }
    }
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
