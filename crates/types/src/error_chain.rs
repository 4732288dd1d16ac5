//! An error and its sources as one line, for logs and operator messages:
//! HTTP and TLS libraries keep the useful part (the DNS failure, the
//! certificate problem) in a source several levels down, and their own
//! top-level message is terse. The one copy for every crate.

/// `error: cause: cause`, each source's text added only when the text so
/// far does not already contain it (many errors repeat their source).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn sources_are_joined_and_repeats_left_out() {
        let e = Layer(
            "request failed: connection refused",
            Some(Box::new(Layer(
                "connection refused",
                Some(Box::new(Layer("dns: temporary failure", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "request failed: connection refused: dns: temporary failure"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
