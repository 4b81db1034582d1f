//! Metrics of the gRPC edge, declared in one place.

use centralino_core::Channel;

pub const CONTACTS: &str = "centralino_server_contacts_total";
pub const AGENT_SESSIONS: &str = "centralino_server_agent_sessions";

pub(crate) fn contact(channel: Channel) {
    metrics::counter!(CONTACTS, "channel" => channel.name()).increment(1);
}

pub(crate) fn agent_sessions(delta: f64) {
    metrics::gauge!(AGENT_SESSIONS).increment(delta);
}
