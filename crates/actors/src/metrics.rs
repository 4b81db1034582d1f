//! Metrics of the actor layer, declared in one place.

use std::time::Duration;

use centralino_core::Output;

pub const ROUTER_DECISIONS: &str = "centralino_router_decisions_total";
pub const CUSTOMER_ACTORS: &str = "centralino_actors_customers";
pub const JOURNAL_COMMIT_SECONDS: &str = "centralino_actors_journal_commit_seconds";
pub const ACTOR_FAILURES: &str = "centralino_actors_failures_total";
pub const MIGRATION_PAUSE_SECONDS: &str = "centralino_actors_migration_pause_seconds";
pub const RECOVERED_CUSTOMERS: &str = "centralino_actors_recovered_customers_total";
pub const CAMPAIGN_NOTICES: &str = "centralino_actors_campaign_notices_total";
pub const CAMPAIGN_REPLIES: &str = "centralino_actors_campaign_replies_total";

// Live KPIs, published by the router's node every second or so (see
// `router::save_kpis`), labelled `scope` (queue, channel, agent, total) and
// `key` (the queue id, channel name or agent id; "all" for the total).
// Counts are cumulative over the cluster's life, carried across router
// takeovers; rates are over the same span.
pub const KPI_CONTACTS: &str = "centralino_kpi_contacts";
pub const KPI_SERVICE_LEVEL: &str = "centralino_kpi_service_level";
pub const KPI_ASA_SECONDS: &str = "centralino_kpi_asa_seconds";
pub const KPI_AHT_SECONDS: &str = "centralino_kpi_aht_seconds";
pub const KPI_ABANDONMENT_RATE: &str = "centralino_kpi_abandonment_rate";
pub const KPI_TRANSFER_RATE: &str = "centralino_kpi_transfer_rate";
pub const KPI_FIRST_CONTACT_RESOLUTION: &str = "centralino_kpi_first_contact_resolution";
pub const KPI_OCCUPANCY: &str = "centralino_kpi_occupancy";

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

pub(crate) fn campaign_notice(channel: centralino_core::Channel) {
    metrics::counter!(CAMPAIGN_NOTICES, "channel" => channel.name()).increment(1);
}

pub(crate) fn campaign_replies(n: usize) {
    metrics::counter!(CAMPAIGN_REPLIES).increment(n as u64);
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

/// Publishes the KPIs as gauges. Agents get their occupancy, AHT and
/// answered count only: three series each, not the whole set.
pub(crate) fn kpis(report: &centralino_core::kpi::KpiReport) {
    use centralino_core::kpi::Counters;
    let full = |scope: &'static str, key: String, c: &Counters| {
        let labels = [("scope", scope.to_owned()), ("key", key)];
        for (outcome, n) in [
            ("offered", c.offered),
            ("answered", c.answered),
            ("abandoned", c.abandoned),
            ("transferred", c.transfers),
            ("resolved", c.resolved),
        ] {
            let mut l = labels.to_vec();
            l.push(("outcome", outcome.to_owned()));
            metrics::gauge!(KPI_CONTACTS, &l).set(n as f64);
        }
        metrics::gauge!(KPI_SERVICE_LEVEL, &labels).set(c.service_level());
        metrics::gauge!(KPI_ASA_SECONDS, &labels).set(c.asa_ms() / 1e3);
        metrics::gauge!(KPI_AHT_SECONDS, &labels).set(c.aht_ms() / 1e3);
        metrics::gauge!(KPI_ABANDONMENT_RATE, &labels).set(c.abandonment_rate());
        metrics::gauge!(KPI_TRANSFER_RATE, &labels).set(c.transfer_rate());
        metrics::gauge!(KPI_FIRST_CONTACT_RESOLUTION, &labels).set(c.first_contact_resolution());
    };
    full("total", "all".to_owned(), &report.total);
    metrics::gauge!(KPI_OCCUPANCY, "scope" => "total", "key" => "all")
        .set(report.total.occupancy());
    for (q, c) in &report.queues {
        full("queue", q.clone(), c);
    }
    for (ch, c) in &report.channels {
        full("channel", ch.name().to_owned(), c);
    }
    for (a, c) in &report.agents {
        let labels = [("scope", "agent".to_owned()), ("key", a.clone())];
        metrics::gauge!(KPI_OCCUPANCY, &labels).set(c.occupancy());
        metrics::gauge!(KPI_AHT_SECONDS, &labels).set(c.aht_ms() / 1e3);
        let mut l = labels.to_vec();
        l.push(("outcome", "answered".to_owned()));
        metrics::gauge!(KPI_CONTACTS, &l).set(c.answered as f64);
    }
}
