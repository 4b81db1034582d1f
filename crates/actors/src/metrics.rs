//! Metrics of the actor layer, declared in one place.

use std::time::Duration;

use centralino_core::Output;

pub const ROUTER_DECISIONS: &str = "centralino_router_decisions_total";
pub const CUSTOMER_ACTORS: &str = "centralino_actors_customers";
pub const JOURNAL_COMMIT_SECONDS: &str = "centralino_actors_journal_commit_seconds";
pub const ACTOR_FAILURES: &str = "centralino_actors_failures_total";
pub const MIGRATION_PAUSE_SECONDS: &str = "centralino_actors_migration_pause_seconds";
pub const RECOVERED_CUSTOMERS: &str = "centralino_actors_recovered_customers_total";

pub(crate) fn router_output(o: &Output) {
    let kind = match o {
        Output::Queued { .. } => "queued",
        Output::Offered { .. } => "offered",
        Output::OfferRevoked { .. } => "offer_revoked",
        Output::Rejected { .. } => "rejected",
        Output::Assigned { .. } => "assigned",
        Output::Transferred { .. } => "transferred",
        Output::Requeued { .. } => "requeued",
        Output::AgentStateChanged { .. } => return,
    };
    metrics::counter!(ROUTER_DECISIONS, "kind" => kind).increment(1);
}

pub(crate) fn customer_actors(n: usize) {
    metrics::gauge!(CUSTOMER_ACTORS).set(n as f64);
}

pub(crate) fn journal_commit(d: Duration) {
    metrics::histogram!(JOURNAL_COMMIT_SECONDS).record(d.as_secs_f64());
}

pub(crate) fn actor_failed() {
    metrics::counter!(ACTOR_FAILURES).increment(1);
}

pub(crate) fn migration_pause(d: Duration) {
    metrics::histogram!(MIGRATION_PAUSE_SECONDS).record(d.as_secs_f64());
}

pub(crate) fn recovered_customers(n: usize) {
    metrics::counter!(RECOVERED_CUSTOMERS).increment(n as u64);
}
