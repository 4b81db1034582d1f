//! The router: pairs waiting conversations with agents.
//!
//! One `Router` owns, for a set of queues and agents, everything that
//! decides a pairing: which conversations wait where and in what order,
//! which agents are routable and how loaded, which offers are open. It is a
//! deterministic state machine: [`Router::step`] takes an [`Input`] and the
//! current time and appends [`Output`]s; [`Router::tick`] fires the timers
//! (offer expiry, bullseye steps, after-contact work, scheduled callbacks)
//! that are due. It reads no clock and does no I/O.
//!
//! The router keeps these invariants after every step (the property tests
//! in `tests/router_props.rs` check them over random event sequences):
//!
//! 1. An agent's load (offered + assigned + wrapping up, weighted by channel)
//!    never exceeds its capacity; capacity is reserved when an offer is made.
//! 2. A conversation has at most one open offer or assignment.
//! 5. No routable agent with room for a waiting conversation it is eligible
//!    for is left idle: every change that frees capacity or adds waiting work
//!    is followed by matching.
//! 6. A freed agent takes the highest-priority eligible conversation across
//!    all of its queues (earliest virtual deadline, then FIFO); see
//!    [`crate::priority`] for why that order is stable while customers wait.
//!
//! "Eligible" means: the agent qualifies for the conversation's queue at the
//! conversation's bullseye step, has free capacity for its channel, and has
//! not declined it within the last `decline_ttl_ms`; a conversation
//! transferred to a named agent is eligible only for that agent.

mod estimate;
mod matching;
mod recovery;
mod state;
mod timers;
mod view;

use rustc_hash::{FxHashMap, FxHashSet};

pub use recovery::Restore;
pub use state::{Phase, RouterConfig};
pub use view::{AgentView, ConversationView, QueueView};

use crate::agent::AgentProfile;
use crate::channel::Channel;
use crate::error::{CoreError, Result};
use crate::explain::Explanation;
use crate::history::TransferTarget;
use crate::ids::{AgentId, ConversationId, OfferId, QueueId};
use crate::kpi::Kpis;
use crate::priority::PriorityInputs;
use crate::queue::QueueConfig;
use crate::rules::{Facts, RoutingRule};
use crate::time::TimeMs;

use state::{AgentIx, AgentSlot, Entry, QueueIx, QueueState, Timer};

/// What the router is told.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// Define or redefine a queue.
    UpsertQueue(QueueConfig),
    /// An agent logs in (or logs in again after a reconnect). `session`
    /// says where its desktop is connected (a node id), so that the router
    /// knows whose desktops a dead node took with it.
    Login {
        profile: AgentProfile,
        away: bool,
        #[serde(default)]
        session: Option<String>,
    },
    Logout {
        agent: AgentId,
    },
    /// Available (`away = false`) or away.
    SetAway {
        agent: AgentId,
        away: bool,
    },
    /// A conversation needs an agent.
    Enqueue(Enqueue),
    /// A conversation the router may already hold is routed again, keeping
    /// its place: it changed channel, or a callback replaces its waiting.
    Reroute(Enqueue),
    /// The conversation no longer needs routing: the customer abandoned, or
    /// it was resolved without an agent.
    Withdraw {
        conversation: ConversationId,
        abandoned: bool,
    },
    Accept {
        agent: AgentId,
        offer: OfferId,
    },
    Reject {
        agent: AgentId,
        offer: OfferId,
        reason: String,
    },
    Transfer {
        agent: AgentId,
        conversation: ConversationId,
        to: TransferTarget,
    },
    /// The agent ended the interaction; after-contact work follows.
    WrapUp {
        agent: AgentId,
        conversation: ConversationId,
    },
    /// An assignment made before this router started (see `recovery`):
    /// the agent holds the conversation and its capacity is in use.
    Restore(Restore),
    /// The desktops connected through `session` (a node) are gone with it:
    /// their agents become absent (see `recovery`).
    SessionsLost {
        session: String,
    },
    /// A router started held may offer again (see [`Router::hold`]).
    Resume,
    /// Replaces the routing rules (see [`crate::rules`]); every queue they
    /// name must be defined.
    SetRules(Vec<RoutingRule>),
}

/// Where a contact goes, and which rule decided it (see [`Router::classify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub queue: QueueId,
    pub rule: Option<String>,
    pub boost_ms: crate::time::DurationMs,
}

