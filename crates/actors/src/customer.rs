//! The customer actor: owns one [`Customer`] and its open conversation.
//!
//! Every change is appended to the history, committed to the journal, and
//! only then acknowledged (invariant 3). If a commit fails the actor stops:
//! its memory may not run ahead of the journal, and the next message
//! recovers it from what is durable.

use std::sync::Arc;

use centralino_core::customer::{Contact, ContactOutcome, ConversationState, Customer, RoutingNeed};
use centralino_core::history::{EventKind, TransferTarget};
use centralino_core::priority::PriorityInputs;
use centralino_core::router::RevokeReason;
use centralino_core::{AgentId, Channel, ConversationId, CoreError, CustomerId, Identity, Input, Output, TimeMs};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::now_ms;
use crate::error::{ActorError, Result};
use crate::hub::{Delivery, DesktopEvent, Hub, OfferDelivery};
use crate::journal::{CustomerRecord, JournalBatch, rebuild};
use crate::router::RouteRequest;
use crate::wire::{CustomerReply, CustomerRequest, RouterRequest};

pub enum CustomerMsg {
    /// A request; answered if a port is given.
    Request(CustomerRequest, Option<RpcReplyPort<Result<CustomerReply>>>),
    /// A routing decision about this customer's conversation.
    Routed(Output),
}

pub struct CustomerActor;

pub struct CustomerState {
    customer: Customer,
    hub: Arc<Hub>,
    /// This node's fencing token for the customer.
    token: u64,
    /// Last sequence number of the open conversation that is durable.
    durable_seq: u64,
}

impl Actor for CustomerActor {
    type Msg = CustomerMsg;
    type State = CustomerState;
    type Arguments = (CustomerId, Arc<Hub>, u64);

    async fn pre_start(&self, _myself: ActorRef<CustomerMsg>, (id, hub, token): Self::Arguments) -> Result<CustomerState, ActorProcessingErr> {
        let customer = match hub.journal().recover(id).await? {
            Some(r) => rebuild(r),
            None => Customer::new(id, Vec::new()),
        };
        let durable_seq = customer.open.as_ref().map_or(0, |c| c.history.last_seq());
        Ok(CustomerState { customer, hub, token, durable_seq })
    }

    async fn handle(&self, myself: ActorRef<CustomerMsg>, msg: CustomerMsg, st: &mut CustomerState) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        let failed = match msg {
            CustomerMsg::Routed(o) => routed(now, st, o).await,
            CustomerMsg::Request(req, reply) => {
                let r = request(now, st, req).await;
                let failed = journal_failed(&r);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
                failed
            }
        };
        if failed {
            tracing::warn!(customer = %st.customer.id, "journal commit failed: stopping so the next message recovers from the journal");
            myself.stop(Some("journal commit failed".into()));
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<CustomerMsg>, st: &mut CustomerState) -> Result<(), ActorProcessingErr> {
        st.hub.cluster().release_customer(st.customer.id, st.token).await;
        Ok(())
    }
}

async fn request(now: TimeMs, st: &mut CustomerState, req: CustomerRequest) -> Result<CustomerReply> {
    Ok(match req {
        CustomerRequest::Contact { contact, linked } => CustomerReply::Contact(contact_in(now, st, contact, linked).await?),
        CustomerRequest::Reply { conversation, agent, text } => CustomerReply::Seq(agent_reply(now, st, conversation, &agent, text).await?),
        CustomerRequest::WrapUp { conversation, agent, disposition } => {
            wrap_up(now, st, conversation, &agent, disposition).await?;
            CustomerReply::Done
        }
        CustomerRequest::Resolve { conversation, agent } => {
            resolve(now, st, conversation, &agent).await?;
            CustomerReply::Done
        }
        CustomerRequest::Transfer { conversation, agent, to, note } => {
            transfer(now, st, conversation, &agent, to, note).await?;
            CustomerReply::Done
        }
        CustomerRequest::Callback { channel, to, not_before } => {
            let (c, seq) = callback(now, st, channel, to, not_before).await?;
            CustomerReply::Callback(c, seq)
        }
        CustomerRequest::Get => CustomerReply::Customer(Box::new(st.customer.clone())),
    })
}

fn journal_failed<T>(r: &Result<T>) -> bool {
    matches!(r, Err(ActorError::Journal(_)))
}

