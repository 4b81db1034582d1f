//! Metrics of the cluster layer, declared in one place.

pub const JOURNAL_GROUP_SIZE: &str = "centralino_cluster_journal_group_batches";
pub const DRAIN_SECONDS: &str = "centralino_cluster_drain_seconds";

/// How many customers' batches one journal write carried.
pub(crate) fn group_commit(batches: usize) {
    metrics::histogram!(JOURNAL_GROUP_SIZE).record(batches as f64);
}

/// How long the last drain of this node took.
pub(crate) fn drain(d: std::time::Duration) {
    metrics::gauge!(DRAIN_SECONDS).set(d.as_secs_f64());
}
