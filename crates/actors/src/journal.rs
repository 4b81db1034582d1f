//! The journal port: where customer actors make their changes durable.
//!
//! A customer actor commits a [`JournalBatch`] (the new history events of
//! its open conversation, plus its customer record) and acknowledges the
//! caller only after the commit returned `Ok`. Implementations live in
//! `centralino-cluster` (in memory for `dev`, etcd for clusters); they may
//! group many batches into one write, but must return only once the batch
//! is durable, and must refuse a batch whose fencing token is no longer the
//! owner's.
//!
//! # Snapshots
//!
//! Recovering a customer replays its open conversation's events through the
//! same transitions that made them ([`rebuild`]). So that a long
//! conversation neither replays nor keeps one journal entry per event
//! forever, a batch whose events cross a multiple of [`SNAPSHOT_EVERY`]
//! carries a snapshot: the open [`Conversation`] as of the batch's last
//! event, history included. The journal stores it in place of every event it
//! covers, in the same fenced write; recovery starts from it and replays only
//! the events after it. The snapshot holds the whole history because
//! whoever loads the conversation needs it (an offer carries the whole
//! cross-channel timeline).
//!
//! Whether a batch carries a snapshot depends only on the sequence numbers
//! ([`snapshot_due`]), not on anything the actor remembers: after a
//! migration or a failover the next owner takes them at the same points. A
//! batch of more than [`MAX_BATCH_EVENTS`] events carries one too.
//!
//! # Creating a customer
//!
//! A customer that a contact has just made up (its identity was seen for
//! the first time) exists nowhere until its first batch: that batch
//! carries a [`Creation`], and the journal writes, in the same atomic
//! write, the customer's ownership (to the committing node) and the links
//! of its identities. If another customer has one of the identities by
//! then (a race between two first contacts), nothing is written and the
//! commit fails with [`JournalError::Taken`], naming the customer the
//! contact belongs to. A new customer thus costs no write of its own.
//!
//! # Closing
//!
//! A batch that closes a conversation carries its whole history, from seq 1:
//! the journal hands it to the history archive before it removes the
//! conversation from the journal, so that no reader is needed to put the
//! history back together, and a close that fails half-way is simply made
//! again.

use centralino_core::customer::{Attributes, CampaignMark, Conversation, Customer};
use centralino_core::history::HistoryEvent;
use centralino_core::{AgentId, ConversationId, CustomerId, Identity, TimeMs};
use serde::{Deserialize, Serialize};

/// The customer's record without its open conversation's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: CustomerId,
    pub attributes: Attributes,
    pub identities: Vec<Identity>,
    pub opened: u32,
    pub last_agent: Option<(AgentId, TimeMs)>,
    /// The open conversation, if any, whose events are journaled.
    pub open: Option<ConversationId>,
    /// The customer was merged into this one (a tombstone).
    #[serde(default)]
    pub merged_into: Option<CustomerId>,
    /// The campaigns that reached the customer lately (see
    /// `centralino_core::customer::CampaignMark`).
    #[serde(default)]
    pub campaigns: Vec<CampaignMark>,
}

impl CustomerRecord {
    pub fn of(c: &Customer) -> Self {
        CustomerRecord {
            id: c.id,
            attributes: c.attributes.clone(),
            identities: c.identities.clone(),
            opened: c.opened,
            last_agent: c.last_agent.clone(),
            open: c.open.as_ref().map(|o| o.id),
            merged_into: c.merged_into,
            campaigns: c.campaigns.clone(),
        }
    }
}

/// How many events an open conversation gains between two snapshots.
///
/// 256 keeps recovery short (at most about 256 events replayed) and a
/// conversation's journal small (at most about 256 event entries besides
/// the snapshot), while typical conversations (a dozen or two events) never
/// take one. A snapshot rewrites the whole history, so a long conversation
/// pays for them in bytes written: snapshots at 256, 512 and 768 events
/// write 1.5 times the history of a 1,000-event conversation; a smaller
/// value would rewrite it more often for a replay that is already short.
pub const SNAPSHOT_EVERY: u64 = 256;

/// Most events a batch carries without a snapshot. A longer batch (the
/// routing decisions a customer gathered while the journal was unreachable)
/// carries a snapshot instead, so that a store that keeps one entry per
/// event writes a bounded number of entries per batch (etcd takes at most
/// 128 operations per transaction).
pub const MAX_BATCH_EVENTS: u64 = 64;

