//! Recorded traffic: what a replay needs to know of each contact, read
//! from the history archive or from the benchmark's `contacts.csv`.
//!
//! A replay re-decides who serves whom and when, so it keeps only what the
//! routing could not have changed: when each contact arrived and what it
//! brought (channel, topic, tier, sentiment), and how much work it was for
//! whoever served it (the handle time of each service episode, and whether
//! the episode ended in a wrap-up or a transfer). Waits, offers and
//! agents are what the replay computes anew.
//!
//! # From the archive
//!
//! One archived file is one closed conversation (see
//! `centralino_cluster::archive`); it may hold several *routing rounds*,
//! and each round is one [`RecordedContact`]:
//!
//! - A round starts with the customer message that made the customer wait:
//!   the conversation's first, or the first after a wrap-up (the customer
//!   came back). That message's time is the arrival; the channel, topic
//!   and sentiment are the latest ones before the round was first assigned
//!   (a customer who switched channel while waiting, or asked for a
//!   callback, was routed on the new channel, keeping their place).
//! - The tier is not in the history; the first offer's explanation records
//!   the tier boost it earned, which is mapped back to the tier the
//!   recording's configuration gives that boost (no boost: no tier).
//! - A service episode runs from an assignment to the wrap-up (or the
//!   resolve, if no wrap-up came first) or to a transfer; a transfer's
//!   target is kept, and the next assignment starts the next episode. A
//!   message on another channel while assigned made the router take the
//!   conversation back and offer it again (usually to the same agent): the
//!   episode goes on through it, so its handle time includes that short
//!   re-routing.
//! - A round never assigned in the recording carries no handle time and
//!   is left out (counted in [`Recording::skipped`]); so is a transfer that
//!   was never picked up: the episode before it ends in a wrap-up.
//!
//! Only closed (resolved) conversations are archived: what was still open
//! when the recording stopped is not in it.
//!
//! # From `contacts.csv`
//!
//! One row per contact the bench sent: the arrival, the class (mapped to a
//! tier and sentiment as the bench maps it) and the channel. The bench
//! records no topic (every contact had `--topic`, `bench` by default) and
//! no handle time (its agents draw one per contact): the replay is told
//! both. Every row is one new customer.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, bail};
use centralino_core::explain::PassedOver;
use centralino_core::history::{EventKind, HistoryEvent, TransferTarget};
use centralino_core::priority::PriorityPolicy;
use centralino_core::queue::QueueConfig;
use centralino_core::{AgentId, Channel, ConversationId, QueueId, TimeMs};

use crate::bench::workload::Class;

/// Recorded traffic, in arrival order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recording {
    /// Where it was read from, for the report.
    pub source: String,
    pub contacts: Vec<RecordedContact>,
    /// Every agent the recording names, with the skills its routing
    /// decisions prove the agent had (see [`Recording::note_qualified`]).
    pub agents: BTreeMap<AgentId, BTreeMap<String, u8>>,
    /// Routing rounds left out, and why.
    pub skipped: Vec<String>,
}

/// One contact: a routing round and the work it took.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedContact {
    /// Where it came from: `cu-3.1` (round 1), `cu-3.1#2`, `line 7`.
    pub label: String,
    /// The customer, so that a returning customer's last agent is tried
    /// first (continuity), as in production.
    pub customer: u64,
    pub arrival: TimeMs,
    /// A scheduled callback: not to be offered before then.
    pub not_before: Option<TimeMs>,
    pub channel: Channel,
    pub topic: String,
    pub tier: Option<String>,
    pub sentiment: Option<f64>,
    /// The service episodes in order; every one but the last ends in a
    /// transfer, the last in a wrap-up. Never empty.
    pub segments: Vec<Segment>,
    /// Who served it in the recording, in order.
    pub served_by: Vec<AgentId>,
}

/// One service episode.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Assignment to wrap-up (or transfer), ms.
    pub handle_ms: u64,
    pub then: AfterService,
}

/// How a service episode ends.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterService {
    WrapUp,
    Transfer(TransferTarget),
}

/// What the recording's own configuration says, to read its histories:
/// the tier boosts (to map an offer's recorded boost back to a tier) and
/// the queues (to know which skills a decision proves an agent had).
pub struct Recorded<'a> {
    pub priority: &'a PriorityPolicy,
    pub queues: &'a [QueueConfig],
}

