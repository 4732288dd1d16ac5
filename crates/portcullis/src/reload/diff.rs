//! What a reload may change: the settings the running server took at its
//! start (sockets, directories, the resolver, the scheduler, the TLS-RPT
//! sender, logging...) are carried over from the config in force and
//! reported as needing a restart; the sections that changed otherwise are
//! named for the log and `portcullis reload`. Pure: unit-tested here.

use portcullis_config::Config;

/// Sets `new[field]` back to `old[field]` and says whether they differed.
fn keep<T: PartialEq + Clone>(old: &T, new: &mut T) -> bool {
    let differs = old != new;
    if differs {
        *new = old.clone();
    }
    differs
}

/// Carries every setting that needs a restart from `old` (in force) into
/// `new` (just read), so the rest of `new` can be put in force as it is;
/// the names of those that differed, in a fixed order.
pub fn keep_restart_settings(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let (o, n) = (old, new);
    // `|`, not `||`: both halves of a pair are carried over.
    let rows = [
        ("listen", keep(&o.listeners, &mut n.listeners)),
        ("data_dir", keep(&o.data_dir, &mut n.data_dir)),
        ("admin", keep(&o.admin, &mut n.admin)),
        ("hostname", keep(&o.hostname, &mut n.hostname)),
        ("dns", keep(&o.dns, &mut n.dns)),
        ("tls", keep(&o.tls, &mut n.tls)),
        ("delivery", keep(&o.delivery, &mut n.delivery)),
        ("queue", keep(&o.queue, &mut n.queue)),
        ("tlsrpt", keep(&o.tlsrpt, &mut n.tlsrpt)),
        (
            "dmarc_reports",
            keep(&o.dmarc_reports, &mut n.dmarc_reports),
        ),
        ("cluster", keep(&o.cluster, &mut n.cluster)),
        (
            "mta_sts.https_port",
            keep(&o.mta_sts.https_port, &mut n.mta_sts.https_port),
        ),
        (
            "mta_sts.fetch_timeout",
            keep(&o.mta_sts.fetch_timeout, &mut n.mta_sts.fetch_timeout),
        ),
        (
            "limits.max_connections",
            keep(&o.limits.max_connections, &mut n.limits.max_connections),
        ),
        (
            "submission.lockout",
            keep(&o.submission.lockout, &mut n.submission.lockout),
        ),
        (
            "log",
            keep(&o.log_format, &mut n.log_format) | keep(&o.log_level, &mut n.log_level),
        ),
    ];
    rows.into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name)
        .collect()
}

/// The sections of `new` that differ from `old`, after
/// [`keep_restart_settings`]: what the reload puts in force.
pub fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    // Named field by field so that a new key of `Config` does not compile
    // until it is sorted into "applied" here or "needs a restart" above.
    let Config {
        hostname: _,
        data_dir: _,
        listeners: _,
        tls: _,
        relay,
        routes,
        dns: _,
        delivery: _,
        queue: _,
        mta_sts,
        tlsrpt: _,
        dmarc_reports: _,
        users_file,
        submission,
        admin: _,
        limits,
        bare_newline,
        verify,
        banner,
        log_format: _,
        log_level: _,
        recipients,
        dnsbl,
        screen,
        greylist,
        publish,
        cluster: _,
    } = new;
    let rows = [
        ("relay", *relay != old.relay),
        ("routes", *routes != old.routes),
        ("limits", *limits != old.limits),
        ("verify", *verify != old.verify),
        (
            "submission",
            *submission != old.submission || *users_file != old.users_file,
        ),
        (
            "smtp",
            *bare_newline != old.bare_newline || *banner != old.banner,
        ),
        ("mta_sts", *mta_sts != old.mta_sts),
        ("recipients", *recipients != old.recipients),
        ("dnsbl", *dnsbl != old.dnsbl),
        ("screen", *screen != old.screen),
        ("greylist", *greylist != old.greylist),
        ("publish", *publish != old.publish),
    ];
    rows.into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_types::Domain;

    fn base() -> Config {
        portcullis_config::development_defaults()
    }

    /// A new listen address, data_dir and resolver are named and carried
    /// over; the new accepted domains stay new and are named as changed.
    #[test]
    fn restart_settings_are_kept_and_named_the_rest_applies() {
        let old = base();
        let mut new = base();
        new.listeners[0].address = "127.0.0.1:2626".parse().unwrap();
        new.data_dir = "/elsewhere".into();
        new.dns.nameservers = vec!["127.0.0.1:5353".parse().unwrap()];
        new.relay
            .accepted_domains
            .push(Domain::parse("example.test").unwrap());
        new.limits.max_message_size = 1024;
        let restart = keep_restart_settings(&old, &mut new);
        assert_eq!(restart, ["listen", "data_dir", "dns"]);
        assert_eq!(new.listeners, old.listeners);
        assert_eq!(new.data_dir, old.data_dir);
        assert_eq!(new.dns, old.dns);
        assert_eq!(changed_sections(&old, &new), ["relay", "limits"]);
        assert_eq!(new.limits.max_message_size, 1024);
    }

    /// The same file again changes nothing and needs no restart.
    #[test]
    fn the_same_config_changes_nothing() {
        let old = base();
        let mut new = base();
        assert!(keep_restart_settings(&old, &mut new).is_empty());
        assert!(changed_sections(&old, &new).is_empty());
    }

    /// Of `[limits]`, only the total of connections needs a restart (the
    /// listeners share it); the rest applies to new sessions.
    #[test]
    fn max_connections_needs_a_restart_other_limits_do_not() {
        let old = base();
        let mut new = base();
        new.limits.max_connections += 1;
        new.limits.max_connections_per_ip += 1;
        assert_eq!(
            keep_restart_settings(&old, &mut new),
            ["limits.max_connections"]
        );
        assert_eq!(new.limits.max_connections, old.limits.max_connections);
        assert_eq!(changed_sections(&old, &new), ["limits"]);
    }
}
