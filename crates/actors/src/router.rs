//! The router actor: owns the core [`Router`] and carries out its decisions.
//!
//! Every pairing decision of the cluster goes through this one mailbox,
//! which is what makes capacity reservation race-free (invariant 1) and the
//! priority order deterministic (invariant 6). It ticks every [`TICK`] to
//! fire the router's timers. It only ever *tells* other actors (see the
//! crate docs), in decision order.
//!
//! # Taking over
//!
//! The router's state is not journaled: customers and agents hold the
//! facts it is made of. When a node claims the router (at start, after the
//! router's node died, or when it gave the router up to drain), the new
//! router starts under a new epoch (its claim's fencing token, which also
//! keeps its offer ids apart from any earlier router's) and *held* (see
//! `centralino_core::router`'s recovery): it offers nothing while every
//! live node tells it what it holds (`Envelope::RouterStarted` asks them;
//! see [`crate::hub::Hub::router_started`]):
//!
//! - each agent session logs in again, saying where its desktop is;
//! - each customer with an open conversation re-announces it: waiting ones
//!   as a recovered [`RouteRequest`] with their original waiting time and
//!   queue, assigned ones as a `Restore` of the assignment;
//! - then the node reports `Synced`.
//!
//! Once every node it saw alive has reported, or after [`RESYNC_WAIT`], it
//! resumes with one matching pass. Agents whose desktops died with a node
//! are *absent*: their offers go back at once, their assignments wait for
//! them to log in again (`reconnect_grace_ms`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use centralino_core::kpi::KpiReport;
use centralino_core::priority::PriorityInputs;
use centralino_core::router::{ConversationView, Enqueue, Phase, Restore, RevokeReason};
use centralino_core::rules::Facts;
use centralino_core::rules::RoutingRule;
use centralino_core::{
    AgentId, Channel, ConversationId, Input, OfferId, Output, QueueId, Router, RouterConfig, TimeMs,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::Result;
use crate::hub::{DesktopEvent, Hub};
use crate::wire::{RouterReply, RouterRequest};

/// How often the router fires its due timers.
pub const TICK: Duration = Duration::from_millis(20);

/// How often the router saves its KPIs (while they change) and publishes
/// them as metrics: a router that takes over after a crash loses at most
/// the counts of this long (plus a millisecond per agent: see `save_kpis`).
pub const KPI_SAVE: Duration = Duration::from_secs(1);

/// Longest a router that takes over waits for the nodes to report before it
/// offers anyway (a node that does not answer is likely dead too).
pub const RESYNC_WAIT: Duration = Duration::from_secs(5);

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
    /// Why it is told again, if it is: see the router's `route` for what it
    /// does when it holds the conversation already.
    #[serde(default)]
    pub again: Again,
    /// The queue it was routed to (a transfer may have moved it away from
    /// its topic's): a recovered conversation keeps it.
    #[serde(default)]
    pub queue: Option<QueueId>,
    /// What the customer's history holds of the current routing round.
    #[serde(default)]
    pub seen: Seen,
    /// The node the customer's actor runs on (a hint for the decisions).
    #[serde(default)]
    pub home: Option<String>,
    /// What routing rules may match besides the topic, channel and tier.
    #[serde(default)]
    pub facts: CustomerFacts,
}

/// The customer's attributes that routing rules match (the tier travels in
/// the priority inputs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerFacts {
    pub segment: Option<String>,
    pub language: Option<String>,
    pub contract: Option<String>,
}

/// Why a conversation is told to the router again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Again {
    /// It is not: a new routing round.
    #[default]
    No,
    /// Its customer was recovered from the journal (its node died, or its
    /// actor stopped): decisions told to the customer before may have been
    /// lost with it.
    Recovered,
    /// A router took over and asked every node what it holds; the
    /// customer lost nothing.
    Resync,
}