/// Whether a batch that takes a conversation's durable history from
/// `durable_seq` to `last_seq` carries a snapshot: when it crosses a
/// multiple of [`SNAPSHOT_EVERY`], or carries more than
/// [`MAX_BATCH_EVENTS`] events.
pub fn snapshot_due(durable_seq: u64, last_seq: u64) -> bool {
    last_seq / SNAPSHOT_EVERY > durable_seq / SNAPSHOT_EVERY
        || last_seq.saturating_sub(durable_seq) > MAX_BATCH_EVENTS
}

/// One durable change of one customer.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalBatch {
    pub record: CustomerRecord,
    /// New events of `record.open` (or of the conversation just closed).
    pub conversation: Option<ConversationId>,
    pub events: Vec<HistoryEvent>,
    /// The conversation was resolved: its history leaves the journal for
    /// the archive. A closing batch carries the whole history, from seq 1.
    pub closed: bool,
    /// The open conversation as of the last of `events`, history included
    /// (see "Snapshots" in the module docs): the journal keeps it instead of
    /// the events it covers.
    pub snapshot: Option<Box<Conversation>>,
    /// The owner's fencing token (ignored by a creating batch).
    pub token: u64,
    /// The batch creates the customer (see "Creating a customer").
    pub create: Option<Creation>,
}

/// What the first batch of a new customer creates with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Creation {
    /// Identities linked to the customer in the same write: none of them
    /// may belong to a customer yet.
    pub identities: Vec<Identity>,
    /// The node that takes ownership, and the lease its ownership lives on
    /// (set by the journal implementation, which knows them).
    pub owner: Option<(String, i64)>,
}

impl JournalBatch {
    /// The batch that makes `customer` durable, given that its open
    /// conversation is durable up to `durable_seq`: the events after it
    /// (the whole history when `closing`), the record, and a snapshot when
    /// one is due.
    pub fn of(customer: &Customer, durable_seq: u64, closing: bool, token: u64) -> JournalBatch {
        let conv = customer.open.as_ref();
        let since = if closing { 0 } else { durable_seq };
        let events = conv
            .map(|c| c.history.since(since).to_vec())
            .unwrap_or_default();
        let last = conv.map_or(0, |c| c.history.last_seq());
        let mut record = CustomerRecord::of(customer);
        if closing {
            record.open = None;
        }
        let snapshot = conv
            .filter(|_| !closing && snapshot_due(durable_seq, last))
            .map(|c| Box::new(c.clone()));
        JournalBatch {
            record,
            conversation: conv.map(|c| c.id),
            events,
            closed: closing,
            snapshot,
            token,
            create: None,
        }
    }
}

/// What a customer actor recovers from.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    pub record: CustomerRecord,
    /// The open conversation's latest snapshot, if it has one.
    pub snapshot: Option<Box<Conversation>>,
    /// The open conversation's events after the snapshot (all of them
    /// without one), in order.
    pub events: Vec<HistoryEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum JournalError {
    /// The writer is no longer the owner; it must stop acting as one.
    #[error("journal write for {customer} fenced out: token {token} is stale")]
    Fenced { customer: CustomerId, token: u64 },
    /// The store did not confirm the write; it may be retried.
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    /// The batch can never be written (too large for one request).
    #[error("journal batch rejected: {0}")]
    Rejected(String),
    /// A creating batch links an identity that another customer has: the
    /// contact belongs to that customer (see "Creating a customer").
    #[error("identity {identity} belongs to customer {customer}")]
    Taken {
        identity: Identity,
        customer: CustomerId,
    },
}

/// Durable storage of active conversations.
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Makes the batch durable; returns once it is, with the fencing token
    /// the customer's writes carry from now on (the batch's own, or the
    /// token of the ownership a creating batch took).
    async fn commit(&self, batch: JournalBatch) -> Result<u64, JournalError>;
    /// The customer's record, its open conversation's latest snapshot and
    /// the events after it, if the customer was ever journaled.
    async fn recover(&self, customer: CustomerId) -> Result<Option<Recovered>, JournalError>;
    /// The customer's latest closed conversation and its whole history,
    /// from the history archive (self-service status after a resolution).
    async fn last_closed(
        &self,
        _customer: CustomerId,
    ) -> Result<Option<(ConversationId, Vec<HistoryEvent>)>, JournalError> {
        Ok(None)
    }
}

