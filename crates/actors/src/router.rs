//! The router actor: owns the core [`Router`] and carries out its decisions.
//!
//! Every pairing decision of the node goes through this one mailbox, which
//! is what makes capacity reservation race-free (invariant 1) and the
//! priority order deterministic (invariant 6). It ticks every
//! [`TICK`] to fire the router's timers. It only ever *casts* to other
//! actors (see the crate docs).

use std::sync::Arc;
use std::time::Duration;

use centralino_core::kpi::KpiReport;
use centralino_core::priority::PriorityInputs;
use centralino_core::router::{AgentView, ConversationView, Enqueue, QueueView, RevokeReason};
use centralino_core::{AgentId, Channel, ConversationId, CoreError, Input, Output, QueueId, Router, RouterConfig, TimeMs};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::now_ms;
use crate::customer::CustomerMsg;
use crate::hub::{DesktopEvent, Hub};

/// How often the router fires its due timers.
pub const TICK: Duration = Duration::from_millis(20);

/// A conversation to route, by topic.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    pub conversation: ConversationId,
    pub topic: String,
    pub channel: Channel,
    pub enqueued_at: TimeMs,
    pub priority: PriorityInputs,
    pub last_agent: Option<(AgentId, TimeMs)>,
    pub not_before: Option<TimeMs>,
    /// Withdraw it first (it changed channel, or a callback replaces it).
    pub replace: bool,
}

pub enum RouterMsg {
    /// Apply one input; reply with the outcome if asked.
    Step(Input, Option<RpcReplyPort<Result<(), CoreError>>>),
    Route(RouteRequest),
    Resolved { queue: QueueId, channel: Channel, agent: Option<AgentId> },
    Tick,
    Agents(RpcReplyPort<Vec<AgentView>>),
    Queues(RpcReplyPort<Vec<QueueView>>),
    Conversations(Option<QueueId>, RpcReplyPort<Vec<ConversationView>>),
    Conversation(ConversationId, RpcReplyPort<Option<ConversationView>>),
    Kpis(RpcReplyPort<KpiReport>),
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
    type Arguments = (RouterConfig, Vec<centralino_core::queue::QueueConfig>, Arc<Hub>);

    async fn pre_start(&self, myself: ActorRef<RouterMsg>, (cfg, queues, hub): Self::Arguments) -> Result<RouterState, ActorProcessingErr> {
        let mut router = Router::new(cfg);
        let mut out = Vec::new();
        for q in queues {
            router.step(now_ms(), Input::UpsertQueue(q), &mut out)?;
        }
        hub.set_router(myself.clone());
        myself.send_interval(TICK, || RouterMsg::Tick);
        Ok(RouterState { router, hub, out })
    }

    async fn handle(&self, _myself: ActorRef<RouterMsg>, msg: RouterMsg, st: &mut RouterState) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        match msg {
            RouterMsg::Step(input, reply) => {
                let r = st.router.step(now, input, &mut st.out);
                // Decisions reach the customers' mailboxes before the caller
                // hears back, so its next command finds them recorded (an
                // agent replying right after its accept finds the
                // conversation assigned).
                dispatch(st).await;
                match (reply, r) {
                    (Some(reply), r) => drop(reply.send(r)),
                    (None, Err(e)) => tracing::debug!(error = %e, "routing input refused"),
                    (None, Ok(())) => {}
                }
                return Ok(());
            }
            RouterMsg::Route(req) => route(now, st, req),
            RouterMsg::Resolved { queue, channel, agent } => st.router.note_resolved(&queue, channel, agent.as_ref()),
            RouterMsg::Tick => st.router.tick(now, &mut st.out),
            RouterMsg::Agents(r) => drop(r.send(st.router.agent_views())),
            RouterMsg::Queues(r) => drop(r.send(st.router.queue_views(now))),
            RouterMsg::Conversations(q, r) => drop(r.send(st.router.conversation_views(now, q.as_ref()))),
            RouterMsg::Conversation(c, r) => drop(r.send(st.router.conversation_view(now, c))),
            RouterMsg::Kpis(r) => drop(r.send(st.router.kpi_report())),
        }
        dispatch(st).await;
        Ok(())
    }
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
    let input = if req.replace { Input::Reroute(enqueue) } else { Input::Enqueue(enqueue) };
    if let Err(e) = st.router.step(now, input, &mut st.out) {
        tracing::warn!(conversation = %req.conversation, error = %e, "enqueue refused");
    }
}

/// Carries out the decisions: history to the customers, news to desktops.
async fn dispatch(st: &mut RouterState) {
    for o in st.out.drain(..) {
        crate::metrics::router_output(&o);
        let customer = match &o {
            Output::AgentStateChanged { agent, state, load } => {
                st.hub.to_desktop(agent, DesktopEvent::StateChanged { state: *state, load: *load });
                continue;
            }
            Output::OfferRevoked { offer, agent, reason, conversation } => {
                let reason = match reason {
                    RevokeReason::TimedOut => "timed out",
                    RevokeReason::Withdrawn => "withdrawn",
                    RevokeReason::AgentLoggedOut => "agent logged out",
                };
                st.hub.to_desktop(agent, DesktopEvent::OfferRevoked { offer: *offer, reason: reason.into() });
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
        match st.hub.customer(customer).await {
            Ok(c) => {
                let _ = c.cast(CustomerMsg::Routed(o));
            }
            Err(e) => tracing::error!(%customer, error = %e, "routing decision not delivered to the customer"),
        }
    }
}
