//! Requests between actors, in a form that can cross nodes.
//!
//! Every request a customer or the router serves is a serde-encodable value
//! (no reply ports inside), so the hub can hand it to a local actor or, when
//! the actor lives on another node, to the cluster layer, which carries it
//! over the internal gRPC service and hands it to that node's hub.

use centralino_core::campaign::CampaignSpec;
use centralino_core::campaign::run::{Delivered, Expired, Task};
use centralino_core::customer::{Contact, ContactOutcome, Customer, HandOver};
use centralino_core::history::TransferTarget;
use centralino_core::kpi::KpiReport;
use centralino_core::router::{AgentView, ConversationView, QueueView};
use centralino_core::rules::RoutingRule;
use centralino_core::wait::WaitEstimate;
use centralino_core::{
    AgentId, Channel, ConversationId, CustomerId, Identity, Input, OfferId, Output, QueueId, TimeMs,
};
use serde::{Deserialize, Serialize};

use crate::error::ActorError;
use crate::hub::{Delivery, DesktopEvent};
use crate::router::RouteRequest;

/// What a customer actor is asked.
// Nearly every request is a `Contact`: boxing it would cost an allocation
// each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CustomerRequest {
    /// A contact on any channel, with identities the gateway linked.
    Contact {
        contact: Contact,
        linked: Vec<Identity>,
        /// The customer is made up by this very contact (nothing of it is
        /// journaled yet and nobody owns it: placement decides where it
        /// starts, without asking).
        #[serde(default)]
        new: Option<NewCustomer>,
    },
    Reply {
        conversation: ConversationId,
        agent: AgentId,
        text: String,
    },
    WrapUp {
        conversation: ConversationId,
        agent: AgentId,
        disposition: String,
    },
    Resolve {
        conversation: ConversationId,
        agent: AgentId,
    },
    Transfer {
        conversation: ConversationId,
        agent: AgentId,
        to: TransferTarget,
        note: String,
    },
    /// The waiting customer wants to be called back on `channel` at `to`,
    /// keeping their place; no earlier than `not_before` if set.
    Callback {
        channel: Channel,
        to: Identity,
        not_before: Option<TimeMs>,
    },
    /// The waiting customer left (hung up, closed the chat) on `channel`:
    /// the conversation closes unanswered. Answered `Callback`-like with
    /// the conversation and the event's sequence number.
    Abandon { channel: Channel },
    /// The agent accepted the offer: record the assignment now (the same
    /// decision arriving later from the router is then a no-op).
    Assigned {
        conversation: ConversationId,
        agent: AgentId,
        offer: OfferId,
    },
    /// A copy of the customer, for views.
    Get,
    /// A campaign's task for this customer (see `actors::campaign`):
    /// answered `Delivered` or `Expired`.
    Campaign { spec: Box<CampaignSpec>, task: Task },
    /// A bot hands the customer over to a human (answered like a contact).
    HandOver {
        hand_over: Box<HandOver>,
        linked: Vec<Identity>,
        /// As a contact's (see `Contact::new`).
        #[serde(default)]
        new: Option<NewCustomer>,
    },
    /// This customer turned out to be `survivor` (see `core::customer`,
    /// "Merging"): become its tombstone; answered with a copy of the
    /// customer as it was, for the survivor to absorb.
    MergeInto { survivor: CustomerId },
    /// Take in a customer that turned out to be this one.
    Absorb { from: Box<Customer> },
}

impl CustomerRequest {
    /// The customer this request makes up, if it does (a first contact).
    pub fn new_customer(&self) -> Option<&NewCustomer> {
        match self {
            CustomerRequest::Contact { new, .. } | CustomerRequest::HandOver { new, .. } => {
                new.as_ref()
            }
            _ => None,
        }
    }
}

/// A customer a contact makes up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewCustomer {
    /// Identities its first journal write links to it (see
    /// `journal`, "Creating a customer"); empty when they are linked
    /// already (a standalone node's directory links at once).
    pub link: Vec<Identity>,
}

