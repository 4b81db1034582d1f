//! The coordination interface: membership, ownership and the journal.
//!
//! Architecture invariant: a lease alone never grants exclusivity. Claiming
//! an actor returns a fencing token (the revision at which the ownership
//! record was written); every journal write carries it and is refused once
//! another claim has superseded it.

use std::fmt;
use std::time::Duration;

use centralino_actors::campaign::CampaignRecord;
use centralino_actors::journal::{CustomerRecord, JournalBatch, Recovered};
use centralino_core::kpi::KpiReport;
use centralino_core::queue::QueueConfig;
use centralino_core::rules::RoutingRule;
use centralino_core::{CampaignId, Channel, CustomerId, Identity};
use tokio::sync::mpsc;

use crate::error::{ClusterError, Result};

/// A node as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInfo {
    pub id: String,
    /// Where other nodes and clients reach its gRPC server.
    pub advertise: String,
}

/// What can be owned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorKey {
    Customer(CustomerId),
    Agent(String),
    Router(String),
    /// The node running a campaign.
    Campaign(CampaignId),
}

impl fmt::Display for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorKey::Customer(c) => write!(f, "customer/{c}"),
            ActorKey::Agent(a) => write!(f, "agent/{a}"),
            ActorKey::Router(r) => write!(f, "router/{r}"),
            ActorKey::Campaign(c) => write!(f, "campaign/{c}"),
        }
    }
}

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    Joined(NodeInfo),
    Left(String),
}

