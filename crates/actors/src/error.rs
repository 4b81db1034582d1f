//! Errors of the actor layer: the core's, the journal's, and an actor that
//! cannot be reached.

use centralino_core::CoreError;

use crate::journal::JournalError;

pub type Result<T, E = ActorError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ActorError {
    /// The request was decided and refused by the domain.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The change could not be made durable; it was not applied.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The actor that owns the request is gone or did not answer; retryable.
    #[error("{0} is unavailable, retry")]
    Unavailable(String),
    /// The caller no longer owns what it writes (another node took it
    /// over); it must stop acting as its owner.
    #[error("{0}")]
    Fenced(String),
}

impl ActorError {
    pub fn unavailable(what: impl Into<String>) -> Self {
        ActorError::Unavailable(what.into())
    }
}

/// Turns a ractor call outcome into our result.
pub(crate) fn call_result<T, E>(
    what: &str,
    r: std::result::Result<ractor::rpc::CallResult<T>, E>,
) -> Result<T> {
    match r {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => {
            Err(ActorError::unavailable(format!("{what} (timed out)")))
        }
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(ActorError::unavailable(what)),
    }
}
