//! Property tests: the router's invariants over random event sequences.
//!
//! A sequence mixes logins (random skills and capacities), logouts, away
//! toggles, arrivals on random queues, channels, tiers and sentiments
//! (some keeping an earlier place, some for a returning customer, some
//! scheduled), accepts, rejects, wrap-ups, transfers to queues and agents,
//! withdrawals, desktops lost with their node (the agent is absent until it
//! logs in again or its grace ends), and time moving on. Time moves one
//! timer at a time, so each batch of decisions is checked on its own.
//!
//! After every call into the router the test checks, from the public views
//! and its own model of what it sent and what came out:
//!
//! - invariant 1: every agent's load is the sum of the channel costs of the
//!   conversations it holds and never exceeds its capacity; a conversation
//!   never has two open offers;
//! - invariant 2: a conversation is offered, assigned or wrapping up with at
//!   most one agent, and appears in at most one agent's list, the one its
//!   own view names;
//! - invariant 5: no logged-in, available agent has room for a waiting
//!   conversation it is eligible for (the router's module docs define
//!   eligibility; the bullseye step is the one the conversation's wait has
//!   reached, from its queue's configuration);
//! - invariant 6: when a freed agent is offered work (rule `AgentFreed`), no
//!   conversation it was eligible for, waiting all along, ranked higher
//!   (earlier virtual deadline, then FIFO);
//! - and the bookkeeping around them: offers name an eligible agent at the
//!   bullseye step reached, agent states match what the views show, and a
//!   refused input changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use centralino_core::agent::{AgentProfile, AgentState, Skill};
use centralino_core::channel::MIN_COST;
use centralino_core::explain::Rule;
use centralino_core::history::TransferTarget;
use centralino_core::ids::CustomerId;
use centralino_core::occupancy::OccupancyCap;
use centralino_core::priority::{PriorityInputs, PriorityPolicy};
use centralino_core::queue::{BullseyeStep, QueueConfig, Strategy as Pick};
use centralino_core::router::{ConversationView, Enqueue, Phase, RevokeReason};
use centralino_core::{
    AgentId, Channel, ConversationId, Input, OfferId, Output, QueueId, Router, RouterConfig, TimeMs,
};

const AGENTS: [&str; 5] = ["a0", "a1", "a2", "a3", "a4"];
const SKILLS: [&str; 4] = ["fiber", "billing", "sales", "vip"];
const CHANNELS: [Channel; 9] = [
    Channel::Voice,
    Channel::Voice,
    Channel::Chat,
    Channel::Chat,
    Channel::Email,
    Channel::Sms,
    Channel::WhatsApp,
    Channel::Social,
    Channel::App,
];
const CAPACITIES: [u16; 7] = [100, 100, 100, 60, 30, 15, 5];
const TIERS: [Option<&str>; 3] = [None, Some("gold"), Some("silver")];
const SENTIMENTS: [Option<f64>; 4] = [None, Some(-1.0), Some(-0.5), Some(0.4)];
const START: TimeMs = 1_000_000;

fn config() -> RouterConfig {
    let mut acw_ms = [0; Channel::COUNT];
    acw_ms[Channel::Voice.index()] = 5_000;
    acw_ms[Channel::Chat.index()] = 2_000;
    RouterConfig {
        offer_timeout_ms: 8_000,
        continuity_window_ms: 60_000,
        decline_ttl_ms: 12_000,
        acw_ms,
        priority: PriorityPolicy::default(),
        reconnect_grace_ms: GRACE,
        // Tight enough that random runs cap agents and let them go again.
        occupancy_cap: Some(OccupancyCap {
            max: 0.6,
            window_ms: 30_000,
        }),
    }
}

/// How long an agent whose desktop's node died keeps its conversations.
const GRACE: TimeMs = 20_000;
/// The nodes desktops connect through.
const SESSIONS: [&str; 2] = ["n1", "n2"];

/// Four queues, one per strategy; two widen with bullseye steps.
fn queues() -> Vec<QueueConfig> {
    let skills = |s: &[(&str, u8)]| s.iter().map(|(n, p)| Skill::new(n, *p)).collect::<Vec<_>>();
    let general = QueueConfig::open("general");
    let tech = QueueConfig {
        required: skills(&[("fiber", 4), ("billing", 2)]),
        strategy: Pick::MostProficient,
        bullseye: vec![
            BullseyeStep {
                after_ms: 5_000,
                relax_proficiency: 1,
                drop_skills: vec![],
            },
            BullseyeStep {
                after_ms: 15_000,
                relax_proficiency: 1,
                drop_skills: vec!["billing".into()],
            },
        ],
        ..QueueConfig::open("tech")
    };
    let sales = QueueConfig {
        required: skills(&[("sales", 3)]),
        strategy: Pick::LeastOccupied,
        bullseye: vec![BullseyeStep {
            after_ms: 10_000,
            relax_proficiency: 2,
            drop_skills: vec![],
        }],
        ..QueueConfig::open("sales")
    };
    let vip = QueueConfig {
        required: skills(&[("vip", 1)]),
        strategy: Pick::RoundRobin,
        sla_ms: vec![(Channel::Chat, 20_000), (Channel::Email, 600_000)],
        priority_boost_ms: 5_000,
        ..QueueConfig::open("vip")
    };
    vec![general, tech, sales, vip]
}

