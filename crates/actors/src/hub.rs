//! The hub: how actors and services on a node find each other.
//!
//! It maps customer ids to customer actors (spawning one, recovered from the
//! journal, on first use), agent ids to agent session actors, and channels
//! to the gateway streams that deliver replies. It is the seam where the
//! cluster layer will make lookups location-transparent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use centralino_core::directory::{Directory, Resolution};
use centralino_core::explain::Explanation;
use centralino_core::history::HistoryEvent;
use centralino_core::customer::Attributes;
use centralino_core::{AgentId, AgentState, Channel, ConversationId, CustomerId, Identity, OfferId, QueueId, TimeMs};
use ractor::{Actor, ActorCell, ActorRef, ActorStatus};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::agent::AgentMsg;
use crate::customer::{CustomerActor, CustomerMsg};
use crate::error::{ActorError, Result};
use crate::journal::Journal;
use crate::router::RouterMsg;

/// A reply on its way to a customer, through a channel gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub conversation: ConversationId,
    pub channel: Channel,
    pub to: Identity,
    pub agent: AgentId,
    pub text: String,
    pub seq: u64,
}

/// What an agent desktop is sent.
#[derive(Clone, Debug, PartialEq)]
pub enum DesktopEvent {
    Offer(Box<OfferDelivery>),
    OfferRevoked { offer: OfferId, reason: String },
    CustomerMessage { conversation: ConversationId, event: HistoryEvent },
    StateChanged { state: AgentState, load: u16 },
}

/// An offer with everything the agent needs to take it.
#[derive(Clone, Debug, PartialEq)]
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
}

/// Replies waiting for a gateway of their channel; beyond this many the
/// oldest are dropped with an error log (they remain in the history).
pub const MAX_PENDING_DELIVERIES: usize = 100_000;

struct GatewaySub {
    channels: Vec<Channel>,
    tx: mpsc::Sender<Delivery>,
}

/// Per-node registry of actors and gateway streams. See the module docs.
pub struct Hub {
    journal: Arc<dyn Journal>,
    directory: Mutex<Directory>,
    customers: tokio::sync::Mutex<FxHashMap<CustomerId, ActorRef<CustomerMsg>>>,
    agents: Mutex<FxHashMap<AgentId, ActorRef<AgentMsg>>>,
    gateways: Mutex<(Vec<GatewaySub>, VecDeque<Delivery>)>,
    router: OnceLock<ActorRef<RouterMsg>>,
    supervisor: OnceLock<ActorCell>,
    /// Fencing token this node writes with (the in-memory coordination
    /// has exactly one owner).
    token: u64,
}

impl Hub {
    pub fn new(journal: Arc<dyn Journal>, token: u64) -> Arc<Self> {
        Arc::new(Hub {
            journal,
            directory: Mutex::new(Directory::default()),
            customers: Default::default(),
            agents: Default::default(),
            gateways: Default::default(),
            router: OnceLock::new(),
            supervisor: OnceLock::new(),
            token,
        })
    }

    pub(crate) fn set_router(&self, router: ActorRef<RouterMsg>) {
        let _ = self.router.set(router);
    }

    pub(crate) fn set_supervisor(&self, supervisor: ActorCell) {
        let _ = self.supervisor.set(supervisor);
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn supervisor_cell(&self) -> Result<ActorCell> {
        self.supervisor.get().cloned().ok_or_else(|| ActorError::unavailable("supervisor"))
    }

    pub fn router(&self) -> Result<&ActorRef<RouterMsg>> {
        self.router.get().ok_or_else(|| ActorError::unavailable("router"))
    }

    /// Resolves a contact's identity (linking the others) to a customer.
    pub fn resolve(&self, identity: &Identity, also: &[Identity]) -> Resolution {
        lock(&self.directory).resolve(identity, also)
    }

    /// Whether the customer exists (so that made-up ids spawn no actor).
    pub fn known_customer(&self, id: CustomerId) -> bool {
        lock(&self.directory).issued(id)
    }

    pub fn lookup(&self, identity: &Identity) -> Option<CustomerId> {
        lock(&self.directory).lookup(identity)
    }

    /// The customer's actor, spawned (and recovered) if it is not running.
    pub async fn customer(self: &Arc<Self>, id: CustomerId) -> Result<ActorRef<CustomerMsg>> {
        let mut customers = self.customers.lock().await;
        if let Some(a) = customers.get(&id).filter(|a| alive(a.get_status())) {
            return Ok(a.clone());
        }
        let supervisor = self.supervisor_cell()?;
        let (actor, _) = Actor::spawn_linked(None, CustomerActor, (id, self.clone()), supervisor)
            .await
            .map_err(|e| ActorError::unavailable(format!("customer {id} ({e})")))?;
        customers.insert(id, actor.clone());
        crate::metrics::customer_actors(customers.len());
        Ok(actor)
    }

    /// Number of customer actors on this node.
    pub async fn customer_count(&self) -> usize {
        self.customers.lock().await.len()
    }

    pub fn agent(&self, id: &AgentId) -> Option<ActorRef<AgentMsg>> {
        lock(&self.agents).get(id).filter(|a| alive(a.get_status())).cloned()
    }

    /// Registers a new desktop session; returns the session it replaces.
    pub(crate) fn register_agent(&self, id: AgentId, actor: ActorRef<AgentMsg>) -> Option<ActorRef<AgentMsg>> {
        lock(&self.agents).insert(id, actor)
    }

    /// Forgets the session if it is still the registered one.
    pub(crate) fn unregister_agent(&self, id: &AgentId, actor: &ActorRef<AgentMsg>) {
        let mut agents = lock(&self.agents);
        if agents.get(id).is_some_and(|a| a.get_id() == actor.get_id()) {
            agents.remove(id);
        }
    }

    /// Sends an event to the agent's desktop, if it is connected.
    pub fn to_desktop(&self, agent: &AgentId, event: DesktopEvent) {
        if let Some(a) = self.agent(agent) {
            let _ = a.cast(AgentMsg::Desktop(event));
        }
    }

    /// A gateway subscribes to replies on `channels` (all when empty).
    /// Replies that waited for a gateway of these channels come first.
    pub fn subscribe(&self, channels: Vec<Channel>, buffer: usize) -> mpsc::Receiver<Delivery> {
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

    /// Hands a reply to a gateway serving its channel, or keeps it until
    /// one subscribes.
    pub fn deliver(&self, d: Delivery) {
        let mut g = lock(&self.gateways);
        let (subs, pending) = &mut *g;
        subs.retain(|s| !s.tx.is_closed());
        let mut d = d;
        let channel = d.channel;
        for s in subs.iter().filter(|s| s.serves(channel)) {
            match s.tx.try_send(d) {
                Ok(()) => return,
                Err(e) => d = e.into_inner(),
            }
        }
        if pending.len() >= MAX_PENDING_DELIVERIES {
            if let Some(dropped) = pending.pop_front() {
                tracing::error!(conversation = %dropped.conversation, "no gateway for too long: reply dropped from the delivery buffer (it stays in the history)");
            }
        }
        pending.push_back(d);
    }
}

impl GatewaySub {
    fn serves(&self, c: Channel) -> bool {
        self.channels.is_empty() || self.channels.contains(&c)
    }
}

fn alive(s: ActorStatus) -> bool {
    !matches!(s, ActorStatus::Stopping | ActorStatus::Stopped)
}

/// A poisoned lock only means another thread panicked while holding it; the
/// maps it guards stay consistent (every update is a single insert/remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