/// A customer actor's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CustomerReply {
    Contact(ContactOutcome),
    /// The sequence number of the event the request appended.
    Seq(u64),
    Done,
    Callback(ConversationId, u64),
    Abandoned(ConversationId, u64),
    Customer(Box<Customer>),
    Delivered(Box<Delivered>),
    Expired(Expired),
}

/// What the router is asked or told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RouterRequest {
    /// Apply one input (answered with `Done` or the refusal).
    Step(Input),
    /// Route a conversation by topic (told, not asked).
    Route(RouteRequest),
    /// An assignment made under an earlier router: the agent holds the
    /// conversation (told by its customer when a new router starts).
    Restore {
        route: RouteRequest,
        agent: AgentId,
        /// When the agent accepted it.
        since: TimeMs,
    },
    /// Node `node` has told the router of `epoch` everything it holds
    /// (see `actors::router`, "Taking over").
    Synced {
        node: String,
        epoch: u64,
    },
    /// An agent resolved the conversation it holds: release the agent from
    /// it, as a wrap-up does, and count the resolution in the KPIs, in one
    /// message where a wrap-up and a `Resolved` would be two (asked).
    Resolve {
        agent: AgentId,
        conversation: ConversationId,
        /// The queue it was routed through, if any (none: nothing to count).
        queue: Option<QueueId>,
        channel: Channel,
        /// One agent took it, once, and nobody transferred it.
        first_contact: bool,
    },
    /// Count a resolution in the KPIs (told): one resolved after its
    /// wrap-up, the agent released already.
    Resolved {
        queue: QueueId,
        channel: Channel,
        agent: Option<AgentId>,
        /// One agent took it, once, and nobody transferred it.
        #[serde(default)]
        first_contact: bool,
    },
    /// Replace the routing rules (answered with `Done` or the refusal).
    SetRules(Vec<RoutingRule>),
    Rules,
    Agents,
    Queues,
    Conversations(Option<QueueId>),
    Conversation(ConversationId),
    Kpis,
    /// A conversation as the router holds it, with its estimated wait
    /// (self-service status).
    Status(ConversationId),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RouterReply {
    Done,
    /// An offer was accepted: the conversation is assigned.
    Accepted(ConversationId),
    Agents(Vec<AgentView>),
    Queues(Vec<QueueView>),
    Conversations(Vec<ConversationView>),
    Conversation(Option<ConversationView>),
    Kpis(Box<KpiReport>),
    Rules(Vec<RoutingRule>),
    Status(Option<ConversationView>, Option<WaitEstimate>),
}

/// One message from a node to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope {
    AskCustomer(CustomerId, CustomerRequest),
    /// Routing decisions for the customer's history, in the order they
    /// were made (a delivery lane sends what it holds for one customer
    /// together: see `Hub::post_customer`).
    TellCustomer(CustomerId, Vec<Output>),
    AskRouter(RouterRequest),
    TellRouter(RouterRequest),
    Desktop(AgentId, DesktopEvent),
    Deliver(Delivery),
    /// Planned migration: take this customer over from the owner holding
    /// `token`; the state carries the open conversation's whole history.
    Adopt {
        customer: Box<Customer>,
        token: u64,
        /// A routing request the previous owner could not hand the router
        /// yet: the new owner keeps retrying it.
        #[serde(default)]
        unrouted: Option<RouterRequest>,
        /// The router epoch the customer last announced itself to.
        #[serde(default)]
        announced: Option<u64>,
    },
    /// A message the previous owner had queued when it handed the customer
    /// over: the new owner takes these before anything sent to it directly.
    Handoff(Box<Envelope>),
    /// The previous owner has forwarded everything it had queued.
    HandoffDone(CustomerId),
    /// Move the customer (owned by the receiving node) to node `to`.
    Migrate {
        customer: CustomerId,
        to: String,
    },
    /// A router started on `node` under `epoch`; `members` are the nodes it
    /// saw alive. The receiver tells it everything it holds.
    RouterStarted {
        node: String,
        epoch: u64,
        members: Vec<String>,
    },
    /// The router's node (draining) gave the router up: claim it.
    RouterVacated {
        node: String,
    },
    /// Are you serving? (Answered `Done`.)
    Ping,
}