/// The bullseye step a wait of `waited` ms has reached in `q`.
fn reached_step(q: &QueueConfig, waited: u64) -> u8 {
    q.bullseye
        .iter()
        .take_while(|s| s.after_ms <= waited)
        .count() as u8
}

#[derive(Clone, Debug)]
enum Op {
    Login {
        agent: usize,
        skills: Vec<(usize, u8)>,
        capacity: usize,
        away: bool,
        session: usize,
    },
    /// The desktops connected through a node are gone with it.
    SessionsLost {
        session: usize,
    },
    Logout {
        agent: usize,
    },
    SetAway {
        agent: usize,
        away: bool,
    },
    Enqueue {
        queue: usize,
        channel: usize,
        tier: usize,
        sentiment: usize,
        back_ms: u64,
        last_agent: Option<(usize, u64)>,
        not_before: Option<u64>,
        /// Reuse the id of a conversation the router holds: accepted if it
        /// is in wrap-up (the customer is back), refused otherwise.
        again: Option<usize>,
    },
    Accept {
        pick: usize,
        wrong_agent: Option<usize>,
    },
    Reject {
        pick: usize,
    },
    WrapUp {
        pick: usize,
    },
    Transfer {
        pick: usize,
        to: Target,
    },
    Withdraw {
        pick: usize,
        abandoned: bool,
    },
    Advance {
        ms: u64,
    },
}

