//! The replay itself: recorded contacts through a [`Router`] under one
//! configuration, on simulated time.
//!
//! A discrete-event loop over three sources of events, always taking the
//! earliest: the recording's arrivals, the ends of service episodes it
//! scheduled, and the router's own timers ([`Router::next_timer`]: after-
//! contact work, bullseye steps, scheduled callbacks, stale offer
//! expiries). At one instant they are handled in that order: timers, then
//! ends of service (an agent who frees up at `t` can take a contact that
//! arrives at `t`), then arrivals in recording order.
//!
//! Simulated agents are ideal: every offer is accepted at once, and each
//! episode lasts the handle time the recording measured, then ends as it
//! did (a wrap-up, after which the configuration's after-contact work
//! keeps the agent's capacity taken; or a transfer, which the router
//! routes again). Nobody abandons: the recording has no abandon event, so
//! the service level is answered within target over answered, as the
//! router's KPIs count it ([`centralino_core::kpi`]). A contact no agent
//! qualifies for waits to the end and is reported as never answered.
//!
//! Nothing here reads a clock, draws a random number or iterates a hash
//! map: the same recording, configuration and pool give the same
//! [`Outcome`], bit for bit.

use std::collections::{BTreeMap, HashMap, VecDeque};

use anyhow::{Context, bail};
use centralino_core::history::TransferTarget;
use centralino_core::kpi::KpiReport;
use centralino_core::priority::PriorityInputs;
use centralino_core::queue::QueueConfig;
use centralino_core::router::Enqueue;
use centralino_core::{
    AgentId, AgentProfile, ConversationId, CustomerId, Input, Output, Router, RouterConfig, TimeMs,
};

use super::recording::{AfterService, RecordedContact, Recording};

/// What one replay measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The router's own KPIs: service level and ASA per queue, channel and
    /// agent, exactly as a live node would have reported them.
    pub kpis: KpiReport,
    /// Per recorded contact, in the recording's order.
    pub contacts: Vec<ContactResult>,
    /// Per agent of the pool, in the pool's order.
    pub agents: Vec<AgentUse>,
    /// The first arrival, when every agent logged in.
    pub start: TimeMs,
    /// When the last work ended (the last change of any agent's load).
    pub end: TimeMs,
}

/// How one contact fared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactResult {
    /// Arrival to its first assignment; `None` if never assigned.
    pub waited_ms: Option<u64>,
    /// Who took it first.
    pub agent: Option<AgentId>,
}

/// How much one agent worked.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentUse {
    pub id: AgentId,
    pub capacity: u16,
    /// Time it held any work (offered, assigned or after-contact work).
    pub busy_ms: u64,
    /// Its load integrated over time (capacity units × ms): an agent with
    /// two chats (30 each) for 1 s adds 60,000.
    pub load_ms: u64,
}

