//! The hub: how actors and services on a node reach each other, wherever
//! they live.
//!
//! Customers, the router, agent desktops and gateway streams are addressed
//! by id, never by actor reference: the hub asks the [`Cluster`] port where
//! the target lives, and either talks to the local actor (spawning and
//! claiming a customer on first use, recovered from the journal) or hands a
//! serde-encoded [`Envelope`] to the cluster layer for the node that hosts
//! it. The same code runs a standalone node and a cluster.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use centralino_core::customer::{Attributes, Customer};
use centralino_core::directory::Resolution;
use centralino_core::explain::Explanation;
use centralino_core::history::HistoryEvent;
use centralino_core::{
    AgentId, AgentState, CampaignId, Channel, ConversationId, CustomerId, Identity, OfferId,
    Output, QueueId, TimeMs,
};
use ractor::{Actor, ActorCell, ActorRef, ActorStatus};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{OnceCell, mpsc};

use crate::agent::AgentMsg;
use crate::campaign::Campaigns;
use crate::cluster::{Claim, Cluster, Home};
use crate::customer::{CustomerActor, CustomerMsg, Start};
use crate::error::{ActorError, Result, call_result};
use crate::journal::Journal;
use crate::router::RouterMsg;
use crate::sync::lock;
use crate::wire::{
    CustomerReply, CustomerRequest, Envelope, EnvelopeReply, NewCustomer, RouterReply,
    RouterRequest,
};

/// A reply on its way to a customer, through a channel gateway.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub conversation: ConversationId,
    pub channel: Channel,
    pub to: Identity,
    pub agent: AgentId,
    pub text: String,
    pub seq: u64,
    /// A campaign's notice (then `agent` is empty).
    #[serde(default)]
    pub campaign: Option<CampaignId>,
}

/// What an agent desktop is sent.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum DesktopEvent {
    Offer(Box<OfferDelivery>),
    OfferRevoked {
        offer: OfferId,
        reason: String,
    },
    CustomerMessage {
        conversation: ConversationId,
        event: HistoryEvent,
    },
    StateChanged {
        state: AgentState,
        load: u16,
    },
}

/// An offer with everything the agent needs to take it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OfferDelivery {
    pub offer: OfferId,
    pub conversation: ConversationId,
    pub channel: Channel,
    pub queue: QueueId,
    pub attributes: Attributes,
    /// The whole cross-channel timeline so far.
    pub history: Vec<HistoryEvent>,
    pub explanation: Box<Explanation>,
    pub expires_at: TimeMs,
    /// The node the customer's actor runs on (a hint for the accept).
    #[serde(default)]
    pub home: Option<String>,
}

/// Replies waiting for a gateway of their channel; beyond this many the
/// oldest are dropped with an error log (they remain in the history).
pub const MAX_PENDING_DELIVERIES: usize = 100_000;

struct GatewaySub {
    channels: Vec<Channel>,
    tx: mpsc::Sender<Delivery>,
}

impl GatewaySub {
    fn serves(&self, c: Channel) -> bool {
        self.channels.is_empty() || self.channels.contains(&c)
    }
}

/// Per-node registry and router of messages. See the module docs.
pub struct Hub {
    cluster: Arc<dyn Cluster>,
    journal: Arc<dyn Journal>,
    customers: Mutex<FxHashMap<CustomerId, Arc<OnceCell<ActorRef<CustomerMsg>>>>>,
    /// Customers that migrated away from here, and where to: messages that
    /// still arrive here are forwarded (see `actors::customer`).
    moved: Mutex<FxHashMap<CustomerId, String>>,
    /// Customers being adopted here (see [`Hub::start_customer`]).
    adopting: Mutex<FxHashSet<CustomerId>>,
    agents: Mutex<FxHashMap<AgentId, ActorRef<AgentMsg>>>,
    gateways: Mutex<(Vec<GatewaySub>, VecDeque<Delivery>)>,
    router: Mutex<Option<ActorRef<RouterMsg>>>,
    supervisor: OnceLock<ActorCell>,
    /// Ordered delivery lanes for what is told (see [`Hub::post_customer`]).
    lanes: Vec<mpsc::UnboundedSender<Told>>,
    /// Draining: no customer actor starts here any more.
    draining: std::sync::atomic::AtomicBool,
    /// The campaigns this node runs, and their store.
    campaigns: OnceLock<Arc<Campaigns>>,
}

/// Something told to a customer or a desktop, waiting in a lane.
enum Told {
    Customer(CustomerId, Output),
    Desktop(AgentId, DesktopEvent),
}

/// Attempts at having a survivor absorb a merged customer.
const MERGE_ATTEMPTS: u32 = 10;

/// What a node answers for a router it does not host (any more).
const ROUTER_NOT_HERE: &str = "router (not on this node)";

/// Customers (and orphans) reported to a new router at once.
pub const RESYNC_PARALLEL: usize = 64;

/// Delivery lanes: messages for one customer (or one agent) always take
/// the same lane, so they arrive in the order they were posted.
pub const LANES: usize = 16;
/// Most decisions for one customer a lane delivers in one envelope.
const LANE_BUNDLE: usize = 32;
/// How long a lane keeps retrying one message before it gives up on it.
pub const LANE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