impl Recording {
    /// The contacts of closed conversations' histories (each a whole
    /// history, seq 1 on), sorted by arrival.
    pub fn from_histories(
        source: String,
        histories: Vec<(ConversationId, Vec<HistoryEvent>)>,
        recorded: &Recorded<'_>,
    ) -> Recording {
        let mut rec = Recording {
            source,
            ..Recording::default()
        };
        for (conversation, events) in histories {
            rec.read_conversation(conversation, &events, recorded);
        }
        rec.contacts.sort_by(|a, b| {
            (a.arrival, a.customer, &a.label).cmp(&(b.arrival, b.customer, &b.label))
        });
        rec
    }

    fn read_conversation(
        &mut self,
        conversation: ConversationId,
        events: &[HistoryEvent],
        recorded: &Recorded<'_>,
    ) {
        let mut rounds = 0u32;
        let mut round: Option<Round> = None;
        // The conversation's topic carries over to a round started by
        // anything but a message with a topic.
        let mut topic = String::new();
        for e in events {
            match &e.kind {
                // A bot's hand-over is the customer's contact too.
                EventKind::CustomerMessage {
                    channel,
                    topic: t,
                    sentiment,
                    ..
                }
                | EventKind::BotTranscript {
                    channel,
                    topic: t,
                    sentiment,
                    ..
                } => {
                    if !t.is_empty() {
                        topic.clone_from(t);
                    }
                    match &mut round {
                        None => {
                            rounds += 1;
                            round = Some(Round::new(e.at, *channel, &topic, *sentiment, rounds));
                        }
                        Some(r) if r.routing() => {
                            r.channel = *channel;
                            r.topic.clone_from(&topic);
                            if sentiment.is_some() {
                                r.sentiment = *sentiment;
                            }
                        }
                        // Served, or waiting after a transfer: the message
                        // reaches the agent or joins the queue it is in.
                        Some(_) => {}
                    }
                }
                EventKind::Queued { channel, .. } => match &mut round {
                    Some(r) if r.routing() => r.channel = *channel,
                    Some(_) => {}
                    // Queued without a message first (a recovered
                    // conversation re-announced): the round starts here.
                    None => {
                        rounds += 1;
                        round = Some(Round::new(e.at, *channel, &topic, None, rounds));
                    }
                },
                EventKind::CallbackRequested {
                    channel,
                    not_before,
                    ..
                } => {
                    if let Some(r) = round.as_mut().filter(|r| r.routing()) {
                        r.channel = *channel;
                        r.not_before = (*not_before > r.arrival).then_some(*not_before);
                    }
                }
                EventKind::Offered {
                    agent, explanation, ..
                } => {
                    if let Some(r) = round.as_mut().filter(|r| r.tier_boost.is_none()) {
                        r.tier_boost = Some(explanation.priority.tier_boost_ms);
                    }
                    let queue = &explanation.queue;
                    let step = explanation.bullseye_step;
                    self.note_qualified(agent, queue, step, recorded.queues);
                    for c in &explanation.candidates {
                        if c.passed_over == Some(PassedOver::SkillsNotMet) {
                            // Named, logged in, and proving nothing.
                            self.agents.entry(c.agent.clone()).or_default();
                        } else {
                            self.note_qualified(&c.agent, queue, step, recorded.queues);
                        }
                    }
                }
                EventKind::Assigned { agent } => {
                    if let Some(r) = round.as_mut().filter(|r| r.serving.is_none()) {
                        r.serving = Some(e.at);
                        r.served_by.push(agent.clone());
                    }
                }
                EventKind::Transferred { to, .. } => {
                    if let Some(r) = &mut round {
                        r.end_episode(e.at, AfterService::Transfer(to.clone()));
                    }
                }
                // An abandoned round was never served: it is skipped (the
                // replay does not model customers' patience).
                EventKind::WrappedUp { .. }
                | EventKind::Resolved { .. }
                | EventKind::Abandoned { .. } => {
                    if let Some(r) = round.take() {
                        self.close(conversation, r, e.at, recorded.priority);
                    }
                }
                // A merged customer's events are replayed from its own
                // conversation, not from the copy the survivor keeps.
                EventKind::AgentMessage { .. }
                | EventKind::OfferRejected { .. }
                | EventKind::OfferTimedOut { .. }
                | EventKind::IdentityLinked { .. }
                | EventKind::Merged { .. }
                | EventKind::Absorbed { .. }
                | EventKind::MergedInto { .. }
                // A notice starts no routing; its follow-up is `Queued`.
                | EventKind::Notice { .. } => {}
            }
        }
        // A history ends with its resolve; one that does not (written by
        // hand, or cut short) closes what it holds at its last event.
        if let (Some(r), Some(last)) = (round, events.last()) {
            self.close(conversation, r, last.at, recorded.priority);
        }
    }