/// Replays `rec` (sorted by arrival, as `Recording` keeps it) through a
/// router configured with `router` and `queues`, staffed with `agents`.
pub fn simulate(
    rec: &Recording,
    router: RouterConfig,
    queues: &[QueueConfig],
    agents: &[AgentProfile],
) -> anyhow::Result<Outcome> {
    debug_assert!(
        rec.contacts
            .windows(2)
            .all(|w| w[0].arrival <= w[1].arrival)
    );
    let start = rec.contacts.first().map_or(0, |c| c.arrival);
    let mut sim = Sim {
        rec,
        router: Router::new(router),
        results: vec![ContactResult::default(); rec.contacts.len()],
        episode: vec![0; rec.contacts.len()],
        ends: BTreeMap::new(),
        next_end: 0,
        last_agent: HashMap::new(),
        loads: vec![0; agents.len()],
        busy: vec![0; agents.len()],
        load_ms: vec![0; agents.len()],
        clock: start,
        end: start,
    };
    for q in queues {
        sim.step(start, Input::UpsertQueue(q.clone()))
            .with_context(|| format!("queue {}", q.id))?;
    }
    for a in agents {
        let login = Input::Login {
            profile: a.clone(),
            away: false,
            session: None,
        };
        sim.step(start, login)
            .with_context(|| format!("agent {}", a.id))?;
    }
    let mut next_arrival = 0;
    loop {
        let arrival = rec.contacts.get(next_arrival).map(|c| c.arrival);
        let end = sim.ends.keys().next().map(|(t, _)| *t);
        let Some(now) = [arrival, end, sim.router.next_timer()]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        sim.advance(now);
        let mut out = Vec::new();
        sim.router.tick(now, &mut out);
        sim.handle(now, out)?;
        while let Some(entry) = sim.ends.first_entry() {
            if entry.key().0 != now {
                break;
            }
            let (i, agent) = entry.remove();
            sim.end_episode(now, i, agent)?;
        }
        while let Some(c) = rec.contacts.get(next_arrival).filter(|c| c.arrival == now) {
            sim.arrive(now, next_arrival, c)
                .with_context(|| format!("contact {}", c.label))?;
            next_arrival += 1;
        }
        sim.sample(now);
    }
    Ok(Outcome {
        kpis: sim.router.kpi_report(sim.clock),
        contacts: sim.results,
        agents: agents
            .iter()
            .zip(sim.busy.into_iter().zip(sim.load_ms))
            .map(|(a, (busy_ms, load_ms))| AgentUse {
                id: a.id.clone(),
                capacity: a.capacity,
                busy_ms,
                load_ms,
            })
            .collect(),
        start,
        end: sim.end,
    })
}

struct Sim<'a> {
    rec: &'a Recording,
    router: Router,
    results: Vec<ContactResult>,
    /// Per contact, the index of its current (or next) service episode.
    episode: Vec<usize>,
    /// Episodes in progress by their end: (at, order made) → (contact, agent).
    ends: BTreeMap<(TimeMs, u64), (usize, AgentId)>,
    next_end: u64,
    /// Per recorded customer, who last served them and when: continuity,
    /// as the customer actor tells the router in production.
    last_agent: HashMap<u64, (AgentId, TimeMs)>,
    /// Each agent's load as last sampled, in login (= pool) order.
    loads: Vec<u16>,
    busy: Vec<u64>,
    load_ms: Vec<u64>,
    /// Up to when `busy` is accounted.
    clock: TimeMs,
    end: TimeMs,
}

/// The conversation the router knows contact `i` by: one per contact, so
/// that contacts stay apart whatever the order the replay serves them in.
fn conversation(i: usize) -> ConversationId {
    ConversationId {
        customer: CustomerId(i as u64 + 1),
        number: 1,
    }
}

fn contact_of(conversation: ConversationId) -> usize {
    (conversation.customer.0 as usize).saturating_sub(1)
}

