//! The customer actor: owns one [`Customer`] and its open conversation.
//!
//! Every change is appended to the history, committed to the journal, and
//! only then acknowledged (invariant 3):
//!
//! - a request (a contact, an agent's reply, a wrap-up, ...) whose commit
//!   fails is undone here (a [`Checkpoint`] of the customer is restored) and
//!   answered with the error, so a retry does not record it twice;
//! - a routing decision is recorded at once (an offer goes on to the
//!   agent's desktop at once) and committed [`DECISION_FLUSH`] later, with
//!   the decisions of the same burst, or with the next request's commit:
//!   nothing was acknowledged about it, and one lost with this node is said
//!   again by the router to the customer recovered elsewhere; a commit
//!   that fails keeps it recorded here, retried every [`FLUSH_RETRY`];
//! - a commit refused by the fencing check means another node owns the
//!   customer now: the actor stops at once.
//!
//! # Migration
//!
//! A planned migration ([`CustomerMsg::Migrate`]) hands the whole customer,
//! history included, to another node while messages keep arriving, and
//! loses, duplicates and reorders none of them:
//!
//! 1. The owner commits anything not yet durable, then sends the state to
//!    the target (`Envelope::Adopt`). The target moves ownership to itself
//!    in one fenced step (the old token is dead from then on) and starts
//!    the actor in [`Mode::Adopting`]: what reaches it directly waits in a
//!    stash.
//! 2. The old actor switches to [`Mode::Moved`] and forwards, in order,
//!    everything still in its mailbox as `Envelope::Handoff` (the target
//!    takes these at once). Then it tells its hub to forward anything new
//!    straight to the target, forwards what slipped in meanwhile, sends
//!    `HandoffDone` and stops.
//! 3. On `HandoffDone` (or after [`HANDOFF_WAIT`], should the old owner
//!    die) the target takes its stash, in arrival order, and is live.
//!
//! The pause is the time between the owner taking the `Migrate` message
//! and the target being ready: one journal flush at most, one node-to-node
//! call and one etcd transaction.
//!
//! # The router is told, reliably
//!
//! A conversation that needs routing is told to the router (a
//! [`RouteRequest`]); a tell that cannot be handed over (the router is
//! moving, or its node is unreachable) is kept and retried every
//! [`ROUTE_RETRY`] until it is. A customer recovered from the journal, and
//! every customer when a new router takes over ([`CustomerMsg::Resync`]),
//! re-announces what the router must know of its open conversation (see
//! `announcement`), with what its history holds, so that a router that has
//! it already can say again only the decisions this customer lost.
//!
//! [`Checkpoint`]: centralino_core::customer::Checkpoint

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centralino_core::customer::{
    Contact, ContactOutcome, Conversation, ConversationState, Customer, RoutingNeed,
};
use centralino_core::history::{EventKind, TransferTarget};
use centralino_core::priority::PriorityInputs;
use centralino_core::router::RevokeReason;
use centralino_core::{
    AgentId, Channel, ConversationId, CoreError, CustomerId, Identity, Input, OfferId, Output,
    TimeMs,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::now_ms;
use crate::error::{ActorError, Result};
use crate::hub::{Delivery, DesktopEvent, Hub, OfferDelivery};
use crate::journal::{Creation, JournalBatch, JournalError, rebuild};
use crate::router::{Again, CustomerFacts, RouteRequest, Seen};
use crate::wire::{CustomerReply, CustomerRequest, Envelope, EnvelopeReply, RouterRequest};

/// Campaign notices and bot hand-overs (`customer/outreach.rs`).
mod outreach;

// Nearly every message is a `Request`: boxing it would cost an allocation
// each.
#[allow(clippy::large_enum_variant)]
pub enum CustomerMsg {
    /// A request; answered if a port is given.
    Request(CustomerRequest, Option<RpcReplyPort<Result<CustomerReply>>>),
    /// A routing decision about this customer's conversation.
    Routed(Output),
    /// Retry committing what the journal has not confirmed yet.
    Flush,
    /// Hand the customer over to node `to`; answered with the pause.
    Migrate(String, RpcReplyPort<Result<Duration>>),
    /// A message the previous owner had queued (see the module docs).
    Handoff(Box<CustomerMsg>),
    /// The previous owner has forwarded everything it had queued.
    HandoffDone,
    /// Moved: the mailbox is forwarded up to here (`last`: nothing can
    /// arrive after it).
    Drained { last: bool },
    /// A router of this epoch took over: tell it what it must know of the
    /// open conversation (see `actors::router`, "Taking over").
    Resync(u64, RpcReplyPort<Result<()>>),
    /// Retry telling the router what it could not be told.
    RetryRoute,
}

/// How soon a failed commit of routing decisions is retried.
pub const FLUSH_RETRY: Duration = Duration::from_millis(500);

/// How long routing decisions wait to be committed together: the router
/// makes them in bursts (queued, then offered, in one step), and one
/// commit for the burst is one etcd write instead of several.
pub const DECISION_FLUSH: Duration = Duration::from_millis(10);

/// How soon a routing request the router could not be handed is retried.
pub const ROUTE_RETRY: Duration = Duration::from_millis(500);

/// How long an adopted customer waits for the previous owner's
/// `HandoffDone` before it takes what reached it directly anyway.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(5);

pub struct CustomerActor;

/// How a customer actor starts (once per actor: its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// From the journal, owning the customer with `token`.
    Recover { token: u64 },
    /// A customer made up by the request that starts it, claimed already:
    /// nothing to recover.
    New { token: u64 },
    /// A customer made up by the request that starts it, that its first
    /// journal write creates, linking these identities (see `journal`,
    /// "Creating a customer"): nothing to recover, no ownership yet.
    Create { identities: Vec<Identity> },
    /// From the state another node handed over (a planned migration).
    Adopted {
        customer: Box<Customer>,
        token: u64,
        unrouted: Option<RouterRequest>,
        /// The router epoch the previous owner announced it to.
        announced: Option<u64>,
    },
}