/// A conversation entering routing.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Enqueue {
    pub conversation: ConversationId,
    pub queue: QueueId,
    pub channel: Channel,
    /// When the customer started waiting; earlier than now when a
    /// conversation keeps its place (callbacks, re-queues).
    pub enqueued_at: TimeMs,
    pub priority: PriorityInputs,
    /// The customer's last agent, for continuity.
    pub last_agent: Option<(AgentId, TimeMs)>,
    /// Offer no earlier than this (scheduled callbacks).
    pub not_before: Option<TimeMs>,
}

/// Why an offer was withdrawn from an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RevokeReason {
    TimedOut,
    Withdrawn,
    AgentLoggedOut,
    /// The agent's desktop went away with its node.
    AgentDisconnected,
}

/// What the router decided.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Output {
    Queued {
        conversation: ConversationId,
        queue: QueueId,
        channel: Channel,
    },
    Offered {
        offer: OfferId,
        conversation: ConversationId,
        agent: AgentId,
        channel: Channel,
        queue: QueueId,
        expires_at: TimeMs,
        explanation: Box<Explanation>,
    },
    OfferRevoked {
        offer: OfferId,
        conversation: ConversationId,
        agent: AgentId,
        reason: RevokeReason,
    },
    Rejected {
        offer: OfferId,
        conversation: ConversationId,
        agent: AgentId,
        reason: String,
    },
    Assigned {
        offer: OfferId,
        conversation: ConversationId,
        agent: AgentId,
        waited_ms: u64,
    },
    Transferred {
        conversation: ConversationId,
        from: AgentId,
        to: TransferTarget,
    },
    /// An assignment ended because its agent left; the conversation waits again.
    Requeued {
        conversation: ConversationId,
        from: AgentId,
    },
    AgentStateChanged {
        agent: AgentId,
        state: crate::agent::AgentState,
        load: u16,
    },
}

