//! The supervisor: parent of the node's router, customer and agent actors.
//!
//! A failed customer or agent actor is logged and counted; the hub notices
//! it is stopped and spawns the customer afresh from the journal on its
//! next message. A failed router is fatal: the supervisor stops, and the
//! node's shutdown follows.

use std::sync::Arc;

use centralino_core::RouterConfig;
use centralino_core::queue::QueueConfig;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::error::{ActorError, Result};
use crate::hub::Hub;
use crate::router::{RouterActor, RouterMsg};

pub struct Supervisor;

pub struct SupervisorState {
    router: Option<ActorRef<RouterMsg>>,
}

impl Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    /// The router's configuration when this node hosts the router.
    type Arguments = (Option<(RouterConfig, Vec<QueueConfig>)>, Arc<Hub>);

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        (router, hub): Self::Arguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        hub.set_supervisor(myself.get_cell());
        let router = match router {
            Some((cfg, queues)) => Some(
                Actor::spawn_linked(None, RouterActor, (cfg, queues, hub), myself.get_cell())
                    .await?
                    .0,
            ),
            None => None,
        };
        Ok(SupervisorState { router })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(who, err) => {
                crate::metrics::actor_failed();
                if st
                    .router
                    .as_ref()
                    .is_some_and(|r| r.get_id() == who.get_id())
                {
                    tracing::error!(error = %err, "router failed: stopping the node's actors");
                    myself.stop(Some("router failed".into()));
                } else {
                    tracing::error!(actor = %who.get_id(), error = %err, "actor failed; it restarts from the journal on its next message");
                }
            }
            SupervisionEvent::ActorTerminated(who, _, reason)
                if st
                    .router
                    .as_ref()
                    .is_some_and(|r| r.get_id() == who.get_id()) =>
            {
                tracing::info!(?reason, "router stopped");
                myself.stop(reason);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Starts the node's actors (with the router if `router` is given);
/// returns the supervisor to stop them with.
pub async fn start(
    hub: Arc<Hub>,
    router: Option<(RouterConfig, Vec<QueueConfig>)>,
) -> Result<(ActorRef<()>, ractor::concurrency::JoinHandle<()>)> {
    Actor::spawn(None, Supervisor, (router, hub))
        .await
        .map_err(|e| ActorError::unavailable(format!("supervisor ({e})")))
}