    fn close(
        &mut self,
        conversation: ConversationId,
        mut r: Round,
        at: TimeMs,
        priority: &PriorityPolicy,
    ) {
        let label = match r.number {
            1 => conversation.to_string(),
            n => format!("{conversation}#{n}"),
        };
        if r.serving.is_some() {
            r.end_episode(at, AfterService::WrapUp);
        }
        let Some(last) = r.segments.last_mut() else {
            self.skipped
                .push(format!("{label}: never assigned, so no handle time"));
            return;
        };
        // A transfer nobody picked up before the close: the work recorded
        // ended with the episode before it.
        last.then = AfterService::WrapUp;
        self.contacts.push(RecordedContact {
            label,
            customer: conversation.customer.0,
            arrival: r.arrival,
            not_before: r.not_before,
            channel: r.channel,
            topic: r.topic,
            tier: r.tier_boost.and_then(|b| tier_of(priority, b)),
            sentiment: r.sentiment,
            segments: r.segments,
            served_by: r.served_by,
        });
    }

    /// Records that `agent` qualified for `queue` at bullseye `step` (it was
    /// offered a conversation there, or considered for one and passed over
    /// for another reason than its skills): it has at least the queue's
    /// required proficiencies as that step widens them. The skills kept
    /// are the highest such lower bounds; a queue the configuration no
    /// longer defines proves nothing.
    pub fn note_qualified(
        &mut self,
        agent: &AgentId,
        queue: &QueueId,
        step: u8,
        queues: &[QueueConfig],
    ) {
        let skills = self.agents.entry(agent.clone()).or_default();
        let Some(q) = queues.iter().find(|q| &q.id == queue) else {
            return;
        };
        let steps = &q.bullseye[..(step as usize).min(q.bullseye.len())];
        let relax: u8 = steps
            .iter()
            .map(|s| s.relax_proficiency)
            .fold(0, u8::saturating_add);
        for req in &q.required {
            let dropped = steps.iter().any(|s| {
                s.drop_skills
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&req.name))
            });
            if dropped {
                continue;
            }
            let least = req.proficiency.saturating_sub(relax).max(1);
            let known = skills.entry(req.name.clone()).or_insert(least);
            *known = (*known).max(least);
        }
    }
}

/// A routing round being read.
struct Round {
    number: u32,
    arrival: TimeMs,
    not_before: Option<TimeMs>,
    channel: Channel,
    topic: String,
    sentiment: Option<f64>,
    tier_boost: Option<u64>,
    /// Since when the current episode's agent holds it.
    serving: Option<TimeMs>,
    segments: Vec<Segment>,
    served_by: Vec<AgentId>,
}

impl Round {
    fn new(
        arrival: TimeMs,
        channel: Channel,
        topic: &str,
        sentiment: Option<f64>,
        number: u32,
    ) -> Round {
        Round {
            number,
            arrival,
            not_before: None,
            channel,
            topic: topic.to_owned(),
            sentiment,
            tier_boost: None,
            serving: None,
            segments: Vec::new(),
            served_by: Vec::new(),
        }
    }

    /// Not yet served: what the customer says still changes how the round
    /// is routed.
    fn routing(&self) -> bool {
        self.serving.is_none() && self.segments.is_empty()
    }

    fn end_episode(&mut self, at: TimeMs, then: AfterService) {
        if let Some(since) = self.serving.take() {
            self.segments.push(Segment {
                handle_ms: at.saturating_sub(since),
                then,
            });
        }
    }
}