impl Envelope {
    /// What kind of envelope this is, for metrics: the request's name for
    /// the common ones, the envelope's otherwise.
    pub fn kind(&self) -> &'static str {
        match self {
            Envelope::AskCustomer(_, r) => match r {
                CustomerRequest::Contact { .. } => "ask_customer.contact",
                CustomerRequest::Assigned { .. } => "ask_customer.assigned",
                CustomerRequest::Reply { .. } => "ask_customer.reply",
                CustomerRequest::WrapUp { .. } => "ask_customer.wrap_up",
                CustomerRequest::Resolve { .. } => "ask_customer.resolve",
                _ => "ask_customer.other",
            },
            Envelope::TellCustomer(..) => "tell_customer",
            Envelope::AskRouter(r) | Envelope::TellRouter(r) => match r {
                RouterRequest::Step(_) => "router.step",
                RouterRequest::Route(_) => "router.route",
                RouterRequest::Resolve { .. } => "router.resolve",
                RouterRequest::Resolved { .. } => "router.resolved",
                _ => "router.other",
            },
            Envelope::Desktop(..) => "desktop",
            Envelope::Deliver(_) => "deliver",
            Envelope::Adopt { .. } => "adopt",
            Envelope::Handoff(_) => "handoff",
            Envelope::HandoffDone(_) => "handoff_done",
            Envelope::Migrate { .. } => "migrate",
            Envelope::RouterStarted { .. } => "router_started",
            Envelope::RouterVacated { .. } => "router_vacated",
            Envelope::Ping => "ping",
        }
    }
}

/// The answer to an [`Envelope`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EnvelopeReply {
    Customer(Result<CustomerReply, ActorError>),
    Router(Result<RouterReply, ActorError>),
    /// A migration's outcome: the pause the customer saw, in microseconds.
    Migrated(Result<u64, ActorError>),
    Done,
    /// The envelope's target is not on the receiving node (any more).
    NotHere(ActorError),
}

/// What a frame between nodes packs several envelopes (or answers) into at
/// most; one larger than this goes in a frame of its own.
pub const FRAME_BUDGET: usize = 1 << 20;

/// Packs encoded items (each the JSON of one `[id, envelope]` or `[id,
/// answer]` pair) into JSON arrays of at most [`FRAME_BUDGET`] bytes, in
/// order; an item larger than the budget alone.
pub fn pack_frames(items: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut frame: Vec<u8> = Vec::new();
    for item in items {
        if !frame.is_empty() && frame.len() + 1 + item.len() + 1 > FRAME_BUDGET {
            frame.push(b']');
            frames.push(std::mem::take(&mut frame));
        }
        frame.push(if frame.is_empty() { b'[' } else { b',' });
        frame.extend_from_slice(&item);
    }
    if !frame.is_empty() {
        frame.push(b']');
        frames.push(frame);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pack_items_in_order_within_the_budget() {
        let small = |n: u8| format!("[{n},\"x\"]").into_bytes();
        let frames = pack_frames(vec![small(1), small(2), small(3)]);
        assert_eq!(frames, vec![b"[[1,\"x\"],[2,\"x\"],[3,\"x\"]]".to_vec()]);

        let big = vec![b'7'; FRAME_BUDGET - 5];
        let frames = pack_frames(vec![small(1), big, small(2), small(3)]);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], b"[[1,\"x\"]]".to_vec());
        assert!(frames[1].starts_with(b"[7777") && frames[1].ends_with(b"777]"));
        assert_eq!(frames[2], b"[[2,\"x\"],[3,\"x\"]]".to_vec());
        assert!(frames.iter().all(|f| f.len() <= FRAME_BUDGET));

        let huge = vec![b'9'; FRAME_BUDGET * 2];
        let frames = pack_frames(vec![small(1), huge, small(2)]);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].len(), FRAME_BUDGET * 2 + 2);
        assert!(pack_frames(Vec::new()).is_empty());
    }
}
