//! The router's internal state and the indexes that keep decisions cheap.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::agent::{AgentProfile, AgentState};
use crate::channel::{Channel, MIN_COST};
use crate::ids::{AgentId, ConversationId, OfferId};
use crate::occupancy::{Busy, OccupancyCap};
use crate::priority::{PriorityBreakdown, PriorityInputs, PriorityPolicy, Rank};
use crate::queue::{QueueConfig, Strategy};
use crate::time::{DurationMs, TimeMs};

pub(super) type AgentIx = u32;
pub(super) type QueueIx = u16;

/// Tunables of routing behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// How long an agent has to accept an offer before it moves on and the
    /// agent is set away (redirect on no answer).
    pub offer_timeout_ms: DurationMs,
    /// For how long after the last contact the customer's last agent is
    /// tried first.
    pub continuity_window_ms: DurationMs,
    /// For how long an agent who declined a conversation is not offered it
    /// again.
    pub decline_ttl_ms: DurationMs,
    /// After-contact work per channel, indexed by [`Channel::index`].
    pub acw_ms: [DurationMs; Channel::COUNT],
    pub priority: PriorityPolicy,
    /// How long an agent whose desktop vanished (its node died, or a new
    /// router learned of its assignments before it logged in again) keeps
    /// its conversations before they are queued again.
    pub reconnect_grace_ms: DurationMs,
    /// Agents busier than this over its window are offered nothing new
    /// (see [`crate::occupancy`]); `None`: no cap.
    #[serde(default)]
    pub occupancy_cap: Option<OccupancyCap>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        let mut acw_ms = [0; Channel::COUNT];
        acw_ms[Channel::Voice.index()] = 5_000;
        RouterConfig {
            offer_timeout_ms: 15_000,
            continuity_window_ms: 24 * 3_600_000,
            decline_ttl_ms: 30_000,
            acw_ms,
            priority: PriorityPolicy::default(),
            reconnect_grace_ms: 30_000,
            occupancy_cap: None,
        }
    }
}

/// Where a conversation the router holds stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for its scheduled time (a callback).
    Scheduled,
    /// In a queue's waiting set.
    Waiting,
    Offered {
        offer: OfferId,
        expires_at: TimeMs,
    },
    Assigned {
        since: TimeMs,
    },
    /// After-contact work until the given time.
    WrapUp {
        until: TimeMs,
    },
}

/// A conversation the router holds.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub queue: QueueIx,
    pub channel: Channel,
    pub rank: Rank,
    pub breakdown: PriorityBreakdown,
    pub inputs: PriorityInputs,
    pub enqueued_at: TimeMs,
    /// Bullseye step reached.
    pub step: u8,
    /// Set for conversations transferred to a named agent.
    pub target: Option<AgentIx>,
    pub last_agent: Option<(AgentIx, TimeMs)>,
    /// Agents who declined, and until when that holds.
    pub declined: Vec<(AgentIx, TimeMs)>,
    /// Answered once already (a transfer or requeue is not a new answer
    /// for the KPIs, nor its abandon an abandon).
    pub answered: bool,
    pub phase: Phase,
    /// The agent holding an offer, assignment or wrap-up.
    pub agent: Option<AgentIx>,
}

/// Where a waiting conversation sits: enough to take it out of its set.
#[derive(Clone, Copy, Debug)]
pub(super) struct WaitSlot {
    pub target: Option<AgentIx>,
    pub queue: QueueIx,
    pub step: u8,
    pub channel: Channel,
    pub rank: Rank,
}

impl Entry {
    pub fn slot(&self) -> WaitSlot {
        WaitSlot {
            target: self.target,
            queue: self.queue,
            step: self.step,
            channel: self.channel,
            rank: self.rank,
        }
    }

    pub fn declined_by(&self, ax: AgentIx) -> bool {
        self.declined.iter().any(|(a, _)| *a == ax)
    }
}

/// An agent as the router sees it.
#[derive(Clone, Debug)]
pub(super) struct AgentSlot {
    pub id: AgentId,
    pub profile: AgentProfile,
    pub logged_in: bool,
    /// Where its desktop is connected (a node id), as its login said.
    pub session: Option<String>,
    /// Absent until then: logged in, but its desktop is gone; it takes no
    /// work, and its conversations wait for it to log in again until then
    /// (see `recovery`).
    pub absent_until: Option<TimeMs>,
    pub away: bool,
    pub load: u16,
    /// When its load last dropped to zero (or it logged in).
    pub idle_since: TimeMs,
    /// Round-robin counter value of its last offer.
    pub last_offer: u64,
    /// Queues it qualifies for: (queue, level, proficiency score).
    pub queues: Vec<(QueueIx, u8, u32)>,
    /// Conversations transferred to it by name, waiting.
    pub personal: BTreeMap<Rank, ConversationId>,
    /// Conversations offered to, assigned to or wrapping up with it.
    pub holding: Vec<ConversationId>,
    /// Whether it is in its queues' idle indexes.
    pub indexed: bool,
    /// The state last reported, to report only changes.
    pub reported: AgentState,
    /// When its load was above zero, for the occupancy cap and the KPIs.
    pub busy: Busy,
    /// Over the occupancy cap: takes no new work.
    pub capped: bool,
    /// When the cap is next checked (its pending `Timer::Occupancy`).
    pub cap_check: Option<TimeMs>,
    /// Logged-in time before the current session, and when that began.
    pub staffed_ms: u64,
    pub staffed_since: Option<TimeMs>,
}

