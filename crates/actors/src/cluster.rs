//! The cluster port: what the actors need to know about other nodes.
//!
//! The hub asks it where an actor lives, who a customer is, and to carry an
//! [`Envelope`] to another node. [`crate::standalone::Standalone`] answers
//! "here" to everything (one node, in-memory identity directory);
//! `centralino-cluster` implements it over etcd and the internal gRPC
//! service.

use centralino_core::directory::Resolution;
use centralino_core::{AgentId, Channel, CustomerId, Identity};

use crate::error::Result;
use crate::wire::{Envelope, EnvelopeReply};

/// Where an actor lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    Here,
    There(String),
}

/// The outcome of claiming a customer for this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node owns it; every journal write carries the fencing token.
    Owned { token: u64 },
    /// Another node owns it.
    Elsewhere(String),
}

#[async_trait::async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// Resolves a contact's identity (linking the others) to one customer.
    async fn resolve(&self, identity: &Identity, also: &[Identity]) -> Result<Resolution>;
    async fn lookup(&self, identity: &Identity) -> Result<Option<CustomerId>>;
    /// Whether the customer exists (so that made-up ids spawn no actor).
    async fn customer_exists(&self, id: CustomerId) -> Result<bool>;

    /// Where the customer's actor lives or should be started.
    async fn customer_home(&self, id: CustomerId) -> Result<Home>;
    /// Takes ownership of the customer for this node.
    async fn claim_customer(&self, id: CustomerId) -> Result<Claim>;
    /// Gives it up (the actor stopped here).
    async fn release_customer(&self, id: CustomerId, token: u64);
    /// Where the router lives.
    async fn router_home(&self) -> Result<Home>;

    /// The agent's desktop connected here (or left).
    async fn agent_session(&self, agent: &AgentId, connected: bool) -> Result<()>;
    /// Where the agent's desktop is connected, if anywhere.
    async fn agent_home(&self, agent: &AgentId) -> Result<Option<Home>>;

    /// A gateway stream for `channels` (all when empty) opened or closed here.
    async fn gateway_session(&self, channels: &[Channel], open: bool) -> Result<()>;
    /// Other nodes with a gateway stream for `channel`.
    async fn gateway_nodes(&self, channel: Channel) -> Result<Vec<String>>;

    /// Carries an envelope to another node's hub and returns its answer.
    async fn send(&self, node: &str, envelope: Envelope) -> Result<EnvelopeReply>;
}