#[derive(Clone, Debug)]
enum Target {
    Queue(usize),
    Agent(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS.len();
    prop_oneof![
        3 => (agent.clone(), prop::collection::vec((0..SKILLS.len(), 1u8..=5), 0..4), 0..CAPACITIES.len(), prop::bool::weighted(0.15), 0..SESSIONS.len())
            .prop_map(|(agent, skills, capacity, away, session)| Op::Login { agent, skills, capacity, away, session }),
        1 => (0..SESSIONS.len()).prop_map(|session| Op::SessionsLost { session }),
        2 => agent.clone().prop_map(|agent| Op::Logout { agent }),
        1 => (agent.clone(), any::<bool>()).prop_map(|(agent, away)| Op::SetAway { agent, away }),
        6 => (
            0..4usize,
            0..CHANNELS.len(),
            0..TIERS.len(),
            0..SENTIMENTS.len(),
            prop_oneof![3 => Just(0u64), 1 => 1u64..40_000],
            prop::option::weighted(0.2, (agent.clone(), 0u64..120_000)),
            prop::option::weighted(0.1, 1u64..20_000),
            prop::option::weighted(0.1, any::<usize>()),
        )
            .prop_map(|(queue, channel, tier, sentiment, back_ms, last_agent, not_before, again)| Op::Enqueue {
                queue,
                channel,
                tier,
                sentiment,
                back_ms,
                last_agent,
                not_before,
                again
            }),
        7 => (any::<usize>(), prop::option::weighted(0.1, agent.clone())).prop_map(|(pick, wrong_agent)| Op::Accept { pick, wrong_agent }),
        2 => any::<usize>().prop_map(|pick| Op::Reject { pick }),
        4 => any::<usize>().prop_map(|pick| Op::WrapUp { pick }),
        2 => (any::<usize>(), prop_oneof![(0..4usize).prop_map(Target::Queue), agent.prop_map(Target::Agent)])
            .prop_map(|(pick, to)| Op::Transfer { pick, to }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, abandoned)| Op::Withdraw { pick, abandoned }),
        5 => prop_oneof![2 => 0u64..3_000, 1 => 3_000u64..25_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

#[derive(Clone, Debug, Default)]
struct AgentModel {
    profile: Option<AgentProfile>,
    logged_in: bool,
    away: bool,
    session: usize,
    /// Its desktop's node died: absent until then, unless it logs in again.
    absent_until: Option<TimeMs>,
}

#[derive(Clone, Debug)]
struct ConvModel {
    seq: u64,
    enqueued_at: TimeMs,
    /// Transferred to this agent by name: eligible for it only.
    target: Option<AgentId>,
}

/// The router under test and the test's own model of what it was told.
struct Harness {
    router: Router,
    cfg: RouterConfig,
    queues: Vec<QueueConfig>,
    now: TimeMs,
    agents: Vec<AgentModel>,
    convs: HashMap<ConversationId, ConvModel>,
    next_customer: u64,
    next_seq: u64,
    /// Open offers from the outputs: offer → (conversation, agent).
    open: BTreeMap<OfferId, (ConversationId, AgentId)>,
    /// (conversation, agent who declined it) → until when.
    declined: HashMap<(ConversationId, AgentId), TimeMs>,
    /// How often each kind of decision and check came up, so a test can
    /// show the generator reaches them (a property never exercised proves
    /// nothing).
    seen: BTreeMap<String, usize>,
}

/// What the checks need from before a call.
struct Before {
    now: TimeMs,
    waiting: Vec<ConversationView>,
    declined: HashMap<(ConversationId, AgentId), TimeMs>,
    targets: HashMap<ConversationId, Option<AgentId>>,
}

/// An offer made by a freed agent, to check invariant 6 against.
struct FreedOffer {
    conv: ConversationId,
    agent: AgentId,
    channel: Channel,
    deadline: i64,
}

impl Harness {
    fn new() -> Self {
        let cfg = config();
        let mut h = Harness {
            router: Router::new(cfg.clone()),
            cfg,
            queues: queues(),
            now: START,
            agents: vec![AgentModel::default(); AGENTS.len()],
            convs: HashMap::new(),
            next_customer: 1,
            next_seq: 1,
            open: BTreeMap::new(),
            declined: HashMap::new(),
            seen: BTreeMap::new(),
        };
        for q in h.queues.clone() {
            h.call(Input::UpsertQueue(q), true);
        }
        h
    }

    fn saw(&mut self, what: impl Into<String>) {
        *self.seen.entry(what.into()).or_default() += 1;
    }

    fn queue(&self, id: &QueueId) -> &QueueConfig {
        self.queues
            .iter()
            .find(|q| &q.id == id)
            .expect("known queue")
    }

    fn agent_model(&self, id: &AgentId) -> &AgentModel {
        &self.agents[AGENTS
            .iter()
            .position(|a| *a == id.as_str())
            .expect("known agent")]
    }

    fn agent_model_mut(&mut self, id: &AgentId) -> &mut AgentModel {
        &mut self.agents[AGENTS
            .iter()
            .position(|a| *a == id.as_str())
            .expect("known agent")]
    }

    fn is_declined(
        declined: &HashMap<(ConversationId, AgentId), TimeMs>,
        conv: ConversationId,
        agent: &AgentId,
        at: TimeMs,
    ) -> bool {
        declined
            .get(&(conv, agent.clone()))
            .is_some_and(|until| *until > at)
    }

    fn before(&self) -> Before {
        let waiting = self
            .router
            .conversation_views(self.now, None)
            .into_iter()
            .filter(|v| v.phase == Phase::Waiting)
            .collect();
        let targets = self
            .convs
            .iter()
            .map(|(c, m)| (*c, m.target.clone()))
            .collect();
        Before {
            now: self.now,
            waiting,
            declined: self.declined.clone(),
            targets,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Advance { ms } => {
                let until = self.now + ms;
                while let Some(t) = self.router.next_timer().filter(|t| *t <= until) {
                    self.tick(t.max(self.now));
                }
                self.tick(until);
            }
            Op::SessionsLost { session } => {
                self.saw("desktops lost");
                self.call(
                    Input::SessionsLost {
                        session: SESSIONS[*session].into(),
                    },
                    true,
                );
            }
            Op::Login {
                agent,
                skills,
                capacity,
                away,
                session,
            } => {
                let id = AgentId::new(AGENTS[*agent]);
                let mut capacity = CAPACITIES[*capacity];
                // A reconnect that lowers the capacity below the load the
                // agent holds is a separate question (see the report);
                // keep random capacities at or above the current load.
                if let Some(v) = self.router.agent_views().into_iter().find(|v| v.id == id) {
                    capacity = capacity.max(v.load);
                }
                let mut seen = HashSet::new();
                let skills = skills
                    .iter()
                    .filter(|(s, _)| seen.insert(*s))
                    .map(|(s, p)| Skill::new(SKILLS[*s], *p))
                    .collect();
                let profile = AgentProfile {
                    id: id.clone(),
                    name: id.to_string(),
                    skills,
                    languages: vec![],
                    capacity,
                };
                self.call(
                    Input::Login {
                        profile,
                        away: *away,
                        session: Some(SESSIONS[*session].into()),
                    },
                    true,
                );
            }
            Op::Logout { agent } => {
                let ok = self.agents[*agent].logged_in;
                self.call(
                    Input::Logout {
                        agent: AgentId::new(AGENTS[*agent]),
                    },
                    ok,
                );
            }
            Op::SetAway { agent, away } => {
                let ok = self.agents[*agent].logged_in;
                self.call(
                    Input::SetAway {
                        agent: AgentId::new(AGENTS[*agent]),
                        away: *away,
                    },
                    ok,
                );
            }
            Op::Enqueue {
                queue,
                channel,
                tier,
                sentiment,
                back_ms,
                last_agent,
                not_before,
                again,
            } => {
                let held = self.router.conversation_views(self.now, None);
                // A third of the re-used ids are routed again (a channel
                // switch, a callback): always accepted, whatever the phase.
                let reroute = again.is_some_and(|p| p % 3 == 2) && !held.is_empty();
                let (conversation, ok) = match again {
                    Some(pick) if reroute => (held[pick % held.len()].conversation, true),
                    Some(pick) if !held.is_empty() => {
                        // Half the time a customer back during wrap-up (short
                        // and rare at random), else any id the router holds.
                        let wrapping: Vec<_> = held
                            .iter()
                            .filter(|v| matches!(v.phase, Phase::WrapUp { .. }))
                            .collect();
                        let v = match pick % 2 {
                            0 if !wrapping.is_empty() => wrapping[pick / 2 % wrapping.len()],
                            _ => &held[pick % held.len()],
                        };
                        (v.conversation, matches!(v.phase, Phase::WrapUp { .. }))
                    }
                    _ => {
                        self.next_customer += 1;
                        let customer = CustomerId(self.next_customer - 1);
                        (
                            ConversationId {
                                customer,
                                number: 1,
                            },
                            true,
                        )
                    }
                };
                let e = Enqueue {
                    conversation,
                    queue: self.queues[*queue].id.clone(),
                    channel: CHANNELS[*channel],
                    enqueued_at: self.now - back_ms,
                    priority: PriorityInputs {
                        tier: TIERS[*tier].map(Into::into),
                        sentiment: SENTIMENTS[*sentiment],
                        ..Default::default()
                    },
                    last_agent: last_agent
                        .map(|(a, ago)| (AgentId::new(AGENTS[a]), self.now - ago)),
                    not_before: not_before.map(|d| self.now + d),
                };
                if reroute {
                    self.saw("rerouted");
                    self.call(Input::Reroute(e), ok);
                } else {
                    self.call(Input::Enqueue(e), ok);
                }
            }
            Op::Accept { pick, wrong_agent } => {
                let Some((&offer, (_, agent))) = nth(&self.open, *pick) else {
                    return;
                };
                let mut agent = agent.clone();
                let mut ok = true;
                if let Some(w) = wrong_agent {
                    let w = AgentId::new(AGENTS[*w]);
                    if w != agent {
                        agent = w;
                        ok = false;
                    }
                }
                self.call(Input::Accept { agent, offer }, ok);
            }
            Op::Reject { pick } => {
                let Some((&offer, (_, agent))) = nth(&self.open, *pick) else {
                    return;
                };
                let agent = agent.clone();
                self.call(
                    Input::Reject {
                        agent,
                        offer,
                        reason: "no".into(),
                    },
                    true,
                );
            }
            Op::WrapUp { pick } => {
                let Some(v) = self.pick_assigned(*pick) else {
                    return;
                };
                self.call(
                    Input::WrapUp {
                        agent: v.agent.unwrap(),
                        conversation: v.conversation,
                    },
                    true,
                );
            }
            Op::Transfer { pick, to } => {
                let Some(v) = self.pick_assigned(*pick) else {
                    return;
                };
                let (to, ok) = match to {
                    Target::Queue(q) => (TransferTarget::Queue(self.queues[*q].id.clone()), true),
                    Target::Agent(a) => (
                        TransferTarget::Agent(AgentId::new(AGENTS[*a])),
                        self.agents[*a].logged_in,
                    ),
                };
                self.call(
                    Input::Transfer {
                        agent: v.agent.unwrap(),
                        conversation: v.conversation,
                        to,
                    },
                    ok,
                );
            }
            Op::Withdraw { pick, abandoned } => {
                let all = self.router.conversation_views(self.now, None);
                if all.is_empty() {
                    return;
                }
                let conversation = all[pick % all.len()].conversation;
                self.call(
                    Input::Withdraw {
                        conversation,
                        abandoned: *abandoned,
                    },
                    true,
                );
            }
        }
    }

    fn pick_assigned(&self, pick: usize) -> Option<ConversationView> {
        let assigned: Vec<_> = self
            .router
            .conversation_views(self.now, None)
            .into_iter()
            .filter(|v| matches!(v.phase, Phase::Assigned { .. }))
            .collect();
        (!assigned.is_empty()).then(|| assigned[pick % assigned.len()].clone())
    }

    fn tick(&mut self, t: TimeMs) {
        let before = self.before();
        self.now = t;
        let mut out = Vec::new();
        self.router.tick(t, &mut out);
        let expired: Vec<AgentId> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, m)| m.absent_until.is_some_and(|u| u <= t))
            .map(|(a, _)| AgentId::new(AGENTS[a]))
            .collect();
        for agent in expired {
            self.saw("absent agent logged out");
            self.logged_out(&agent);
        }
        self.after(&before, &out);
    }

    /// The agent is gone: what was meant for it by name is not any more.
    fn logged_out(&mut self, agent: &AgentId) {
        let m = self.agent_model_mut(agent);
        m.logged_in = false;
        m.absent_until = None;
        for c in self.convs.values_mut() {
            if c.target.as_ref() == Some(agent) {
                c.target = None;
            }
        }
    }

    /// One input at the current time; `ok` says whether it must succeed.
    fn call(&mut self, input: Input, ok: bool) {
        let before = self.before();
        let snapshot = (
            self.router.agent_views(),
            self.router.conversation_views(self.now, None),
            self.router.queue_views(self.now),
            self.router.kpi_report(self.now),
        );
        let mut out = Vec::new();
        let dbg = format!("{input:?}");
        let result = self.router.step(self.now, input.clone(), &mut out);
        if ok {
            assert!(result.is_ok(), "{dbg} was refused: {result:?}");
        } else {
            assert!(result.is_err(), "{dbg} should have been refused");
        }
        if result.is_err() {
            self.saw("refused");
            assert!(out.is_empty(), "a refused input decided something: {out:?}");
            let now = (
                self.router.agent_views(),
                self.router.conversation_views(self.now, None),
                self.router.queue_views(self.now),
                self.router.kpi_report(self.now),
            );
            assert!(
                snapshot == now,
                "a refused input ({dbg}) changed the router's state"
            );
            return;
        }
        match input {
            Input::Login {
                profile,
                away,
                session,
            } => {
                let m = self.agent_model_mut(&profile.id);
                m.profile = Some(profile);
                m.logged_in = true;
                m.away = away;
                m.absent_until = None;
                m.session = SESSIONS
                    .iter()
                    .position(|s| Some(*s) == session.as_deref())
                    .unwrap_or(0);
            }
            Input::Logout { agent } => self.logged_out(&agent),
            Input::SessionsLost { session } => {
                let now = self.now;
                for m in &mut self.agents {
                    if m.logged_in && m.absent_until.is_none() && SESSIONS[m.session] == session {
                        m.absent_until = Some(now + GRACE);
                    }
                }
            }
            Input::SetAway { agent, away } => self.agent_model_mut(&agent).away = away,
            Input::Enqueue(e) | Input::Reroute(e) => {
                // A returning customer's conversation starts afresh: no
                // declines, no target, a new place in line.
                if self.convs.contains_key(&e.conversation) {
                    self.saw("re-enqueued during wrap-up");
                    self.declined.retain(|(c, _), _| *c != e.conversation);
                }
                self.convs.insert(
                    e.conversation,
                    ConvModel {
                        seq: self.next_seq,
                        enqueued_at: e.enqueued_at,
                        target: None,
                    },
                );
                self.next_seq += 1;
            }
            _ => {}
        }
        self.after(&before, &out);
    }

    /// Follows the outputs in order, then checks the state they left.
    fn after(&mut self, before: &Before, out: &[Output]) {
        let mut freed = Vec::new();
        let mut offered_now = HashSet::new();
        for o in out {
            self.follow(before.now, o, &mut freed, &mut offered_now);
        }
        let waiting_while_busy = self.check_state();
        if self.router.agent_views().iter().any(|a| a.resting) {
            self.saw("an agent rests over the occupancy cap");
        }
        if waiting_while_busy {
            self.saw("eligible work waits while its agents are busy");
        }
        for f in &freed {
            let compared = self.check_priority(before, f, &offered_now);
            if compared > 0 {
                self.saw("freed agent passed over eligible, lower-ranked work");
            }
        }
    }

    fn follow(
        &mut self,
        call_began: TimeMs,
        o: &Output,
        freed: &mut Vec<FreedOffer>,
        offered_now: &mut HashSet<ConversationId>,
    ) {
        match o {
            Output::Offered {
                offer,
                conversation,
                agent,
                channel,
                queue,
                expires_at,
                explanation,
            } => {
                let at = expires_at - self.cfg.offer_timeout_ms;
                assert!(
                    call_began <= at && at <= self.now,
                    "offer {offer} made at {at}, outside the call's time span"
                );
                // Invariant 1/2: one open offer per conversation.
                if let Some((o2, _)) = self.open.iter().find(|(_, (c, _))| c == conversation) {
                    panic!("{conversation} offered as {offer} while {o2} is still open");
                }
                self.open.insert(*offer, (*conversation, agent.clone()));
                offered_now.insert(*conversation);
                let m = self.agent_model(agent);
                assert!(
                    m.logged_in && !m.away,
                    "{offer} made to {agent}, who is offline or away"
                );
                assert!(
                    !Self::is_declined(&self.declined, *conversation, agent, at),
                    "{conversation} offered to {agent}, who declined it"
                );
                let c = &self.convs[conversation];
                let q = self.queue(queue);
                let profile = m.profile.as_ref().unwrap();
                match explanation.rule {
                    Rule::DirectTransfer => assert_eq!(
                        c.target.as_ref(),
                        Some(agent),
                        "direct transfer of {conversation} to the wrong agent"
                    ),
                    Rule::Continuity => assert!(c.target.is_none()),
                    _ => {
                        let step = explanation.bullseye_step;
                        assert!(
                            c.target.is_none() || c.target.as_ref() == Some(agent),
                            "{conversation} is meant for {:?}",
                            c.target
                        );
                        if c.target.is_none() {
                            assert!(
                                q.qualifies_at(profile, step),
                                "{agent} does not qualify for {queue} at step {step}"
                            );
                            // Timers due at the same instant fire one by one,
                            // so the step may lag by that instant.
                            let (lo, hi) = (
                                reached_step(q, (at - c.enqueued_at).saturating_sub(1)),
                                reached_step(q, at - c.enqueued_at),
                            );
                            assert!(
                                lo <= step && step <= hi,
                                "{conversation} offered at step {step}, its wait reached {lo}..={hi}"
                            );
                        }
                    }
                }
                self.saw(format!("offer {:?}", explanation.rule));
                if explanation.bullseye_step > 0 {
                    self.saw("offer after widening");
                }
                if explanation.rule == Rule::AgentFreed {
                    freed.push(FreedOffer {
                        conv: *conversation,
                        agent: agent.clone(),
                        channel: *channel,
                        deadline: at as i64 - explanation.score_ms,
                    });
                }
            }
            Output::Assigned {
                offer,
                conversation,
                agent,
                ..
            } => {
                self.saw("assigned");
                self.close_offer(*offer, *conversation, agent)
            }
            Output::Rejected {
                offer,
                conversation,
                agent,
                ..
            } => {
                self.saw("rejected");
                self.close_offer(*offer, *conversation, agent);
                if self.cfg.decline_ttl_ms > 0 {
                    self.declined.insert(
                        (*conversation, agent.clone()),
                        self.now + self.cfg.decline_ttl_ms,
                    );
                }
            }
            Output::OfferRevoked {
                offer,
                conversation,
                agent,
                reason,
            } => {
                self.close_offer(*offer, *conversation, agent);
                self.saw(format!("revoked {reason:?}"));
                match reason {
                    RevokeReason::TimedOut => self.agent_model_mut(agent).away = true,
                    RevokeReason::AgentLoggedOut => {
                        self.convs.get_mut(conversation).unwrap().target = None
                    }
                    RevokeReason::Withdrawn | RevokeReason::AgentDisconnected => {}
                }
            }
            Output::Transferred {
                conversation, to, ..
            } => {
                self.saw(format!(
                    "transferred to {}",
                    if matches!(to, TransferTarget::Agent(_)) {
                        "agent"
                    } else {
                        "queue"
                    }
                ));
                self.convs.get_mut(conversation).unwrap().target = match to {
                    TransferTarget::Agent(a) => Some(a.clone()),
                    TransferTarget::Queue(_) => None,
                };
                self.declined.retain(|(c, _), _| c != conversation);
            }
            Output::Requeued { conversation, .. } => {
                self.saw("requeued");
                self.convs.get_mut(conversation).unwrap().target = None
            }
            Output::Queued { .. } | Output::AgentStateChanged { .. } => {}
        }
    }

    fn close_offer(&mut self, offer: OfferId, conv: ConversationId, agent: &AgentId) {
        let open = self.open.remove(&offer);
        assert_eq!(
            open,
            Some((conv, agent.clone())),
            "{offer} closed but was not open for {conv} with {agent}"
        );
    }

    /// Invariants 1, 2 and 5 on the state after a call. Returns whether some
    /// conversation waited that a logged-in agent would be eligible for
    /// with more room (the situation invariant 5 is about).
    fn check_state(&self) -> bool {
        let now = self.now;
        let views: HashMap<ConversationId, ConversationView> = self
            .router
            .conversation_views(now, None)
            .into_iter()
            .map(|v| (v.conversation, v))
            .collect();
        // The list counts places in one pass; one view counts its own.
        for v in views.values() {
            let one = self.router.conversation_view(now, v.conversation);
            assert_eq!(
                one.as_ref().map(|o| o.position),
                Some(v.position),
                "{}'s place in the list and in its own view",
                v.conversation
            );
        }
        let mut held_by: HashMap<ConversationId, AgentId> = HashMap::new();
        let mut free: HashMap<AgentId, u16> = HashMap::new();
        for a in self.router.agent_views() {
            let m = self.agent_model(&a.id);
            let mut load = 0;
            let mut wrapping_only = !a.conversations.is_empty();
            for conv in &a.conversations {
                let v = views.get(conv).unwrap_or_else(|| {
                    panic!("{} holds {conv}, which the router does not know", a.id)
                });
                assert_eq!(
                    v.agent.as_ref(),
                    Some(&a.id),
                    "{} lists {conv}, whose view names {:?}",
                    a.id,
                    v.agent
                );
                assert!(
                    matches!(
                        v.phase,
                        Phase::Offered { .. } | Phase::Assigned { .. } | Phase::WrapUp { .. }
                    ),
                    "{conv} held in {:?}",
                    v.phase
                );
                wrapping_only &= matches!(v.phase, Phase::WrapUp { .. });
                if let Some(other) = held_by.insert(*conv, a.id.clone()) {
                    panic!("{conv} is held by both {other} and {}", a.id);
                }
                load += v.channel.cost();
            }
            assert_eq!(
                a.load, load,
                "{}'s load is not the sum of its conversations' costs",
                a.id
            );
            assert!(
                a.load <= a.capacity,
                "{} holds {} of {}",
                a.id,
                a.load,
                a.capacity
            );
            let expected = if !m.logged_in || m.absent_until.is_some() {
                AgentState::Offline
            } else if m.away {
                AgentState::Away
            } else if load > 0 && wrapping_only {
                AgentState::WrapUp
            } else if a.resting {
                // Over the occupancy cap (its exact timing is checked by
                // the scenarios): offered nothing new, so out of invariant 5.
                AgentState::Resting
            } else if a.capacity - load >= MIN_COST {
                AgentState::Available
            } else {
                AgentState::Busy
            };
            assert_eq!(a.state, expected, "{}'s reported state", a.id);
            if m.logged_in && !m.away && m.absent_until.is_none() && !a.resting {
                free.insert(a.id.clone(), a.capacity - a.load);
            }
        }
        let mut offered = 0;
        for v in views.values() {
            match v.phase {
                Phase::Offered { offer, .. } => {
                    offered += 1;
                    assert_eq!(
                        self.open.get(&offer),
                        Some(&(v.conversation, v.agent.clone().unwrap())),
                        "{} is in {offer}",
                        v.conversation
                    );
                }
                Phase::Assigned { .. } | Phase::WrapUp { .. } => {
                    assert_eq!(
                        held_by.get(&v.conversation),
                        v.agent.as_ref(),
                        "{} not in its agent's list",
                        v.conversation
                    )
                }
                Phase::Waiting | Phase::Scheduled => {
                    assert_eq!(v.agent, None, "{} waits but names an agent", v.conversation)
                }
            }
        }
        assert_eq!(
            offered,
            self.open.len(),
            "open offers in the outputs and in the views differ"
        );

        // Invariant 5.
        let mut busy_but_eligible = false;
        for v in views.values().filter(|v| v.phase == Phase::Waiting) {
            let c = &self.convs[&v.conversation];
            let q = self.queue(&v.queue);
            let step = reached_step(q, now - c.enqueued_at);
            for (id, free) in &free {
                if Self::is_declined(&self.declined, v.conversation, id, now) {
                    continue;
                }
                let eligible = match &c.target {
                    Some(t) => t == id,
                    None => q.qualifies_at(self.agent_model(id).profile.as_ref().unwrap(), step),
                };
                if *free < v.channel.cost() {
                    busy_but_eligible |= eligible;
                    continue;
                }
                assert!(
                    !eligible,
                    "{id} is available with {free} free while {} ({} in {} at step {step}) waits for it",
                    v.conversation, v.channel, v.queue
                );
            }
        }
        busy_but_eligible
    }

    /// Invariant 6 for one offer to a freed agent: nothing it was eligible
    /// for, waiting throughout the call, ranked before it. "Eligible" is
    /// judged conservatively from the state before the call (the bullseye
    /// step and declines then; a channel no costlier than the one offered).
    /// Returns how many eligible waiting conversations it compared against.
    fn check_priority(
        &self,
        before: &Before,
        f: &FreedOffer,
        offered_now: &HashSet<ConversationId>,
    ) -> usize {
        let mut compared = 0;
        let seq = |c: &ConversationId| self.convs[c].seq;
        let profile = self.agent_model(&f.agent).profile.as_ref().unwrap();
        for w in &before.waiting {
            if w.conversation == f.conv || offered_now.contains(&w.conversation) {
                continue;
            }
            let still = self
                .router
                .conversation_view(self.now, w.conversation)
                .is_some_and(|v| v.phase == Phase::Waiting);
            if !still
                || w.channel.cost() > f.channel.cost()
                || Self::is_declined(&before.declined, w.conversation, &f.agent, before.now)
            {
                continue;
            }
            let eligible = match &before.targets[&w.conversation] {
                Some(t) => *t == f.agent,
                None => {
                    let q = self.queue(&w.queue);
                    q.qualifies_at(
                        profile,
                        reached_step(q, before.now - self.convs[&w.conversation].enqueued_at),
                    )
                }
            };
            compared += usize::from(eligible);
            let w_rank = (before.now as i64 - w.score_ms, seq(&w.conversation));
            let f_rank = (f.deadline, seq(&f.conv));
            assert!(
                !eligible || w_rank > f_rank,
                "{} freed and took {} (rank {f_rank:?}) while {} (rank {w_rank:?}), eligible, waited",
                f.agent,
                f.conv,
                w.conversation
            );
        }
        compared
    }
}

fn nth<K, V>(m: &BTreeMap<K, V>, pick: usize) -> Option<(&K, &V)> {
    if m.is_empty() {
        None
    } else {
        m.iter().nth(pick % m.len())
    }
}

fn run(ops: &[Op]) -> BTreeMap<String, usize> {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
    }
    // Let every timer run out: offers expire, decline and work timers end.
    h.apply(&Op::Advance { ms: 120_000 });
    h.seen
}

