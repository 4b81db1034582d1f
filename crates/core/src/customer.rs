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
//! Queued, Offered ──customer leaves──▶ Abandoned (closed, unanswered)
//!
//! campaign notice ──▶ Notified ──customer replies (any channel)──▶ Queued
//! ```
//!
//! A campaign's notice to a customer without an open conversation opens
//! one in `Notified`: nobody routes it until the customer replies, and the
//! reply joins it (inbound and outbound share one history). A notice to a
//! customer with an open conversation joins that one. Each notice leaves a
//! [`CampaignMark`] on the customer, so that a campaign never reaches the
//! same customer twice and knows who replied.
//!
//! Architecture invariant: every change is an event appended to the history
//! (contiguous sequence numbers), and the state is a function of the events.
//!
//! # Merging
//!
//! Two customers found to be one person (a gateway links an identity of one
//! to a contact of the other) are merged: the survivor [`Customer::absorb`]s
//! the other's identities, what is known of it, and its open
//! conversation's history: a `Merged` event, then each absorbed event
//! wrapped in an `Absorbed` one that keeps its own sequence number and
//! time, so the survivor's history stays contiguous while a timeline sorted
//! by time interleaves the two. If the absorbed customer had waited longer,
//! the survivor's conversation takes its place in the queue. The absorbed
//! customer is [`Customer::merge_into`] the survivor: its conversation ends
//! with a `MergedInto` event (and is closed, like a resolved one) and the
//! customer stays a tombstone that sends whoever comes to it to the
//! survivor. Absorbing is idempotent per event.

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, Identity};
use crate::error::{CoreError, Result};
use crate::history::{EventKind, History, HistoryEvent, TranscriptLine};
use crate::ids::{AgentId, CampaignId, ConversationId, CustomerId, QueueId};
use crate::time::TimeMs;

/// Longest message text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Most campaign marks a customer keeps (the latest ones): see
/// [`CampaignMark`].
pub const MAX_CAMPAIGN_MARKS: usize = 32;

/// What is known about a customer; `None` is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub tier: Option<String>,
    pub segment: Option<String>,
    pub language: Option<String>,
    /// The customer's contract (e.g. "premium"), for routing rules.
    #[serde(default)]
    pub contract: Option<String>,
    /// The channel the customer would rather be reached on (outbound).
    #[serde(default)]
    pub preferred_channel: Option<Channel>,
    /// The customer's IANA time zone (e.g. "Europe/Rome"), for quiet
    /// hours; checked where it enters (see [`crate::campaign::quiet`]).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The channels the customer declined to be contacted on (consent):
    /// `Some` is the whole current list (empty: no restriction).
    #[serde(default)]
    pub do_not_contact: Option<Vec<Channel>>,
}

impl Attributes {
    /// Takes every attribute `newer` knows.
    pub fn update(&mut self, newer: &Attributes) {
        for (mine, theirs) in [
            (&mut self.tier, &newer.tier),
            (&mut self.segment, &newer.segment),
            (&mut self.language, &newer.language),
            (&mut self.contract, &newer.contract),
            (&mut self.time_zone, &newer.time_zone),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        if newer.preferred_channel.is_some() {
            self.preferred_channel = newer.preferred_channel;
        }
        if newer.do_not_contact.is_some() {
            self.do_not_contact.clone_from(&newer.do_not_contact);
        }
    }

    /// Whether the customer declined contact on `channel`.
    pub fn declined(&self, channel: Channel) -> bool {
        self.do_not_contact
            .as_ref()
            .is_some_and(|d| d.contains(&channel))
    }
}

/// That a campaign reached the customer: in which conversation, on which
/// channel, when, and whether the customer has replied since. A customer
/// keeps the latest [`MAX_CAMPAIGN_MARKS`], so a campaign that runs again
/// (its node died) does not reach the customer twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignMark {
    pub campaign: CampaignId,
    pub conversation: ConversationId,
    pub channel: Channel,
    pub at: TimeMs,
    pub replied: bool,
}

/// A campaign's message, as it reaches the customer: already planned (the
/// channel and address chosen, consent and quiet hours respected, see
/// [`crate::campaign::plan`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub campaign: CampaignId,
    pub channel: Channel,
    pub to: Identity,
    pub text: String,
    /// The topic of a conversation the notice opens.
    pub topic: String,
}