/// Commits what the open (or just closed) conversation gained since the
/// last commit, with the customer's record.
async fn persist(st: &mut CustomerState, closed: Option<&centralino_core::customer::Conversation>) -> Result<()> {
    let conv = closed.or(st.customer.open.as_ref());
    let events = conv.map(|c| c.history.since(st.durable_seq).to_vec()).unwrap_or_default();
    let last = conv.map_or(0, |c| c.history.last_seq());
    let batch = JournalBatch {
        record: CustomerRecord::of(&st.customer),
        conversation: conv.map(|c| c.id),
        events,
        closed: closed.is_some(),
        token: st.token,
    };
    let started = std::time::Instant::now();
    st.hub.journal().commit(batch).await?;
    crate::metrics::journal_commit(started.elapsed());
    st.durable_seq = if closed.is_some() { 0 } else { last };
    Ok(())
}

async fn contact_in(now: TimeMs, st: &mut CustomerState, contact: Contact, linked: Vec<Identity>) -> Result<ContactOutcome> {
    let topic = contact.topic.clone();
    let outcome = st.customer.contact(now, contact);
    for identity in linked {
        if !st.customer.identities.contains(&identity) {
            st.customer.identities.push(identity.clone());
        }
        let _ = st.customer.record(now, outcome.conversation, EventKind::IdentityLinked { identity });
    }
    persist(st, None).await?;
    let Some(conv) = st.customer.open.as_ref() else { return Ok(outcome) };
    let request = |replace| RouteRequest {
        conversation: conv.id,
        topic: if topic.is_empty() { conv.topic.clone() } else { topic.clone() },
        channel: conv.channel,
        enqueued_at: conv.waiting_since,
        priority: PriorityInputs { channel_sla_ms: 0, tier: st.customer.attributes.tier.clone(), topic_boost_ms: 0, sentiment: conv.sentiment },
        last_agent: st.customer.last_agent.clone(),
        not_before: None,
        replace,
    };
    match &outcome.need {
        RoutingNeed::Enqueue => st.hub.tell_router(RouterRequest::Route(request(false))).await,
        RoutingNeed::Reroute { .. } => st.hub.tell_router(RouterRequest::Route(request(true))).await,
        RoutingNeed::Forward(agent) => {
            if let Some(event) = conv.history.events().last().cloned() {
                st.hub.to_desktop(agent, DesktopEvent::CustomerMessage { conversation: conv.id, event }).await;
            }
        }
        RoutingNeed::None => {}
    }
    Ok(outcome)
}

async fn ask_router(hub: &Hub, input: Input) -> Result<()> {
    hub.ask_router(RouterRequest::Step(input)).await.map(|_| ())
}

/// Records a routing decision in the history; offers go on to the agent.
async fn routed(now: TimeMs, st: &mut CustomerState, o: Output) -> bool {
    let (conversation, kind) = match &o {
        Output::Queued { conversation, queue, channel } => (*conversation, EventKind::Queued { queue: queue.clone(), channel: *channel }),
        Output::Offered { conversation, agent, offer, explanation, .. } => {
            (*conversation, EventKind::Offered { agent: agent.clone(), offer: *offer, explanation: explanation.clone() })
        }
        Output::Rejected { conversation, agent, offer, reason } => {
            (*conversation, EventKind::OfferRejected { agent: agent.clone(), offer: *offer, reason: reason.clone() })
        }
        Output::OfferRevoked { conversation, agent, offer, reason: RevokeReason::TimedOut } => {
            (*conversation, EventKind::OfferTimedOut { agent: agent.clone(), offer: *offer })
        }
        Output::OfferRevoked { conversation, agent, offer, reason: RevokeReason::AgentLoggedOut } => (
            *conversation,
            EventKind::OfferRejected { agent: agent.clone(), offer: *offer, reason: "agent logged out".into() },
        ),
        Output::Assigned { conversation, agent, .. } => (*conversation, EventKind::Assigned { agent: agent.clone() }),
        Output::Requeued { conversation, from } => {
            let Some(queue) = st.customer.open.as_ref().and_then(|c| c.queue.clone()) else { return false };
            (*conversation, EventKind::Transferred { from: from.clone(), to: TransferTarget::Queue(queue), note: "agent logged out".into() })
        }
        Output::OfferRevoked { .. } | Output::Transferred { .. } | Output::AgentStateChanged { .. } => return false,
    };
    if let Err(e) = st.customer.record(now, conversation, kind) {
        tracing::debug!(%conversation, error = %e, "routing decision about a conversation no longer open");
        return false;
    }
    if let Err(e) = persist(st, None).await {
        tracing::error!(%conversation, error = %e, "routing decision not journaled");
        return true;
    }
    if let Output::Offered { offer, agent, channel, queue, expires_at, explanation, .. } = o {
        let Some(conv) = st.customer.open.as_ref() else { return false };
        let delivery = OfferDelivery {
            offer,
            conversation,
            channel,
            queue,
            attributes: st.customer.attributes.clone(),
            history: conv.history.events().to_vec(),
            explanation,
            expires_at,
        };
        st.hub.to_desktop(&agent, DesktopEvent::Offer(Box::new(delivery))).await;
    }
    false
}

