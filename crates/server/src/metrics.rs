//! Metrics of the gRPC edge, declared in one place.

use centralino_core::Channel;

pub const CONTACTS: &str = "centralino_server_contacts_total";
pub const AGENT_SESSIONS: &str = "centralino_server_agent_sessions";
pub const HAND_OVERS: &str = "centralino_server_bot_hand_overs_total";
pub const CAMPAIGNS_STARTED: &str = "centralino_server_campaigns_started_total";
pub const CONTACTS_REFUSED: &str = "centralino_server_contacts_refused_total";

pub(crate) fn contact(channel: Channel) {
    metrics::counter!(CONTACTS, "channel" => channel.name()).increment(1);
}

/// A contact refused for the node's bound on contacts in flight.
pub(crate) fn contact_refused() {
    metrics::counter!(CONTACTS_REFUSED).increment(1);
}

pub(crate) fn hand_over(channel: Channel) {
    metrics::counter!(HAND_OVERS, "channel" => channel.name()).increment(1);
}

pub(crate) fn campaign_started() {
    metrics::counter!(CAMPAIGNS_STARTED).increment(1);
}

pub(crate) fn agent_sessions(delta: f64) {
    metrics::gauge!(AGENT_SESSIONS).increment(delta);
}
