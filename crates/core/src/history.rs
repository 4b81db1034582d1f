//! A conversation's history: what happened, in acceptance order.
//!
//! Architecture invariant: sequence numbers are contiguous per conversation,
//! starting at 1, in the order the customer's owner accepted the events. The
//! history is append-only; nothing rewrites an accepted event.

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, Identity};
use crate::explain::Explanation;
use crate::ids::{AgentId, CampaignId, ConversationId, CustomerId, OfferId, QueueId};
use crate::time::TimeMs;

/// One accepted event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub seq: u64,
    pub at: TimeMs,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    CustomerMessage {
        channel: Channel,
        identity: Identity,
        text: String,
        topic: String,
        sentiment: Option<f64>,
    },
    AgentMessage {
        agent: AgentId,
        channel: Channel,
        text: String,
    },
    Queued {
        queue: QueueId,
        channel: Channel,
    },
    Offered {
        agent: AgentId,
        offer: OfferId,
        explanation: Box<Explanation>,
    },
    OfferRejected {
        agent: AgentId,
        offer: OfferId,
        reason: String,
    },
    OfferTimedOut {
        agent: AgentId,
        offer: OfferId,
    },
    Assigned {
        agent: AgentId,
    },
    Transferred {
        from: AgentId,
        to: TransferTarget,
        note: String,
    },
    CallbackRequested {
        channel: Channel,
        to: Identity,
        not_before: TimeMs,
    },
    WrappedUp {
        agent: AgentId,
        disposition: String,
    },
    Resolved {
        by: String,
    },
    IdentityLinked {
        identity: Identity,
    },
    /// Customer `from` (with these identities) turned out to be this one:
    /// what follows, up to the next event of another kind, is its open
    /// conversation (see `customer`, "Merging").
    Merged {
        from: CustomerId,
        identities: Vec<Identity>,
        /// Since when it waited, if it was waiting: the conversation keeps
        /// the earlier place of the two.
        #[serde(default)]
        waiting_since: Option<TimeMs>,
    },
    /// One event of a merged customer's conversation, as it was (its own
    /// sequence number and time).
    Absorbed {
        conversation: ConversationId,
        event: Box<HistoryEvent>,
    },
    /// The last event of a customer that turned out to be `into`: its
    /// conversation closes here and continues in `into`'s.
    MergedInto {
        into: CustomerId,
    },
    /// A campaign's message went out to the customer (proactive outbound):
    /// recorded in the same history as everything inbound, so the agent
    /// who takes the customer's reply sees what the customer was told.
    Notice {
        campaign: CampaignId,
        channel: Channel,
        to: Identity,
        text: String,
        /// The topic of the conversation it opened (replies route by it).
        topic: String,
    },
    /// A bot (virtual agent) talked with the customer and hands the
    /// conversation over to a human, with what was said: the customer
    /// repeats nothing. It is a contact of the customer's, like a
    /// [`EventKind::CustomerMessage`] (the fields the same), and the lines
    /// keep the order in which they were said.
    BotTranscript {
        bot: String,
        channel: Channel,
        identity: Identity,
        topic: String,
        sentiment: Option<f64>,
        /// Why the bot hands over, in a line, for the agent.
        summary: String,
        lines: Vec<TranscriptLine>,
    },
    /// The customer left while waiting (hung up, closed the chat) on
    /// `channel`: the conversation closes unanswered, an abandon for the
    /// KPIs.
    Abandoned {
        channel: Channel,
    },
}

/// Who said a line of a bot's transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Speaker {
    Customer,
    Bot,
}

/// One line of a bot's conversation with the customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    pub from: Speaker,
    pub text: String,
    /// When it was said, as the bot's gateway says.
    pub at: TimeMs,
}

/// Where a transfer sends a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferTarget {
    Queue(QueueId),
    Agent(AgentId),
}

/// An append-only, contiguously numbered list of events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    events: Vec<HistoryEvent>,
}

impl History {
    /// Appends an event and returns its sequence number.
    pub fn push(&mut self, at: TimeMs, kind: EventKind) -> u64 {
        let seq = self.events.len() as u64 + 1;
        self.events.push(HistoryEvent { seq, at, kind });
        seq
    }

    pub fn events(&self) -> &[HistoryEvent] {
        &self.events
    }

    pub fn last_seq(&self) -> u64 {
        self.events.len() as u64
    }

    /// Drops the events after the first `len`: undoes appends that could
    /// not be made durable (they were never acknowledged).
    pub fn truncate(&mut self, len: usize) {
        self.events.truncate(len);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events after `seq` (exclusive): what a journal has not stored yet.
    pub fn since(&self, seq: u64) -> &[HistoryEvent] {
        let from = (seq as usize).min(self.events.len());
        &self.events[from..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_contiguous_from_one() {
        let mut h = History::default();
        for i in 0..5 {
            let seq = h.push(i, EventKind::Resolved { by: "test".into() });
            assert_eq!(seq, i + 1);
        }
        assert!(h.events().windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(h.since(3).len(), 2);
        assert_eq!(h.since(99).len(), 0);
    }
}
