//! Finds the line of a key path (`relay.accepted_domains[1]`) in the TOML
//! source, so every error can name where to look.

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Line numbers (1-based) of key paths in one source text.
pub struct Locator<'a> {
    source: &'a str,
    root: Option<toml::Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    /// Parses `source` for spans; a source that does not parse locates nothing.
    pub fn new(source: &'a str) -> Locator<'a> {
        Locator {
            source,
            root: DeTable::parse(source).ok(),
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.source.as_bytes()[..offset.min(self.source.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The line of the deepest part of `path` that exists: the value's line
    /// when found, else the nearest existing parent's key.
    pub fn line(&self, path: &[Step]) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut table: &DeTable<'_> = root.get_ref();
        let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
        let mut best: Option<usize> = None;
        for step in path {
            let next = match (step, value.map(|v| v.get_ref())) {
                (Step::Key(k), None) | (Step::Key(k), Some(DeValue::Table(_))) => {
                    if let Some(DeValue::Table(t)) = value.map(|v| v.get_ref()) {
                        table = t;
                    }
                    table
                        .iter()
                        .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                        .map(|(key, v)| {
                            best = Some(key.span().start);
                            v
                        })
                }
                (Step::Index(i), Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            match next {
                Some(v) => {
                    if !matches!(v.get_ref(), DeValue::Table(_)) || matches!(step, Step::Index(_)) {
                        best = Some(v.span().start);
                    }
                    value = Some(v);
                }
                None => break,
            }
        }
        best.map(|offset| self.line_of(offset))
    }
}

/// Parses `relay.accepted_domains[1]` into steps.
pub fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            steps.push(Step::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..close].parse() {
                    steps.push(Step::Index(i));
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            steps.push(Step::Key(rest.to_string()));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines() {
        let src = "hostname = \"a\"\n\n[relay]\naccepted_domains = [\n  \"a.test\",\n  \"b..test\",\n]\n\n[[listen]]\naddress = \"x\"\n[[listen]]\naddress = \"y\"\n";
        let l = Locator::new(src);
        assert_eq!(l.line(&parse_path("hostname")), Some(1));
        assert_eq!(l.line(&parse_path("relay.accepted_domains[1]")), Some(6));
        assert_eq!(l.line(&parse_path("relay")), Some(3));
        assert_eq!(l.line(&parse_path("listen[1].address")), Some(12));
        assert_eq!(l.line(&parse_path("relay.nope")), Some(3));
    }
}