/// Coordination between the nodes of one cluster.
#[async_trait::async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Registers the node under a new lease of `ttl`; returns the lease id.
    async fn join(&self, node: &NodeInfo, ttl: Duration) -> Result<i64>;
    /// Renews the lease once; the caller loops.
    async fn keep_alive(&self, lease: i64) -> Result<()>;
    /// Revokes the lease: the node's membership (and lease-bound keys) go.
    async fn leave(&self, lease: i64) -> Result<()>;
    async fn members(&self) -> Result<Vec<NodeInfo>>;
    /// Membership changes from now on.
    async fn watch_members(&self) -> Result<mpsc::Receiver<MemberEvent>>;

    /// Takes ownership of `key` for `node` if nobody owns it (or `node`
    /// already does); returns the fencing token.
    async fn claim(&self, key: &ActorKey, node: &str, lease: i64) -> Result<u64>;
    /// Gives up ownership, if `token` is still the owner's.
    async fn release(&self, key: &ActorKey, token: u64) -> Result<()>;
    /// The owner node and its token.
    async fn owner(&self, key: &ActorKey) -> Result<Option<(String, u64)>>;
    /// Hands ownership of `key` from the holder of token `from` to `node`
    /// (under `lease`) in one step, so the old token is superseded at once:
    /// this is how a planned migration moves an actor. Returns the new
    /// token; `Fenced` if `from` is no longer the owner's.
    async fn transfer(&self, key: &ActorKey, from: u64, node: &str, lease: i64) -> Result<u64>;
    /// Customers whose placement record names a node that is not in
    /// `live`: their owner died (its lease took the ownership record with
    /// it), and a survivor must recover them from the journal. A customer's
    /// placement record is written with every claim and transfer, outlives
    /// its owner's lease, and goes when the owner releases it.
    async fn orphans(&self, live: &[String]) -> Result<Vec<(String, CustomerId)>>;

    /// Appends a batch to the customer's journal, fenced by `batch.token`
    /// against the ownership of `ActorKey::Customer`; returns the token the
    /// customer's writes carry from now on. A creating batch
    /// (`batch.create`, with its owner set) is fenced instead by nobody
    /// owning the customer and none of its identities being linked; it
    /// claims the customer for the owner and links the identities in the
    /// same write (see `centralino_actors::journal`, "Creating a
    /// customer"), and fails with [`ClusterError::IdentityTaken`] or
    /// [`ClusterError::OwnedElsewhere`] when the fence does not hold.
    async fn append(&self, batch: JournalBatch) -> Result<u64>;
    /// How long a busy journal gathers batches for one
    /// [`Coordination::append_many`] (see [`crate::group`]): worth it where
    /// a request costs much more than what it carries (etcd); zero, the
    /// default, where it does not (memory).
    fn group_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Appends several customers' batches (group commit), each fenced as
    /// [`Coordination::append`] says; one result per batch, in order. A
    /// backend may write them in fewer requests than batches.
    async fn append_many(&self, batches: Vec<JournalBatch>) -> Vec<Result<u64>> {
        let mut results = Vec::with_capacity(batches.len());
        for b in batches {
            results.push(self.append(b).await);
        }
        results
    }

    /// The customer's record and open conversation's events.
    async fn load(&self, customer: CustomerId) -> Result<Option<Recovered>>;

    /// Links `identity` to `customer` unless it is linked already (then
    /// nothing changes). Returns the customer it is linked to and whether
    /// this call linked it. Linking to a customer registers the customer.
    async fn link_identity(
        &self,
        _identity: &Identity,
        _customer: CustomerId,
    ) -> Result<(CustomerId, bool)> {
        Err(unsupported("the identity directory"))
    }
    async fn lookup_identity(&self, _identity: &Identity) -> Result<Option<CustomerId>> {
        Err(unsupported("the identity directory"))
    }
    /// Whether any identity was ever linked to the customer.
    async fn customer_known(&self, _customer: CustomerId) -> Result<bool> {
        Err(unsupported("the identity directory"))
    }

    /// The gateway streams open on `node` (each a list of channels, empty =
    /// all), kept under the node's lease.
    async fn set_gateways(
        &self,
        _node: &str,
        _lease: i64,
        _streams: &[Vec<Channel>],
    ) -> Result<()> {
        Err(unsupported("the gateway registry"))
    }
    /// Every node's gateway streams.
    async fn gateways(&self) -> Result<Vec<(String, Vec<Vec<Channel>>)>> {
        Err(unsupported("the gateway registry"))
    }

    /// Stores a queue definition (replacing one with the same id), so that
    /// a router that takes over knows every queue an operator defined.
    async fn save_queue(&self, _queue: &QueueConfig) -> Result<()> {
        Err(unsupported("queue definitions"))
    }
    /// Every stored queue definition, by id.
    async fn queues(&self) -> Result<Vec<QueueConfig>> {
        Err(unsupported("queue definitions"))
    }

    /// Stores the routing rules an operator set (the whole list), so that
    /// a router that takes over applies them too.
    async fn save_rules(&self, _rules: &[RoutingRule]) -> Result<()> {
        Err(unsupported("routing rules"))
    }
    /// The stored routing rules; `None` if no operator ever set any.
    async fn rules(&self) -> Result<Option<Vec<RoutingRule>>> {
        Err(unsupported("routing rules"))
    }
    /// Stores the router's KPIs, if the router is still owned with `token`
    /// (its epoch; [`ClusterError::Fenced`] otherwise): a router that takes
    /// over goes on counting from them.
    async fn save_kpis(&self, _kpis: &KpiReport, _token: u64) -> Result<()> {
        Err(unsupported("KPIs"))
    }
    /// The KPIs the last router saved, if any.
    async fn kpis(&self) -> Result<Option<KpiReport>> {
        Err(unsupported("KPIs"))
    }

    /// A page of a campaign's scan of the customers: the journaled
    /// records of up to `limit` customers after customer `after` (from the
    /// first when `None`), in the backend's own order (the same on every
    /// call), and the last customer the page covered, to pass as `after`
    /// for the next page (`None`: the scan is over). Customers known but
    /// never journaled are covered but not listed.
    async fn scan_records(
        &self,
        _after: Option<CustomerId>,
        _limit: usize,
    ) -> Result<(Vec<CustomerRecord>, Option<CustomerId>)> {
        Err(unsupported("scanning customer records"))
    }

    /// Stores a new campaign; `false` (and nothing written) if one with
    /// its id exists.
    async fn create_campaign(&self, _record: &CampaignRecord) -> Result<bool> {
        Err(unsupported("campaigns"))
    }
    /// Replaces a campaign's record, if `ActorKey::Campaign` is still owned
    /// with `token` ([`ClusterError::Fenced`] otherwise).
    async fn save_campaign(&self, _record: &CampaignRecord, _token: u64) -> Result<()> {
        Err(unsupported("campaigns"))
    }
    async fn campaign(&self, _id: &CampaignId) -> Result<Option<CampaignRecord>> {
        Err(unsupported("campaigns"))
    }
    /// Every campaign, by id.
    async fn campaigns(&self) -> Result<Vec<CampaignRecord>> {
        Err(unsupported("campaigns"))
    }
    /// The customer replied to the campaign (idempotent).
    async fn add_campaign_reply(&self, _id: &CampaignId, _customer: CustomerId) -> Result<()> {
        Err(unsupported("campaigns"))
    }
    /// How many customers replied to the campaign.
    async fn campaign_replies(&self, _id: &CampaignId) -> Result<u64> {
        Err(unsupported("campaigns"))
    }
}

fn unsupported(what: &str) -> ClusterError {
    ClusterError::Unavailable(format!(
        "{what} is not implemented by this coordination backend"
    ))
}
