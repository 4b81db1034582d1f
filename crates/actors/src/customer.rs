//! The customer actor: owns one [`Customer`] and its open conversation.
//!
//! Every change is appended to the history, committed to the journal, and
//! only then acknowledged (invariant 3):
//!
//! - a request (a contact, an agent's reply, a wrap-up, ...) whose commit
//!   fails is undone here (a [`Checkpoint`] of the customer is restored) and
//!   answered with the error, so a retry does not record it twice;
//! - a routing decision whose commit fails stays recorded here (nothing was
//!   acknowledged about it, and the router has decided it) and is committed
//!   with the next commit; a retry is scheduled every [`FLUSH_RETRY`];
//! - a commit refused by the fencing check means another node owns the
//!   customer now: the actor stops at once.
//!
//! [`Checkpoint`]: centralino_core::customer::Checkpoint

use std::sync::Arc;

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
use crate::journal::{CustomerRecord, JournalBatch, JournalError, rebuild};
use crate::router::RouteRequest;
use crate::wire::{CustomerReply, CustomerRequest, RouterRequest};

pub enum CustomerMsg {
    /// A request; answered if a port is given.
    Request(CustomerRequest, Option<RpcReplyPort<Result<CustomerReply>>>),
    /// A routing decision about this customer's conversation.
    Routed(Output),
    /// Retry committing what the journal has not confirmed yet.
    Flush,
}

/// How soon a failed commit of routing decisions is retried.
pub const FLUSH_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

pub struct CustomerActor;

pub struct CustomerState {
    customer: Customer,
    hub: Arc<Hub>,
    /// This node's fencing token for the customer.
    token: u64,
    /// Last sequence number of the open conversation that is durable.
    durable_seq: u64,
    flush_scheduled: bool,
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
    type Arguments = (CustomerId, Arc<Hub>, u64);

    async fn pre_start(
        &self,
        _myself: ActorRef<CustomerMsg>,
        (id, hub, token): Self::Arguments,
    ) -> Result<CustomerState, ActorProcessingErr> {
        let customer = match hub.journal().recover(id).await? {
            Some(r) => rebuild(r),
            None => Customer::new(id, Vec::new()),
        };
        let durable_seq = customer.open.as_ref().map_or(0, |c| c.history.last_seq());
        Ok(CustomerState {
            customer,
            hub,
            token,
            durable_seq,
            flush_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CustomerMsg>,
        msg: CustomerMsg,
        st: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
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
        };
        if let Err(ActorError::Journal(JournalError::Fenced { .. })) = outcome {
            tracing::warn!(customer = %st.customer.id, "fenced out: another node owns this customer now; stopping");
            myself.stop(Some("fenced out".into()));
        } else if st.pending() && !st.flush_scheduled {
            // Routing decisions recorded here but not yet durable are kept
            // and committed as soon as the journal answers again.
            tracing::warn!(customer = %st.customer.id, "journal behind; retrying");
            st.flush_scheduled = true;
            myself.send_after(FLUSH_RETRY, || CustomerMsg::Flush);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CustomerMsg>,
        st: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        st.hub
            .cluster()
            .release_customer(st.customer.id, st.token)
            .await;
        Ok(())
    }
}

async fn request(
    now: TimeMs,
    st: &mut CustomerState,
    req: CustomerRequest,
) -> Result<CustomerReply> {
    Ok(match req {
        CustomerRequest::Contact { contact, linked } => {
            CustomerReply::Contact(contact_in(now, st, contact, linked).await?)
        }
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
    })
}

/// Commits what the open (or just closed) conversation gained since the
/// last commit, with the customer's record.
/// Commits what the open conversation gained since the last commit, with
/// the customer's record; `closing` commits it as closed (its history leaves
/// the journal for the archive) and, once durable, closes it here.
async fn persist(st: &mut CustomerState, closing: bool) -> Result<()> {
    let conv = st.customer.open.as_ref();
    // A close carries the whole history, for the archive.
    let since = if closing { 0 } else { st.durable_seq };
    let events = conv
        .map(|c| c.history.since(since).to_vec())
        .unwrap_or_default();
    let last = conv.map_or(0, |c| c.history.last_seq());
    let mut record = CustomerRecord::of(&st.customer);
    if closing {
        record.open = None;
    }
    let batch = JournalBatch {
        record,
        conversation: conv.map(|c| c.id),
        events,
        closed: closing,
        token: st.token,
    };
    let started = std::time::Instant::now();
    st.hub.journal().commit(batch).await?;
    crate::metrics::journal_commit(started.elapsed());
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
    let Some(conv) = st.customer.open.as_ref() else {
        return Ok(outcome);
    };
    match &outcome.need {
        RoutingNeed::Enqueue => {
            st.hub
                .tell_router(RouterRequest::Route(route_request(
                    &st.customer,
                    conv,
                    None,
                    false,
                )))
                .await
        }
        RoutingNeed::Reroute { .. } => {
            st.hub
                .tell_router(RouterRequest::Route(route_request(
                    &st.customer,
                    conv,
                    None,
                    true,
                )))
                .await
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
        } => (
            *conversation,
            EventKind::Queued {
                queue: queue.clone(),
                channel: *channel,
            },
        ),
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
            // Usually recorded already, when the agent's accept came back.
            if let Err(e) = record_assigned(now, st, *conversation, agent.clone(), *offer) {
                tracing::debug!(%conversation, error = %e, "assignment about a conversation no longer open");
            }
            // Nothing to commit when the accept recorded it already.
            return if st.pending() {
                persist(st, false).await
            } else {
                Ok(())
            };
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
    // The decision stands even if the journal is unreachable right now: it
    // stays recorded here and is committed on the next successful commit
    // (nothing about it was acknowledged). A fenced-out owner stops.
    let committed = persist(st, false).await;
    if let Err(ActorError::Journal(JournalError::Fenced { .. })) = committed {
        return committed;
    }
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
        };
        st.hub
            .post_desktop(&agent, DesktopEvent::Offer(Box::new(delivery)));
    }
    committed
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
    let last = st.customer.last_agent.as_ref().map(|(a, _)| a);
    match state {
        ConversationState::Assigned => {
            st.customer.check_assigned(conversation, agent)?;
            release_agent(&st.hub, conversation, agent).await?;
        }
        ConversationState::WrappedUp if last == Some(agent) => {}
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
    if let Some(queue) = queue {
        st.hub
            .tell_router(RouterRequest::Resolved {
                queue,
                channel,
                agent: Some(agent.clone()),
            })
            .await;
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
            channel_sla_ms: 0,
            tier: customer.attributes.tier.clone(),
            topic_boost_ms: 0,
            sentiment: conv.sentiment,
        },
        last_agent: customer.last_agent.clone(),
        not_before,
        replace,
    }
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
    st.hub.tell_router(RouterRequest::Route(request)).await;
    Ok((id, seq))
}
