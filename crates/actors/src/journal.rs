//! The journal port: where customer actors make their changes durable.
//!
//! A customer actor commits a [`JournalBatch`] (the new history events of
//! its open conversation, plus its customer record) and acknowledges the
//! caller only after the commit returned `Ok`. Implementations live in
//! `centralino-cluster` (in memory for `dev`, etcd for clusters); they may
//! group many batches into one write, but must return only once the batch
//! is durable, and must refuse a batch whose fencing token is no longer the
//! owner's.

use centralino_core::customer::{Attributes, Customer};
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
        }
    }
}

/// One durable change of one customer.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalBatch {
    pub record: CustomerRecord,
    /// New events of `record.open` (or of the conversation just closed).
    pub conversation: Option<ConversationId>,
    pub events: Vec<HistoryEvent>,
    /// The conversation was resolved: its history leaves the journal for
    /// the archive. A closing batch should carry the whole history (from
    /// seq 1), so the store need not read it back; one that carries only
    /// the new events is accepted too.
    pub closed: bool,
    /// The owner's fencing token.
    pub token: u64,
}

/// What a customer actor recovers from.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    pub record: CustomerRecord,
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
}

/// Durable storage of active conversations.
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Makes the batch durable; returns once it is.
    async fn commit(&self, batch: JournalBatch) -> Result<(), JournalError>;
    /// The customer's record and open conversation's events, if any.
    async fn recover(&self, customer: CustomerId) -> Result<Option<Recovered>, JournalError>;
}

/// Rebuilds a customer from its record and events: the state is a function
/// of the events (see `centralino_core::customer`), so replaying them
/// through the same transitions gives back the same customer.
pub fn rebuild(r: Recovered) -> Customer {
    use centralino_core::customer::Contact;
    use centralino_core::history::EventKind;
    let mut c = Customer::new(r.record.id, r.record.identities.clone());
    c.attributes = r.record.attributes.clone();
    if let Some(open) = r.record.open {
        c.opened = open.number.saturating_sub(1);
        for e in r.events {
            match e.kind {
                EventKind::CustomerMessage {
                    channel,
                    identity,
                    text,
                    topic,
                    sentiment,
                } => {
                    c.contact(
                        e.at,
                        Contact {
                            channel,
                            identity,
                            topic,
                            text,
                            sentiment,
                            attributes: Attributes::default(),
                        },
                    );
                }
                kind => {
                    let _ = c.record(e.at, open, kind);
                }
            }
        }
    }
    c.opened = r.record.opened;
    c.last_agent = r.record.last_agent;
    c.identities = r.record.identities;
    c
}
