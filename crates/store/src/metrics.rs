//! The store's part of the metrics page.

use crate::Store;
use portcullis_metrics::MetricsWriter;

impl Store {
    /// Appends the store's families to `w`: the group-commit fsyncs done
    /// (one per batch of acknowledgements, see [`Store::commit`]).
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        w.counter(
            "portcullis_store_commits_total",
            "Group-commit fsyncs of the store.",
            &[],
            self.commits_done(),
        );
    }
}
