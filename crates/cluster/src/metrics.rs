//! Metrics of the cluster layer, declared in one place.

pub const JOURNAL_GROUP_SIZE: &str = "centralino_cluster_journal_group_batches";
pub const DRAIN_SECONDS: &str = "centralino_cluster_drain_seconds";
pub const ARCHIVE_STORE_SECONDS: &str = "centralino_cluster_archive_store_seconds";
pub const REBALANCED: &str = "centralino_cluster_rebalanced_customers_total";
pub const ETCD_REQUESTS: &str = "centralino_cluster_etcd_requests_total";
pub const NODE_SEND_ENVELOPES: &str = "centralino_cluster_node_send_envelopes";
pub const NODE_ENVELOPES: &str = "centralino_cluster_node_envelopes_total";

/// How many customers' batches one journal write carried.
pub(crate) fn group_commit(batches: usize) {
    metrics::histogram!(JOURNAL_GROUP_SIZE).record(batches as f64);
}

/// How long the last drain of this node took.
pub(crate) fn drain(d: std::time::Duration) {
    metrics::gauge!(DRAIN_SECONDS).set(d.as_secs_f64());
}

/// How long storing one closed conversation in the archive took.
pub(crate) fn archive_store(d: std::time::Duration) {
    metrics::histogram!(ARCHIVE_STORE_SECONDS).record(d.as_secs_f64());
}

/// Customers moved from this node to nodes that joined.
pub(crate) fn rebalanced(moved: usize) {
    metrics::counter!(REBALANCED).increment(moved as u64);
}

/// One request to etcd, by what it was for (the call sites' names).
pub(crate) fn etcd_request(what: &str) {
    metrics::counter!(ETCD_REQUESTS, "op" => what.to_owned()).increment(1);
}

/// How many envelopes one node-to-node frame took from the queue.
pub(crate) fn node_send(envelopes: usize) {
    metrics::histogram!(NODE_SEND_ENVELOPES).record(envelopes as f64);
}

/// One envelope sent to another node, by kind (`Envelope::kind`).
pub(crate) fn node_envelope(kind: &'static str) {
    metrics::counter!(NODE_ENVELOPES, "kind" => kind).increment(1);
}