impl AgentSlot {
    /// An agent the router has not seen before, logged out.
    pub fn new(profile: AgentProfile, now: TimeMs, away: bool, cfg: &RouterConfig) -> Self {
        AgentSlot {
            id: profile.id.clone(),
            profile,
            logged_in: false,
            session: None,
            absent_until: None,
            away,
            load: 0,
            idle_since: now,
            last_offer: 0,
            queues: Vec::new(),
            personal: BTreeMap::new(),
            holding: Vec::new(),
            indexed: false,
            reported: AgentState::Offline,
            busy: Busy::new(cfg.occupancy_cap.map_or(0, |c| c.window_ms)),
            capped: false,
            cap_check: None,
            staffed_ms: 0,
            staffed_since: None,
        }
    }

    /// Logged-in time up to `now`.
    pub fn staffed_ms(&self, now: TimeMs) -> u64 {
        self.staffed_ms + self.staffed_since.map_or(0, |s| now.saturating_sub(s))
    }

    pub fn free(&self) -> u16 {
        self.profile.capacity.saturating_sub(self.load)
    }

    /// Logged in and present, ready and with room for at least the
    /// cheapest channel.
    pub fn routable(&self) -> bool {
        self.ready() && self.free() >= MIN_COST
    }

    pub fn fits(&self, channel: Channel) -> bool {
        self.ready() && self.free() >= channel.cost()
    }

    fn ready(&self) -> bool {
        self.logged_in && self.absent_until.is_none() && !self.away && !self.capped
    }

    /// The strategy's key: smaller is offered first; the agent index breaks ties.
    pub fn key(&self, strategy: Strategy, proficiency: u32, ax: AgentIx) -> AgentKey {
        let (a, b) = match strategy {
            Strategy::LongestIdle => (self.idle_since, 0),
            Strategy::MostProficient => (u64::from(u32::MAX - proficiency), self.idle_since),
            Strategy::LeastOccupied => (u64::from(self.load), self.idle_since),
            Strategy::RoundRobin => (self.last_offer, 0),
        };
        (a, b, ax)
    }

    pub fn state(&self, wrapping_up_only: bool) -> AgentState {
        if !self.logged_in || self.absent_until.is_some() {
            AgentState::Offline
        } else if self.away {
            AgentState::Away
        } else if self.load > 0 && wrapping_up_only {
            AgentState::WrapUp
        } else if self.capped {
            AgentState::Resting
        } else if self.free() >= MIN_COST {
            AgentState::Available
        } else {
            AgentState::Busy
        }
    }
}

pub(super) type AgentKey = (u64, u64, AgentIx);

/// One queue's configuration and indexes.
#[derive(Clone, Debug)]
pub(super) struct QueueState {
    pub cfg: QueueConfig,
    /// Waiting conversations by bullseye step, then channel, in rank order.
    pub waiting: Vec<[BTreeMap<Rank, ConversationId>; Channel::COUNT]>,
    /// Routable agents that qualify at some step, in strategy order.
    pub idle: BTreeSet<AgentKey>,
}

impl QueueState {
    pub fn new(cfg: QueueConfig) -> Self {
        let steps = cfg.max_step() as usize + 1;
        QueueState {
            cfg,
            waiting: (0..steps).map(|_| Default::default()).collect(),
            idle: BTreeSet::new(),
        }
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting
            .iter()
            .flat_map(|s| s.iter())
            .map(BTreeMap::len)
            .sum()
    }
}

/// A timer; the order of variants is the firing order among equal times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A router started held (see `recovery`) resumes matching.
    HoldEnds,
    AcwEnd(ConversationId),
    Scheduled(ConversationId),
    Bullseye(ConversationId, u8),
    DeclineExpiry(ConversationId, AgentIx),
    OfferExpiry(OfferId),
    /// An absent agent's grace ends.
    Absent(AgentIx),
    /// An agent's occupancy may have crossed the cap.
    Occupancy(AgentIx),
}