impl Sim<'_> {
    fn step(&mut self, now: TimeMs, input: Input) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.router.step(now, input, &mut out)?;
        self.handle(now, out)
    }

    /// Acts on the router's decisions: accepts every offer at once, and
    /// starts an episode on every assignment. Accepting yields more
    /// decisions; they are handled in order until none is left.
    fn handle(&mut self, now: TimeMs, out: Vec<Output>) -> anyhow::Result<()> {
        let mut pending = VecDeque::from(out);
        while let Some(o) = pending.pop_front() {
            match o {
                Output::Offered { offer, agent, .. } => {
                    let mut more = Vec::new();
                    self.router
                        .step(now, Input::Accept { agent, offer }, &mut more)?;
                    pending.extend(more);
                }
                Output::Assigned {
                    conversation,
                    agent,
                    waited_ms,
                    ..
                } => self.start_episode(now, contact_of(conversation), agent, waited_ms)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn start_episode(
        &mut self,
        now: TimeMs,
        i: usize,
        agent: AgentId,
        waited_ms: u64,
    ) -> anyhow::Result<()> {
        let c = &self.rec.contacts[i];
        let Some(segment) = c.segments.get(self.episode[i]) else {
            bail!(
                "contact {}: assigned a {}th time, but the recording has {} service episode(s)",
                c.label,
                self.episode[i] + 1,
                c.segments.len()
            );
        };
        let r = &mut self.results[i];
        if r.agent.is_none() {
            r.waited_ms = Some(waited_ms);
            r.agent = Some(agent.clone());
        }
        self.last_agent.insert(c.customer, (agent.clone(), now));
        self.ends
            .insert((now + segment.handle_ms, self.next_end), (i, agent));
        self.next_end += 1;
        Ok(())
    }

    fn end_episode(&mut self, now: TimeMs, i: usize, agent: AgentId) -> anyhow::Result<()> {
        let c = &self.rec.contacts[i];
        let then = &c.segments[self.episode[i]].then;
        self.episode[i] += 1;
        let conversation = conversation(i);
        let input = match then {
            AfterService::WrapUp => {
                self.last_agent.insert(c.customer, (agent.clone(), now));
                Input::WrapUp {
                    agent,
                    conversation,
                }
            }
            AfterService::Transfer(to) => Input::Transfer {
                agent,
                conversation,
                to: self.transfer_target(to, &c.topic),
            },
        };
        self.step(now, input)
            .with_context(|| format!("contact {}", c.label))
    }

    /// Where a recorded transfer goes under this configuration: where it
    /// went, if that queue (or agent) exists here; else the queue the
    /// contact's topic routes to.
    fn transfer_target(&self, to: &TransferTarget, topic: &str) -> TransferTarget {
        let known = match to {
            TransferTarget::Queue(q) => self.router.has_queue(q),
            TransferTarget::Agent(a) => self.router.agent_loads().any(|(id, _)| id == a),
        };
        if known {
            return to.clone();
        }
        match self.router.queue_for_topic(topic) {
            Some(q) => TransferTarget::Queue(q),
            None => to.clone(),
        }
    }

    fn arrive(&mut self, now: TimeMs, i: usize, c: &RecordedContact) -> anyhow::Result<()> {
        let Some(queue) = self.router.queue_for_topic(&c.topic) else {
            bail!("the configuration defines no queue");
        };
        let enqueue = Enqueue {
            conversation: conversation(i),
            queue,
            channel: c.channel,
            enqueued_at: now,
            priority: PriorityInputs {
                // The router takes the SLA target and the topic's boost
                // from the queue it routes to.
                tier: c.tier.clone(),
                sentiment: c.sentiment,
                ..PriorityInputs::default()
            },
            last_agent: self.last_agent.get(&c.customer).cloned(),
            not_before: c.not_before,
        };
        self.step(now, Input::Enqueue(enqueue))
    }

    /// Accounts busy time and load up to `now` at the loads sampled last
    /// (loads change only at the instants the loop visits).
    fn advance(&mut self, now: TimeMs) {
        let dt = now.saturating_sub(self.clock);
        for ((busy, load_ms), load) in self.busy.iter_mut().zip(&mut self.load_ms).zip(&self.loads)
        {
            if *load > 0 {
                *busy += dt;
                *load_ms += dt * u64::from(*load);
            }
        }
        self.clock = now;
    }

    /// Samples every agent's load after the instant `now` was handled.
    fn sample(&mut self, now: TimeMs) {
        for (slot, (_, load)) in self.loads.iter_mut().zip(self.router.agent_loads()) {
            if *slot != load {
                *slot = load;
                self.end = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, StrategyName};
    use crate::replay::recording::Segment;
    use centralino_core::{Channel, Skill};

    /// Two queues; billing's strategy is the argument. Voice answered
    /// within 20 s; no after-contact work, so that the arithmetic below is
    /// only the handle times.
    fn config(billing: StrategyName) -> Config {
        let strategy = match billing {
            StrategyName::LongestIdle => "longest_idle",
            StrategyName::MostProficient => "most_proficient",
            StrategyName::LeastOccupied => "least_occupied",
            StrategyName::RoundRobin => "round_robin",
        };
        let text = format!(
            r#"
            [routing.acw_ms]
            voice = 0
            [[queues]]
            id = "billing"
            topics = ["billing"]
            required_skills = {{ billing = 1 }}
            strategy = "{strategy}"
            sla_ms = {{ voice = 20000 }}
            [[queues]]
            id = "tech"
            topics = ["fiber"]
            required_skills = {{ tech = 1 }}
            sla_ms = {{ voice = 20000 }}
            "#
        );
        toml::from_str(&text).expect("test config")
    }

    fn agent(id: &str, skills: &[(&str, u8)]) -> AgentProfile {
        AgentProfile {
            id: id.into(),
            name: id.into(),
            skills: skills.iter().map(|(s, p)| Skill::new(s, *p)).collect(),
            languages: vec![],
            capacity: 100,
        }
    }

    fn voice(
        label: &str,
        customer: u64,
        at: TimeMs,
        topic: &str,
        handle_ms: u64,
    ) -> RecordedContact {
        RecordedContact {
            label: label.into(),
            customer,
            arrival: at,
            not_before: None,
            channel: Channel::Voice,
            topic: topic.into(),
            tier: None,
            sentiment: None,
            segments: vec![Segment {
                handle_ms,
                then: AfterService::WrapUp,
            }],
            served_by: vec![],
        }
    }

    fn run(strategy: StrategyName, rec: &Recording, agents: &[AgentProfile]) -> Outcome {
        let cfg = config(strategy);
        simulate(
            rec,
            cfg.router().expect("router"),
            &cfg.queues().expect("queues"),
            agents,
        )
        .expect("replay")
    }

    /// Three voice calls, two agents, worked out by hand.
    ///
    /// Bruno (billing 2) logged in before Anna (billing 5, tech 3); only
    /// Anna takes tech. c1 billing at 0 s (30 s of work), c2 tech at 1 s
    /// (10 s), c3 billing at 2 s (10 s).
    ///
    /// Longest idle (both idle since 0; the first logged in breaks the
    /// tie): c1 → Bruno (0..30); c2 → Anna at once (1..11); c3 waits for
    /// the first to free up, Anna at 11 s: waited 9 s (2..11, 11..21).
    /// Waits 0, 0, 9 s: ASA 3 s, all within 20 s.
    ///
    /// Most proficient: c1 → Anna (billing 5 beats 2; 0..30); c2 waits for
    /// Anna, the only tech agent; c3 → Bruno at once (2..12); Anna frees up
    /// at 30 s and takes c2: waited 29 s (30..40). Waits 0, 29, 0 s: ASA
    /// 29/3 s, service level 2 of 3.
    ///
    /// The work is the same 50 s either way; who did it is not: Bruno 30 s
    /// and Anna 20 s, or Anna 40 s and Bruno 10 s.
    #[test]
    fn three_calls_two_agents_by_hand() {
        let rec = Recording {
            contacts: vec![
                voice("c1", 1, 0, "billing", 30_000),
                voice("c2", 2, 1_000, "fiber", 10_000),
                voice("c3", 3, 2_000, "billing", 10_000),
            ],
            ..Recording::default()
        };
        let agents = [
            agent("bruno", &[("billing", 2)]),
            agent("anna", &[("billing", 5), ("tech", 3)]),
        ];
        let waits =
            |o: &Outcome| -> Vec<Option<u64>> { o.contacts.iter().map(|c| c.waited_ms).collect() };
        let firsts = |o: &Outcome| -> Vec<String> {
            o.contacts
                .iter()
                .map(|c| c.agent.as_ref().map(|a| a.to_string()).unwrap_or_default())
                .collect()
        };
        let busy = |o: &Outcome| -> Vec<u64> { o.agents.iter().map(|a| a.busy_ms).collect() };

        let li = run(StrategyName::LongestIdle, &rec, &agents);
        assert_eq!(waits(&li), vec![Some(0), Some(0), Some(9_000)]);
        assert_eq!(firsts(&li), vec!["bruno", "anna", "anna"]);
        assert_eq!(li.kpis.total.answered, 3);
        assert_eq!(li.kpis.total.service_level(), 1.0);
        assert_eq!(li.kpis.total.asa_ms(), 3_000.0);
        assert_eq!(busy(&li), vec![30_000, 20_000], "bruno, anna");
        assert_eq!((li.start, li.end), (0, 30_000));

        let mp = run(StrategyName::MostProficient, &rec, &agents);
        assert_eq!(waits(&mp), vec![Some(0), Some(29_000), Some(0)]);
        assert_eq!(firsts(&mp), vec!["anna", "anna", "bruno"]);
        assert_eq!(mp.kpis.total.answered_within_sla, 2);
        assert_eq!(mp.kpis.total.service_level(), 2.0 / 3.0);
        assert_eq!(mp.kpis.total.asa_ms(), 29_000.0 / 3.0);
        assert_eq!(busy(&mp), vec![10_000, 40_000], "bruno, anna");
        assert_eq!((mp.start, mp.end), (0, 40_000));
        assert_eq!(mp.kpis.total.abandoned, 0, "nobody abandons in a replay");
    }

    /// A transfer is replayed as one: the second episode waits for an agent
    /// of the target queue, and a returning customer is offered their last
    /// agent first (continuity) when the strategy would pick another.
    #[test]
    fn transfers_and_continuity() {
        let mut c1 = voice("c1", 9, 0, "billing", 5_000);
        c1.segments = vec![
            Segment {
                handle_ms: 5_000,
                then: AfterService::Transfer(TransferTarget::Queue("tech".into())),
            },
            Segment {
                handle_ms: 7_000,
                then: AfterService::WrapUp,
            },
        ];
        // The same customer back at 20 s, on billing: Bruno has been idle
        // longest (since 5 s), but Anna served the customer last.
        let c2 = voice("c1#2", 9, 20_000, "billing", 1_000);
        let rec = Recording {
            contacts: vec![c1, c2],
            ..Recording::default()
        };
        let agents = [
            agent("bruno", &[("billing", 2)]),
            agent("anna", &[("billing", 5), ("tech", 3)]),
        ];
        let o = run(StrategyName::LongestIdle, &rec, &agents);
        assert_eq!(
            o.contacts[0].agent.as_ref().map(|a| a.as_str()),
            Some("bruno")
        );
        assert_eq!(
            o.contacts[1].agent.as_ref().map(|a| a.as_str()),
            Some("anna")
        );
        assert_eq!(o.kpis.total.transfers, 1);
        // Bruno 0..5; Anna takes the transfer at 5 (tech) until 12, then
        // the returning customer 20..21. Voice takes all of their capacity.
        assert_eq!(o.agents[0].busy_ms, 5_000);
        assert_eq!(o.agents[1].busy_ms, 8_000);
        assert_eq!(o.agents[1].load_ms, 8_000 * 100);
        assert_eq!(o.end, 21_000);
    }

    #[test]
    fn a_contact_nobody_can_take_is_never_answered() {
        let rec = Recording {
            contacts: vec![voice("c1", 1, 0, "fiber", 1_000)],
            ..Recording::default()
        };
        let o = run(
            StrategyName::LongestIdle,
            &rec,
            &[agent("bruno", &[("billing", 2)])],
        );
        assert_eq!(o.contacts[0], ContactResult::default());
        assert_eq!(o.kpis.total.answered, 0);
        assert_eq!(o.kpis.total.offered, 1);
    }
}
