//! The supervisor: parent of the node's router, customer and agent actors.
//!
//! A failed customer or agent actor is logged and counted; the hub notices
//! it is stopped and spawns the customer afresh from the journal on its
//! next message. A failed router is fatal: the supervisor stops, and the
//! node's shutdown follows (another node then takes the router over).
//!
//! The router starts when this node claims it, at start or later (its
//! node died, or drained): [`start_router`]; and stops when the node gives
//! it up: [`stop_router`].

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::error::{ActorError, Result, call_result};
use crate::hub::Hub;
use crate::router::{RouterActor, RouterMsg, RouterStart};

pub struct Supervisor;

pub enum SupervisorMsg {
    /// Start the router here (this node claimed it).
    StartRouter(Box<RouterStart>, RpcReplyPort<Result<()>>),
    /// Stop the router here (this node gives it up); answered once stopped.
    StopRouter(RpcReplyPort<()>),
}

pub struct SupervisorState {
    router: Option<ActorRef<RouterMsg>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Hub>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        hub: Arc<Hub>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        hub.set_supervisor(myself.get_cell());
        Ok(SupervisorState { router: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartRouter(start, reply) => {
                let r = match &st.router {
                    Some(_) => Err(ActorError::unavailable(
                        "router (already running on this node)",
                    )),
                    None => Actor::spawn_linked(None, RouterActor, *start, myself.get_cell())
                        .await
                        .map(|(router, _)| st.router = Some(router))
                        .map_err(|e| ActorError::unavailable(format!("router ({e})"))),
                };
                let _ = reply.send(r);
            }
            SupervisorMsg::StopRouter(reply) => {
                if let Some(router) = st.router.take() {
                    router
                        .stop_and_wait(Some("router handed over".into()), None)
                        .await
                        .ok();
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let is_router = |id: ractor::ActorId| st.router.as_ref().is_some_and(|r| r.get_id() == id);
        match evt {
            SupervisionEvent::ActorFailed(who, err) => {
                crate::metrics::actor_failed();
                if is_router(who.get_id()) {
                    tracing::error!(error = %err, "router failed: stopping the node's actors");
                    myself.stop(Some("router failed".into()));
                } else {
                    tracing::error!(actor = %who.get_id(), error = %err, "actor failed; it restarts from the journal on its next message");
                }
            }
            SupervisionEvent::ActorTerminated(who, _, reason) if is_router(who.get_id()) => {
                tracing::info!(?reason, "router stopped");
                myself.stop(reason);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Starts the node's supervisor; returns it with its join handle.
pub async fn start(
    hub: Arc<Hub>,
) -> Result<(ActorRef<SupervisorMsg>, ractor::concurrency::JoinHandle<()>)> {
    Actor::spawn(None, Supervisor, hub)
        .await
        .map_err(|e| ActorError::unavailable(format!("supervisor ({e})")))
}

/// Starts the router under the supervisor.
pub async fn start_router(supervisor: &ActorRef<SupervisorMsg>, start: RouterStart) -> Result<()> {
    call_result(
        "supervisor",
        supervisor
            .call(
                |reply| SupervisorMsg::StartRouter(Box::new(start), reply),
                None,
            )
            .await,
    )?
}

/// Stops the router, if it runs here; returns once it has stopped.
pub async fn stop_router(supervisor: &ActorRef<SupervisorMsg>) {
    let _ = supervisor.call(SupervisorMsg::StopRouter, None).await;
}
