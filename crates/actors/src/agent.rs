//! The agent actor: one per connected agent desktop.
//!
//! It owns the session (the stream back to the desktop) and forwards the
//! agent's commands to whoever decides them: offers and availability to the
//! router, conversation work to the customer's actor. When the desktop goes
//! away it logs the agent out, which re-routes its open offers and
//! conversations.

use std::sync::Arc;

use centralino_core::history::TransferTarget;
use centralino_core::{
    AgentId, AgentProfile, AgentState, ConversationId, CoreError, Input, OfferId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use crate::error::{ActorError, Result};
use crate::hub::{DesktopEvent, Hub};
use crate::wire::{CustomerRequest, RouterReply, RouterRequest};

/// Something an agent asks for from its desktop.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCommand {
    SetAway(bool),
    Accept(OfferId),
    Reject(OfferId, String),
    Reply {
        conversation: ConversationId,
        text: String,
    },
    Transfer {
        conversation: ConversationId,
        to: TransferTarget,
        note: String,
    },
    WrapUp {
        conversation: ConversationId,
        disposition: String,
    },
    Resolve {
        conversation: ConversationId,
    },
}

pub enum AgentMsg {
    /// To the desktop.
    Desktop(DesktopEvent),
    /// From the desktop.
    Command(AgentCommand, RpcReplyPort<Result<()>>),
    /// A router took over: log in to it again (see `actors::router`).
    Resync(RpcReplyPort<Result<()>>),
}

pub struct AgentActor;

