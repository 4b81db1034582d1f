//! Errors of coordination.

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Another node owns the actor.
    #[error("{key} is owned by node {owner}")]
    OwnedElsewhere { key: String, owner: String },
    /// The fencing token is no longer the owner's: the writer lost ownership.
    #[error("{key}: fencing token {token} is stale")]
    Fenced { key: String, token: u64 },
    /// The lease is unknown or expired.
    #[error("lease {0} is not alive")]
    LeaseExpired(i64),
    /// The coordination store cannot be reached; retryable.
    #[error("coordination store unavailable: {0}")]
    Unavailable(String),
    /// A new customer's identity belongs to another customer already.
    #[error("identity {identity} belongs to customer {customer}")]
    IdentityTaken {
        identity: centralino_core::Identity,
        customer: centralino_core::CustomerId,
    },
    /// The history archive did not store or read a conversation (a disk
    /// full, a directory not writable, a file damaged); retryable once the
    /// cause named here is fixed.
    #[error("history archive: {0}")]
    Archive(String),
    /// The write can never succeed as it is (over a limit of the store);
    /// not retryable. The message names the limit and what to do.
    #[error("{0}")]
    Rejected(String),
}