/// Where the actor stands in a migration (see the module docs).
pub enum Mode {
    Live,
    /// Adopted: messages sent here directly wait for the handoff to end.
    Adopting {
        stash: VecDeque<CustomerMsg>,
    },
    /// Handed over to `node`: everything is forwarded there.
    Moved {
        node: String,
    },
}

pub struct CustomerState {
    customer: Customer,
    hub: Arc<Hub>,
    /// This node's fencing token for the customer.
    token: u64,
    /// Last sequence number of the open conversation that is durable.
    durable_seq: u64,
    flush_scheduled: bool,
    mode: Mode,
    /// A request the router could not be handed yet (see the module docs).
    unrouted: Option<RouterRequest>,
    route_retry_scheduled: bool,
    /// The router epoch this customer last announced itself to.
    announced: Option<u64>,
    /// Not created yet: the first commit creates the customer, linking
    /// these identities (see `journal`, "Creating a customer"); until it
    /// succeeds the actor owns nothing, and if it fails the actor stops.
    creating: Option<Vec<Identity>>,
}

impl CustomerState {
    /// Events recorded here that the journal has not confirmed.
    fn pending(&self) -> bool {
        self.customer
            .open
            .as_ref()
            .is_some_and(|c| c.history.last_seq() > self.durable_seq)
    }
}

impl Actor for CustomerActor {
    type Msg = CustomerMsg;
    type State = CustomerState;
    type Arguments = (CustomerId, Arc<Hub>, Start);