/// Cases per run; `PROPTEST_CASES` raises it for a deeper search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_event_sequences(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

/// The property above is only as good as the situations it reaches: over a
/// fixed-seed sample of the same generator, every kind of decision and every
/// check with teeth must come up.
#[test]
fn the_generator_reaches_every_kind_of_decision() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = prop::collection::vec(op(), 1..80);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..150 {
        for (k, n) in run(&ops.new_tree(&mut runner).unwrap().current()) {
            *seen.entry(k).or_default() += n;
        }
    }
    let want = [
        "offer LongestIdle",
        "offer MostProficient",
        "offer LeastOccupied",
        "offer RoundRobin",
        "offer AgentFreed",
        "offer Continuity",
        "offer DirectTransfer",
        "offer after widening",
        "assigned",
        "rejected",
        "revoked TimedOut",
        "revoked AgentLoggedOut",
        "revoked Withdrawn",
        "revoked AgentDisconnected",
        "desktops lost",
        "absent agent logged out",
        "transferred to agent",
        "transferred to queue",
        "requeued",
        "re-enqueued during wrap-up",
        "rerouted",
        "refused",
        "eligible work waits while its agents are busy",
        "freed agent passed over eligible, lower-ranked work",
        "an agent rests over the occupancy cap",
    ];
    let missing: Vec<_> = want.iter().filter(|k| !seen.contains_key(**k)).collect();
    assert!(
        missing.is_empty(),
        "never reached: {missing:?}; seen: {seen:#?}"
    );
}