/// Rebuilds a customer from its record, its open conversation's snapshot
/// and the events after it: the state is a function of the events (see
/// `centralino_core::customer`), so replaying them through the same
/// transitions, from the snapshot on, gives back the same customer.
pub fn rebuild(r: Recovered) -> Customer {
    let mut c = Customer::new(r.record.id, r.record.identities.clone());
    c.attributes = r.record.attributes.clone();
    if let Some(open) = r.record.open {
        c.opened = open.number.saturating_sub(1);
        if let Some(snapshot) = r.snapshot.filter(|s| s.id == open) {
            c.opened = open.number;
            c.open = Some(*snapshot);
        }
        let from = c.open.as_ref().map_or(0, |o| o.history.last_seq());
        // A journal hands over only the tail; skipping what the snapshot
        // covers keeps the history contiguous whatever it hands over.
        for e in r.events.into_iter().filter(|e| e.seq > from) {
            c.replay(e.at, open, e.kind);
        }
    }
    c.opened = r.record.opened;
    c.last_agent = r.record.last_agent;
    c.identities = r.record.identities;
    c.merged_into = r.record.merged_into;
    c.campaigns = r.record.campaigns;
    c
}

#[cfg(test)]
mod tests {
    use centralino_core::customer::Contact;
    use centralino_core::explain::{Candidate, Explanation, Rule};
    use centralino_core::history::EventKind;
    use centralino_core::priority::PriorityBreakdown;
    use centralino_core::{AgentId, Channel, IdentityKind, OfferId};

    use super::*;

    fn contact(channel: Channel, text: &str) -> Contact {
        let identity = match channel {
            Channel::Voice => Identity::new(IdentityKind::Phone, "+39 02 555 0101"),
            _ => Identity::new(IdentityKind::ChatSession, "chat-77"),
        };
        Contact {
            channel,
            identity,
            topic: "billing".into(),
            text: text.into(),
            sentiment: Some(-0.25),
            attributes: Attributes::default(),
        }
    }

    /// One step of a long conversation that goes round and round: the
    /// customer writes and calls, is queued, offered, assigned, answered,
    /// wrapped up, transferred, called back.
    fn step(c: &mut Customer, i: u64) {
        let now = 1_000 + i * 1_000;
        let anna = AgentId::new("anna");
        let Some(conv) = c.open.as_ref().map(|o| o.id) else {
            c.contact(now, contact(Channel::Chat, "hello, my invoice is wrong"));
            return;
        };
        let kind = match i % 9 {
            0 => {
                c.contact(now, contact(Channel::Chat, "still waiting"));
                return;
            }
            1 => EventKind::Queued {
                queue: "billing".into(),
                channel: Channel::Chat,
            },
            2 => EventKind::Offered {
                agent: anna.clone(),
                offer: OfferId(i),
                explanation: Box::new(Explanation {
                    queue: "billing".into(),
                    rule: Rule::LongestIdle,
                    score_ms: -19_000,
                    priority: PriorityBreakdown::default(),
                    bullseye_step: 0,
                    routing_rule: None,
                    candidates: vec![Candidate {
                        agent: anna.clone(),
                        key: i,
                        passed_over: None,
                    }],
                }),
            },
            3 => EventKind::Assigned {
                agent: anna.clone(),
            },
            4 => {
                c.agent_reply(now, conv, &anna, "let me check".into())
                    .expect("anna is assigned");
                return;
            }
            5 => {
                c.contact(now, contact(Channel::Voice, "calling instead"));
                return;
            }
            6 => EventKind::WrappedUp {
                agent: anna.clone(),
                disposition: "explained".into(),
            },
            7 => EventKind::CallbackRequested {
                channel: Channel::Voice,
                to: Identity::new(IdentityKind::Phone, "+39 02 555 0101"),
                not_before: now + 60_000,
            },
            _ => EventKind::IdentityLinked {
                identity: Identity::new(IdentityKind::Email, "mario@example.it"),
            },
        };
        c.record(now, conv, kind).expect("the conversation is open");
    }

    /// A journal as the backends keep one: the latest snapshot, and the
    /// events after it.
    #[derive(Default)]
    struct Kept {
        snapshots: usize,
        snapshot: Option<Box<Conversation>>,
        tail: Vec<HistoryEvent>,
    }

    impl Kept {
        fn take(&mut self, b: JournalBatch) {
            match b.snapshot {
                Some(s) => {
                    assert_eq!(
                        s.history.last_seq(),
                        b.events.last().map_or(0, |e| e.seq),
                        "a snapshot covers its batch's events"
                    );
                    self.snapshots += 1;
                    self.snapshot = Some(s);
                    self.tail.clear();
                }
                None => self.tail.extend(b.events),
            }
        }
    }