    async fn pre_start(
        &self,
        myself: ActorRef<CustomerMsg>,
        (id, hub, start): Self::Arguments,
    ) -> Result<CustomerState, ActorProcessingErr> {
        let creating = match &start {
            Start::Create { identities } => Some(identities.clone()),
            _ => None,
        };
        let (customer, token, mode, unrouted, announced) = match start {
            Start::Recover { token } => {
                let customer = match hub.journal().recover(id).await? {
                    Some(r) => rebuild(r),
                    None => Customer::new(id, Vec::new()),
                };
                (customer, token, Mode::Live, None, None)
            }
            Start::New { token } => (Customer::new(id, Vec::new()), token, Mode::Live, None, None),
            Start::Create { .. } => (Customer::new(id, Vec::new()), 0, Mode::Live, None, None),
            Start::Adopted {
                customer,
                token,
                unrouted,
                announced,
            } => {
                myself.send_after(HANDOFF_WAIT, || CustomerMsg::HandoffDone);
                if unrouted.is_some() {
                    myself.send_after(ROUTE_RETRY, || CustomerMsg::RetryRoute);
                }
                let stash = VecDeque::new();
                (
                    *customer,
                    token,
                    Mode::Adopting { stash },
                    unrouted,
                    announced,
                )
            }
        };
        let durable_seq = customer.open.as_ref().map_or(0, |c| c.history.last_seq());
        Ok(CustomerState {
            customer,
            hub,
            token,
            durable_seq,
            flush_scheduled: false,
            mode,
            route_retry_scheduled: unrouted.is_some(),
            unrouted,
            announced,
            creating,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<CustomerMsg>,
        st: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        // Recovered from the journal (its node died, or it stopped): the
        // router is told what it must know of the open conversation; a
        // waiting customer keeps their place.
        if let Mode::Live = st.mode {
            if let Some(request) = announcement(&st.customer, Again::Recovered) {
                let epoch = st.hub.cluster().router_epoch();
                tell_router(st, request).await;
                if st.unrouted.is_none() {
                    st.announced = epoch;
                }
            }
            schedule_route_retry(&myself, st);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<CustomerMsg>,
        msg: CustomerMsg,
        st: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        dispatch(&myself, st, msg).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CustomerMsg>,
        st: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        // A moved customer's ownership went with it; one never created
        // had none.
        if !matches!(st.mode, Mode::Moved { .. }) && st.creating.is_none() {
            st.hub
                .cluster()
                .release_customer(st.customer.id, st.token)
                .await;
        }
        Ok(())
    }
}

/// Handles a message as the migration mode says (see the module docs).
async fn dispatch(myself: &ActorRef<CustomerMsg>, st: &mut CustomerState, msg: CustomerMsg) {
    match (&mut st.mode, msg) {
        (Mode::Moved { node }, msg) => {
            let node = node.clone();
            forward(myself, st, &node, msg).await;
        }
        (Mode::Adopting { .. }, CustomerMsg::HandoffDone) => {
            let Mode::Adopting { stash } = std::mem::replace(&mut st.mode, Mode::Live) else {
                unreachable!("matched Adopting above");
            };
            // A router that took over while the customer was on its way
            // here may have asked both nodes before either had it live.
            if let Some(epoch) = st.hub.cluster().router_epoch()
                && st.announced != Some(epoch)
                && let Err(e) = resync(st, epoch).await
            {
                tracing::debug!(customer = %st.customer.id, error = %e, "not announced to the new router yet");
                if st.unrouted.is_none() {
                    st.unrouted = announcement(&st.customer, Again::Resync);
                }
                schedule_route_retry(myself, st);
            }
            // Each through the mode it finds: a stashed move turns what
            // follows it into forwards.
            for msg in stash {
                Box::pin(dispatch(myself, st, msg)).await;
            }
        }
        (Mode::Adopting { .. }, CustomerMsg::Handoff(msg)) => live(myself, st, *msg).await,
        (Mode::Adopting { stash }, msg) => stash.push_back(msg),
        (Mode::Live, msg) => live(myself, st, msg).await,
    }
}

/// Handles a message as the customer's owner.
async fn live(myself: &ActorRef<CustomerMsg>, st: &mut CustomerState, msg: CustomerMsg) {
    let now = now_ms();
    let decision = matches!(msg, CustomerMsg::Routed(_));
    let outcome = match msg {
        CustomerMsg::Routed(o) => routed(now, st, o).await,
        CustomerMsg::Flush => {
            st.flush_scheduled = false;
            if st.pending() {
                persist(st, false).await
            } else {
                Ok(())
            }
        }
        CustomerMsg::Request(req, reply) => {
            // An acknowledged change must be durable: if the commit
            // fails, the change is undone and the caller told so.
            let cp = st.customer.checkpoint();
            let r = request(now, st, req).await;
            let outcome = match &r {
                Err(ActorError::Journal(e)) => {
                    st.customer.restore(cp, None);
                    Err(e.clone())
                }
                _ => Ok(()),
            };
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
            outcome.map_err(ActorError::from)
        }
        CustomerMsg::Migrate(to, reply) => {
            let r = hand_over(myself, st, to).await;
            let outcome = match &r {
                Err(e @ ActorError::Journal(JournalError::Fenced { .. })) => Err(e.clone()),
                _ => Ok(()),
            };
            let _ = reply.send(r);
            outcome
        }
        // Late or stray: nothing to do for a live owner.
        CustomerMsg::HandoffDone | CustomerMsg::Drained { .. } => Ok(()),
        CustomerMsg::Resync(epoch, reply) => {
            let r = resync(st, epoch).await;
            let _ = reply.send(r);
            Ok(())
        }
        CustomerMsg::RetryRoute => {
            st.route_retry_scheduled = false;
            if let Some(request) = st.unrouted.take() {
                tell_router(st, request).await;
            }
            Ok(())
        }
        CustomerMsg::Handoff(msg) => {
            Box::pin(live(myself, st, *msg)).await;
            Ok(())
        }
    };
    if let Err(ActorError::Journal(JournalError::Fenced { .. })) = outcome {
        tracing::warn!(customer = %st.customer.id, "fenced out: another node owns this customer now; stopping");
        myself.stop(Some("fenced out".into()));
        return;
    }
    if st.creating.is_some() {
        // The write that would have created the customer failed: it does
        // not exist (the contact's retry makes it up afresh, or finds whose
        // the identity is).
        myself.stop(Some("never created".into()));
        return;
    }
    schedule_route_retry(myself, st);
    if let Err(ActorError::Journal(JournalError::Rejected(why))) = &outcome {
        // Retrying cannot help: the conversation has outgrown what the
        // journal takes in one write. The next request is refused with the
        // same error (RESOURCE_EXHAUSTED), which says to resolve it.
        tracing::error!(customer = %st.customer.id, error = %why, "routing decisions cannot be journaled; not retrying");
    } else if st.pending() && !st.flush_scheduled {
        // Routing decisions recorded here but not yet durable are kept
        // and committed soon: together, when they just arrived; as soon as
        // the journal answers again, when a commit failed.
        let delay = if decision && outcome.is_ok() {
            DECISION_FLUSH
        } else {
            tracing::warn!(customer = %st.customer.id, "journal behind; retrying");
            FLUSH_RETRY
        };
        st.flush_scheduled = true;
        myself.send_after(delay, || CustomerMsg::Flush);
    }
}

/// Hands the customer to node `to` (step 1 of the module docs); returns
/// the pause. On failure the customer stays here, live.
async fn hand_over(
    myself: &ActorRef<CustomerMsg>,
    st: &mut CustomerState,
    to: String,
) -> Result<Duration> {
    let started = Instant::now();
    let id = st.customer.id;
    if to == st.hub.cluster().node_id() {
        return Ok(Duration::ZERO);
    }
    if st.pending() {
        persist(st, false).await?;
    }
    let envelope = Envelope::Adopt {
        customer: Box::new(st.customer.clone()),
        token: st.token,
        unrouted: st.unrouted.clone(),
        announced: st.announced,
    };
    match st.hub.send(&to, envelope).await? {
        EnvelopeReply::Migrated(Ok(_)) => {}
        EnvelopeReply::Migrated(Err(e)) => return Err(e),
        other => {
            return Err(ActorError::unavailable(format!(
                "node {to} answered a migration with {other:?}"
            )));
        }
    }
    st.hub.cluster().customer_moved(id, &to);
    st.mode = Mode::Moved { node: to.clone() };
    let _ = myself.cast(CustomerMsg::Drained { last: false });
    let pause = started.elapsed();
    crate::metrics::migration_pause(pause);
    tracing::info!(customer = %id, to = %to, pause_us = pause.as_micros() as u64, "customer migrated");
    Ok(pause)
}

/// Moved: forwards one message to the new owner, in order (step 2).
async fn forward(
    myself: &ActorRef<CustomerMsg>,
    st: &mut CustomerState,
    node: &str,
    msg: CustomerMsg,
) {
    let id = st.customer.id;
    let hub = st.hub.clone();
    match msg {
        CustomerMsg::Request(req, reply) => {
            let r = hub
                .send(
                    node,
                    Envelope::Handoff(Box::new(Envelope::AskCustomer(id, req))),
                )
                .await
                .and_then(|reply| match reply {
                    EnvelopeReply::Customer(r) => r,
                    other => Err(ActorError::unavailable(format!(
                        "customer {id}: unexpected answer {other:?}"
                    ))),
                });
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        }
        CustomerMsg::Routed(o) => {
            let envelope = Envelope::Handoff(Box::new(Envelope::TellCustomer(id, vec![o])));
            if let Err(e) = hub.send(node, envelope).await {
                tracing::error!(customer = %id, to = %node, error = %e, "routing decision not handed over");
            }
        }
        CustomerMsg::Migrate(_, reply) => {
            let _ = reply.send(Err(ActorError::unavailable(format!(
                "customer {id} (it has moved to node {node})"
            ))));
        }
        CustomerMsg::Handoff(msg) => Box::pin(forward(myself, st, node, *msg)).await,
        CustomerMsg::Drained { last: false } => {
            // From now on the hub forwards new messages itself; whatever
            // reached this mailbox before that is ahead of the next marker.
            hub.customer_moved(id, node, myself);
            let _ = myself.cast(CustomerMsg::Drained { last: true });
        }
        CustomerMsg::Drained { last: true } => {
            if let Err(e) = hub.send(node, Envelope::HandoffDone(id)).await {
                tracing::warn!(customer = %id, to = %node, error = %e, "handoff end not delivered; the new owner goes on after its wait");
            }
            myself.stop(Some("moved".into()));
        }
        // The new owner reports the customer to a new router.
        CustomerMsg::Resync(_, reply) => {
            let _ = reply.send(Ok(()));
        }
        CustomerMsg::Flush | CustomerMsg::HandoffDone | CustomerMsg::RetryRoute => {}
    }
}

async fn request(
    now: TimeMs,
    st: &mut CustomerState,
    req: CustomerRequest,
) -> Result<CustomerReply> {
    if let Some(survivor) = st.customer.merged_into {
        return tombstone(st, survivor, req).await;
    }
    Ok(match req {
        CustomerRequest::Contact {
            contact, linked, ..
        } => CustomerReply::Contact(contact_in(now, st, contact, linked).await?),
        CustomerRequest::Reply {
            conversation,
            agent,
            text,
        } => CustomerReply::Seq(agent_reply(now, st, conversation, &agent, text).await?),
        CustomerRequest::WrapUp {
            conversation,
            agent,
            disposition,
        } => {
            wrap_up(now, st, conversation, &agent, disposition).await?;
            CustomerReply::Done
        }
        CustomerRequest::Resolve {
            conversation,
            agent,
        } => {
            resolve(now, st, conversation, &agent).await?;
            CustomerReply::Done
        }
        CustomerRequest::Transfer {
            conversation,
            agent,
            to,
            note,
        } => {
            transfer(now, st, conversation, &agent, to, note).await?;
            CustomerReply::Done
        }
        CustomerRequest::Callback {
            channel,
            to,
            not_before,
        } => {
            let (c, seq) = callback(now, st, channel, to, not_before).await?;
            CustomerReply::Callback(c, seq)
        }
        CustomerRequest::Abandon { channel } => {
            let (c, seq) = abandon(now, st, channel).await?;
            CustomerReply::Abandoned(c, seq)
        }
        CustomerRequest::Assigned {
            conversation,
            agent,
            offer,
        } => {
            // The router has decided: like any routing decision, it stands
            // here even if the journal cannot take it right now.
            record_assigned(now, st, conversation, agent, offer)?;
            match persist(st, false).await {
                Err(e @ ActorError::Journal(JournalError::Fenced { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(%conversation, error = %e, "assignment not journaled yet; retrying")
                }
                Ok(()) => {}
            }
            CustomerReply::Done
        }
        CustomerRequest::Get => CustomerReply::Customer(Box::new(st.customer.clone())),
        CustomerRequest::MergeInto { survivor } => {
            CustomerReply::Customer(Box::new(merge_into(now, st, survivor).await?))
        }
        CustomerRequest::Absorb { from } => {
            absorb(now, st, &from).await?;
            CustomerReply::Done
        }
        CustomerRequest::Campaign { spec, task } => {
            outreach::campaign(now, st, *spec, task).await?
        }
        CustomerRequest::HandOver {
            hand_over, linked, ..
        } => {
            let outcome = st.customer.hand_over(now, *hand_over);
            CustomerReply::Contact(contacted(now, st, outcome, linked).await?)
        }
    })
}

/// Commits what the open conversation gained since the last commit, with
/// the customer's record (and a snapshot when one is due, see
/// [`JournalBatch::of`]); `closing` commits it as closed (its whole history
/// goes to the archive) and, once durable, closes it here.
async fn persist(st: &mut CustomerState, closing: bool) -> Result<()> {
    let mut batch = JournalBatch::of(&st.customer, st.durable_seq, closing, st.token);
    batch.create = st.creating.clone().map(|identities| Creation {
        identities,
        owner: None,
    });
    let last = st
        .customer
        .open
        .as_ref()
        .map_or(0, |c| c.history.last_seq());
    let started = std::time::Instant::now();
    let token = st.hub.journal().commit(batch).await?;
    crate::metrics::journal_commit(started.elapsed());
    if st.creating.take().is_some() {
        st.token = token;
        st.hub.cluster().claimed(st.customer.id, token);
    }
    if closing {
        st.customer.open = None;
        st.durable_seq = 0;
    } else {
        st.durable_seq = last;
    }
    Ok(())
}

async fn contact_in(
    now: TimeMs,
    st: &mut CustomerState,
    contact: Contact,
    linked: Vec<Identity>,
) -> Result<ContactOutcome> {
    let outcome = st.customer.contact(now, contact);
    contacted(now, st, outcome, linked).await
}

/// After a contact (or a bot's hand-over) joined or opened the
/// conversation: links the identities, commits, counts the campaign
/// replies it is, and routes as it needs.
async fn contacted(
    now: TimeMs,
    st: &mut CustomerState,
    outcome: ContactOutcome,
    linked: Vec<Identity>,
) -> Result<ContactOutcome> {
    for identity in linked {
        if !st.customer.identities.contains(&identity) {
            st.customer.identities.push(identity.clone());
        }
        let _ = st.customer.record(
            now,
            outcome.conversation,
            EventKind::IdentityLinked { identity },
        );
    }
    persist(st, false).await?;
    outreach::count_replies(st, &outcome);
    let Some(conv) = st.customer.open.as_ref() else {
        return Ok(outcome);
    };
    match &outcome.need {
        RoutingNeed::Enqueue | RoutingNeed::Reroute { .. } => {
            let replace = matches!(outcome.need, RoutingNeed::Reroute { .. });
            let request = route_request(&st.customer, conv, None, replace);
            tell_router(st, RouterRequest::Route(request)).await;
        }
        RoutingNeed::Forward(agent) => {
            if let Some(event) = conv.history.events().last().cloned() {
                st.hub.post_desktop(
                    agent,
                    DesktopEvent::CustomerMessage {
                        conversation: conv.id,
                        event,
                    },
                );
            }
        }
        RoutingNeed::None => {}
    }
    Ok(outcome)
}

/// Tells the router the agent is done with the conversation. The customer
/// believes the agent holds it; if the router no longer knows the
/// conversation at all, an earlier attempt reached it and only its commit
/// here failed, so the wrap-up stands.
async fn release_agent(hub: &Hub, conversation: ConversationId, agent: &AgentId) -> Result<()> {
    match ask_router(
        hub,
        Input::WrapUp {
            agent: agent.clone(),
            conversation,
        },
    )
    .await
    {
        Err(ActorError::Core(CoreError::UnknownConversation(_))) => Ok(()),
        other => other,
    }
}

async fn ask_router(hub: &Hub, input: Input) -> Result<()> {
    hub.ask_router(RouterRequest::Step(input)).await.map(|_| ())
}

/// Records that `agent` holds the conversation, once: the agent's own
/// accept and the router's decision both say so.
fn record_assigned(
    now: TimeMs,
    st: &mut CustomerState,
    conversation: ConversationId,
    agent: AgentId,
    offer: OfferId,
) -> Result<()> {
    let events = st.customer.conversation(conversation)?.history.events();
    let offered_at = events
        .iter()
        .rposition(|e| matches!(&e.kind, EventKind::Offered { offer: o, .. } if *o == offer));
    let recorded = match offered_at {
        Some(i) => events[i..]
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Assigned { agent: a } if *a == agent)),
        None => st.customer.check_assigned(conversation, &agent).is_ok(),
    };
    if !recorded {
        st.customer
            .record(now, conversation, EventKind::Assigned { agent })?;
    }
    Ok(())
}

/// Records a routing decision in the history; offers go on to the agent.
async fn routed(now: TimeMs, st: &mut CustomerState, o: Output) -> Result<()> {
    let (conversation, kind) = match &o {
        Output::Queued {
            conversation,
            queue,
            channel,
        } => {
            let kind = EventKind::Queued {
                queue: queue.clone(),
                channel: *channel,
            };
            // The same Queued twice in a row says nothing new: a decision
            // delivered again (a lane's retry reaching a recovered
            // customer, or one the router said again) is not recorded twice.
            if st
                .customer
                .conversation(*conversation)
                .is_ok_and(|c| last_routing_event(c) == Some(&kind))
            {
                return Ok(());
            }
            (*conversation, kind)
        }
        Output::Offered {
            conversation,
            agent,
            offer,
            explanation,
            ..
        } => (
            *conversation,
            EventKind::Offered {
                agent: agent.clone(),
                offer: *offer,
                explanation: explanation.clone(),
            },
        ),
        Output::Rejected {
            conversation,
            agent,
            offer,
            reason,
        } => (
            *conversation,
            EventKind::OfferRejected {
                agent: agent.clone(),
                offer: *offer,
                reason: reason.clone(),
            },
        ),
        Output::OfferRevoked {
            conversation,
            agent,
            offer,
            reason: RevokeReason::TimedOut,
        } => (
            *conversation,
            EventKind::OfferTimedOut {
                agent: agent.clone(),
                offer: *offer,
            },
        ),
        Output::OfferRevoked {
            conversation,
            agent,
            offer,
            reason: RevokeReason::AgentLoggedOut,
        } => (
            *conversation,
            EventKind::OfferRejected {
                agent: agent.clone(),
                offer: *offer,
                reason: "agent logged out".into(),
            },
        ),
        Output::Assigned {
            conversation,
            agent,
            offer,
            ..
        } => {
            // Usually recorded already, when the agent's accept came back
            // (then there is nothing to commit).
            if let Err(e) = record_assigned(now, st, *conversation, agent.clone(), *offer) {
                tracing::debug!(%conversation, error = %e, "assignment about a conversation no longer open");
            }
            return Ok(());
        }
        Output::Requeued { conversation, from } => {
            let Some(queue) = st.customer.open.as_ref().and_then(|c| c.queue.clone()) else {
                return Ok(());
            };
            (
                *conversation,
                EventKind::Transferred {
                    from: from.clone(),
                    to: TransferTarget::Queue(queue),
                    note: "agent logged out".into(),
                },
            )
        }
        Output::OfferRevoked { .. }
        | Output::Transferred { .. }
        | Output::AgentStateChanged { .. } => return Ok(()),
    };
    if let Err(e) = st.customer.record(now, conversation, kind) {
        tracing::debug!(%conversation, error = %e, "routing decision about a conversation no longer open");
        return Ok(());
    }
    // The decision is committed shortly, with those that follow it (see
    // DECISION_FLUSH), not here: nothing about it was acknowledged, and a
    // decision lost with this node is said again by the router to the
    // customer recovered elsewhere (`actors::router`, "restate").
    if let Output::Offered {
        offer,
        agent,
        channel,
        queue,
        expires_at,
        explanation,
        ..
    } = o
    {
        let Some(conv) = st.customer.open.as_ref() else {
            return Ok(());
        };
        let delivery = OfferDelivery {
            offer,
            conversation,
            channel,
            queue,
            attributes: st.customer.attributes.clone(),
            history: conv.history.events().to_vec(),
            explanation,
            expires_at,
            home: Some(st.hub.cluster().node_id().to_owned()),
        };
        st.hub
            .post_desktop(&agent, DesktopEvent::Offer(Box::new(delivery)));
    }
    Ok(())
}

async fn agent_reply(
    now: TimeMs,
    st: &mut CustomerState,
    conversation: ConversationId,
    agent: &AgentId,
    text: String,
) -> Result<u64> {
    let (seq, channel, to) = st
        .customer
        .agent_reply(now, conversation, agent, text.clone())?;
    persist(st, false).await?;
    st.hub
        .deliver(Delivery {
            conversation,
            channel,
            to,
            agent: agent.clone(),
            text,
            seq,
            campaign: None,
        })
        .await;
    Ok(seq)
}

async fn wrap_up(
    now: TimeMs,
    st: &mut CustomerState,
    conversation: ConversationId,
    agent: &AgentId,
    disposition: String,
) -> Result<()> {
    st.customer.check_assigned(conversation, agent)?;
    release_agent(&st.hub, conversation, agent).await?;
    st.customer.record(
        now,
        conversation,
        EventKind::WrappedUp {
            agent: agent.clone(),
            disposition,
        },
    )?;
    persist(st, false).await
}

async fn transfer(
    now: TimeMs,
    st: &mut CustomerState,
    conversation: ConversationId,
    agent: &AgentId,
    to: TransferTarget,
    note: String,
) -> Result<()> {
    st.customer.check_assigned(conversation, agent)?;
    ask_router(
        &st.hub,
        Input::Transfer {
            agent: agent.clone(),
            conversation,
            to: to.clone(),
        },
    )
    .await?;
    st.customer.record(
        now,
        conversation,
        EventKind::Transferred {
            from: agent.clone(),
            to,
            note,
        },
    )?;
    persist(st, false).await
}

/// An agent closes the conversation: the one assigned, or the one who last
/// wrapped it up.
async fn resolve(
    now: TimeMs,
    st: &mut CustomerState,
    conversation: ConversationId,
    agent: &AgentId,
) -> Result<()> {
    let conv = st.customer.conversation(conversation)?;
    let (state, channel, queue) = (conv.state, conv.channel, conv.queue.clone());
    let first_contact = conv.resolved_at_first_contact();
    let last = st.customer.last_agent.as_ref().map(|(a, _)| a);
    // Counted by the router: with the release, or after the commit for one
    // wrapped up earlier.
    let mut count = None;
    match state {
        ConversationState::Assigned => {
            st.customer.check_assigned(conversation, agent)?;
            // The release and the count go together, before the commit
            // below: if that fails, the agent retries, the router no longer
            // knows the conversation (as for a wrap-up, see
            // `release_agent`), and it is not counted twice. One that
            // never commits is counted all the same, and one the router no
            // longer knew at all (lost in a router takeover) is not: a
            // KPI, not history.
            let resolve = RouterRequest::Resolve {
                agent: agent.clone(),
                conversation,
                queue,
                channel,
                first_contact,
            };
            match st.hub.ask_router(resolve).await {
                Ok(_) | Err(ActorError::Core(CoreError::UnknownConversation(_))) => {}
                Err(e) => return Err(e),
            }
        }
        ConversationState::WrappedUp if last == Some(agent) => count = queue,
        _ => {
            return Err(CoreError::NotAssigned {
                conversation,
                agent: agent.clone(),
            }
            .into());
        }
    }
    st.customer.record(
        now,
        conversation,
        EventKind::Resolved {
            by: agent.to_string(),
        },
    )?;
    persist(st, true).await?;
    if let Some(queue) = count {
        let resolved = RouterRequest::Resolved {
            queue,
            channel,
            agent: Some(agent.clone()),
            first_contact,
        };
        // A count in the KPIs: not worth a retry.
        if let Err(e) = st.hub.tell_router(resolved).await {
            tracing::debug!(%conversation, error = %e, "resolution not counted");
        }
    }
    Ok(())
}

/// A tombstone (merged into `survivor`): what the customer is asked goes
/// to the survivor; what was about its own conversation is refused.
async fn tombstone(
    st: &mut CustomerState,
    survivor: CustomerId,
    req: CustomerRequest,
) -> Result<CustomerReply> {
    let customer = st.customer.id;
    match req {
        CustomerRequest::Contact {
            contact, linked, ..
        } => {
            let forwarded = CustomerRequest::Contact {
                contact,
                linked,
                new: None,
            };
            Box::pin(st.hub.ask_customer(survivor, forwarded)).await
        }
        CustomerRequest::HandOver {
            hand_over, linked, ..
        } => {
            let forwarded = CustomerRequest::HandOver {
                hand_over,
                linked,
                new: None,
            };
            Box::pin(st.hub.ask_customer(survivor, forwarded)).await
        }
        CustomerRequest::Get
        | CustomerRequest::Callback { .. }
        | CustomerRequest::Abandon { .. } => Box::pin(st.hub.ask_customer(survivor, req)).await,
        // Merged already: asked again (a retry), the same answer.
        CustomerRequest::MergeInto { survivor: s } if s == survivor => {
            Ok(CustomerReply::Customer(Box::new(st.customer.clone())))
        }
        _ => Err(CoreError::Merged {
            customer,
            into: survivor,
        }
        .into()),
    }
}

/// Becomes the tombstone of `survivor` (see `core::customer`, "Merging"):
/// the open conversation leaves routing and closes with a `MergedInto`
/// event (archived, like a resolved one). Returns the customer as it was.
async fn merge_into(now: TimeMs, st: &mut CustomerState, survivor: CustomerId) -> Result<Customer> {
    if survivor == st.customer.id {
        return Err(CoreError::invalid(
            "link_identities",
            "a customer cannot be merged into itself",
        )
        .into());
    }
    let before = st.customer.clone();
    if let Some(conv) = st.customer.open.as_ref().map(|c| c.id) {
        let withdraw = Input::Withdraw {
            conversation: conv,
            abandoned: false,
        };
        match ask_router(&st.hub, withdraw).await {
            Ok(()) | Err(ActorError::Core(CoreError::UnknownConversation(_))) => {}
            Err(e) => return Err(e),
        }
    }
    let closing = st.customer.merge_into(now, survivor).is_some();
    persist(st, closing).await?;
    tracing::info!(customer = %before.id, into = %survivor, "merged");
    Ok(before)
}

/// Takes in a customer that turned out to be this one; if it had waited
/// longer, this conversation takes its place in the queue.
async fn absorb(now: TimeMs, st: &mut CustomerState, other: &Customer) -> Result<()> {
    let before = st.customer.open.as_ref().map(|c| c.waiting_since);
    if !st.customer.absorb(now, other)? {
        return Ok(());
    }
    persist(st, false).await?;
    let Some(conv) = st.customer.open.as_ref() else {
        return Ok(());
    };
    let waiting = matches!(
        conv.state,
        ConversationState::Queued | ConversationState::Offered
    );
    if waiting && before.is_some_and(|b| conv.waiting_since < b) {
        let request = route_request(&st.customer, conv, None, true);
        tell_router(st, RouterRequest::Route(request)).await;
    }
    Ok(())
}

/// What the router needs to route `conv` (as it stands now: its latest
/// topic and channel, its waiting time kept), and whether it replaces a
/// routing round already under way.
fn route_request(
    customer: &Customer,
    conv: &Conversation,
    not_before: Option<TimeMs>,
    replace: bool,
) -> RouteRequest {
    RouteRequest {
        conversation: conv.id,
        topic: conv.topic.clone(),
        channel: conv.channel,
        enqueued_at: conv.waiting_since,
        priority: PriorityInputs {
            tier: customer.attributes.tier.clone(),
            sentiment: conv.sentiment,
            ..PriorityInputs::default()
        },
        last_agent: customer.last_agent.clone(),
        not_before,
        replace,
        again: Again::No,
        queue: conv.queue.clone(),
        seen: seen(conv),
        home: None,
        facts: CustomerFacts {
            segment: customer.attributes.segment.clone(),
            language: customer.attributes.language.clone(),
            contract: customer.attributes.contract.clone(),
        },
    }
}

/// The conversation's last routing decision in its history, or the message
/// that started a new round after a wrap-up (see [`seen`]).
fn last_routing_event(conv: &Conversation) -> Option<&EventKind> {
    conv.history
        .events()
        .iter()
        .rev()
        .map(|e| &e.kind)
        .find(|k| {
            matches!(
                k,
                EventKind::Queued { .. }
                    | EventKind::Offered { .. }
                    | EventKind::OfferRejected { .. }
                    | EventKind::OfferTimedOut { .. }
                    | EventKind::Transferred { .. }
                    | EventKind::Assigned { .. }
                    | EventKind::WrappedUp { .. }
            ) || matches!(k, EventKind::CustomerMessage { .. })
                && conv.state == ConversationState::WrappedUp
        })
}

/// What the customer's history holds of the conversation's current
/// routing round (see [`Seen`]).
fn seen(conv: &Conversation) -> Seen {
    match last_routing_event(conv) {
        Some(
            EventKind::Queued { .. }
            | EventKind::OfferRejected { .. }
            | EventKind::OfferTimedOut { .. }
            | EventKind::Transferred { .. },
        ) => Seen::Queued,
        Some(EventKind::Offered { offer, agent, .. }) => Seen::Offered {
            offer: *offer,
            agent: agent.clone(),
        },
        Some(EventKind::Assigned { .. } | EventKind::WrappedUp { .. }) => Seen::Assigned,
        // Nothing routed yet, or a message after a wrap-up started a new
        // round: nothing seen of it yet.
        _ => Seen::Nothing,
    }
}

/// What the router must know of the open conversation, when it needs to
/// be told again (recovered, or a new router): a waiting one (queued,
/// offered, or back after a wrap-up) to route with its original waiting
/// time and queue; an assigned one as the assignment to restore.
fn announcement(customer: &Customer, again: Again) -> Option<RouterRequest> {
    let conv = customer.open.as_ref()?;
    let mut route = route_request(customer, conv, None, false);
    route.again = again;
    match (conv.state, &route.seen) {
        (ConversationState::Queued | ConversationState::Offered, _)
        | (ConversationState::WrappedUp, Seen::Nothing) => Some(RouterRequest::Route(route)),
        (ConversationState::Assigned, _) => {
            let agent = conv.agent.clone()?;
            let since = conv
                .history
                .events()
                .iter()
                .rev()
                .find(|e| matches!(&e.kind, EventKind::Assigned { agent: a } if *a == agent))
                .map_or(conv.waiting_since, |e| e.at);
            Some(RouterRequest::Restore {
                route,
                agent,
                since,
            })
        }
        _ => None,
    }
}

/// A router of `epoch` took over: announce the open conversation to it,
/// once per epoch.
async fn resync(st: &mut CustomerState, epoch: u64) -> Result<()> {
    if st.announced == Some(epoch) {
        return Ok(());
    }
    // Whatever was waiting for the old router is in the announcement.
    st.unrouted = None;
    if let Some(mut request) = announcement(&st.customer, Again::Resync) {
        if let RouterRequest::Route(route) | RouterRequest::Restore { route, .. } = &mut request {
            route.home = Some(st.hub.cluster().node_id().to_owned());
        }
        st.hub.tell_router(request).await?;
    }
    st.announced = Some(epoch);
    Ok(())
}

/// Tells the router; what cannot be handed over now is kept for a retry
/// (a newer request replaces an older one: it says everything the router
/// must know).
async fn tell_router(st: &mut CustomerState, mut request: RouterRequest) {
    if let RouterRequest::Route(route) | RouterRequest::Restore { route, .. } = &mut request {
        route.home = Some(st.hub.cluster().node_id().to_owned());
    }
    if let Err(e) = st.hub.tell_router(request.clone()).await {
        tracing::debug!(customer = %st.customer.id, error = %e, "router not reachable; retrying");
        st.unrouted = Some(request);
    } else {
        st.unrouted = None;
    }
}

fn schedule_route_retry(myself: &ActorRef<CustomerMsg>, st: &mut CustomerState) {
    if st.unrouted.is_some() && !st.route_retry_scheduled {
        st.route_retry_scheduled = true;
        myself.send_after(ROUTE_RETRY, || CustomerMsg::RetryRoute);
    }
}

/// The waiting customer left: the conversation closes (to the archive,
/// like a resolved one) and the router counts an abandon.
async fn abandon(
    now: TimeMs,
    st: &mut CustomerState,
    channel: Channel,
) -> Result<(ConversationId, u64)> {
    let (id, seq) = st.customer.abandon(now, channel)?;
    persist(st, true).await?;
    let withdraw = Input::Withdraw {
        conversation: id,
        abandoned: true,
    };
    tell_router(st, RouterRequest::Step(withdraw)).await;
    Ok((id, seq))
}

/// A callback replaces waiting: same conversation, same place in the queue
/// (the original waiting time), offered on the chosen channel.
async fn callback(
    now: TimeMs,
    st: &mut CustomerState,
    channel: Channel,
    to: Identity,
    not_before: Option<TimeMs>,
) -> Result<(ConversationId, u64)> {
    let conv = st.customer.open.as_ref().ok_or_else(|| {
        CoreError::invalid(
            "identity",
            "the customer has no open conversation to call back about",
        )
    })?;
    let id = conv.id;
    if !matches!(
        conv.state,
        ConversationState::Queued | ConversationState::Offered
    ) {
        return Err(CoreError::invalid(
            "identity",
            "a callback replaces waiting; this conversation is not waiting",
        )
        .into());
    }
    let seq = st.customer.record(
        now,
        id,
        EventKind::CallbackRequested {
            channel,
            to,
            not_before: not_before.unwrap_or(0),
        },
    )?;
    persist(st, false).await?;
    let Some(conv) = st.customer.open.as_ref() else {
        return Ok((id, seq));
    };
    let request = route_request(&st.customer, conv, not_before, true);
    tell_router(st, RouterRequest::Route(request)).await;
    Ok((id, seq))
}