pub struct AgentSession {
    id: AgentId,
    hub: Arc<Hub>,
    desktop: mpsc::Sender<DesktopEvent>,
    /// What the agent logged in with, for a router that takes over.
    profile: AgentProfile,
    /// Whether the router last said it is away.
    away: bool,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentSession;
    type Arguments = (AgentProfile, bool, Arc<Hub>, mpsc::Sender<DesktopEvent>);

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        (profile, away, hub, desktop): Self::Arguments,
    ) -> Result<AgentSession, ActorProcessingErr> {
        Ok(AgentSession {
            id: profile.id.clone(),
            hub,
            desktop,
            profile,
            away,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentSession,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Desktop(event) => {
                if let DesktopEvent::StateChanged { state, .. } = &event {
                    st.away = *state == AgentState::Away;
                }
                if st.desktop.send(event).await.is_err() {
                    // The desktop stream is gone; the server logs the agent out.
                    myself.stop(Some("desktop disconnected".into()));
                }
            }
            AgentMsg::Command(cmd, reply) => {
                let _ = reply.send(command(st, cmd).await);
            }
            AgentMsg::Resync(reply) => {
                let login = login_input(&st.hub, st.profile.clone(), st.away);
                let _ = reply.send(router_step(&st.hub, login).await);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<AgentMsg>,
        st: &mut AgentSession,
    ) -> Result<(), ActorProcessingErr> {
        st.hub.unregister_agent(&st.id, &myself);
        Ok(())
    }
}

async fn command(st: &mut AgentSession, cmd: AgentCommand) -> Result<()> {
    let agent = st.id.clone();
    let (customer, req) = match cmd {
        AgentCommand::SetAway(away) => {
            router_step(&st.hub, Input::SetAway { agent, away }).await?;
            st.away = away;
            return Ok(());
        }
        AgentCommand::Accept(offer) => {
            let accepted = st
                .hub
                .ask_router(RouterRequest::Step(Input::Accept {
                    agent: agent.clone(),
                    offer,
                }))
                .await?;
            let RouterReply::Accepted(conversation) = accepted else {
                return Ok(());
            };
            // The accept has happened; recording it with the customer now
            // keeps the agent's next command in order after it. If that
            // fails, the router's own decision still reaches the customer.
            let assigned = CustomerRequest::Assigned {
                conversation,
                agent: agent.clone(),
                offer,
            };
            if let Err(e) = st.hub.ask_customer(conversation.customer, assigned).await {
                tracing::warn!(%agent, %conversation, error = %e, "assignment not recorded with the customer yet");
            }
            return Ok(());
        }
        AgentCommand::Reject(offer, reason) => {
            return router_step(
                &st.hub,
                Input::Reject {
                    agent,
                    offer,
                    reason,
                },
            )
            .await;
        }
        AgentCommand::Reply { conversation, text } => (
            conversation,
            CustomerRequest::Reply {
                conversation,
                agent,
                text,
            },
        ),
        AgentCommand::Transfer {
            conversation,
            to,
            note,
        } => (
            conversation,
            CustomerRequest::Transfer {
                conversation,
                agent,
                to,
                note,
            },
        ),
        AgentCommand::WrapUp {
            conversation,
            disposition,
        } => (
            conversation,
            CustomerRequest::WrapUp {
                conversation,
                agent,
                disposition,
            },
        ),
        AgentCommand::Resolve { conversation } => (
            conversation,
            CustomerRequest::Resolve {
                conversation,
                agent,
            },
        ),
    };
    // Made-up ids spawn no actor anywhere.
    if !st.hub.customer_exists(customer.customer).await? {
        return Err(CoreError::UnknownConversation(customer).into());
    }
    st.hub
        .ask_customer(customer.customer, req)
        .await
        .map(|_| ())
}

/// The login a router is told: with this node as where the desktop is, so
/// that the router knows whose desktops went away if the node dies.
fn login_input(hub: &Hub, profile: AgentProfile, away: bool) -> Input {
    Input::Login {
        profile,
        away,
        session: Some(hub.cluster().node_id().to_owned()),
    }
}

async fn router_step(hub: &Hub, input: Input) -> Result<()> {
    hub.ask_router(RouterRequest::Step(input)).await.map(|_| ())
}

/// Logs an agent in: starts its session actor here (replacing an older
/// session of the same agent), tells the cluster where its desktop is, and
/// tells the router. Events for the desktop arrive on the returned receiver.
pub async fn login(
    hub: &Arc<Hub>,
    profile: AgentProfile,
    away: bool,
    buffer: usize,
) -> Result<(ActorRef<AgentMsg>, mpsc::Receiver<DesktopEvent>)> {
    profile.validate()?;
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let supervisor = hub.supervisor_cell()?;
    let (actor, _) = Actor::spawn_linked(
        None,
        AgentActor,
        (profile.clone(), away, hub.clone(), tx),
        supervisor,
    )
    .await
    .map_err(|e| ActorError::unavailable(format!("agent session ({e})")))?;
    if let Some(old) = hub.register_agent(profile.id.clone(), actor.clone()) {
        old.stop(Some("replaced by a new session".into()));
    }
    let id = profile.id.clone();
    let registered = hub.cluster().agent_session(&id, true).await;
    let logged_in = match registered {
        Ok(()) => router_step(hub, login_input(hub, profile, away)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = logged_in {
        if hub.unregister_agent(&id, &actor)
            && let Err(e) = hub.cluster().agent_session(&id, false).await
        {
            tracing::debug!(agent = %id, error = %e, "agent session not withdrawn from the cluster");
        }
        actor.stop(None);
        return Err(e);
    }
    Ok((actor, rx))
}

/// Logs the agent out if `session` is still its current session.
pub async fn logout(hub: &Arc<Hub>, agent: &AgentId, session: &ActorRef<AgentMsg>) {
    session.stop(Some("logged out".into()));
    if hub.unregister_agent(agent, session) {
        if let Err(e) = hub.cluster().agent_session(agent, false).await {
            tracing::debug!(%agent, error = %e, "agent session not withdrawn from the cluster");
        }
        if let Err(e) = router_step(
            hub,
            Input::Logout {
                agent: agent.clone(),
            },
        )
        .await
        {
            tracing::debug!(%agent, error = %e, "logout");
        }
    }
}