/// The last routing decision a customer's history holds for its open
/// conversation: enough for a router to tell whether a decision it made was
/// lost on the way (the customer's node died before journaling it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seen {
    /// Not even that it was queued.
    #[default]
    Nothing,
    Queued,
    Offered {
        offer: OfferId,
        agent: AgentId,
    },
    Assigned,
}

// Nearly every message is an `Ask`: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum RouterMsg {
    /// A request; answered if a port is given.
    Ask(RouterRequest, Option<RpcReplyPort<Result<RouterReply>>>),
    Tick,
}

/// What a router actor starts with.
pub struct RouterStart {
    pub cfg: RouterConfig,
    /// Queues defined at start; the first is the default queue.
    pub queues: Vec<centralino_core::queue::QueueConfig>,
    /// Routing rules (see `centralino_core::rules`).
    pub rules: Vec<RoutingRule>,
    /// The KPIs the previous router saved, to go on counting from.
    pub kpis: Option<KpiReport>,
    pub hub: Arc<Hub>,
    /// The fencing token under which this node claimed the router.
    pub epoch: u64,
    /// Nodes whose report it waits for before it offers (see "Taking
    /// over"); empty: it offers at once.
    pub wait_for: Vec<String>,
}

pub struct RouterActor;

pub struct RouterState {
    router: Router,
    hub: Arc<Hub>,
    out: Vec<Output>,
    epoch: u64,
    /// Nodes that have not reported yet, while held.
    unsynced: BTreeSet<String>,
    kpis: KpiSaver,
}

/// Saves the router's KPIs every [`KPI_SAVE`] while they change, one save
/// at a time, off the router's mailbox; and publishes them as gauges.
struct KpiSaver {
    next: TimeMs,
    saved: Option<KpiReport>,
    in_flight: Arc<AtomicBool>,
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterStart;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        start: RouterStart,
    ) -> Result<RouterState, ActorProcessingErr> {
        let now = now_ms();
        let mut router = Router::of_epoch(start.cfg, start.epoch);
        let mut out = Vec::new();
        for q in start.queues {
            router.step(now, Input::UpsertQueue(q), &mut out)?;
        }
        if !start.rules.is_empty()
            && let Err(e) = router.step(now, Input::SetRules(start.rules), &mut out)
        {
            tracing::error!(error = %e, "routing rules refused: routing by topic only until they are set again");
        }
        if let Some(k) = &start.kpis {
            router.carry_kpis(k);
        }
        if !start.wait_for.is_empty() {
            router.hold(now + RESYNC_WAIT.as_millis() as TimeMs);
        }
        start.hub.set_router(Some(myself.clone()));
        myself.send_interval(TICK, || RouterMsg::Tick);
        tracing::info!(epoch = start.epoch, waiting_for = ?start.wait_for, "router started");
        Ok(RouterState {
            router,
            hub: start.hub,
            out,
            epoch: start.epoch,
            unsynced: start.wait_for.into_iter().collect(),
            kpis: KpiSaver {
                next: now,
                saved: start.kpis,
                in_flight: Arc::new(AtomicBool::new(false)),
            },
        })
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
                let held = st.router.is_held();
                st.router.tick(now, &mut st.out);
                if held && !st.router.is_held() {
                    tracing::warn!(epoch = st.epoch, unsynced = ?st.unsynced, "router resumed before every node reported");
                }
                dispatch(st);
                save_kpis(now, st);
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
        RouterRequest::Restore {
            route,
            agent,
            since,
        } => {
            let Some(enqueue) = enqueue_of(st, &route) else {
                return Ok(RouterReply::Done);
            };
            let restore = Restore {
                enqueue,
                agent,
                since,
            };
            st.router.step(now, Input::Restore(restore), &mut st.out)?;
            RouterReply::Done
        }
        RouterRequest::Synced { node, epoch } => {
            if epoch == st.epoch && st.unsynced.remove(&node) && st.unsynced.is_empty() {
                st.router.step(now, Input::Resume, &mut st.out)?;
                tracing::info!(epoch, "every node has reported: router resumed");
            }
            RouterReply::Done
        }
        RouterRequest::Resolve {
            agent,
            conversation,
            queue,
            channel,
            first_contact,
        } => {
            let wrap_up = Input::WrapUp {
                agent: agent.clone(),
                conversation,
            };
            st.router.step(now, wrap_up, &mut st.out)?;
            if let Some(queue) = queue {
                st.router
                    .note_resolved(&queue, channel, Some(&agent), first_contact);
            }
            RouterReply::Done
        }
        RouterRequest::Resolved {
            queue,
            channel,
            agent,
            first_contact,
        } => {
            st.router
                .note_resolved(&queue, channel, agent.as_ref(), first_contact);
            RouterReply::Done
        }
        RouterRequest::SetRules(rules) => {
            st.router.step(now, Input::SetRules(rules), &mut st.out)?;
            RouterReply::Done
        }
        RouterRequest::Rules => RouterReply::Rules(st.router.rules().to_vec()),
        RouterRequest::Agents => RouterReply::Agents(st.router.agent_views()),
        RouterRequest::Queues => RouterReply::Queues(st.router.queue_views(now)),
        RouterRequest::Conversations(q) => {
            RouterReply::Conversations(st.router.conversation_views(now, q.as_ref()))
        }
        RouterRequest::Conversation(c) => {
            RouterReply::Conversation(st.router.conversation_view(now, c))
        }
        RouterRequest::Kpis => RouterReply::Kpis(Box::new(st.router.kpi_report(now))),
        RouterRequest::Status(c) => RouterReply::Status(
            st.router.conversation_view(now, c),
            st.router.wait_estimate(now, c),
        ),
    })
}

