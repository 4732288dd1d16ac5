//! The command line of DESIGN.md, as clap definitions.

use clap::{Args, Parser, Subcommand, ValueEnum};
use portcullis_admin::ScreenTarget;
use portcullis_types::Domain;
use std::net::IpAddr;
use std::path::PathBuf;

/// Portcullis: an edge mail server (SMTP on port 25 with STARTTLS, no open
/// relay, durable queue, MTA-STS delivery) and its admin CLI.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config`, shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The configuration file; without it, the built-in development defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--json`, shared by the admin subcommands.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Show the running server's state.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// Inspect and manage the delivery queue.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// The MTA-STS policy cache and pins.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// TLS-RPT (RFC 8460) daily reports: what was recorded, what would be
    /// sent, what has been sent.
    Tlsrpt {
        #[command(subcommand)]
        cmd: TlsrptCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// DMARC aggregate reports (RFC 7489 §7.2) we send: the aggregates
    /// waiting, and sending the due reports now.
    Dmarc {
        #[command(subcommand)]
        cmd: DmarcCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// Cluster mode (`[cluster]`): the schema of the shared PostgreSQL
    /// database.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// Re-read the whole config file the running server was started with
    /// (as SIGHUP does): prints what changed and what needs a restart;
    /// non-zero and the reason (key and line) when the file is bad, and
    /// then the config in force stays.
    Reload {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// The screen in front of the queue: why a client is treated as it is
    /// (DNS lists, rates, greylisting), and resetting that.
    Screen {
        #[command(subcommand)]
        cmd: ScreenCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// Submission users: edits the `[submission] users_file` directly
    /// (the running server reloads it).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
}

/// `portcullis user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user; the password is read from standard input when it is not
    /// a terminal (one line), else prompted for twice.
    Add {
        /// User name.
        name: String,
    },
    /// Change a user's password (read like `add` does).
    Passwd {
        /// User name.
        name: String,
    },
    /// Remove a user (and their app passwords).
    Remove {
        /// User name.
        name: String,
    },
    /// List the users, whether each has a SCRAM-SHA-256 secret, and their
    /// app passwords (labels only).
    List,
    /// App passwords: generated secrets, one per device or application,
    /// each revocable on its own.
    App {
        #[command(subcommand)]
        cmd: AppCmd,
    },
}

/// `portcullis user app ...`.
#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Make an app password for a user and print it (once: only a digest
    /// is kept).
    Add {
        /// User name.
        name: String,
        /// A label naming the device or application (e.g. "phone").
        label: String,
    },
    /// Revoke an app password.
    Remove {
        /// User name.
        name: String,
        /// Its label.
        label: String,
    },
}

/// `portcullis serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format, overriding `[log] format`: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// `portcullis config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a configuration file and print the effective configuration.
    Check(CheckArgs),
}

/// `portcullis config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub output: Output,
}

/// `portcullis queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List queued messages.
    List,
    /// Show one message: envelope, state and headers.
    Show {
        /// Queue id.
        id: String,
    },
    /// Make messages due for delivery now.
    Retry {
        /// Queue id.
        id: Option<String>,
        /// All messages.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a message from the queue.
    Delete {
        /// Queue id.
        id: String,
        /// Send a bounce to the sender.
        #[arg(long)]
        bounce: bool,
    },
}

