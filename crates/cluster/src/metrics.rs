//! Metrics of the cluster layer, declared in one place.

pub const JOURNAL_GROUP_SIZE: &str = "centralino_cluster_journal_group_batches";

/// How many customers' batches one journal write carried.
pub(crate) fn group_commit(batches: usize) {
    metrics::histogram!(JOURNAL_GROUP_SIZE).record(batches as f64);
}