/// Every [`KPI_SAVE`] (plus a millisecond per agent, so that a large
/// cluster's KPIs cost etcd about 80 KB/s at most), if the KPIs changed and
/// no save is under way: publishes them as metrics and saves them for a
/// router that takes over, off the router's mailbox.
fn save_kpis(now: TimeMs, st: &mut RouterState) {
    let k = &mut st.kpis;
    if now < k.next || k.in_flight.load(Ordering::Acquire) {
        return;
    }
    let report = st.router.kpi_report(now);
    k.next = now + KPI_SAVE.as_millis() as TimeMs + report.agents.len() as TimeMs;
    if k.saved.as_ref() == Some(&report) {
        return;
    }
    k.saved = Some(report.clone());
    k.in_flight.store(true, Ordering::Release);
    let (hub, epoch, in_flight) = (st.hub.clone(), st.epoch, k.in_flight.clone());
    tokio::spawn(async move {
        crate::metrics::kpis(&report);
        if let Err(e) = hub.cluster().save_kpis(&report, epoch).await {
            tracing::warn!(epoch, error = %e, "KPIs not saved; a router taking over would miss the latest counts");
        }
        in_flight.store(false, Ordering::Release);
    });
}

/// The queue a request goes to: a recovered conversation keeps the queue
/// it was in, if the router has it; otherwise the routing rules and the
/// topic decide. The matching rule's boost applies either way.
fn enqueue_of(st: &RouterState, req: &RouteRequest) -> Option<Enqueue> {
    let facts = Facts {
        tier: req.priority.tier.as_deref(),
        segment: req.facts.segment.as_deref(),
        language: req.facts.language.as_deref(),
        contract: req.facts.contract.as_deref(),
        ..Facts::new(&req.topic, req.channel)
    };
    let Some(class) = st.router.classify(&facts) else {
        tracing::error!(conversation = %req.conversation, "no queue is defined: conversation cannot be routed");
        return None;
    };
    let kept = req
        .queue
        .clone()
        .filter(|q| req.again != Again::No && st.router.has_queue(q));
    let mut priority = req.priority.clone();
    priority.rule = class.rule;
    priority.rule_boost_ms = class.boost_ms;
    Some(Enqueue {
        conversation: req.conversation,
        queue: kept.unwrap_or(class.queue),
        channel: req.channel,
        enqueued_at: req.enqueued_at,
        priority,
        last_agent: req.last_agent.clone(),
        not_before: req.not_before,
    })
}