/// `portcullis policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// List cached policies and active pins.
    List,
    /// Show one domain's cached policy and pin, with the policy text.
    Show {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
    },
    /// Discover and fetch a domain's policy now (the cache changes only on
    /// success).
    Fetch {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
    },
    /// Re-fetch one cached policy, or all of them, even with an unchanged
    /// id; shows whether each is unchanged or replaced (with the diff).
    Refresh {
        /// The policy domain; without it, every unexpired cached policy.
        #[arg(value_parser = parse_domain)]
        domain: Option<Domain>,
    },
    /// Forget a domain's cached policy (the next delivery discovers it
    /// afresh).
    Evict {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
    },
    /// The domain's MX hosts as DNS gives them now, which ones the policy
    /// allows, and what TLS each must show.
    Explain {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
    },
    /// Check, from the outside in, what we publish for our own domains:
    /// the `_mta-sts` and `_smtp._tls` TXT records, the policy served at
    /// `mta-sts.<domain>`, MX hosts against the policy, and each MX host's
    /// certificate after STARTTLS; prints the records to publish for each
    /// gap and exits non-zero naming each.
    Own {
        /// One of our (accepted) domains; without it, all of them.
        #[arg(value_parser = parse_domain)]
        domain: Option<Domain>,
    },
    /// Pin a policy for a domain until a date: it wins over DNS and the
    /// policy host (logged, with the reason).
    Pin {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
        /// The mode to apply.
        #[arg(long, value_enum)]
        mode: PinMode,
        /// MX patterns (`mx.example.com`, `*.example.com`); required unless
        /// the mode is none.
        #[arg(long, value_name = "PATTERN", num_args = 1.., action = clap::ArgAction::Append)]
        mx: Vec<String>,
        /// Until when (UTC): YYYY-MM-DD (its start) or YYYY-MM-DDTHH:MM:SSZ;
        /// must be in the future.
        #[arg(long, value_name = "DATE", value_parser = parse_until)]
        until: u64,
        /// Why (logged and shown by `policy list`).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Remove a domain's operator pin.
    Unpin {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
    },
}

/// `portcullis cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create or upgrade the shared schema (the server also does it at
    /// start): prints each version, applied now or already.
    Migrate,
}

/// `portcullis dmarc ...`.
#[derive(Debug, Subcommand)]
pub enum DmarcCmd {
    /// Per UTC day and From domain: rows and messages counted, where the
    /// report goes, and whether the day is still being collected.
    List,
    /// Send every report of a finished UTC day now, without waiting for
    /// the random delay of the send window; nothing is sent twice.
    Send,
}

/// `portcullis tlsrpt ...`.
#[derive(Debug, Subcommand)]
pub enum TlsrptCmd {
    /// Per UTC day and policy domain: sessions ok and failed, report
    /// destinations, and whether the report is collecting, pending or sent.
    List,
    /// The report JSON (RFC 8460 §4.4) exactly as it is, or would be, sent.
    Show {
        /// The policy domain.
        #[arg(value_parser = parse_domain)]
        domain: Domain,
        /// The UTC day (YYYY-MM-DD); without it, the latest day with data.
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
        day: Option<String>,
    },
    /// Send every report that is due now, without waiting for the random
    /// delay of the send window (the current day is never sent: it is not
    /// over); nothing is sent twice.
    Send,
    /// The TLS reports other providers sent about our domains (by mail to
    /// a `[publish] tlsrpt_rua` address or by HTTPS POST).
    Received {
        #[command(subcommand)]
        cmd: ReceivedCmd,
    },
}

/// `portcullis tlsrpt received ...`.
#[derive(Debug, Subcommand)]
pub enum ReceivedCmd {
    /// The reports received, newest first: id, when received, the
    /// reporting organisation, our domains, the period, sessions ok and
    /// failed.
    List {
        /// Only reports about this domain.
        #[arg(long, value_name = "DOMAIN", value_parser = parse_domain)]
        domain: Option<Domain>,
        /// Only reports whose period ends on or after this UTC day.
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
        since: Option<String>,
    },
    /// Everything stored of one report, with its failure details.
    Show {
        /// The report's id (from `list`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `portcullis screen ...`.
#[derive(Debug, Subcommand)]
pub enum ScreenCmd {
    /// Why a client is treated as it is (DNS lists, rates, greylisting).
    ///
    /// Shows whether it is in a trusted network, its DNS list score against
    /// `[screen] dnsbl_threshold` with one line per `[[dnsbl]]` zone (listed
    /// with the answers, not listed, or a failed lookup, which scores
    /// nothing), its connections, messages and recipients this minute
    /// against the limits, the greylist entries of its network, and what
    /// happens to it now.
    Show {
        /// The client's IP address (IPv4, or IPv6: its /64 shares the
        /// rates).
        #[arg(value_name = "IP")]
        ip: IpAddr,
    },
    /// Forget what the screen holds about a client or a sender domain.
    ///
    /// For an IP address: its rates, its cached DNS list answers and the
    /// greylist entries of its network (it is looked up afresh at its next
    /// connection). For a sender domain: its verified greylist entries and
    /// the trust it earned (it is greylisted again until it retries).
    Clear {
        /// An IP address, or else a sender domain.
        #[arg(value_name = "IP|DOMAIN", value_parser = parse_screen_target)]
        target: ScreenTarget,
    },
}

/// `policy pin --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PinMode {
    /// Only PKIX-valid TLS to a listed MX.
    Enforce,
    /// Deliver as usual, report what enforce would refuse.
    Testing,
    /// Require nothing (override a broken policy).
    None,
}

impl PinMode {
    /// The mode as written in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Enforce => "enforce",
            PinMode::Testing => "testing",
            PinMode::None => "none",
        }
    }
}