/// The tier the policy gives `boost` ms; the first in the policy's order
/// when several share it (they ranked alike in the recording). No boost,
/// or one no tier has, is no tier.
fn tier_of(policy: &PriorityPolicy, boost: u64) -> Option<String> {
    if boost == 0 {
        return None;
    }
    policy
        .tier_boost_ms
        .iter()
        .find(|(_, b)| *b == boost)
        .map(|(tier, _)| tier.clone())
}

/// The columns `centralino bench` writes (`bench::report::CSV_HEADER`)
/// that a replay reads; the others are ignored.
const CSV_COLUMNS: [&str; 4] = ["contact_id", "class", "channel", "arrival_ts"];

/// What `contacts.csv` does not say, and the replay must be told.
pub struct CsvAssumptions<'a> {
    pub topic: &'a str,
    pub handle_ms: u64,
}

impl Recording {
    /// Reads the benchmark's per-contact file. `name` names it in errors,
    /// which give the line and the column at fault.
    pub fn from_csv(
        name: &str,
        input: impl Read,
        assume: &CsvAssumptions<'_>,
    ) -> anyhow::Result<Recording> {
        let mut reader = csv::ReaderBuilder::new().from_reader(input);
        let header = reader
            .headers()
            .with_context(|| format!("{name} line 1: reading the header"))?
            .clone();
        let mut at = [0usize; CSV_COLUMNS.len()];
        for (slot, column) in at.iter_mut().zip(CSV_COLUMNS) {
            *slot = header.iter().position(|h| h == column).with_context(|| {
                format!(
                    "{name} line 1: no column {column:?}; expected the header of centralino bench's \
                     contacts.csv ({})",
                    crate::bench::report::CSV_HEADER
                )
            })?;
        }
        let [id_at, class_at, channel_at, arrival_at] = at;
        let agent_at = header.iter().position(|h| h == "agent");
        let mut rec = Recording {
            source: name.to_owned(),
            ..Recording::default()
        };
        for (row, record) in reader.records().enumerate() {
            let record = record.with_context(|| format!("{name}: reading row {}", row + 1))?;
            let line = record.position().map_or(row as u64 + 2, |p| p.line());
            let field = |at: usize, column: &str| -> anyhow::Result<&str> {
                record
                    .get(at)
                    .with_context(|| format!("{name} line {line}: no {column} field"))
            };
            let id = field(id_at, "contact_id")?;
            let id: u64 = id.parse().map_err(|_| {
                anyhow::anyhow!("{name} line {line}, contact_id: not a whole number: {id:?}")
            })?;
            let class = Class::parse(field(class_at, "class")?)
                .with_context(|| format!("{name} line {line}, class"))?;
            let channel = crate::config::channel(field(channel_at, "channel")?)
                .with_context(|| format!("{name} line {line}, channel"))?;
            let arrival = field(arrival_at, "arrival_ts")?;
            let arrival = match arrival.parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => (s * 1_000.0).round() as TimeMs,
                _ => bail!(
                    "{name} line {line}, arrival_ts: expected seconds (a non-negative number), got {arrival:?}"
                ),
            };
            let served_by = agent_at
                .and_then(|at| record.get(at))
                .filter(|a| !a.is_empty())
                .map(AgentId::new)
                .into_iter()
                .collect::<Vec<_>>();
            for agent in &served_by {
                // The bench's agents are identical: no skills to recover.
                rec.agents.entry(agent.clone()).or_default();
            }
            rec.contacts.push(RecordedContact {
                label: format!("line {line}"),
                customer: id,
                arrival,
                not_before: None,
                channel,
                topic: assume.topic.to_owned(),
                tier: Some(class.tier),
                sentiment: class.sentiment,
                segments: vec![Segment {
                    handle_ms: assume.handle_ms,
                    then: AfterService::WrapUp,
                }],
                served_by,
            });
        }
        // The bench writes rows in sending order, which concurrent senders
        // may interleave by a few microseconds.
        rec.contacts.sort_by_key(|c| (c.arrival, c.customer));
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralino_core::agent::Skill;
    use centralino_core::explain::{Candidate, Explanation, Rule};
    use centralino_core::priority::PriorityBreakdown;
    use centralino_core::queue::BullseyeStep;
    use centralino_core::{CustomerId, Identity, IdentityKind, OfferId};