async fn agent_reply(now: TimeMs, st: &mut CustomerState, conversation: ConversationId, agent: &AgentId, text: String) -> Result<u64> {
    let (seq, channel, to) = st.customer.agent_reply(now, conversation, agent, text.clone())?;
    persist(st, None).await?;
    st.hub.deliver(Delivery { conversation, channel, to, agent: agent.clone(), text, seq }).await;
    Ok(seq)
}

async fn wrap_up(now: TimeMs, st: &mut CustomerState, conversation: ConversationId, agent: &AgentId, disposition: String) -> Result<()> {
    st.customer.check_assigned(conversation, agent)?;
    ask_router(&st.hub, Input::WrapUp { agent: agent.clone(), conversation }).await?;
    st.customer.record(now, conversation, EventKind::WrappedUp { agent: agent.clone(), disposition })?;
    persist(st, None).await
}

async fn transfer(now: TimeMs, st: &mut CustomerState, conversation: ConversationId, agent: &AgentId, to: TransferTarget, note: String) -> Result<()> {
    st.customer.check_assigned(conversation, agent)?;
    ask_router(&st.hub, Input::Transfer { agent: agent.clone(), conversation, to: to.clone() }).await?;
    st.customer.record(now, conversation, EventKind::Transferred { from: agent.clone(), to, note })?;
    persist(st, None).await
}

/// An agent closes the conversation: the one assigned, or the one who last
/// wrapped it up.
async fn resolve(now: TimeMs, st: &mut CustomerState, conversation: ConversationId, agent: &AgentId) -> Result<()> {
    let conv = st.customer.conversation(conversation)?;
    let (state, channel, queue) = (conv.state, conv.channel, conv.queue.clone());
    let last = st.customer.last_agent.as_ref().map(|(a, _)| a);
    match state {
        ConversationState::Assigned => {
            st.customer.check_assigned(conversation, agent)?;
            ask_router(&st.hub, Input::WrapUp { agent: agent.clone(), conversation }).await?;
        }
        ConversationState::WrappedUp if last == Some(agent) => {}
        _ => return Err(CoreError::NotAssigned { conversation, agent: agent.clone() }.into()),
    }
    let closed = st.customer.resolve(now, conversation, agent.as_str())?;
    persist(st, Some(&closed)).await?;
    if let Some(queue) = queue {
        st.hub.tell_router(RouterRequest::Resolved { queue, channel, agent: Some(agent.clone()) }).await;
    }
    Ok(())
}

/// A callback replaces waiting: same conversation, same place in the queue
/// (the original waiting time), offered on the chosen channel.
async fn callback(now: TimeMs, st: &mut CustomerState, channel: Channel, to: Identity, not_before: Option<TimeMs>) -> Result<(ConversationId, u64)> {
    let conv = st.customer.open.as_ref().ok_or_else(|| CoreError::invalid("identity", "the customer has no open conversation to call back about"))?;
    let id = conv.id;
    if !matches!(conv.state, ConversationState::Queued | ConversationState::Offered) {
        return Err(CoreError::invalid("identity", "a callback replaces waiting; this conversation is not waiting").into());
    }
    let seq = st.customer.record(now, id, EventKind::CallbackRequested { channel, to, not_before: not_before.unwrap_or(0) })?;
    persist(st, None).await?;
    let Some(conv) = st.customer.open.as_ref() else { return Ok((id, seq)) };
    st.hub
        .tell_router(RouterRequest::Route(RouteRequest {
            conversation: id,
            topic: conv.topic.clone(),
            channel,
            enqueued_at: conv.waiting_since,
            priority: PriorityInputs { channel_sla_ms: 0, tier: st.customer.attributes.tier.clone(), topic_boost_ms: 0, sentiment: conv.sentiment },
            last_agent: st.customer.last_agent.clone(),
            not_before,
            replace: true,
        }))
        .await;
    Ok((id, seq))
}
