//! The cluster port: what the actors need to know about other nodes.
//!
//! The hub asks it where an actor lives, who a customer is, and to carry an
//! [`Envelope`] to another node. [`crate::standalone::Standalone`] answers
//! "here" to everything (one node, in-memory identity directory);
//! `centralino-cluster` implements it over etcd and the internal gRPC
//! service.

use centralino_core::directory::Resolution;
use centralino_core::kpi::KpiReport;
use centralino_core::queue::QueueConfig;
use centralino_core::rules::RoutingRule;
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
    /// Takes the customer over from the owner holding `from` (a planned
    /// migration to this node): ownership moves in one fenced step, so the
    /// previous owner can no longer write. Returns this node's token.
    async fn adopt_customer(&self, id: CustomerId, _from: u64) -> Result<u64> {
        Err(crate::error::ActorError::unavailable(format!(
            "migration of {id} (this node is not part of a cluster)"
        )))
    }
    /// The customer now lives on `node`: forget it here.
    fn customer_moved(&self, _id: CustomerId, _node: &str) {}
    /// A hint: the customer's actor runs on `node` (as a message from it
    /// says), so decisions for it need not look its owner up.
    fn customer_at(&self, _id: CustomerId, _node: &str) {}
    /// This node took ownership of a new customer with its first journal
    /// write (see `journal`, "Creating a customer"), under `token`.
    fn claimed(&self, _id: CustomerId, _token: u64) {}
    /// The identity belongs to `customer` (learnt from a creation that
    /// lost a race for it).
    fn identity_of(&self, _identity: &Identity, _customer: CustomerId) {}
    /// Where a customer should go when it leaves this node (a drain): the
    /// live member other than this one that placement would pick.
    fn drain_target(&self, _id: CustomerId) -> Option<String> {
        None
    }
    /// The live member placement picks for the customer now (rendezvous
    /// hashing over the members this node knows).
    fn placement(&self, _id: CustomerId) -> Option<String> {
        Some(self.node_id().to_owned())
    }
    /// The live members' ids, this node included.
    fn member_ids(&self) -> Vec<String> {
        vec![self.node_id().to_owned()]
    }
    /// Customers of dead nodes that placement gives to this node now: they
    /// must be recovered here from the journal. `live`: the members to
    /// take for alive (this node's view when `None`).
    async fn orphans_here(&self, _live: Option<&[String]>) -> Result<Vec<CustomerId>> {
        Ok(Vec::new())
    }
    /// Stores a queue definition, for a router that takes over.
    async fn save_queue(&self, _queue: &QueueConfig) -> Result<()> {
        Ok(())
    }
    /// Stores the routing rules (the whole list), for a router that takes
    /// over.
    async fn save_rules(&self, _rules: &[RoutingRule]) -> Result<()> {
        Ok(())
    }
    /// Stores the KPIs of the router of `epoch`, for the router that takes
    /// over from it; refused once another router was claimed.
    async fn save_kpis(&self, _kpis: &KpiReport, _epoch: u64) -> Result<()> {
        Ok(())
    }
    /// Where the router lives.
    async fn router_home(&self) -> Result<Home>;
    /// The epoch (the fencing token it was claimed under) of the router
    /// this node knows of, if it knows one.
    fn router_epoch(&self) -> Option<u64> {
        Some(0)
    }
    /// A router started on `node` under `epoch`, and saw `members` alive.
    /// If that is newer than the router this node knew: remember it, take
    /// the members it no longer saw for dead, and return true (the node
    /// must then tell it what it holds).
    fn router_started(&self, _node: &str, _epoch: u64, _members: &[String]) -> bool {
        false
    }
    /// The router's node (draining) gave it up: a node should claim it.
    fn router_vacated(&self, _node: &str) {}
    /// The router is not where this node thought: look it up again.
    fn forget_router(&self) {}

    /// The agent's desktop connected here (or left).
    async fn agent_session(&self, agent: &AgentId, connected: bool) -> Result<()>;
    /// Where the agent's desktop is connected, if anywhere.
    async fn agent_home(&self, agent: &AgentId) -> Result<Option<Home>>;
    /// The agent's desktop is not where this node thought: look again.
    fn forget_agent(&self, _agent: &AgentId) {}

    /// A gateway stream for `channels` (all when empty) opened or closed here.
    async fn gateway_session(&self, channels: &[Channel], open: bool) -> Result<()>;
    /// Other nodes with a gateway stream for `channel`.
    async fn gateway_nodes(&self, channel: Channel) -> Result<Vec<String>>;

    /// Carries an envelope to another node's hub and returns its answer.
    async fn send(&self, node: &str, envelope: Envelope) -> Result<EnvelopeReply>;
}
