//! Customers and their conversations.
//!
//! A customer is one person whatever the channel; it has at most one open
//! conversation, which every contact on any channel joins (omnichannel
//! continuity), and whose history is the whole cross-channel timeline.
//!
//! The conversation's state follows the router's decisions:
//!
//! ```text
//!            offer              accept
//! Queued ──────────▶ Offered ──────────▶ Assigned ──wrap up──▶ WrappedUp
//!   ▲  ◀── reject/timeout ──┘               │                     │
//!   └──────────── transfer / agent left ────┘   new contact ──────┘
//! any open state ──resolve──▶ Resolved (closed; the next contact opens a new one)
//! ```
//!
//! Architecture invariant: every change is an event appended to the history
//! (contiguous sequence numbers), and the state is a function of the events.

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, Identity};
use crate::error::{CoreError, Result};
use crate::history::{EventKind, History, HistoryEvent};
use crate::ids::{AgentId, ConversationId, CustomerId, QueueId};
use crate::time::TimeMs;

/// Longest message text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// What is known about a customer; `None` is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub tier: Option<String>,
    pub segment: Option<String>,
    pub language: Option<String>,
}

impl Attributes {
    /// Takes every attribute `newer` knows.
    pub fn update(&mut self, newer: &Attributes) {
        for (mine, theirs) in [
            (&mut self.tier, &newer.tier),
            (&mut self.segment, &newer.segment),
            (&mut self.language, &newer.language),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationState {
    Queued,
    Offered,
    Assigned,
    WrappedUp,
    Resolved,
}

/// A conversation: one customer's thread across every channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub state: ConversationState,
    /// The channel it is being routed or served on (the latest contact's).
    pub channel: Channel,
    pub topic: String,
    pub sentiment: Option<f64>,
    pub queue: Option<QueueId>,
    pub agent: Option<AgentId>,
    pub opened_at: TimeMs,
    /// When the customer started waiting for this routing round.
    pub waiting_since: TimeMs,
    /// The address last used on each channel, for replies.
    pub reply_to: Vec<(Channel, Identity)>,
    pub history: History,
}

impl Conversation {
    /// A copy of everything but the history, and the history's length.
    fn checkpoint(&self) -> (Conversation, usize) {
        let copy = Conversation {
            id: self.id,
            state: self.state,
            channel: self.channel,
            topic: self.topic.clone(),
            sentiment: self.sentiment,
            queue: self.queue.clone(),
            agent: self.agent.clone(),
            opened_at: self.opened_at,
            waiting_since: self.waiting_since,
            reply_to: self.reply_to.clone(),
            history: History::default(),
        };
        (copy, self.history.len())
    }

    pub fn reply_address(&self, channel: Channel) -> Option<&Identity> {
        self.reply_to
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, i)| i)
    }
}

/// A contact as it reaches the customer, already validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub channel: Channel,
    pub identity: Identity,
    pub topic: String,
    pub text: String,
    pub sentiment: Option<f64>,
    pub attributes: Attributes,
}

/// What routing must do after a contact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoutingNeed {
    /// Start routing: a new conversation, or a wrapped-up one the customer
    /// came back to.
    Enqueue,
    /// Being routed or served on another channel: take it back and route it
    /// again on `channel`, keeping its place and preferring its agent.
    Reroute { from: Channel },
    /// Already with an agent on this channel: pass the message on.
    Forward(AgentId),
    /// Already waiting on this channel: nothing to do.
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContactOutcome {
    pub conversation: ConversationId,
    pub seq: u64,
    pub joined_existing: bool,
    pub need: RoutingNeed,
}

/// The state of a customer before a change, to undo it if it cannot be
/// made durable: everything but the history, which is append-only and so
/// only needs its length.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    customer: Customer,
    open: Option<(Conversation, usize)>,
}