fn parse_domain(s: &str) -> Result<Domain, String> {
    Domain::parse(s).map_err(|e| format!("not a domain name: {e}"))
}

/// `screen clear`'s argument: an IP address when it parses as one, else a
/// domain name. A name whose last label is all digits is refused: it is a
/// mistyped address (`192.0.2.256`), and clearing a "domain" of that name
/// would silently clear nothing.
fn parse_screen_target(s: &str) -> Result<ScreenTarget, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ScreenTarget::Ip(ip));
    }
    let not_either = |why: String| format!("neither an IP address nor a domain name: {why}");
    let domain = Domain::parse(s).map_err(|e| not_either(e.to_string()))?;
    let top = domain.as_str().rsplit('.').next().unwrap_or_default();
    if top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_either(format!(
            "{s:?} looks like an IP address but is not a valid one"
        )));
    }
    Ok(ScreenTarget::Domain(domain.to_string()))
}

fn parse_day(s: &str) -> Result<String, String> {
    s.parse::<portcullis_tlsrpt::Day>()
        .map(|d| d.to_string())
        .map_err(|e| e.to_string())
}

fn parse_until(s: &str) -> Result<u64, String> {
    let until = crate::dates::parse_utc(s)?;
    let now = crate::dates::now_secs();
    if until <= now {
        return Err(format!(
            "{s} is not in the future (now is {})",
            crate::dates::format_time(now)
        ));
    }
    Ok(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `screen clear`'s argument: an address when it parses as one, else a
    /// valid domain (normalised), else a clear refusal.
    #[test]
    fn screen_targets_are_an_address_or_a_domain() {
        #[track_caller]
        fn ok(arg: &str, want: ScreenTarget) {
            assert_eq!(parse_screen_target(arg), Ok(want), "{arg}");
        }
        #[track_caller]
        fn refused(arg: &str) {
            let err = parse_screen_target(arg).unwrap_err();
            assert!(
                err.contains("neither an IP address nor a domain name"),
                "{arg}: {err}"
            );
        }
        ok("192.0.2.1", ScreenTarget::Ip("192.0.2.1".parse().unwrap()));
        ok(
            "2001:db8::1",
            ScreenTarget::Ip("2001:db8::1".parse().unwrap()),
        );
        ok("Example.TEST.", ScreenTarget::Domain("example.test".into()));
        ok(
            "bücher.test",
            ScreenTarget::Domain("xn--bcher-kva.test".into()),
        );
        for bad in [
            "not_an_ip_or_domain!",
            "",
            "192.0.2.256",
            "192.0.2",
            "[192.0.2.1]",
            "fe80::1%eth0",
            "a..test",
            "-a.test",
            "a b.test",
        ] {
            refused(bad);
        }
    }

    /// The subcommands parse as DESIGN.md names them, `--json` anywhere.
    #[test]
    fn screen_subcommands_parse() {
        let cli =
            Cli::try_parse_from(["portcullis", "screen", "show", "192.0.2.1", "--json"]).unwrap();
        let Command::Screen { cmd, output, .. } = cli.command else {
            panic!("not screen");
        };
        assert!(output.json);
        assert!(matches!(cmd, ScreenCmd::Show { ip } if ip.to_string() == "192.0.2.1"));
        let cli = Cli::try_parse_from(["portcullis", "screen", "clear", "example.test"]).unwrap();
        let Command::Screen { cmd, .. } = cli.command else {
            panic!("not screen");
        };
        assert!(matches!(
            cmd,
            ScreenCmd::Clear { target: ScreenTarget::Domain(d) } if d == "example.test"
        ));
        let err =
            Cli::try_parse_from(["portcullis", "screen", "show", "example.test"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}
