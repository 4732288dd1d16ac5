//! The Prometheus text exposition format 0.0.4, written one way for the
//! whole server.
//!
//! Every crate that counts something owns its counters and renders them
//! into a [`MetricsWriter`] (`InboundMetrics::render`,
//! `DeliveryMetrics::render`, ...); the binary only hands one writer to
//! each of them in turn and serves the finished page at `/metrics`. This
//! crate is a ground floor: no I/O, no tokio, nothing but text.
//!
//! Threat model: label values can come from the network (an MX host name,
//! a policy domain); they are escaped per the format, so no value can add
//! a line or a sample to the page.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;

use tracing::warn;

/// A sample value: integers are written exactly, floats in the format's
/// spelling (`NaN`, `+Inf`, `-Inf`).
pub trait MetricValue {
    /// Appends the value's text form to `out`.
    fn write_to(&self, out: &mut String);
}

macro_rules! integer_metric_value {
    ($($t:ty),*) => {$(
        impl MetricValue for $t {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_metric_value!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl MetricValue for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl MetricValue for f32 {
    fn write_to(&self, out: &mut String) {
        f64::from(*self).write_to(out);
    }
}

/// One metric family: its `# HELP` / `# TYPE` lines and its samples.
#[derive(Debug)]
struct Family {
    name: String,
    kind: &'static str,
    help: String,
    samples: String,
}

/// Builds a Prometheus text-format page.
///
/// Samples of one name are grouped under a single `# HELP` / `# TYPE` pair
/// even when they are added interleaved with other names; families appear in
/// the order their first sample was added. Label values are escaped per the
/// format (`\\`, `\"`, `\n`). An invalid metric or label name, or a name
/// reused with another type, is a programming error: the sample is dropped
/// with a warning rather than producing a page Prometheus would reject.
#[derive(Debug, Default)]
pub struct MetricsWriter {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl MetricsWriter {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a counter sample. By convention `name` ends in `_total`.
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl MetricValue,
    ) -> &mut Self {
        self.sample("counter", name, help, labels, &value)
    }

    /// Adds a gauge sample.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl MetricValue,
    ) -> &mut Self {
        self.sample("gauge", name, help, labels, &value)
    }

    /// The finished page.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for family in self.families {
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            out.push_str(&family.samples);
        }
        out
    }

    fn sample(
        &mut self,
        kind: &'static str,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: &dyn MetricValue,
    ) -> &mut Self {
        if !valid_metric_name(name) {
            warn!(metric = name, "invalid metric name; sample dropped");
            return self;
        }
        if let Some((label, _)) = labels.iter().find(|(l, _)| !valid_label_name(l)) {
            warn!(metric = name, label, "invalid label name; sample dropped");
            return self;
        }
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    kind,
                    help: help.to_owned(),
                    samples: String::new(),
                });
                self.index.insert(name.to_owned(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let Some(family) = self.families.get_mut(i) else {
            return self;
        };
        if family.kind != kind {
            warn!(
                metric = name,
                was = family.kind,
                now = kind,
                "metric type changed; sample dropped"
            );
            return self;
        }
        let out = &mut family.samples;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (n, (label, value)) in labels.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(label);
                out.push_str("=\"");
                escape_label_value(value, out);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        value.write_to(out);
        out.push('\n');
        self
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, and not the reserved `__` prefix.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// HELP text escapes backslash and newline.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_type_once_per_name_and_samples_grouped() {
        let mut w = MetricsWriter::new();
        w.counter(
            "smtp_sessions_total",
            "SMTP sessions.",
            &[("role", "smtp")],
            3u64,
        );
        w.gauge("queue_size", "Messages queued.", &[], 7u64);
        w.counter(
            "smtp_sessions_total",
            "SMTP sessions.",
            &[("role", "submission")],
            1u64,
        );
        assert_eq!(
            w.finish(),
            "# HELP smtp_sessions_total SMTP sessions.\n\
             # TYPE smtp_sessions_total counter\n\
             smtp_sessions_total{role=\"smtp\"} 3\n\
             smtp_sessions_total{role=\"submission\"} 1\n\
             # HELP queue_size Messages queued.\n\
             # TYPE queue_size gauge\n\
             queue_size 7\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut w = MetricsWriter::new();
        w.gauge(
            "x",
            "a \\ b\nc \"q\"",
            &[("domain", "a\"b\\c\nd"), ("mx", "ok")],
            1.5f64,
        );
        assert_eq!(
            w.finish(),
            "# HELP x a \\\\ b\\nc \"q\"\n\
             # TYPE x gauge\n\
             x{domain=\"a\\\"b\\\\c\\nd\",mx=\"ok\"} 1.5\n"
        );
    }

    #[test]
    fn special_floats_use_the_format_spelling() {
        let mut w = MetricsWriter::new();
        w.gauge("a", "h", &[("v", "nan")], f64::NAN)
            .gauge("a", "h", &[("v", "inf")], f64::INFINITY)
            .gauge("a", "h", &[("v", "-inf")], f64::NEG_INFINITY)
            .gauge("a", "h", &[("v", "int")], 2.0f64);
        let page = w.finish();
        assert!(page.contains("a{v=\"nan\"} NaN\n"), "{page}");
        assert!(page.contains("a{v=\"inf\"} +Inf\n"), "{page}");
        assert!(page.contains("a{v=\"-inf\"} -Inf\n"), "{page}");
        assert!(page.contains("a{v=\"int\"} 2\n"), "{page}");
    }

    #[test]
    fn invalid_names_and_type_changes_are_dropped() {
        let mut w = MetricsWriter::new();
        w.gauge("1bad", "h", &[], 1u64)
            .gauge("ok", "h", &[("bad-label", "v")], 1u64)
            .gauge("ok", "h", &[("__reserved", "v")], 1u64)
            .gauge("ok", "h", &[], 1u64)
            .counter("ok", "h", &[], 2u64);
        assert_eq!(w.finish(), "# HELP ok h\n# TYPE ok gauge\nok 1\n");
    }
}