/// A customer and their open conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub attributes: Attributes,
    pub identities: Vec<Identity>,
    pub open: Option<Conversation>,
    /// Conversations ever opened (the next one's number is this + 1).
    pub opened: u32,
    /// The agent who last served them, and when, for continuity.
    pub last_agent: Option<(AgentId, TimeMs)>,
}

impl Customer {
    pub fn new(id: CustomerId, identities: Vec<Identity>) -> Self {
        Customer {
            id,
            attributes: Attributes::default(),
            identities,
            open: None,
            opened: 0,
            last_agent: None,
        }
    }

    /// A contact on any channel: joins the open conversation or opens one.
    pub fn contact(&mut self, now: TimeMs, c: Contact) -> ContactOutcome {
        self.attributes.update(&c.attributes);
        if !self.identities.contains(&c.identity) {
            self.identities.push(c.identity.clone());
        }
        let joined_existing = self.open.is_some();
        let conv = match &mut self.open {
            Some(conv) => conv,
            None => {
                self.opened += 1;
                let id = ConversationId {
                    customer: self.id,
                    number: self.opened,
                };
                self.open.insert(Conversation {
                    id,
                    state: ConversationState::Queued,
                    channel: c.channel,
                    topic: c.topic.clone(),
                    sentiment: c.sentiment,
                    queue: None,
                    agent: None,
                    opened_at: now,
                    waiting_since: now,
                    reply_to: Vec::new(),
                    history: History::default(),
                })
            }
        };
        let previous = conv.channel;
        let need = if !joined_existing {
            RoutingNeed::Enqueue
        } else {
            match conv.state {
                ConversationState::WrappedUp => {
                    conv.waiting_since = now;
                    RoutingNeed::Enqueue
                }
                _ if previous != c.channel => RoutingNeed::Reroute { from: previous },
                ConversationState::Assigned => conv
                    .agent
                    .clone()
                    .map_or(RoutingNeed::None, RoutingNeed::Forward),
                _ => RoutingNeed::None,
            }
        };
        conv.channel = c.channel;
        if !c.topic.is_empty() {
            conv.topic.clone_from(&c.topic);
        }
        if c.sentiment.is_some() {
            conv.sentiment = c.sentiment;
        }
        conv.reply_to.retain(|(ch, _)| *ch != c.channel);
        conv.reply_to.push((c.channel, c.identity.clone()));
        let seq = conv.history.push(
            now,
            EventKind::CustomerMessage {
                channel: c.channel,
                identity: c.identity,
                text: c.text,
                topic: c.topic,
                sentiment: c.sentiment,
            },
        );
        ContactOutcome {
            conversation: conv.id,
            seq,
            joined_existing,
            need,
        }
    }

    /// The open conversation, if it is `id`.
    pub fn conversation(&self, id: ConversationId) -> Result<&Conversation> {
        self.open
            .as_ref()
            .filter(|c| c.id == id)
            .ok_or(CoreError::UnknownConversation(id))
    }

    fn conversation_mut(&mut self, id: ConversationId) -> Result<&mut Conversation> {
        self.open
            .as_mut()
            .filter(|c| c.id == id)
            .ok_or(CoreError::UnknownConversation(id))
    }