    #[test]
    fn snapshots_are_due_when_a_batch_crosses_a_multiple() {
        assert!(!snapshot_due(SNAPSHOT_EVERY - 10, SNAPSHOT_EVERY - 1));
        assert!(snapshot_due(SNAPSHOT_EVERY - 1, SNAPSHOT_EVERY));
        assert!(snapshot_due(SNAPSHOT_EVERY - 2, SNAPSHOT_EVERY + 3));
        assert!(!snapshot_due(SNAPSHOT_EVERY, SNAPSHOT_EVERY + 60));
        assert!(snapshot_due(2 * SNAPSHOT_EVERY - 1, 2 * SNAPSHOT_EVERY));
        assert!(!snapshot_due(7, 7), "an empty batch never");
        assert!(!snapshot_due(1, 1 + MAX_BATCH_EVENTS));
        assert!(
            snapshot_due(1, 2 + MAX_BATCH_EVENTS),
            "a long batch carries a snapshot instead of its events"
        );
    }

    #[test]
    fn a_snapshot_and_its_tail_rebuild_the_customer_that_every_event_rebuilds() {
        let mut live = Customer::new(CustomerId(7), vec![]);
        live.attributes.tier = Some("gold".into());
        let mut kept = Kept::default();
        let mut durable = 0;
        let mut i = 0;
        while live.history().len() < (2 * SNAPSHOT_EVERY + 37) as usize {
            // Batches of one to three events, as commits come.
            for _ in 0..=(i % 3) {
                step(&mut live, i);
                i += 1;
            }
            let batch = JournalBatch::of(&live, durable, false, 5);
            durable = live.history().len() as u64;
            kept.take(batch);
        }
        let record = CustomerRecord::of(&live);
        let every_event = rebuild(Recovered {
            record: record.clone(),
            snapshot: None,
            events: live.history().to_vec(),
        });
        assert_eq!(
            kept.snapshots, 2,
            "one snapshot per {SNAPSHOT_EVERY} events"
        );
        assert!(
            kept.tail.len() < SNAPSHOT_EVERY as usize,
            "only the tail is left to replay: {} events",
            kept.tail.len()
        );
        assert_eq!(
            kept.tail.first().map(|e| e.seq),
            kept.snapshot.as_ref().map(|s| s.history.last_seq() + 1),
            "the tail starts right after the snapshot"
        );
        let from_snapshot = rebuild(Recovered {
            record,
            snapshot: kept.snapshot,
            events: kept.tail,
        });
        assert_eq!(from_snapshot, every_event, "same customer either way");
        assert_eq!(from_snapshot, live, "and the one that was live");
    }

    #[test]
    fn rebuild_starts_from_the_snapshot_and_replays_only_what_follows() {
        let mut live = Customer::new(CustomerId(8), vec![]);
        for i in 0..12 {
            step(&mut live, i);
        }
        let mut snapshot = live.open.clone().expect("open");
        // No event sets this: seen after a rebuild only if the snapshot
        // was taken as it is rather than replayed.
        snapshot.opened_at = 42;
        let covered = snapshot.history.last_seq();
        for i in 12..15 {
            step(&mut live, i);
        }
        let rebuilt = rebuild(Recovered {
            record: CustomerRecord::of(&live),
            snapshot: Some(Box::new(snapshot)),
            // A store may hand over events the snapshot covers: skipped.
            events: live.history()[covered as usize - 2..].to_vec(),
        });
        let open = rebuilt.open.expect("open");
        assert_eq!(open.opened_at, 42, "the snapshot's state");
        assert_eq!(open.history.events(), live.history(), "the whole history");

        let mut other = live.clone();
        other.open.as_mut().expect("open").id.number += 1;
        let rebuilt = rebuild(Recovered {
            record: CustomerRecord::of(&live),
            snapshot: other.open.map(Box::new),
            events: live.history().to_vec(),
        });
        assert_eq!(
            rebuilt, live,
            "a snapshot of another conversation is not used"
        );
    }

    #[test]
    fn a_close_carries_the_whole_history_and_no_snapshot() {
        let mut live = Customer::new(CustomerId(9), vec![]);
        for i in 0..(SNAPSHOT_EVERY + 3) {
            step(&mut live, i);
        }
        let b = JournalBatch::of(&live, SNAPSHOT_EVERY - 1, true, 3);
        assert!(b.closed && b.snapshot.is_none());
        assert_eq!(b.record.open, None);
        assert_eq!(b.events.len(), live.history().len(), "from seq 1");
    }
}
