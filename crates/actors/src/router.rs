//! The router actor: owns the core [`Router`] and carries out its decisions.
//!
//! Every pairing decision of the cluster goes through this one mailbox,
//! which is what makes capacity reservation race-free (invariant 1) and the
//! priority order deterministic (invariant 6). It ticks every [`TICK`] to
//! fire the router's timers. It only ever *tells* other actors (see the
//! crate docs), in decision order.

use std::sync::Arc;
use std::time::Duration;

use centralino_core::priority::PriorityInputs;
use centralino_core::router::{Enqueue, RevokeReason};
use centralino_core::{
    AgentId, Channel, ConversationId, Input, Output, Router, RouterConfig, TimeMs,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::Result;
use crate::hub::{DesktopEvent, Hub};
use crate::wire::{RouterReply, RouterRequest};

/// How often the router fires its due timers.
pub const TICK: Duration = Duration::from_millis(20);

/// A conversation to route, by topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteRequest {
    pub conversation: ConversationId,
    pub topic: String,
    pub channel: Channel,
    pub enqueued_at: TimeMs,
    pub priority: PriorityInputs,
    pub last_agent: Option<(AgentId, TimeMs)>,
    pub not_before: Option<TimeMs>,
    /// Route it again keeping its place (it changed channel, or a callback
    /// replaces its waiting).
    pub replace: bool,
    /// Sent by a customer recovered after its node died: route it only if
    /// the router does not hold it already.
    #[serde(default)]
    pub recovered: bool,
}

pub enum RouterMsg {
    /// A request; answered if a port is given.
    Ask(RouterRequest, Option<RpcReplyPort<Result<RouterReply>>>),
    Tick,
}

pub struct RouterActor;

pub struct RouterState {
    router: Router,
    hub: Arc<Hub>,
    out: Vec<Output>,
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = (
        RouterConfig,
        Vec<centralino_core::queue::QueueConfig>,
        Arc<Hub>,
    );

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        (cfg, queues, hub): Self::Arguments,
    ) -> Result<RouterState, ActorProcessingErr> {
        let mut router = Router::new(cfg);
        let mut out = Vec::new();
        for q in queues {
            router.step(now_ms(), Input::UpsertQueue(q), &mut out)?;
        }
        hub.set_router(Some(myself.clone()));
        myself.send_interval(TICK, || RouterMsg::Tick);
        Ok(RouterState { router, hub, out })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        match msg {
            RouterMsg::Ask(req, reply) => {
                let r = answer(now, st, req);
                dispatch(st);
                match (reply, r) {
                    (Some(reply), r) => drop(reply.send(r)),
                    (None, Err(e)) => tracing::debug!(error = %e, "routing request refused"),
                    (None, Ok(_)) => {}
                }
            }
            RouterMsg::Tick => {
                st.router.tick(now, &mut st.out);
                dispatch(st);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        st.hub.set_router(None);
        Ok(())
    }
}

fn answer(now: TimeMs, st: &mut RouterState, req: RouterRequest) -> Result<RouterReply> {
    Ok(match req {
        RouterRequest::Step(Input::Accept { agent, offer }) => {
            st.router
                .step(now, Input::Accept { agent, offer }, &mut st.out)?;
            // The accepting agent records the assignment with the customer
            // itself before it answers its desktop, so the agent's next
            // command finds it there; the decision also goes out as usual.
            let conversation = st.out.iter().find_map(|o| match o {
                Output::Assigned {
                    offer: o,
                    conversation,
                    ..
                } if *o == offer => Some(*conversation),
                _ => None,
            });
            conversation.map_or(RouterReply::Done, RouterReply::Accepted)
        }
        RouterRequest::Step(input) => {
            st.router.step(now, input, &mut st.out)?;
            RouterReply::Done
        }
        RouterRequest::Route(r) => {
            route(now, st, r);
            RouterReply::Done
        }
        RouterRequest::Resolved {
            queue,
            channel,
            agent,
        } => {
            st.router.note_resolved(&queue, channel, agent.as_ref());
            RouterReply::Done
        }
        RouterRequest::Agents => RouterReply::Agents(st.router.agent_views()),
        RouterRequest::Queues => RouterReply::Queues(st.router.queue_views(now)),
        RouterRequest::Conversations(q) => {
            RouterReply::Conversations(st.router.conversation_views(now, q.as_ref()))
        }
        RouterRequest::Conversation(c) => {
            RouterReply::Conversation(st.router.conversation_view(now, c))
        }
        RouterRequest::Kpis => RouterReply::Kpis(Box::new(st.router.kpi_report())),
    })
}

fn route(now: TimeMs, st: &mut RouterState, req: RouteRequest) {
    let Some(queue) = st.router.queue_for_topic(&req.topic) else {
        tracing::error!(conversation = %req.conversation, "no queue is defined: conversation cannot be routed");
        return;
    };
    let enqueue = Enqueue {
        conversation: req.conversation,
        queue,
        channel: req.channel,
        enqueued_at: req.enqueued_at,
        priority: req.priority,
        last_agent: req.last_agent,
        not_before: req.not_before,
    };
    let input = if req.replace {
        Input::Reroute(enqueue)
    } else {
        Input::Enqueue(enqueue)
    };
    match st.router.step(now, input, &mut st.out) {
        Err(centralino_core::CoreError::AlreadyRouted(_)) if req.recovered => {}
        Err(e) => tracing::warn!(conversation = %req.conversation, error = %e, "enqueue refused"),
        Ok(()) if req.recovered => {
            tracing::info!(conversation = %req.conversation, "recovered conversation queued again")
        }
        Ok(()) => {}
    }
}

/// Carries out the decisions: history to the customers, news to desktops.
/// Posted to the hub's ordered delivery lanes, never awaited: the router
/// does no network I/O, so a slow node or store cannot hold routing up.
fn dispatch(st: &mut RouterState) {
    for o in st.out.drain(..) {
        crate::metrics::router_output(&o);
        let customer = match &o {
            Output::AgentStateChanged { agent, state, load } => {
                st.hub.post_desktop(
                    agent,
                    DesktopEvent::StateChanged {
                        state: *state,
                        load: *load,
                    },
                );
                continue;
            }
            Output::OfferRevoked {
                offer,
                agent,
                reason,
                conversation,
            } => {
                let reason = match reason {
                    RevokeReason::TimedOut => "timed out",
                    RevokeReason::Withdrawn => "withdrawn",
                    RevokeReason::AgentLoggedOut => "agent logged out",
                };
                st.hub.post_desktop(
                    agent,
                    DesktopEvent::OfferRevoked {
                        offer: *offer,
                        reason: reason.into(),
                    },
                );
                conversation.customer
            }
            Output::Queued { conversation, .. }
            | Output::Offered { conversation, .. }
            | Output::Rejected { conversation, .. }
            | Output::Assigned { conversation, .. }
            | Output::Requeued { conversation, .. } => conversation.customer,
            // The customer actor that asked for the transfer records it.
            Output::Transferred { .. } => continue,
        };
        st.hub.post_customer(customer, o);
    }
}