    /// Records a routing event and moves the state accordingly.
    pub fn record(&mut self, now: TimeMs, id: ConversationId, kind: EventKind) -> Result<u64> {
        let conv = self
            .open
            .as_mut()
            .filter(|c| c.id == id)
            .ok_or(CoreError::UnknownConversation(id))?;
        match &kind {
            EventKind::Queued { queue, channel } => {
                conv.state = ConversationState::Queued;
                conv.queue = Some(queue.clone());
                conv.channel = *channel;
                conv.agent = None;
            }
            EventKind::Offered { agent, .. } => {
                conv.state = ConversationState::Offered;
                conv.agent = Some(agent.clone());
            }
            EventKind::OfferRejected { .. } | EventKind::OfferTimedOut { .. } => {
                conv.state = ConversationState::Queued;
                conv.agent = None;
            }
            EventKind::Transferred { to, .. } => {
                conv.state = ConversationState::Queued;
                conv.agent = None;
                if let crate::history::TransferTarget::Queue(q) = to {
                    conv.queue = Some(q.clone());
                }
            }
            EventKind::Assigned { agent } => {
                conv.state = ConversationState::Assigned;
                conv.agent = Some(agent.clone());
                self.last_agent = Some((agent.clone(), now));
            }
            EventKind::WrappedUp { agent, .. } => {
                conv.state = ConversationState::WrappedUp;
                conv.agent = None;
                self.last_agent = Some((agent.clone(), now));
            }
            EventKind::Resolved { .. } => conv.state = ConversationState::Resolved,
            EventKind::CallbackRequested { channel, to, .. } => {
                conv.channel = *channel;
                conv.reply_to.retain(|(ch, _)| ch != channel);
                conv.reply_to.push((*channel, to.clone()));
            }
            EventKind::CustomerMessage { .. }
            | EventKind::AgentMessage { .. }
            | EventKind::IdentityLinked { .. } => {}
        }
        let seq = conv.history.push(now, kind);
        Ok(seq)
    }

    /// An agent's reply: only the assigned agent may write.
    pub fn agent_reply(
        &mut self,
        now: TimeMs,
        id: ConversationId,
        agent: &AgentId,
        text: String,
    ) -> Result<(u64, Channel, Identity)> {
        let conv = self.conversation_mut(id)?;
        if conv.state != ConversationState::Assigned || conv.agent.as_ref() != Some(agent) {
            return Err(CoreError::NotAssigned {
                conversation: id,
                agent: agent.clone(),
            });
        }
        let channel = conv.channel;
        let to = conv
            .reply_address(channel)
            .or_else(|| conv.reply_to.last().map(|(_, i)| i))
            .cloned();
        let to = to.ok_or_else(|| {
            CoreError::invalid(
                "conversation_id",
                "the conversation has no address to reply to",
            )
        })?;
        let seq = conv.history.push(
            now,
            EventKind::AgentMessage {
                agent: agent.clone(),
                channel,
                text,
            },
        );
        Ok((seq, channel, to))
    }

    /// Checks that `agent` holds the open conversation `id`.
    pub fn check_assigned(&self, id: ConversationId, agent: &AgentId) -> Result<()> {
        let conv = self.conversation(id)?;
        if conv.state == ConversationState::Assigned && conv.agent.as_ref() == Some(agent) {
            Ok(())
        } else {
            Err(CoreError::NotAssigned {
                conversation: id,
                agent: agent.clone(),
            })
        }
    }

    /// Closes the open conversation `id`; returns it with its final history.
    pub fn resolve(&mut self, now: TimeMs, id: ConversationId, by: &str) -> Result<Conversation> {
        self.record(now, id, EventKind::Resolved { by: by.to_owned() })?;
        let closed = self.open.take().ok_or(CoreError::UnknownConversation(id))?;
        Ok(closed)
    }

    /// Remembers the current state (cheaply: histories are not copied).
    pub fn checkpoint(&self) -> Checkpoint {
        let customer = Customer {
            id: self.id,
            attributes: self.attributes.clone(),
            identities: self.identities.clone(),
            open: None,
            opened: self.opened,
            last_agent: self.last_agent.clone(),
        };
        Checkpoint {
            customer,
            open: self.open.as_ref().map(Conversation::checkpoint),
        }
    }

    /// Returns to `cp`, undoing every change since. `closed` is the
    /// conversation a resolve took out, if the change was a resolve.
    pub fn restore(&mut self, cp: Checkpoint, closed: Option<Conversation>) {
        let current = self.open.take().or(closed);
        *self = cp.customer;
        if let Some((mut conv, len)) = cp.open {
            if let Some(current) = current.filter(|c| c.id == conv.id) {
                conv.history = current.history;
                conv.history.truncate(len);
            }
            self.open = Some(conv);
        }
    }