/// The routing state machine. See the module docs.
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    queues: Vec<QueueState>,
    queue_ix: FxHashMap<QueueId, QueueIx>,
    agents: Vec<AgentSlot>,
    agent_ix: FxHashMap<AgentId, AgentIx>,
    entries: FxHashMap<ConversationId, Entry>,
    /// Conversations that may carry declines (a superset: entries leave it
    /// when their declines expire, are cleared or the entry goes).
    declining: FxHashSet<ConversationId>,
    offers: FxHashMap<OfferId, ConversationId>,
    timers: std::collections::BTreeSet<(TimeMs, Timer)>,
    /// Offer expiries in the order offers were made (see `timers`).
    offer_expiries: std::collections::VecDeque<(TimeMs, OfferId)>,
    next_offer: u64,
    next_seq: u64,
    kpis: Kpis,
    /// Held (no offers) until then: see [`Router::hold`].
    held_until: Option<TimeMs>,
    /// Each queue's latest answers, for estimated waits (`crate::wait`).
    answers: FxHashMap<QueueIx, crate::wait::AnswerLog>,
    rules: Vec<RoutingRule>,
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Self {
        Router {
            cfg,
            queues: Vec::new(),
            queue_ix: FxHashMap::default(),
            agents: Vec::new(),
            agent_ix: FxHashMap::default(),
            entries: FxHashMap::default(),
            declining: FxHashSet::default(),
            offers: FxHashMap::default(),
            timers: Default::default(),
            offer_expiries: Default::default(),
            next_offer: 1,
            next_seq: 1,
            kpis: Kpis::default(),
            held_until: None,
            answers: FxHashMap::default(),
            rules: Vec::new(),
        }
    }

    /// A router of the given epoch (the fencing token under which it was
    /// claimed): its offer ids are `epoch << 32 | n`, so a router that takes
    /// over from another never reuses an offer id that a desktop or a
    /// history may still hold.
    pub fn of_epoch(cfg: RouterConfig, epoch: u64) -> Self {
        let mut r = Router::new(cfg);
        r.next_offer = ((epoch & u64::from(u32::MAX)) << 32) | 1;
        r
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Applies one input at time `now`, appending decisions to `out`. On
    /// error nothing changed.
    pub fn step(&mut self, now: TimeMs, input: Input, out: &mut Vec<Output>) -> Result<()> {
        self.tick(now, out);
        match input {
            Input::UpsertQueue(q) => self.upsert_queue(now, q, out),
            Input::Login {
                profile,
                away,
                session,
            } => self.login(now, profile, away, session, out),
            Input::Logout { agent } => self.logout(now, &agent, out),
            Input::SetAway { agent, away } => self.set_away(now, &agent, away, out),
            Input::Enqueue(e) => self.enqueue(now, e, out),
            Input::Reroute(e) => self.reroute(now, e, out),
            Input::Withdraw {
                conversation,
                abandoned,
            } => self.withdraw(now, conversation, abandoned, out),
            Input::Accept { agent, offer } => self.accept(now, &agent, offer, out),
            Input::Reject {
                agent,
                offer,
                reason,
            } => self.reject(now, &agent, offer, reason, out),
            Input::Transfer {
                agent,
                conversation,
                to,
            } => self.transfer(now, &agent, conversation, to, out),
            Input::WrapUp {
                agent,
                conversation,
            } => self.wrap_up(now, &agent, conversation, out),
            Input::Restore(r) => self.restore(now, r, out),
            Input::SessionsLost { session } => {
                self.sessions_lost(now, &session, out);
                Ok(())
            }
            Input::Resume => {
                self.resume(now, out);
                Ok(())
            }
            Input::SetRules(rules) => {
                crate::rules::validate(&rules, |q| self.queue_ix.contains_key(q))?;
                self.rules = rules;
                Ok(())
            }
        }
    }

    /// Whether the queue is defined.
    pub fn has_queue(&self, queue: &QueueId) -> bool {
        self.queue_ix.contains_key(queue)
    }

    /// The queue a topic routes to: the first queue listing it, else the
    /// default queue (the first one defined).
    pub fn queue_for_topic(&self, topic: &str) -> Option<QueueId> {
        self.queues
            .iter()
            .find(|q| q.cfg.topics.iter().any(|t| t.eq_ignore_ascii_case(topic)))
            .or_else(|| self.queues.first())
            .map(|q| q.cfg.id.clone())
    }

    /// The routing rules, in the order they are tried.
    pub fn rules(&self) -> &[RoutingRule] {
        &self.rules
    }

    /// Where a contact goes: the first matching rule's queue (else the
    /// topic's, see [`Router::queue_for_topic`]) and that rule's boost.
    /// `None` when no queue is defined.
    pub fn classify(&self, facts: &Facts<'_>) -> Option<Classification> {
        let rule = crate::rules::first_match(&self.rules, facts);
        let queue = rule
            .and_then(|r| r.queue.clone())
            .filter(|q| self.has_queue(q))
            .or_else(|| self.queue_for_topic(facts.topic))?;
        Some(Classification {
            queue,
            rule: rule.map(|r| r.name.clone()),
            boost_ms: rule.map_or(0, |r| r.priority_boost_ms),
        })
    }

    /// Records a resolution for the KPIs; `first_contact`: one agent took
    /// the conversation and resolved it, with no transfer (see
    /// [`crate::customer::Conversation::resolved_at_first_contact`]).
    pub fn note_resolved(
        &mut self,
        queue: &QueueId,
        channel: Channel,
        agent: Option<&AgentId>,
        first_contact: bool,
    ) {
        let Some(&qx) = self.queue_ix.get(queue) else {
            return;
        };
        let ax = agent.and_then(|a| self.agent_ix.get(a)).copied();
        self.kpis.each(qx, channel, ax, |c| {
            c.resolved += 1;
            c.resolved_first_contact += u64::from(first_contact);
        });
    }

    /// The earliest pending timer, so a driver knows when to call `tick`.
    pub fn next_timer(&self) -> Option<TimeMs> {
        let set = self.timers.first().map(|(t, _)| *t);
        let fifo = self.offer_expiries.front().map(|(t, _)| *t);
        set.into_iter().chain(fifo).min()
    }

    fn agent(&self, id: &AgentId) -> Result<AgentIx> {
        match self.agent_ix.get(id) {
            Some(&ax) if self.agents[ax as usize].logged_in => Ok(ax),
            _ => Err(CoreError::AgentNotLoggedIn(id.clone())),
        }
    }

    fn entry(&self, conversation: ConversationId) -> Result<&Entry> {
        self.entries
            .get(&conversation)
            .ok_or(CoreError::UnknownConversation(conversation))
    }
}