/// A bot's hand-over to a human, already validated: a contact of the
/// customer's that carries what the bot and the customer said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandOver {
    pub bot: String,
    pub channel: Channel,
    pub identity: Identity,
    pub topic: String,
    pub sentiment: Option<f64>,
    pub attributes: Attributes,
    pub summary: String,
    pub transcript: Vec<TranscriptLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationState {
    Queued,
    Offered,
    Assigned,
    WrappedUp,
    Resolved,
    /// Opened by a campaign's notice; waits for the customer's reply.
    Notified,
    /// The customer left while waiting (closed, unanswered).
    Abandoned,
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
    /// Whether it was (or, resolved now, would be) resolved at first
    /// contact: one agent took it, once, and nobody transferred it.
    pub fn resolved_at_first_contact(&self) -> bool {
        let mut assigned = 0;
        for e in self.history.events() {
            match &e.kind {
                EventKind::Assigned { .. } => assigned += 1,
                EventKind::Transferred { .. } => return false,
                _ => {}
            }
        }
        assigned == 1
    }

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
    /// Campaigns whose notice this contact is the customer's first reply to.
    #[serde(default)]
    pub replied_to: Vec<CampaignId>,
}

/// How a contact joined the customer's conversations (see `Customer::join`).
struct Joined {
    joined_existing: bool,
    need: RoutingNeed,
    replied_to: Vec<CampaignId>,
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
    /// Merged into this customer: a tombstone (see "Merging").
    #[serde(default)]
    pub merged_into: Option<CustomerId>,
    /// The latest campaigns that reached them, oldest first.
    #[serde(default)]
    pub campaigns: Vec<CampaignMark>,
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
            merged_into: None,
            campaigns: Vec::new(),
        }
    }

    /// Takes in `other`, the same person (see "Merging"): its identities,
    /// the attributes this customer does not know, the later of the two
    /// last agents, and its open conversation's events after those already
    /// absorbed, into this customer's open conversation. Returns whether
    /// anything was recorded. Fails if this customer has no open
    /// conversation (the merge is told in it) or `other` is this one.
    pub fn absorb(&mut self, now: TimeMs, other: &Customer) -> Result<bool> {
        if other.id == self.id {
            return Err(CoreError::invalid(
                "link_identities",
                "a customer cannot be merged with itself",
            ));
        }
        let open = self.open.as_ref().map(|c| c.id).ok_or_else(|| {
            CoreError::invalid(
                "link_identities",
                "the customer to merge into has no open conversation",
            )
        })?;
        for i in &other.identities {
            if !self.identities.contains(i) {
                self.identities.push(i.clone());
            }
        }
        let known = self.attributes.clone();
        self.attributes = other.attributes.clone();
        self.attributes.update(&known);
        if let Some((agent, at)) = &other.last_agent
            && self.last_agent.as_ref().is_none_or(|(_, mine)| mine < at)
        {
            self.last_agent = Some((agent.clone(), *at));
        }
        let conv = self.conversation(open)?;
        let merged_before = conv
            .history
            .events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Merged { from, .. } if *from == other.id));
        let absorbed = |theirs: ConversationId| -> u64 {
            conv.history
                .events()
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Absorbed {
                        conversation,
                        event,
                    } if *conversation == theirs => Some(event.seq),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        };
        let theirs = other.open.as_ref();
        let since = theirs.map_or(0, |c| absorbed(c.id));
        let new_events: Vec<HistoryEvent> = theirs
            .map(|c| c.history.since(since).to_vec())
            .unwrap_or_default();
        if merged_before && new_events.is_empty() {
            return Ok(false);
        }
        // The survivor keeps the earlier place in the queue of the two.
        let their_wait = theirs
            .filter(|c| {
                matches!(
                    c.state,
                    ConversationState::Queued | ConversationState::Offered
                )
            })
            .map(|c| c.waiting_since);
        if !merged_before {
            self.record(
                now,
                open,
                EventKind::Merged {
                    from: other.id,
                    identities: other.identities.clone(),
                    waiting_since: their_wait,
                },
            )?;
        }
        for event in new_events {
            let conversation = theirs.map(|c| c.id).unwrap_or(open);
            self.record(
                now,
                open,
                EventKind::Absorbed {
                    conversation,
                    event: Box::new(event),
                },
            )?;
        }
        Ok(true)
    }

    /// This customer turned out to be `into` (see "Merging"): from now on
    /// it is a tombstone, and its open conversation, if any, ends with a
    /// `MergedInto` event; returns that conversation's id, for the caller
    /// to close it (archive it) as a resolve does.
    pub fn merge_into(&mut self, now: TimeMs, into: CustomerId) -> Option<ConversationId> {
        self.merged_into = Some(into);
        let id = self.open.as_ref()?.id;
        self.record(now, id, EventKind::MergedInto { into }).ok()?;
        Some(id)
    }

    /// A contact on any channel: joins the open conversation or opens one.
    pub fn contact(&mut self, now: TimeMs, c: Contact) -> ContactOutcome {
        let j = self.join(
            now,
            c.channel,
            &c.identity,
            &c.topic,
            c.sentiment,
            &c.attributes,
        );
        let kind = EventKind::CustomerMessage {
            channel: c.channel,
            identity: c.identity,
            text: c.text,
            topic: c.topic,
            sentiment: c.sentiment,
        };
        self.joined_with(now, j, kind)
    }

    /// A bot hands the customer over to a human: a contact like
    /// [`Customer::contact`] (it joins the open conversation or opens one,
    /// and needs routing alike), whose event carries the bot's transcript.
    pub fn hand_over(&mut self, now: TimeMs, h: HandOver) -> ContactOutcome {
        let j = self.join(
            now,
            h.channel,
            &h.identity,
            &h.topic,
            h.sentiment,
            &h.attributes,
        );
        let kind = EventKind::BotTranscript {
            bot: h.bot,
            channel: h.channel,
            identity: h.identity,
            topic: h.topic,
            sentiment: h.sentiment,
            summary: h.summary,
            lines: h.transcript,
        };
        self.joined_with(now, j, kind)
    }

    /// Appends the event of a contact that [`Customer::join`] placed.
    fn joined_with(&mut self, now: TimeMs, j: Joined, kind: EventKind) -> ContactOutcome {
        let Some(conv) = self.open.as_mut() else {
            debug_assert!(false, "join leaves an open conversation");
            return ContactOutcome {
                conversation: ConversationId {
                    customer: self.id,
                    number: self.opened,
                },
                seq: 0,
                joined_existing: j.joined_existing,
                need: RoutingNeed::None,
                replied_to: j.replied_to,
            };
        };
        let seq = conv.history.push(now, kind);
        ContactOutcome {
            conversation: conv.id,
            seq,
            joined_existing: j.joined_existing,
            need: j.need,
            replied_to: j.replied_to,
        }
    }

    /// Joins the open conversation or opens one, for a contact of the
    /// customer's on `channel` from `identity`: what routing it needs, and
    /// which campaigns' notices it replies to. The caller appends the event.
    fn join(
        &mut self,
        now: TimeMs,
        channel: Channel,
        identity: &Identity,
        topic: &str,
        sentiment: Option<f64>,
        attributes: &Attributes,
    ) -> Joined {
        self.attributes.update(attributes);
        if !self.identities.contains(identity) {
            self.identities.push(identity.clone());
        }
        let joined_existing = self.open.is_some();
        let conv = self.open_or_join(now, ConversationState::Queued, channel, topic, sentiment);
        let previous = conv.channel;
        let need = if !joined_existing {
            RoutingNeed::Enqueue
        } else {
            match conv.state {
                // Nobody works on it: this contact starts a routing round.
                ConversationState::WrappedUp | ConversationState::Notified => {
                    conv.waiting_since = now;
                    RoutingNeed::Enqueue
                }
                _ if previous != channel => RoutingNeed::Reroute { from: previous },
                ConversationState::Assigned => conv
                    .agent
                    .clone()
                    .map_or(RoutingNeed::None, RoutingNeed::Forward),
                _ => RoutingNeed::None,
            }
        };
        conv.channel = channel;
        if !topic.is_empty() {
            conv.topic = topic.to_owned();
        }
        if sentiment.is_some() {
            conv.sentiment = sentiment;
        }
        conv.reply_to.retain(|(ch, _)| *ch != channel);
        conv.reply_to.push((channel, identity.clone()));
        let conv_id = conv.id;
        let mut replied_to = Vec::new();
        for m in self
            .campaigns
            .iter_mut()
            .filter(|m| m.conversation == conv_id && !m.replied)
        {
            m.replied = true;
            replied_to.push(m.campaign.clone());
        }
        Joined {
            joined_existing,
            need,
            replied_to,
        }
    }

    /// The open conversation, or a new one that starts in `state` on
    /// `channel` (numbered after the customer's last).
    fn open_or_join(
        &mut self,
        now: TimeMs,
        state: ConversationState,
        channel: Channel,
        topic: &str,
        sentiment: Option<f64>,
    ) -> &mut Conversation {
        if self.open.is_none() {
            self.opened += 1;
        }
        let id = ConversationId {
            customer: self.id,
            number: self.opened,
        };
        self.open.get_or_insert_with(|| Conversation {
            id,
            state,
            channel,
            topic: topic.to_owned(),
            sentiment,
            queue: None,
            agent: None,
            opened_at: now,
            waiting_since: now,
            reply_to: Vec::new(),
            history: History::default(),
        })
    }

    /// A campaign's notice goes out: it joins the open conversation, or
    /// opens one in [`ConversationState::Notified`]; the customer keeps a
    /// [`CampaignMark`]. Returns the conversation and the event's seq.
    pub fn notify(&mut self, now: TimeMs, n: Notice) -> (ConversationId, u64) {
        let conv = self.open_or_join(now, ConversationState::Notified, n.channel, &n.topic, None);
        // A reply on the notice's channel goes back to where it went.
        conv.reply_to.retain(|(ch, _)| *ch != n.channel);
        conv.reply_to.push((n.channel, n.to.clone()));
        let id = conv.id;
        let seq = conv.history.push(
            now,
            EventKind::Notice {
                campaign: n.campaign.clone(),
                channel: n.channel,
                to: n.to,
                text: n.text,
                topic: n.topic,
            },
        );
        self.campaigns.retain(|m| m.campaign != n.campaign);
        self.campaigns.push(CampaignMark {
            campaign: n.campaign,
            conversation: id,
            channel: n.channel,
            at: now,
            replied: false,
        });
        if self.campaigns.len() > MAX_CAMPAIGN_MARKS {
            let extra = self.campaigns.len() - MAX_CAMPAIGN_MARKS;
            self.campaigns.drain(..extra);
        }
        (id, seq)
    }

    /// The mark `campaign` left, if the customer still keeps it.
    pub fn campaign_mark(&self, campaign: &CampaignId) -> Option<&CampaignMark> {
        self.campaigns.iter().find(|m| &m.campaign == campaign)
    }

    /// Applies a journaled event of the open conversation `open` again,
    /// through the transition that made it (recovery from the journal):
    /// the customer's own contacts and notices (which may open the
    /// conversation) through theirs, everything else through
    /// [`Customer::record`].
    pub fn replay(&mut self, at: TimeMs, open: ConversationId, kind: EventKind) {
        match kind {
            EventKind::CustomerMessage {
                channel,
                identity,
                text,
                topic,
                sentiment,
            } => {
                self.contact(
                    at,
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
            EventKind::Notice {
                campaign,
                channel,
                to,
                text,
                topic,
            } => {
                self.notify(
                    at,
                    Notice {
                        campaign,
                        channel,
                        to,
                        text,
                        topic,
                    },
                );
            }
            EventKind::BotTranscript {
                bot,
                channel,
                identity,
                topic,
                sentiment,
                summary,
                lines,
            } => {
                self.hand_over(
                    at,
                    HandOver {
                        bot,
                        channel,
                        identity,
                        topic,
                        sentiment,
                        attributes: Attributes::default(),
                        summary,
                        transcript: lines,
                    },
                );
            }
            kind => {
                let _ = self.record(at, open, kind);
            }
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
            EventKind::Abandoned { .. } => {
                conv.state = ConversationState::Abandoned;
                conv.agent = None;
            }
            EventKind::Merged { waiting_since, .. } => {
                if let Some(w) = waiting_since {
                    conv.waiting_since = conv.waiting_since.min(*w);
                }
            }
            EventKind::CallbackRequested { channel, to, .. } => {
                conv.channel = *channel;
                conv.reply_to.retain(|(ch, _)| ch != channel);
                conv.reply_to.push((*channel, to.clone()));
            }
            EventKind::CustomerMessage { .. }
            | EventKind::AgentMessage { .. }
            | EventKind::IdentityLinked { .. }
            | EventKind::Absorbed { .. }
            | EventKind::MergedInto { .. }
            | EventKind::Notice { .. }
            | EventKind::BotTranscript { .. } => {}
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

    /// The customer left while waiting: records it on the open
    /// conversation, if it was waiting (queued or offered), which is then
    /// closed (the caller journals it closing, as after a resolution).
    /// Returns its id and the event's sequence number.
    pub fn abandon(&mut self, now: TimeMs, channel: Channel) -> Result<(ConversationId, u64)> {
        let conv = self.open.as_ref().ok_or_else(|| {
            CoreError::invalid(
                "identity",
                "the customer has no open conversation to abandon",
            )
        })?;
        if !matches!(
            conv.state,
            ConversationState::Queued | ConversationState::Offered
        ) {
            return Err(CoreError::invalid(
                "identity",
                format!(
                    "only a waiting conversation can be abandoned; this one is {:?} (an agent wraps up and resolves it)",
                    conv.state
                ),
            ));
        }
        let id = conv.id;
        let seq = self.record(now, id, EventKind::Abandoned { channel })?;
        Ok((id, seq))
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
            merged_into: self.merged_into,
            campaigns: self.campaigns.clone(),
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

    fn notice(campaign: &str, channel: Channel) -> Notice {
        Notice {
            campaign: CampaignId::new(campaign),
            channel,
            to: Identity::new(IdentityKind::Phone, "+39 1"),
            text: "an outage near you; we are on it".into(),
            topic: "outage".into(),
        }
    }

    #[test]
    fn a_notice_opens_a_conversation_that_the_reply_joins() {
        let mut c = Customer::new(CustomerId(1), vec![]);
        let (conv, seq) = c.notify(10, notice("incident", Channel::Sms));
        assert_eq!(seq, 1);
        let open = c.open.as_ref().expect("the notice opened one");
        assert_eq!(open.state, ConversationState::Notified);
        assert_eq!(
            open.reply_address(Channel::Sms).map(|i| i.address.as_str()),
            Some("+391")
        );
        assert_eq!(
            c.campaign_mark(&CampaignId::new("incident"))
                .map(|m| m.replied),
            Some(false)
        );
        // The reply, on another channel, joins it and starts routing.
        let reply = c.contact(
            20,
            contact(
                Channel::Email,
                IdentityKind::Email,
                "m@x.it",
                "is it fixed?",
            ),
        );
        assert_eq!(reply.conversation, conv);
        assert!(reply.joined_existing);
        assert_eq!(reply.need, RoutingNeed::Enqueue);
        assert_eq!(reply.replied_to, vec![CampaignId::new("incident")]);
        assert_eq!(c.open.as_ref().map(|o| o.waiting_since), Some(20));
        // Only the first reply counts.
        let again = c.contact(
            30,
            contact(Channel::Email, IdentityKind::Email, "m@x.it", "hello?"),
        );
        assert!(again.replied_to.is_empty());
        // Replaying the journal gives the same customer (marks come from
        // the record).
        let mut rebuilt = Customer::new(CustomerId(1), vec![]);
        for e in c.history().to_vec() {
            rebuilt.replay(e.at, conv, e.kind);
        }
        rebuilt.campaigns = c.campaigns.clone();
        rebuilt.identities = c.identities.clone();
        assert_eq!(rebuilt.open, c.open);
    }

    #[test]
    fn a_notice_joins_an_open_conversation_and_marks_are_bounded() {
        let mut c = Customer::new(CustomerId(1), vec![]);
        let o = c.contact(
            0,
            contact(Channel::Chat, IdentityKind::ChatSession, "s1", "hi"),
        );
        let (conv, seq) = c.notify(5, notice("incident", Channel::Sms));
        assert_eq!((conv, seq), (o.conversation, 2));
        assert_eq!(
            c.open.as_ref().map(|o| (o.state, o.channel)),
            Some((ConversationState::Queued, Channel::Chat)),
            "routing is not disturbed"
        );
        for i in 0..(MAX_CAMPAIGN_MARKS + 5) {
            c.notify(6, notice(&format!("c{i}"), Channel::Sms));
        }
        assert_eq!(c.campaigns.len(), MAX_CAMPAIGN_MARKS);
        assert!(
            c.campaign_mark(&CampaignId::new("incident")).is_none(),
            "the oldest went"
        );
    }

    #[test]
    fn a_bot_hand_over_is_a_contact_that_carries_the_transcript() {
        use crate::history::{Speaker, TranscriptLine};
        let mut c = Customer::new(CustomerId(1), vec![]);
        let line = |from, text: &str, at| TranscriptLine {
            from,
            text: text.into(),
            at,
        };
        let h = HandOver {
            bot: "assistant".into(),
            channel: Channel::Chat,
            identity: Identity::new(IdentityKind::ChatSession, "s1"),
            topic: "billing".into(),
            sentiment: Some(-0.5),
            attributes: Attributes::default(),
            summary: "wants a refund".into(),
            transcript: vec![
                line(Speaker::Customer, "my bill doubled", 1),
                line(Speaker::Bot, "I see two charges", 2),
                line(Speaker::Customer, "a human, please", 3),
            ],
        };
        let o = c.hand_over(10, h.clone());
        assert_eq!(
            (o.need, o.seq, o.joined_existing),
            (RoutingNeed::Enqueue, 1, false)
        );
        match &c.history()[0].kind {
            EventKind::BotTranscript { lines, summary, .. } => {
                assert_eq!(lines, &h.transcript);
                assert_eq!(summary, "wants a refund");
            }
            other => panic!("a transcript, not {other:?}"),
        }
        assert_eq!(c.open.as_ref().and_then(|o| o.sentiment), Some(-0.5));
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

    /// Anna wrote from the app (customer 2, waiting since 5), then from a
    /// chat session her gateway links to the app user (customer 1).
    fn two_annas() -> (Customer, Customer) {
        let mut app = Customer::new(CustomerId(2), vec![]);
        let mut c = contact(
            Channel::App,
            IdentityKind::AppUser,
            "anna",
            "my fiber is down",
        );
        c.attributes.tier = Some("gold".into());
        app.contact(5, c);
        let id = app.open.as_ref().unwrap().id;
        app.record(
            6,
            id,
            EventKind::Queued {
                queue: "tech".into(),
                channel: Channel::App,
            },
        )
        .unwrap();
        let mut chat = Customer::new(CustomerId(1), vec![]);
        let mut c = contact(Channel::Chat, IdentityKind::ChatSession, "s9", "still down");
        c.attributes.language = Some("it".into());
        chat.contact(40, c);
        (chat, app)
    }

    #[test]
    fn absorbing_takes_the_identities_attributes_history_and_earlier_place() {
        let (mut chat, app) = two_annas();
        assert!(chat.absorb(50, &app).unwrap());
        assert_eq!(
            chat.identities,
            vec![
                Identity::new(IdentityKind::ChatSession, "s9"),
                Identity::new(IdentityKind::AppUser, "anna")
            ]
        );
        assert_eq!(
            chat.attributes.tier.as_deref(),
            Some("gold"),
            "learnt from the other"
        );
        assert_eq!(chat.attributes.language.as_deref(), Some("it"), "kept");
        let h = chat.history();
        let seqs: Vec<u64> = h.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            vec![1, 2, 3, 4],
            "contiguous: message, merged, 2 absorbed"
        );
        assert!(matches!(&h[1].kind, EventKind::Merged { from, .. } if *from == CustomerId(2)));
        let absorbed: Vec<(u64, TimeMs)> = h[2..]
            .iter()
            .map(|e| match &e.kind {
                EventKind::Absorbed { event, .. } => (event.seq, event.at),
                other => panic!("not absorbed: {other:?}"),
            })
            .collect();
        assert_eq!(absorbed, vec![(1, 5), (2, 6)], "their own seqs and times");
        assert_eq!(
            chat.open.as_ref().unwrap().waiting_since,
            5,
            "the earlier place"
        );
        assert_eq!(
            chat.open.as_ref().unwrap().state,
            ConversationState::Queued,
            "absorbed events do not move the survivor's state"
        );
    }

    #[test]
    fn absorbing_again_takes_only_what_is_new() {
        let (mut chat, mut app) = two_annas();
        chat.absorb(50, &app).unwrap();
        assert!(!chat.absorb(51, &app).unwrap(), "nothing new");
        assert_eq!(chat.history().len(), 4);
        app.contact(
            60,
            contact(Channel::App, IdentityKind::AppUser, "anna", "hello?"),
        );
        assert!(chat.absorb(61, &app).unwrap());
        let h = chat.history();
        assert_eq!(h.len(), 5);
        assert!(matches!(&h[4].kind, EventKind::Absorbed { event, .. } if event.seq == 3));
        assert_eq!(
            chat.absorb(62, &chat.clone()).unwrap_err().field(),
            Some("link_identities")
        );
    }

    #[test]
    fn the_absorbed_customer_closes_its_conversation_and_points_to_the_survivor() {
        let (_, mut app) = two_annas();
        let closing = app.merge_into(70, CustomerId(1)).expect("it had one open");
        assert_eq!(Some(closing), app.open.as_ref().map(|c| c.id));
        assert!(matches!(
            &app.history().last().unwrap().kind,
            EventKind::MergedInto { into } if *into == CustomerId(1)
        ));
        assert_eq!(app.merged_into, Some(CustomerId(1)));
        app.open = None;
        assert_eq!(
            app.merge_into(71, CustomerId(1)),
            None,
            "nothing left to close"
        );
    }
}