    /// The open conversation's history.
    pub fn history(&self) -> &[HistoryEvent] {
        self.open.as_ref().map_or(&[], |c| c.history.events())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::IdentityKind;

    fn contact(channel: Channel, kind: IdentityKind, addr: &str, text: &str) -> Contact {
        Contact {
            channel,
            identity: Identity::new(kind, addr),
            topic: "billing".into(),
            text: text.into(),
            sentiment: None,
            attributes: Attributes::default(),
        }
    }

    #[test]
    fn a_voice_call_joins_the_open_chat_conversation() {
        let mut c = Customer::new(CustomerId(1), vec![]);
        let first = c.contact(
            10,
            contact(Channel::Chat, IdentityKind::ChatSession, "s1", "hello"),
        );
        assert_eq!(first.need, RoutingNeed::Enqueue);
        assert!(!first.joined_existing);
        c.record(
            11,
            first.conversation,
            EventKind::Queued {
                queue: "general".into(),
                channel: Channel::Chat,
            },
        )
        .unwrap();
        let second = c.contact(
            20,
            contact(Channel::Voice, IdentityKind::Phone, "+39 1", "calling"),
        );
        assert!(second.joined_existing);
        assert_eq!(second.conversation, first.conversation);
        assert_eq!(
            second.need,
            RoutingNeed::Reroute {
                from: Channel::Chat
            }
        );
        let seqs: Vec<_> = c.history().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn restore_undoes_a_contact_a_routing_event_and_a_resolve() {
        let mut c = Customer::new(CustomerId(1), vec![]);
        let empty = c.checkpoint();
        let o = c.contact(
            0,
            contact(Channel::Chat, IdentityKind::ChatSession, "s1", "hi"),
        );
        c.restore(empty, None);
        assert!(
            c.open.is_none() && c.opened == 0 && c.identities.is_empty(),
            "a new conversation is undone"
        );

        let o2 = c.contact(
            0,
            contact(Channel::Chat, IdentityKind::ChatSession, "s1", "hi"),
        );
        assert_eq!(o2.conversation, o.conversation);
        let before = c.clone();
        let cp = c.checkpoint();
        c.record(
            1,
            o2.conversation,
            EventKind::Assigned {
                agent: "anna".into(),
            },
        )
        .unwrap();
        c.contact(
            2,
            contact(Channel::Voice, IdentityKind::Phone, "+391", "calling"),
        );
        c.restore(cp, None);
        assert_eq!(
            c, before,
            "events and state after the checkpoint are undone"
        );

        let cp = c.checkpoint();
        let closed = c.resolve(3, o2.conversation, "anna").unwrap();
        c.restore(cp, Some(closed));
        assert_eq!(c, before, "a resolve is undone, history included");
    }

    #[test]
    fn only_the_assigned_agent_replies_and_resolve_closes() {
        let mut c = Customer::new(CustomerId(1), vec![]);
        let o = c.contact(
            0,
            contact(Channel::Chat, IdentityKind::ChatSession, "s1", "hi"),
        );
        let a = AgentId::new("anna");
        assert!(
            c.agent_reply(1, o.conversation, &a, "hello".into())
                .is_err()
        );
        c.record(2, o.conversation, EventKind::Assigned { agent: a.clone() })
            .unwrap();
        let (_, ch, to) = c
            .agent_reply(3, o.conversation, &a, "hello".into())
            .unwrap();
        assert_eq!((ch, to.address.as_str()), (Channel::Chat, "s1"));
        assert!(
            c.agent_reply(3, o.conversation, &AgentId::new("bob"), "x".into())
                .is_err()
        );
        let closed = c.resolve(4, o.conversation, "anna").unwrap();
        assert_eq!(closed.state, ConversationState::Resolved);
        assert!(c.open.is_none());
        let next = c.contact(
            5,
            contact(Channel::Email, IdentityKind::Email, "m@x.it", "again"),
        );
        assert_eq!(next.conversation.number, 2);
    }
}
