//! The customer actor's part in proactive outbound: a campaign's notice
//! and the end of its reply window (see `actors::campaign` for the runner
//! that asks), and the count of replies.
//!
//! The actor plans again with what it holds ([`plan`]: its attributes may
//! have changed since the record the campaign scanned), records the
//! notice in the customer's one history, commits, and only then hands it
//! to a gateway; a notice that cannot be committed is undone like any
//! request (see the parent module) and the runner asks again later.

use centralino_core::campaign::run::{Delivered, Expired, Task};
use centralino_core::campaign::{CampaignSpec, Known, Plan, plan};
use centralino_core::customer::{ContactOutcome, ConversationState, Notice};
use centralino_core::history::EventKind;
use centralino_core::priority::PriorityInputs;
use centralino_core::router::Enqueue;
use centralino_core::{AgentId, ConversationId, Input, TimeMs};

use super::{CustomerState, persist, tell_router};
use crate::error::Result;
use crate::hub::{Delivery, DesktopEvent};
use crate::wire::{CustomerReply, RouterRequest};

/// A campaign's task for this customer.
pub(super) async fn campaign(
    now: TimeMs,
    st: &mut CustomerState,
    spec: CampaignSpec,
    task: Task,
) -> Result<CustomerReply> {
    Ok(match task {
        Task::Deliver => deliver(now, st, spec).await?.into(),
        Task::Expire(conversation) => {
            CustomerReply::Expired(expire(now, st, &spec, conversation).await?)
        }
    })
}

/// Sends the notice now if the plan says so: recorded, committed, handed
/// to a gateway; queued for an agent if the campaign has follow-up work
/// and the notice opened the conversation (an open one is with routing or
/// an agent already, who sees the notice in the history).
async fn deliver(now: TimeMs, st: &mut CustomerState, spec: CampaignSpec) -> Result<Delivered> {
    let plan = plan(&spec, now, Known::from(&st.customer));
    let Plan::Send { channel, to } = plan else {
        return Ok(Delivered::Not(plan));
    };
    let notice = Notice {
        campaign: spec.id.clone(),
        channel,
        to: to.clone(),
        text: spec.message.clone(),
        topic: spec.topic.clone(),
    };
    let (conversation, seq) = st.customer.notify(now, notice);
    persist(st, false).await?;
    crate::metrics::campaign_notice(channel);
    st.hub
        .deliver(Delivery {
            conversation,
            channel,
            to,
            agent: AgentId::new(""),
            text: spec.message.clone(),
            seq,
            campaign: Some(spec.id.clone()),
        })
        .await;
    let Some(conv) = st.customer.open.as_ref() else {
        return Ok(Delivered::Not(Plan::NotTargeted));
    };
    if let (ConversationState::Assigned, Some(agent)) = (conv.state, &conv.agent)
        && let Some(event) = conv.history.events().last().cloned()
    {
        st.hub.post_desktop(
            agent,
            DesktopEvent::CustomerMessage {
                conversation,
                event,
            },
        );
    }
    let follow_up = match &spec.follow_up {
        Some(f) if conv.state == ConversationState::Notified => {
            let enqueue = Enqueue {
                conversation,
                queue: f.queue.clone(),
                channel: f.channel.unwrap_or(channel),
                enqueued_at: now,
                priority: PriorityInputs {
                    tier: st.customer.attributes.tier.clone(),
                    ..PriorityInputs::default()
                },
                last_agent: st.customer.last_agent.clone(),
                not_before: None,
            };
            tell_router(st, RouterRequest::Step(Input::Enqueue(enqueue))).await;
            true
        }
        _ => false,
    };
    let Some(mark) = st.customer.campaign_mark(&spec.id).cloned() else {
        return Ok(Delivered::Not(Plan::NotTargeted));
    };
    Ok(Delivered::Sent { mark, follow_up })
}

/// The notice's reply window is over: its conversation is closed if the
/// notice opened it and the customer never wrote in it (nor did routing
/// take it: it is still `Notified`).
async fn expire(
    now: TimeMs,
    st: &mut CustomerState,
    spec: &CampaignSpec,
    conversation: ConversationId,
) -> Result<Expired> {
    let replied = st
        .customer
        .campaign_mark(&spec.id)
        .is_some_and(|m| m.replied);
    let Some(conv) = st.customer.open.as_ref().filter(|c| c.id == conversation) else {
        return Ok(Expired::Kept { replied });
    };
    let customer_wrote = conv.history.events().iter().any(|e| {
        matches!(
            e.kind,
            EventKind::CustomerMessage { .. } | EventKind::BotTranscript { .. }
        )
    });
    if conv.state != ConversationState::Notified || customer_wrote {
        return Ok(Expired::Kept { replied });
    }
    let by = format!(
        "campaign {}: no reply within {} h",
        spec.id,
        spec.reply_window_ms / 3_600_000
    );
    st.customer
        .record(now, conversation, EventKind::Resolved { by })?;
    persist(st, true).await?;
    Ok(Expired::Closed)
}

/// A contact that answers campaigns' notices counts in their replies, in
/// the store, wherever the campaigns run. Best effort, off the contact's
/// path: a count lost here is made again by the campaign's runner when
/// the reply window ends (the customer's mark says it replied).
pub(super) fn count_replies(st: &CustomerState, outcome: &ContactOutcome) {
    if outcome.replied_to.is_empty() {
        return;
    }
    crate::metrics::campaign_replies(outcome.replied_to.len());
    let Some(campaigns) = st.hub.campaigns() else {
        return;
    };
    let (store, customer) = (campaigns.store().clone(), st.customer.id);
    let replied = outcome.replied_to.clone();
    tokio::spawn(async move {
        for campaign in replied {
            if let Err(e) = store.replied(&campaign, customer).await {
                tracing::debug!(%campaign, %customer, error = %e, "reply not counted yet");
            }
        }
    });
}
