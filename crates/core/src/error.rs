//! The core's one error type. Variants say whose fault it is, so the server
//! maps each to the right gRPC status in one place.

use crate::ids::{AgentId, CampaignId, ConversationId, CustomerId, OfferId, QueueId};

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CoreError {
    /// The caller sent a value that can never be valid.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("agent {0} is not logged in")]
    AgentNotLoggedIn(AgentId),
    #[error("queue {0} does not exist; define it with Admin.UpsertQueue")]
    UnknownQueue(QueueId),
    #[error("offer {0} is not open (accepted, rejected, timed out or never made)")]
    UnknownOffer(OfferId),
    #[error("offer {offer} was made to agent {owner}, not to {caller}")]
    NotYourOffer {
        offer: OfferId,
        owner: AgentId,
        caller: AgentId,
    },
    #[error("conversation {0} is not known here")]
    UnknownConversation(ConversationId),
    #[error("conversation {0} is already being routed")]
    AlreadyRouted(ConversationId),
    #[error("conversation {conversation} is not assigned to agent {agent}")]
    NotAssigned {
        conversation: ConversationId,
        agent: AgentId,
    },
    #[error("conversation {0} is closed")]
    Closed(ConversationId),
    /// The customer turned out to be another one and was merged into it.
    #[error("customer {customer} was merged into customer {into}")]
    Merged {
        customer: CustomerId,
        into: CustomerId,
    },
    #[error("campaign {0} does not exist; ListCampaigns lists the campaigns")]
    UnknownCampaign(CampaignId),
    #[error("campaign {0} exists already; choose another id")]
    CampaignExists(CampaignId),
}

impl CoreError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        CoreError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The request field at fault, when the caller's input was invalid.
    pub fn field(&self) -> Option<&str> {
        match self {
            CoreError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}