impl Hub {
    /// A hub; starts its delivery lanes on the current tokio runtime.
    pub fn new(journal: Arc<dyn Journal>, cluster: Arc<dyn Cluster>) -> Arc<Self> {
        Arc::new_cyclic(|hub: &std::sync::Weak<Hub>| {
            let lanes = (0..LANES)
                .map(|_| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_lane(hub.clone(), rx));
                    tx
                })
                .collect();
            Hub {
                cluster,
                journal,
                customers: Default::default(),
                moved: Default::default(),
                adopting: Default::default(),
                agents: Default::default(),
                gateways: Default::default(),
                router: Mutex::new(None),
                supervisor: OnceLock::new(),
                lanes,
                draining: Default::default(),
                campaigns: OnceLock::new(),
            }
        })
    }

    /// Tells the customer a routing decision without waiting: the lane for
    /// this customer delivers it, in order with everything else posted for
    /// the customer, retrying while the customer's node or the coordination
    /// store cannot be reached. Decisions posted back to back for one
    /// customer travel together.
    pub fn post_customer(&self, id: CustomerId, o: Output) {
        self.post(id.0, Told::Customer(id, o));
    }

    /// Sends a desktop event without waiting, in order per agent, retrying
    /// like [`Hub::post_customer`].
    pub fn post_desktop(&self, agent: &AgentId, event: DesktopEvent) {
        let key = agent
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        self.post(key, Told::Desktop(agent.clone(), event));
    }

    fn post(&self, key: u64, told: Told) {
        let lane = &self.lanes[(key % LANES as u64) as usize];
        if lane.send(told).is_err() {
            tracing::error!("delivery lane closed: message dropped");
        }
    }

    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// Gives the node its campaigns (once, at start).
    pub fn set_campaigns(&self, campaigns: Arc<Campaigns>) {
        let _ = self.campaigns.set(campaigns);
    }

    /// The node's campaigns, once it has them.
    pub fn campaigns(&self) -> Option<&Arc<Campaigns>> {
        self.campaigns.get()
    }

    pub(crate) fn set_router(&self, router: Option<ActorRef<RouterMsg>>) {
        *lock(&self.router) = router;
    }

    pub(crate) fn set_supervisor(&self, supervisor: ActorCell) {
        let _ = self.supervisor.set(supervisor);
    }

    pub(crate) fn supervisor_cell(&self) -> Result<ActorCell> {
        self.supervisor
            .get()
            .cloned()
            .ok_or_else(|| ActorError::unavailable("supervisor"))
    }

    fn local_router(&self) -> Option<ActorRef<RouterMsg>> {
        lock(&self.router).clone().filter(|r| alive(r.get_status()))
    }

    /// Whether the router runs on this node.
    pub fn hosts_router(&self) -> bool {
        self.local_router().is_some()
    }

    // ----------------------------------------------------------- identity

    pub async fn resolve(&self, identity: &Identity, also: &[Identity]) -> Result<Resolution> {
        self.cluster.resolve(identity, also).await
    }

    pub async fn lookup(&self, identity: &Identity) -> Result<Option<CustomerId>> {
        self.cluster.lookup(identity).await
    }

    pub async fn customer_exists(&self, id: CustomerId) -> Result<bool> {
        self.cluster.customer_exists(id).await
    }

    // ---------------------------------------------------------- customers

    /// Asks the customer's actor, wherever it lives. A customer created by
    /// this very request has no owner yet: placement says where it starts.
    pub async fn ask_customer(
        self: &Arc<Self>,
        id: CustomerId,
        req: CustomerRequest,
    ) -> Result<CustomerReply> {
        let new = req.new_customer().is_some();
        let home = match self.cluster.placement(id) {
            Some(node) if new => home_of(&node, self.cluster.node_id()),
            _ => self.cluster.customer_home(id).await?,
        };
        match home {
            Home::Here => self.ask_local_customer(id, req).await,
            Home::There(node) => self.ask_remote_customer(&node, id, req).await,
        }
    }

    /// Hands the customer's actor its routing decisions, in order,
    /// wherever it lives. Those handed over leave `decisions`: on an error,
    /// what is left there is what a retry must still deliver.
    pub async fn tell_customer(
        self: &Arc<Self>,
        id: CustomerId,
        decisions: &mut Vec<Output>,
    ) -> Result<()> {
        match self.cluster.customer_home(id).await? {
            Home::Here => self.tell_local_customer_as(id, decisions, false).await,
            Home::There(node) => {
                self.send(&node, Envelope::TellCustomer(id, decisions.clone()))
                    .await?;
                decisions.clear();
                Ok(())
            }
        }
    }

    async fn ask_local_customer(
        self: &Arc<Self>,
        id: CustomerId,
        req: CustomerRequest,
    ) -> Result<CustomerReply> {
        self.ask_local_customer_as(id, req, false).await
    }

    /// `handoff`: the request was queued at the previous owner when the
    /// customer migrated here (it goes ahead of what came here directly).
    async fn ask_local_customer_as(
        self: &Arc<Self>,
        id: CustomerId,
        req: CustomerRequest,
        handoff: bool,
    ) -> Result<CustomerReply> {
        // An actor that stops as we reach it (it migrated, or was fenced
        // out) did not take the request: look again, once.
        let new = req.new_customer().cloned();
        for attempt in 0..2 {
            let actor = match self.start_customer(id, new.as_ref()).await? {
                Ok(actor) => actor,
                Err(owner) => return self.ask_remote_customer(&owner, id, req).await,
            };
            let r = actor
                .call(
                    |reply| wrap(handoff, CustomerMsg::Request(req.clone(), Some(reply))),
                    None,
                )
                .await;
            match r {
                Ok(ractor::rpc::CallResult::SenderError) | Err(_)
                    if attempt == 0 && !alive(actor.get_status()) =>
                {
                    continue;
                }
                r => return call_result("customer", r)?,
            }
        }
        Err(ActorError::unavailable(format!("customer {id} (stopping)")))
    }

    /// The local half of [`Hub::tell_customer`]: each decision cast to the
    /// actor leaves `decisions`.
    async fn tell_local_customer_as(
        self: &Arc<Self>,
        id: CustomerId,
        decisions: &mut Vec<Output>,
        handoff: bool,
    ) -> Result<()> {
        for _attempt in 0..2 {
            match self.local_customer(id).await? {
                Ok(actor) => {
                    let cast = decisions
                        .iter()
                        .take_while(|o| {
                            actor
                                .cast(wrap(handoff, CustomerMsg::Routed((*o).clone())))
                                .is_ok()
                        })
                        .count();
                    decisions.drain(..cast);
                    if decisions.is_empty() {
                        return Ok(());
                    }
                    // The actor stopped as we reached it: look again, once.
                }
                Err(owner) => {
                    self.send(&owner, Envelope::TellCustomer(id, decisions.clone()))
                        .await?;
                    decisions.clear();
                    return Ok(());
                }
            }
        }
        Err(ActorError::unavailable(format!("customer {id} (stopping)")))
    }

    async fn ask_remote_customer(
        &self,
        node: &str,
        id: CustomerId,
        req: CustomerRequest,
    ) -> Result<CustomerReply> {
        match self.send(node, Envelope::AskCustomer(id, req)).await? {
            EnvelopeReply::Customer(r) => r,
            other => Err(ActorError::unavailable(format!(
                "customer {id}: unexpected answer {other:?}"
            ))),
        }
    }

    /// The customer's actor on this node, spawned (after claiming the
    /// customer, and recovered from the journal) if it is not running; or
    /// the node that owns it.
    ///
    /// Only the lookup holds the map's lock: claiming and recovering (etcd
    /// round trips) happen under a per-customer cell, so a slow or
    /// unreachable store never blocks the customers already running here.
    async fn local_customer(
        self: &Arc<Self>,
        id: CustomerId,
    ) -> Result<Result<ActorRef<CustomerMsg>, String>> {
        self.start_customer(id, None).await
    }

    /// [`Hub::local_customer`]; `new`: the customer is made up by the
    /// request at hand, so there is nothing to recover from the journal,
    /// and if its identities are not linked yet, its first journal write
    /// creates it (claims it and links them) instead of a claim now.
    async fn start_customer(
        self: &Arc<Self>,
        id: CustomerId,
        new: Option<&NewCustomer>,
    ) -> Result<Result<ActorRef<CustomerMsg>, String>> {
        if let Some(node) = lock(&self.moved).get(&id).cloned() {
            return Ok(Err(node));
        }
        if self.is_draining() && !lock(&self.customers).contains_key(&id) {
            // Leaving: a customer not running here starts where it will
            // live after the drain (that node's hub claims it).
            if let Some(node) = self.cluster.drain_target(id) {
                return Ok(Err(node));
            }
        }
        let cell = {
            let mut customers = lock(&self.customers);
            let cell = customers.entry(id).or_default();
            if cell.get().is_some_and(|a| !alive(a.get_status())) {
                *cell = Arc::default();
            }
            cell.clone()
        };
        let started = cell
            .get_or_try_init(|| async {
                let start = match new {
                    Some(n) if !n.link.is_empty() => Start::Create {
                        identities: n.link.clone(),
                    },
                    _ => {
                        let token = match self.cluster.claim_customer(id).await? {
                            Claim::Owned { token } => token,
                            Claim::Elsewhere(node) => return Err(Elsewhere::Owner(node)),
                        };
                        // This node owns the customer; if that is because it
                        // is being (or was just) adopted here, the adopted
                        // actor holds the same token: a second actor
                        // recovered from the journal would write over what
                        // the first acknowledged. The caller tries again and
                        // finds the adopted one.
                        let superseded = !lock(&self.customers)
                            .get(&id)
                            .is_some_and(|c| Arc::ptr_eq(c, &cell));
                        if superseded || lock(&self.adopting).contains(&id) {
                            return Err(Elsewhere::Failed(ActorError::unavailable(format!(
                                "customer {id} (arriving on this node; try again)"
                            ))));
                        }
                        if new.is_some() {
                            Start::New { token }
                        } else {
                            Start::Recover { token }
                        }
                    }
                };
                let supervisor = self.supervisor_cell()?;
                let (actor, _) =
                    Actor::spawn_linked(None, CustomerActor, (id, self.clone(), start), supervisor)
                        .await
                        .map_err(|e| ActorError::unavailable(format!("customer {id} ({e})")))?;
                Ok(actor)
            })
            .await;
        match started {
            Ok(actor) => {
                crate::metrics::customer_actors(lock(&self.customers).len());
                Ok(Ok(actor.clone()))
            }
            Err(e) => {
                // Nothing runs here for this customer: forget the empty cell.
                let mut customers = lock(&self.customers);
                if customers.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    customers.remove(&id);
                }
                match e {
                    Elsewhere::Owner(node) => Ok(Err(node)),
                    Elsewhere::Failed(e) => Err(e),
                }
            }
        }
    }

    /// Number of customer actors on this node.
    pub fn customer_count(&self) -> usize {
        lock(&self.customers).len()
    }

    /// From now on no customer actor starts here: the node is leaving, and
    /// [`Hub::drain`] moves the running ones away.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The customers whose actors run here.
    pub fn local_customers(&self) -> Vec<CustomerId> {
        lock(&self.customers)
            .iter()
            .filter(|(_, cell)| cell.get().is_some_and(|a| alive(a.get_status())))
            .map(|(id, _)| *id)
            .collect()
    }

    // ---------------------------------------------------------- migration

    /// Moves the customer's actor, with its whole history, to node `to`
    /// (see `actors::customer` for the protocol), wherever it lives now;
    /// returns the pause it saw.
    pub async fn migrate_customer(
        self: &Arc<Self>,
        id: CustomerId,
        to: &str,
    ) -> Result<std::time::Duration> {
        let owner = match self.cluster.customer_home(id).await? {
            Home::Here => match self.local_customer(id).await? {
                Ok(actor) => {
                    let to = to.to_owned();
                    return call_result(
                        "customer",
                        actor
                            .call(|reply| CustomerMsg::Migrate(to, reply), None)
                            .await,
                    )?;
                }
                Err(owner) => owner,
            },
            Home::There(owner) => owner,
        };
        let envelope = Envelope::Migrate {
            customer: id,
            to: to.to_owned(),
        };
        match self.send(&owner, envelope).await? {
            EnvelopeReply::Migrated(r) => r.map(std::time::Duration::from_micros),
            other => Err(ActorError::unavailable(format!(
                "customer {id}: unexpected answer {other:?}"
            ))),
        }
    }

    /// Moves every customer actor running here to the node placement picks
    /// among the others (a drain), `parallel` at a time. Returns how many
    /// moved and the customers that could not be moved.
    pub async fn drain(
        self: &Arc<Self>,
        parallel: usize,
    ) -> (usize, Vec<(CustomerId, ActorError)>) {
        use futures::StreamExt;
        self.start_draining();
        let ids = self.local_customers();
        let results: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let Some(to) = self.cluster.drain_target(id) else {
                    return (
                        id,
                        Err(ActorError::unavailable("drain target (no other live node)")),
                    );
                };
                (id, self.migrate_customer(id, &to).await)
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let mut moved = 0;
        let mut failed = Vec::new();
        for (id, r) in results {
            match r {
                Ok(_) => moved += 1,
                Err(e) => failed.push((id, e)),
            }
        }
        (moved, failed)
    }

    /// Merges customer `absorbed` into `survivor`, the same person (see
    /// `core::customer`, "Merging"): the absorbed one becomes a tombstone
    /// that sends whoever comes to it to the survivor, and hands over what
    /// it was; the survivor takes it in. The survivor's absorb is retried
    /// while it is unavailable: if this node died between the two steps,
    /// the absorbed conversation stays in the history archive, closed with
    /// the `MergedInto` event that says where the customer went.
    pub async fn merge(self: &Arc<Self>, survivor: CustomerId, absorbed: CustomerId) -> Result<()> {
        let became = CustomerRequest::MergeInto { survivor };
        let CustomerReply::Customer(was) = self.ask_customer(absorbed, became).await? else {
            return Err(ActorError::unavailable(format!(
                "customer {absorbed}: unexpected answer to a merge"
            )));
        };
        let mut backoff = std::time::Duration::from_millis(50);
        for attempt in 1.. {
            let absorb = CustomerRequest::Absorb { from: was.clone() };
            match self.ask_customer(survivor, absorb).await {
                Ok(_) => break,
                Err(ActorError::Unavailable(e)) if attempt < MERGE_ATTEMPTS => {
                    tracing::debug!(%survivor, %absorbed, error = %e, "absorbing a merged customer; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves to node `to` (which just joined) every customer actor running
    /// here that placement now gives to it, `parallel` at a time, so that
    /// a node that joins takes its share of the existing customers, not
    /// only of new ones. Stops early if this node starts draining or `to`
    /// leaves. Returns how many moved and how many could not (those stay
    /// here, served as before).
    pub async fn rebalance_to(self: &Arc<Self>, to: &str, parallel: usize) -> (usize, usize) {
        use futures::StreamExt;
        let theirs: Vec<CustomerId> = self
            .local_customers()
            .into_iter()
            .filter(|id| self.cluster.placement(*id).as_deref() == Some(to))
            .collect();
        let results: Vec<bool> = futures::stream::iter(theirs)
            .map(|id| async move {
                let gone = !self.cluster.member_ids().iter().any(|m| m == to);
                if self.is_draining() || gone {
                    return false;
                }
                match self.migrate_customer(id, to).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::debug!(customer = %id, %to, error = %e, "not moved to the new node");
                        false
                    }
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let moved = results.iter().filter(|m| **m).count();
        (moved, results.len() - moved)
    }

    /// Starts, from the journal, the actors of dead nodes' customers that
    /// placement gives to this node (failover): those whose placement
    /// record names a node not in `live` (this node's view of the members
    /// when `None`). A recovered customer who was waiting is routed again
    /// with their original waiting time. Returns how many were started here.
    pub async fn recover_orphans(
        self: &Arc<Self>,
        live: Option<&[String]>,
        parallel: usize,
    ) -> Result<usize> {
        use futures::StreamExt;
        // Customers that moved from here to a node that died since are
        // not forwarded there any more: they start where placement says
        // now (here, for the orphans below).
        let members = live.map_or_else(|| self.cluster.member_ids(), <[String]>::to_vec);
        lock(&self.moved).retain(|_, node| members.contains(node));
        let orphans = self.cluster.orphans_here(live).await?;
        let started: Vec<bool> = futures::stream::iter(orphans)
            .map(|id| async move {
                match self.local_customer(id).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(_)) => false,
                    Err(e) => {
                        tracing::warn!(customer = %id, error = %e, "recovering a dead node's customer; it will be recovered on its next message");
                        false
                    }
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let n = started.into_iter().filter(|s| *s).count();
        crate::metrics::recovered_customers(n);
        Ok(n)
    }

    /// The customer's actor here stopped after migrating to `node`: from now
    /// on the hub forwards its messages there. Does nothing if another
    /// actor runs here for the customer by now (it migrated back).
    pub(crate) fn customer_moved(&self, id: CustomerId, node: &str, actor: &ActorRef<CustomerMsg>) {
        let mut customers = lock(&self.customers);
        let current = customers
            .get(&id)
            .and_then(|c| c.get())
            .is_some_and(|a| a.get_id() == actor.get_id());
        if current {
            customers.remove(&id);
            lock(&self.moved).insert(id, node.to_owned());
        }
    }

    /// Takes over a customer handed over by another node (see
    /// `actors::customer`): ownership moves here, then its actor starts
    /// from the state it was given.
    async fn adopt(self: &Arc<Self>, start: Start) -> Result<()> {
        let Start::Adopted {
            customer,
            token: from,
            unrouted,
            announced,
        } = start
        else {
            return Err(ActorError::unavailable("adoption without a customer"));
        };
        let id = customer.id;
        // Until the adopted actor is in the map, a message for the customer
        // starts no other actor here (see `start_customer`).
        lock(&self.adopting).insert(id);
        let adopted = self.adopt_as(id, from, customer, unrouted, announced).await;
        lock(&self.adopting).remove(&id);
        adopted
    }

    async fn adopt_as(
        self: &Arc<Self>,
        id: CustomerId,
        from: u64,
        customer: Box<Customer>,
        unrouted: Option<RouterRequest>,
        announced: Option<u64>,
    ) -> Result<()> {
        let token = self.cluster.adopt_customer(id, from).await?;
        let supervisor = self.supervisor_cell()?;
        let (actor, _) = Actor::spawn_linked(
            None,
            CustomerActor,
            (
                id,
                self.clone(),
                Start::Adopted {
                    customer,
                    token,
                    unrouted,
                    announced,
                },
            ),
            supervisor,
        )
        .await
        .map_err(|e| ActorError::unavailable(format!("customer {id} ({e})")))?;
        let cell = Arc::new(OnceCell::new_with(Some(actor)));
        lock(&self.moved).remove(&id);
        lock(&self.customers).insert(id, cell);
        crate::metrics::customer_actors(lock(&self.customers).len());
        Ok(())
    }

    // -------------------------------------------------------------- router

    /// Asks the router, wherever it lives.
    pub async fn ask_router(&self, req: RouterRequest) -> Result<RouterReply> {
        if let Some(r) = self.local_router() {
            return call_result(
                "router",
                r.call(|reply| RouterMsg::Ask(req, Some(reply)), None).await,
            )?;
        }
        match self.cluster.router_home().await? {
            Home::Here => Err(ActorError::unavailable(
                "router (not started on this node yet)",
            )),
            Home::There(node) => match self.send(&node, Envelope::AskRouter(req)).await? {
                EnvelopeReply::Router(r) => self.router_answer(r),
                other => Err(ActorError::unavailable(format!(
                    "router: unexpected answer {other:?}"
                ))),
            },
        }
    }

    /// A remote router's answer; one saying the router is not there (it
    /// moved) also makes this node look for it again.
    fn router_answer<T>(&self, r: Result<T>) -> Result<T> {
        if matches!(&r, Err(ActorError::Unavailable(m)) if m.starts_with(ROUTER_NOT_HERE)) {
            self.cluster.forget_router();
        }
        r
    }

    /// Tells the router, wherever it lives, without waiting for it to act;
    /// `Err` if it could not be handed over (the caller retries, or knows
    /// that a router taking over will ask again).
    pub async fn tell_router(&self, req: RouterRequest) -> Result<()> {
        match self.local_router() {
            Some(r) => r
                .cast(RouterMsg::Ask(req, None))
                .map_err(|_| ActorError::unavailable("router mailbox")),
            None => match self.cluster.router_home().await? {
                Home::There(node) => self.send(&node, Envelope::TellRouter(req)).await.and_then(
                    |reply| match reply {
                        EnvelopeReply::Router(r) => self.router_answer(r).map(|_| ()),
                        _ => Ok(()),
                    },
                ),
                Home::Here => Err(ActorError::unavailable(
                    "router (not started on this node yet)",
                )),
            },
        }
    }

    /// A router started on `node` under `epoch`: if it is news here, tell
    /// it everything this node holds (see `actors::router`, "Taking over"):
    /// first the customers of nodes it saw die that placement gives to this
    /// node are recovered here, then every agent session logs in again and
    /// every customer re-announces its open conversation, then the node
    /// reports `Synced`. What cannot be delivered is retried until it is, or
    /// until a newer router has started.
    pub async fn router_started(
        self: &Arc<Self>,
        node: &str,
        epoch: u64,
        members: &[String],
    ) -> Result<()> {
        if !self.cluster.router_started(node, epoch, members) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let current = || self.cluster.router_epoch() == Some(epoch);
        if let Err(e) = self.recover_orphans(Some(members), RESYNC_PARALLEL).await {
            tracing::warn!(error = %e, "recovering dead nodes' customers before reporting to the new router");
        }
        let mut agents: Vec<AgentId> = lock(&self.agents).keys().cloned().collect();
        let mut customers = self.local_customers();
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            agents = self.resync_agents(agents).await;
            customers = self.resync_customers(customers, epoch).await;
            if agents.is_empty() && customers.is_empty() {
                let me = self.cluster.node_id().to_owned();
                match self
                    .tell_router(RouterRequest::Synced { node: me, epoch })
                    .await
                {
                    Ok(()) => break,
                    Err(e) => tracing::debug!(error = %e, "reporting to the new router; retrying"),
                }
            }
            if !current() {
                return Err(ActorError::unavailable(format!(
                    "router of epoch {epoch} (a newer one started)"
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
        }
        tracing::info!(router = %node, epoch, ms = started.elapsed().as_millis() as u64, "reported to the new router");
        Ok(())
    }

    /// Logs the agents' sessions here in again; returns those that could
    /// not be.
    async fn resync_agents(&self, agents: Vec<AgentId>) -> Vec<AgentId> {
        let mut failed = Vec::new();
        for id in agents {
            let Some(actor) = self.agent(&id) else {
                continue;
            };
            let r = call_result("agent", actor.call(AgentMsg::Resync, None).await);
            if let Err(e) | Ok(Err(e)) = r {
                tracing::debug!(agent = %id, error = %e, "agent not reported to the new router yet");
                failed.push(id);
            }
        }
        failed
    }

    /// Has the customers here re-announce their open conversations to the
    /// router of `epoch`; returns those that could not.
    async fn resync_customers(
        self: &Arc<Self>,
        customers: Vec<CustomerId>,
        epoch: u64,
    ) -> Vec<CustomerId> {
        use futures::StreamExt;
        futures::stream::iter(customers)
            .map(|id| async move {
                let running = lock(&self.customers).get(&id).and_then(|c| c.get().cloned());
                let actor = running.filter(|a| alive(a.get_status()))?;
                let r = call_result(
                    "customer",
                    actor
                        .call(|reply| CustomerMsg::Resync(epoch, reply), None)
                        .await,
                );
                match r {
                    Ok(Ok(())) => None,
                    // Stopped meanwhile (moved or fenced): whoever runs it
                    // now reports it.
                    Err(_) if !alive(actor.get_status()) => None,
                    Err(e) | Ok(Err(e)) => {
                        tracing::debug!(customer = %id, error = %e, "customer not reported to the new router yet");
                        Some(id)
                    }
                }
            })
            .buffer_unordered(RESYNC_PARALLEL)
            .filter_map(|failed| async move { failed })
            .collect()
            .await
    }

    // ------------------------------------------------------------- agents

    pub fn agent(&self, id: &AgentId) -> Option<ActorRef<AgentMsg>> {
        lock(&self.agents)
            .get(id)
            .filter(|a| alive(a.get_status()))
            .cloned()
    }

    /// Registers a new desktop session; returns the session it replaces.
    pub(crate) fn register_agent(
        &self,
        id: AgentId,
        actor: ActorRef<AgentMsg>,
    ) -> Option<ActorRef<AgentMsg>> {
        lock(&self.agents).insert(id, actor)
    }

    /// Forgets the session if it is still the registered one; returns
    /// whether it was.
    pub(crate) fn unregister_agent(&self, id: &AgentId, actor: &ActorRef<AgentMsg>) -> bool {
        let mut agents = lock(&self.agents);
        let current = agents.get(id).is_some_and(|a| a.get_id() == actor.get_id());
        if current {
            agents.remove(id);
        }
        current
    }

    /// Sends an event to the agent's desktop, wherever it is connected. An
    /// agent connected nowhere is not an error (there is nobody to tell).
    pub async fn to_desktop(&self, agent: &AgentId, event: DesktopEvent) -> Result<()> {
        if let Some(a) = self.agent(agent) {
            let _ = a.cast(AgentMsg::Desktop(event));
            return Ok(());
        }
        let mut home = self.cluster.agent_home(agent).await?;
        if home == Some(Home::Here) {
            // Believed here, yet not here (the session ended or moved): one
            // fresh look now, rather than a retry that would hold up the
            // lane behind it. A desktop logged out is usually not anywhere.
            self.cluster.forget_agent(agent);
            home = self.cluster.agent_home(agent).await?;
        }
        match home {
            Some(Home::There(node)) => {
                match self
                    .send(&node, Envelope::Desktop(agent.clone(), event))
                    .await?
                {
                    // It moved (its desktop logged in again elsewhere):
                    // the caller retries, with a fresh look.
                    EnvelopeReply::NotHere(e) => {
                        self.cluster.forget_agent(agent);
                        Err(e)
                    }
                    _ => Ok(()),
                }
            }
            Some(Home::Here) => {
                // Believed here, yet not here: the session ended or moved;
                // the caller retries, with a fresh look.
                self.cluster.forget_agent(agent);
                Err(ActorError::unavailable(format!(
                    "desktop of {agent} (no longer connected here)"
                )))
            }
            None => {
                tracing::debug!(%agent, "desktop not connected; event dropped");
                Ok(())
            }
        }
    }

    // ----------------------------------------------------------- gateways

    /// A gateway subscribes to replies on `channels` (all when empty).
    /// Replies that waited here for a gateway of these channels come first.
    pub async fn subscribe(
        &self,
        channels: Vec<Channel>,
        buffer: usize,
    ) -> mpsc::Receiver<Delivery> {
        if let Err(e) = self.cluster.gateway_session(&channels, true).await {
            tracing::warn!(error = %e, "gateway subscription not announced to the cluster");
        }
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let mut g = lock(&self.gateways);
        let (subs, pending) = &mut *g;
        let sub = GatewaySub { channels, tx };
        let mut keep = VecDeque::new();
        while let Some(d) = pending.pop_front() {
            if !sub.serves(d.channel) {
                keep.push_back(d);
            } else if let Err(e) = sub.tx.try_send(d) {
                keep.push_back(e.into_inner());
            }
        }
        *pending = keep;
        subs.push(sub);
        rx
    }

    /// Hands a reply to a gateway serving its channel: here if one is
    /// connected here, else on another node; kept here until one appears.
    pub async fn deliver(&self, d: Delivery) {
        let Some(d) = self.deliver_here(d) else {
            return;
        };
        if let Ok(nodes) = self.cluster.gateway_nodes(d.channel).await {
            for node in nodes {
                if self.send(&node, Envelope::Deliver(d.clone())).await.is_ok() {
                    return;
                }
            }
        }
        self.keep_pending(d);
    }

    /// Delivers to a local gateway; gives the delivery back if none took it.
    fn deliver_here(&self, d: Delivery) -> Option<Delivery> {
        let mut g = lock(&self.gateways);
        let (subs, _) = &mut *g;
        let closed: Vec<Vec<Channel>> = subs
            .iter()
            .filter(|s| s.tx.is_closed())
            .map(|s| s.channels.clone())
            .collect();
        if !closed.is_empty() {
            subs.retain(|s| !s.tx.is_closed());
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                for channels in closed {
                    let _ = cluster.gateway_session(&channels, false).await;
                }
            });
        }
        let mut d = d;
        let channel = d.channel;
        for s in subs.iter().filter(|s| s.serves(channel)) {
            match s.tx.try_send(d) {
                Ok(()) => return None,
                Err(e) => d = e.into_inner(),
            }
        }
        Some(d)
    }

    fn keep_pending(&self, d: Delivery) {
        let mut g = lock(&self.gateways);
        let pending = &mut g.1;
        if pending.len() >= MAX_PENDING_DELIVERIES
            && let Some(dropped) = pending.pop_front()
        {
            tracing::error!(conversation = %dropped.conversation, "no gateway for too long: reply dropped from the delivery buffer (it stays in the history)");
        }
        pending.push_back(d);
    }

    // ------------------------------------------------------------- network

    /// Carries an envelope to another node's hub.
    pub async fn send(&self, node: &str, envelope: Envelope) -> Result<EnvelopeReply> {
        self.cluster.send(node, envelope).await
    }

    /// Serves an envelope another node sent here.
    pub async fn handle(self: &Arc<Self>, envelope: Envelope) -> EnvelopeReply {
        match envelope {
            Envelope::AskCustomer(id, req) => {
                EnvelopeReply::Customer(self.ask_local_customer(id, req).await)
            }
            Envelope::TellCustomer(id, mut decisions) => {
                if let Err(e) = self.tell_local_customer_as(id, &mut decisions, false).await {
                    tracing::warn!(customer = %id, error = %e, "routing decision not delivered");
                }
                EnvelopeReply::Done
            }
            Envelope::AskRouter(req) => match self.local_router() {
                Some(r) => EnvelopeReply::Router(
                    call_result(
                        "router",
                        r.call(|reply| RouterMsg::Ask(req, Some(reply)), None).await,
                    )
                    .and_then(|r| r),
                ),
                None => EnvelopeReply::Router(Err(ActorError::unavailable(ROUTER_NOT_HERE))),
            },
            Envelope::TellRouter(req) => match self.local_router() {
                Some(r) => {
                    if let RouterRequest::Route(route) | RouterRequest::Restore { route, .. } = &req
                        && let Some(home) = &route.home
                    {
                        // Where the customer lives, for the decisions to come.
                        self.cluster.customer_at(route.conversation.customer, home);
                    }
                    let _ = r.cast(RouterMsg::Ask(req, None));
                    EnvelopeReply::Done
                }
                // Not (or no longer) here: the sender must know, to retry
                // where the router is now.
                None => EnvelopeReply::Router(Err(ActorError::unavailable(ROUTER_NOT_HERE))),
            },
            Envelope::Desktop(agent, event) => match self.agent(&agent) {
                Some(a) => {
                    if let DesktopEvent::Offer(o) = &event
                        && let Some(home) = &o.home
                    {
                        // The agent's accept goes to the customer next.
                        self.cluster.customer_at(o.conversation.customer, home);
                    }
                    let _ = a.cast(AgentMsg::Desktop(event));
                    EnvelopeReply::Done
                }
                None => EnvelopeReply::NotHere(ActorError::unavailable(format!(
                    "desktop of {agent} (not connected to this node)"
                ))),
            },
            Envelope::Deliver(d) => {
                if let Some(d) = self.deliver_here(d) {
                    self.keep_pending(d);
                }
                EnvelopeReply::Done
            }
            Envelope::Adopt {
                customer,
                token,
                unrouted,
                announced,
            } => {
                let start = Start::Adopted {
                    customer,
                    token,
                    unrouted,
                    announced,
                };
                EnvelopeReply::Migrated(self.adopt(start).await.map(|()| 0))
            }
            Envelope::Handoff(inner) => match *inner {
                Envelope::AskCustomer(id, req) => {
                    EnvelopeReply::Customer(self.ask_local_customer_as(id, req, true).await)
                }
                Envelope::TellCustomer(id, mut decisions) => {
                    if let Err(e) = self.tell_local_customer_as(id, &mut decisions, true).await {
                        tracing::warn!(customer = %id, error = %e, "handed-over routing decision not delivered");
                    }
                    EnvelopeReply::Done
                }
                other => Box::pin(self.handle(other)).await,
            },
            Envelope::HandoffDone(id) => {
                let running = lock(&self.customers)
                    .get(&id)
                    .and_then(|c| c.get().cloned());
                if let Some(actor) = running {
                    let _ = actor.cast(CustomerMsg::HandoffDone);
                }
                EnvelopeReply::Done
            }
            Envelope::Migrate { customer, to } => EnvelopeReply::Migrated(
                self.migrate_customer(customer, &to)
                    .await
                    .map(|d| d.as_micros() as u64),
            ),
            Envelope::RouterStarted {
                node,
                epoch,
                members,
            } => {
                // Answered at once: the report goes to the router itself.
                let hub = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = hub.router_started(&node, epoch, &members).await {
                        tracing::info!(error = %e, "report to a router abandoned");
                    }
                });
                EnvelopeReply::Done
            }
            Envelope::RouterVacated { node } => {
                self.cluster.router_vacated(&node);
                EnvelopeReply::Done
            }
            Envelope::Ping => EnvelopeReply::Done,
        }
    }
}

/// Why a customer's actor was not started here.
enum Elsewhere {
    Owner(String),
    Failed(ActorError),
}

impl From<ActorError> for Elsewhere {
    fn from(e: ActorError) -> Self {
        Elsewhere::Failed(e)
    }
}

/// Delivers what is posted to one lane, in order; a message that cannot be
/// delivered is retried with backoff for up to [`LANE_RETRY_FOR`]. The
/// decisions for one customer queued one after the other (a router step's
/// `Queued` and `Offered`) go together, in one envelope.
async fn run_lane(hub: std::sync::Weak<Hub>, mut rx: mpsc::UnboundedReceiver<Told>) {
    let mut next: Option<Told> = None;
    loop {
        let first = match next.take() {
            Some(t) => t,
            None => match rx.recv().await {
                Some(t) => t,
                None => return,
            },
        };
        let mut told = match first {
            Told::Customer(id, o) => {
                let mut decisions = vec![o];
                while decisions.len() < LANE_BUNDLE {
                    match rx.try_recv() {
                        Ok(Told::Customer(same, o)) if same == id => decisions.push(o),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                Bundle::Customer(id, decisions)
            }
            Told::Desktop(agent, e) => Bundle::Desktop(agent, e),
        };
        let started = std::time::Instant::now();
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            let Some(hub) = hub.upgrade() else { return };
            // A retry sends only the decisions not handed over yet.
            let r = match &mut told {
                Bundle::Customer(id, decisions) => hub.tell_customer(*id, decisions).await,
                Bundle::Desktop(agent, e) => hub.to_desktop(agent, e.clone()).await,
            };
            drop(hub);
            let Err(e) = r else { break };
            if started.elapsed() > LANE_RETRY_FOR {
                tracing::error!(error = %e, "giving up delivering a routing decision after {LANE_RETRY_FOR:?}");
                break;
            }
            tracing::debug!(error = %e, "delivery failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    }
}

/// What a lane delivers at once.
enum Bundle {
    Customer(CustomerId, Vec<Output>),
    Desktop(AgentId, DesktopEvent),
}

fn home_of(node: &str, me: &str) -> Home {
    if node == me {
        Home::Here
    } else {
        Home::There(node.to_owned())
    }
}

/// A message as the previous owner hands it over, or as sent directly.
fn wrap(handoff: bool, msg: CustomerMsg) -> CustomerMsg {
    if handoff {
        CustomerMsg::Handoff(Box::new(msg))
    } else {
        msg
    }
}

fn alive(s: ActorStatus) -> bool {
    !matches!(s, ActorStatus::Stopping | ActorStatus::Stopped)
}
