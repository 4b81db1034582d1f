//! The one place errors become gRPC statuses.

use centralino_actors::{ActorError, JournalError};
use centralino_core::CoreError;
use tonic::Status;

/// Maps an actor-layer error to the status a client should see.
pub fn status(e: ActorError) -> Status {
    match e {
        ActorError::Core(c) => core_status(c),
        ActorError::Journal(JournalError::Rejected(m)) => Status::resource_exhausted(m),
        ActorError::Journal(j) => {
            Status::unavailable(format!("{j}; the change was not applied, retry"))
        }
        ActorError::Unavailable(m) => Status::unavailable(format!("{m}; retry")),
        ActorError::Fenced(m) => {
            Status::unavailable(format!("{m}: another node took it over; retry"))
        }
    }
}

fn core_status(e: CoreError) -> Status {
    let m = e.to_string();
    match e {
        CoreError::Invalid { .. } => Status::invalid_argument(m),
        CoreError::UnknownQueue(_) => Status::not_found(format!("queue_id: {m}")),
        CoreError::UnknownOffer(_) => Status::not_found(format!("offer_id: {m}")),
        CoreError::UnknownConversation(_) => Status::not_found(format!("conversation_id: {m}")),
        CoreError::NotYourOffer { .. } => Status::permission_denied(format!("offer_id: {m}")),
        CoreError::NotAssigned { .. } | CoreError::Closed(_) => {
            Status::failed_precondition(format!("conversation_id: {m}"))
        }
        CoreError::AlreadyRouted(_) => Status::failed_precondition(format!("conversation_id: {m}")),
        CoreError::AgentNotLoggedIn(_) => Status::failed_precondition(format!("agent_id: {m}")),
        CoreError::Merged { .. } => Status::failed_precondition(format!(
            "conversation_id: {m}; its conversation continues in that customer's"
        )),
        CoreError::UnknownCampaign(_) => Status::not_found(format!("campaign_id: {m}")),
        CoreError::CampaignExists(_) => Status::already_exists(format!("campaign_id: {m}")),
    }
}