/// Routes a conversation. One told again that the router holds already is
/// left as it is, unless its customer was recovered: then it is compared
/// with what the customer's history says, and only what the customer lost
/// is said again (see [`restate`]).
fn route(now: TimeMs, st: &mut RouterState, req: RouteRequest) {
    if req.again != Again::No
        && let Some(view) = st.router.conversation_view(now, req.conversation)
    {
        if req.again == Again::Recovered {
            restate(now, st, &req, view);
        }
        return;
    }
    let Some(enqueue) = enqueue_of(st, &req) else {
        return;
    };
    // The void offer the customer still shows (an earlier router's, or one
    // that ended while its node was down) leaves the agent's desktop.
    if req.again != Again::No
        && let Seen::Offered { offer, agent } = &req.seen
    {
        st.out.push(Output::OfferRevoked {
            offer: *offer,
            conversation: req.conversation,
            agent: agent.clone(),
            reason: RevokeReason::Withdrawn,
        });
    }
    let input = if req.replace {
        Input::Reroute(enqueue)
    } else {
        Input::Enqueue(enqueue)
    };
    let from = st.out.len();
    let r = st.router.step(now, input, &mut st.out);
    // A customer re-announced to a router that takes over, and queued in
    // the same queue and channel already: its history need not say so twice.
    if req.again != Again::No && req.seen == Seen::Queued {
        let known = |o: &Output| {
            matches!(o, Output::Queued { conversation, queue, channel }
                if *conversation == req.conversation
                    && Some(queue) == req.queue.as_ref()
                    && *channel == req.channel)
        };
        let decided = st.out.split_off(from);
        st.out.extend(decided.into_iter().filter(|o| !known(o)));
    }
    match r {
        Err(e) => tracing::warn!(conversation = %req.conversation, error = %e, "enqueue refused"),
        Ok(()) if req.again != Again::No => {
            tracing::debug!(conversation = %req.conversation, "recovered conversation queued again")
        }
        Ok(()) => {}
    }
}

/// A recovered customer's conversation that the router holds: decisions
/// the customer's node took down with it before journaling them are said
/// again. Queued: the record is sent again. Offered: the offer never
/// reached the desktop (the customer posts it only once recorded), so it
/// is taken back, without penalty, and the conversation placed again,
/// keeping its place. Assigned: the assignment is sent again.
fn restate(now: TimeMs, st: &mut RouterState, req: &RouteRequest, view: ConversationView) {
    match (view.phase, &req.seen) {
        (Phase::Waiting | Phase::Scheduled, Seen::Nothing) => st.out.push(Output::Queued {
            conversation: req.conversation,
            queue: view.queue,
            channel: view.channel,
        }),
        (Phase::Offered { offer, .. }, seen) if !matches!(seen, Seen::Offered { offer: o, .. } if *o == offer) =>
        {
            let Some(mut enqueue) = enqueue_of(st, req) else {
                return;
            };
            enqueue.queue = view.queue;
            if let Err(e) = st.router.step(now, Input::Reroute(enqueue), &mut st.out) {
                tracing::warn!(conversation = %req.conversation, error = %e, "lost offer not taken back");
            }
        }
        (Phase::Assigned { .. }, seen) if *seen != Seen::Assigned => {
            if let Some(agent) = view.agent {
                // The offer id is not kept once accepted: the customer
                // records the assignment by agent (see `record_assigned`).
                st.out.push(Output::Assigned {
                    offer: OfferId(0),
                    conversation: req.conversation,
                    agent,
                    waited_ms: view.waited_ms,
                });
            }
        }
        _ => {}
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
                    RevokeReason::AgentDisconnected => "agent disconnected",
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