/// Minimal cases, kept as plain tests so they run whatever the seed.
///
/// Found by the property (shrunk by proptest) before the router fix: a call
/// routed by continuity to an agent outside the "tech" skills is transferred
/// to "vip", which has no bullseye steps; the step timer left from "tech"
/// fired there and the router indexed past the queue's step sets (panic).
#[test]
fn a_step_timer_left_from_the_previous_queue_is_harmless() {
    run(&[
        Op::Login {
            agent: 2,
            skills: vec![],
            capacity: 0,
            away: false,
            session: 0,
        },
        Op::Login {
            agent: 0,
            skills: vec![],
            capacity: 0,
            away: false,
            session: 0,
        },
        Op::Enqueue {
            queue: 1,
            channel: 0,
            tier: 0,
            sentiment: 0,
            back_ms: 0,
            last_agent: Some((2, 0)),
            not_before: None,
            again: None,
        },
        Op::Accept {
            pick: 0,
            wrong_agent: None,
        },
        Op::Transfer {
            pick: 0,
            to: Target::Queue(3),
        },
    ]);
}

/// Found reading `logout`, and caught by the property when the fix is
/// reverted: an expert logs out holding a "tech" call whose step timer fired
/// while it was assigned; re-queued at step 0 with no timer left, it never
/// widened to the junior who sat idle (invariant 5).
#[test]
fn a_requeued_conversation_widens_like_one_that_never_left() {
    let fiber4 = vec![(0, 4), (1, 2)];
    run(&[
        Op::Login {
            agent: 0,
            skills: fiber4,
            capacity: 0,
            away: false,
            session: 0,
        },
        Op::Login {
            agent: 1,
            skills: vec![(0, 3), (1, 2)],
            capacity: 0,
            away: false,
            session: 0,
        },
        Op::Enqueue {
            queue: 1,
            channel: 0,
            tier: 0,
            sentiment: 0,
            back_ms: 0,
            last_agent: None,
            not_before: None,
            again: None,
        },
        Op::Accept {
            pick: 0,
            wrong_agent: None,
        },
        Op::Advance { ms: 6_000 },
        Op::Logout { agent: 0 },
    ]);
}