    fn message(channel: Channel, topic: &str, sentiment: Option<f64>) -> EventKind {
        EventKind::CustomerMessage {
            channel,
            identity: Identity::new(IdentityKind::Phone, "+39 340 1"),
            text: "hello".into(),
            topic: topic.into(),
            sentiment,
        }
    }

    fn offered(agent: &str, queue: &str, tier_boost_ms: u64, step: u8) -> EventKind {
        EventKind::Offered {
            agent: agent.into(),
            offer: OfferId(1),
            explanation: Box::new(Explanation {
                queue: queue.into(),
                rule: Rule::LongestIdle,
                score_ms: 0,
                priority: PriorityBreakdown {
                    tier_boost_ms,
                    ..Default::default()
                },
                bullseye_step: step,
                routing_rule: None,
                candidates: vec![
                    Candidate {
                        agent: agent.into(),
                        key: 0,
                        passed_over: None,
                    },
                    Candidate {
                        agent: "carla".into(),
                        key: 1,
                        passed_over: Some(PassedOver::SkillsNotMet),
                    },
                ],
            }),
        }
    }

    fn history(kinds: Vec<(TimeMs, EventKind)>) -> Vec<HistoryEvent> {
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, (at, kind))| HistoryEvent {
                seq: i as u64 + 1,
                at,
                kind,
            })
            .collect()
    }

    fn queues() -> Vec<QueueConfig> {
        let mut billing = QueueConfig::open("billing");
        billing.required = vec![Skill::new("billing", 3)];
        billing.bullseye = vec![BullseyeStep {
            after_ms: 10_000,
            relax_proficiency: 1,
            drop_skills: vec![],
        }];
        vec![QueueConfig::open("general"), billing]
    }

    /// A conversation with a round served by two agents through a transfer,
    /// then a second round after the customer came back on another channel.
    #[test]
    fn rounds_episodes_and_what_the_history_proves() {
        let conv = ConversationId {
            customer: CustomerId(7),
            number: 2,
        };
        let events = history(vec![
            (1_000, message(Channel::Chat, "invoice", None)),
            (
                1_001,
                EventKind::Queued {
                    queue: "billing".into(),
                    channel: Channel::Chat,
                },
            ),
            // Switched to voice while waiting: routed on voice, angrier.
            (1_500, message(Channel::Voice, "", Some(-0.8))),
            (
                1_501,
                EventKind::Queued {
                    queue: "billing".into(),
                    channel: Channel::Voice,
                },
            ),
            (3_000, offered("anna", "billing", 10_000, 0)),
            (
                3_000,
                EventKind::Assigned {
                    agent: "anna".into(),
                },
            ),
            (
                8_000,
                EventKind::Transferred {
                    from: "anna".into(),
                    to: TransferTarget::Queue("general".into()),
                    note: "over to general".into(),
                },
            ),
            (12_000, offered("bruno", "billing", 10_000, 1)),
            (
                12_000,
                EventKind::Assigned {
                    agent: "bruno".into(),
                },
            ),
            (
                20_000,
                EventKind::WrappedUp {
                    agent: "bruno".into(),
                    disposition: "answered".into(),
                },
            ),
            (50_000, message(Channel::Email, "invoice", None)),
            (
                50_001,
                EventKind::Queued {
                    queue: "billing".into(),
                    channel: Channel::Email,
                },
            ),
            (51_000, offered("bruno", "billing", 10_000, 0)),
            (
                51_000,
                EventKind::Assigned {
                    agent: "bruno".into(),
                },
            ),
            (55_000, EventKind::Resolved { by: "bruno".into() }),
        ]);
        let policy = PriorityPolicy::default();
        let queues = queues();
        let rec = Recording::from_histories(
            "test".into(),
            vec![(conv, events)],
            &Recorded {
                priority: &policy,
                queues: &queues,
            },
        );
        assert_eq!(rec.skipped, Vec::<String>::new());
        assert_eq!(rec.contacts.len(), 2, "{:#?}", rec.contacts);
        let first = &rec.contacts[0];
        assert_eq!(first.label, "cu-7.2");
        assert_eq!(first.arrival, 1_000, "the first message's time");
        assert_eq!(
            first.channel,
            Channel::Voice,
            "the channel it was routed on"
        );
        assert_eq!(first.topic, "invoice", "an empty topic keeps the last one");
        assert_eq!(first.sentiment, Some(-0.8));
        assert_eq!(
            first.tier.as_deref(),
            Some("silver"),
            "10 s is silver's boost"
        );
        assert_eq!(
            first.segments,
            vec![
                Segment {
                    handle_ms: 5_000,
                    then: AfterService::Transfer(TransferTarget::Queue("general".into())),
                },
                Segment {
                    handle_ms: 8_000,
                    then: AfterService::WrapUp,
                },
            ]
        );
        assert_eq!(
            first.served_by,
            vec![AgentId::new("anna"), AgentId::new("bruno")]
        );
        let second = &rec.contacts[1];
        assert_eq!(second.label, "cu-7.2#2");
        assert_eq!((second.arrival, second.channel), (50_000, Channel::Email));
        assert_eq!(
            second.segments[0].handle_ms, 4_000,
            "assigned to the resolve"
        );
        // anna qualified at step 0: billing >= 3; bruno only at step 1
        // (relaxed by 1): billing >= 2, then at step 0: 3. carla failed the
        // skills: known, nothing proven.
        assert_eq!(rec.agents[&AgentId::new("anna")]["billing"], 3);
        assert_eq!(rec.agents[&AgentId::new("bruno")]["billing"], 3);
        assert!(rec.agents[&AgentId::new("carla")].is_empty());
    }

    #[test]
    fn a_round_never_assigned_is_skipped_and_said() {
        let conv = ConversationId {
            customer: CustomerId(1),
            number: 1,
        };
        let events = history(vec![
            (10, message(Channel::Chat, "x", None)),
            (20, EventKind::Resolved { by: "bot".into() }),
        ]);
        let policy = PriorityPolicy::default();
        let rec = Recording::from_histories(
            "test".into(),
            vec![(conv, events)],
            &Recorded {
                priority: &policy,
                queues: &[],
            },
        );
        assert!(rec.contacts.is_empty());
        assert_eq!(rec.skipped.len(), 1);
        assert!(
            rec.skipped[0].starts_with("cu-1.1: never assigned"),
            "{:?}",
            rec.skipped
        );
    }

    #[test]
    fn contacts_csv_rows_become_contacts_and_bad_rows_are_named() {
        let text = "contact_id,class,channel,arrival_ts,offer_ts,accept_ts,agent,node\n\
                    1,angry,voice,0.250000,0.251000,0.252000,agent-1,n1\n\
                    0,gold,chat,0.100000,,,,\n";
        let assume = CsvAssumptions {
            topic: "bench",
            handle_ms: 200,
        };
        let rec = Recording::from_csv("contacts.csv", text.as_bytes(), &assume).expect("reads");
        assert_eq!(rec.contacts.len(), 2);
        let (a, b) = (&rec.contacts[0], &rec.contacts[1]);
        assert_eq!(
            (a.arrival, a.channel, a.tier.as_deref()),
            (100, Channel::Chat, Some("gold"))
        );
        assert_eq!(
            (b.arrival, b.sentiment),
            (250, Some(-0.9)),
            "angry is a negative sentiment"
        );
        assert_eq!(b.served_by, vec![AgentId::new("agent-1")]);
        assert_eq!(b.segments[0].handle_ms, 200);
        assert_eq!(a.topic, "bench");

        let bad = "contact_id,class,channel,arrival_ts,offer_ts,accept_ts,agent,node\n\
                   0,gold,chat,0.1,,,,\n\
                   1,gold,pigeon,0.2,,,,\n";
        let err = Recording::from_csv("contacts.csv", bad.as_bytes(), &assume).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("contacts.csv line 3, channel"), "{msg}");
        assert!(msg.contains("pigeon"), "{msg}");

        let bad = "contact_id,class,channel,arrival_ts\n0,gold,chat,soon\n";
        let err = Recording::from_csv("c.csv", bad.as_bytes(), &assume).unwrap_err();
        assert!(
            format!("{err:#}").contains("c.csv line 2, arrival_ts"),
            "{err:#}"
        );

        let err = Recording::from_csv("c.csv", "id,when\n".as_bytes(), &assume).unwrap_err();
        assert!(
            format!("{err:#}").contains("no column \"contact_id\""),
            "{err:#}"
        );
    }
}
