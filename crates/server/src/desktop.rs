//! The AgentDesktop service: one bidirectional stream per agent.
//!
//! The first command must be `login`; a bad login ends the stream with
//! INVALID_ARGUMENT naming the field. After that, every command gets a
//! `CommandResult` with the same `request_id` (code 0 or a gRPC code and a
//! message naming the field): a bad command never ends the stream. When
//! the desktop closes the stream the agent is logged out and its open
//! offers and conversations go back to routing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use centralino_actors::agent::{self, AgentCommand, AgentMsg};
use centralino_actors::{DesktopEvent, Hub};
use centralino_proto::v1 as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{self, invalid};
use crate::{Closing, ask, metrics};

/// How long a new stream may take to send its login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered per desktop.
pub const DESKTOP_BUFFER: usize = 1024;

pub struct DesktopService {
    hub: Arc<Hub>,
    closing: Closing,
}

impl DesktopService {
    pub fn new(hub: Arc<Hub>, closing: Closing) -> Self {
        DesktopService { hub, closing }
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::AgentEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_desktop_server::AgentDesktop for DesktopService {
    type SessionStream = Events;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentCommand>>,
    ) -> Result<Response<Events>, Status> {
        let mut inbound = req.into_inner();
        let first = match tokio::time::timeout(LOGIN_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "login: not sent within 30 s of opening the stream",
                ));
            }
            Ok(Err(s)) => return Err(s),
            Ok(Ok(None)) => return Err(invalid("command", "the stream closed before login")),
            Ok(Ok(Some(c))) => c,
        };
        let Some(pb::agent_command::Command::Login(login)) = &first.command else {
            return Err(invalid(
                "command",
                "the first command on a session must be login",
            ));
        };
        let (profile, away) = convert::login(login)?;
        let id = profile.id.clone();
        let (session, events) = agent::login(&self.hub, profile, away, DESKTOP_BUFFER)
            .await
            .map_err(crate::error::status)?;
        tracing::info!(agent = %id, "agent logged in");
        metrics::agent_sessions(1.0);

        let (tx, rx) = mpsc::channel::<Result<pb::AgentEvent, Status>>(DESKTOP_BUFFER);
        let _ = tx.send(Ok(result(first.request_id, Ok(())))).await;
        tokio::spawn(forward_events(events, tx.clone()));
        let hub = self.hub.clone();
        let closing = self.closing.clone().wait();
        tokio::spawn(async move {
            tokio::pin!(closing);
            loop {
                let next = tokio::select! {
                    () = &mut closing => {
                        let _ = tx.send(Err(Closing::status())).await;
                        break;
                    }
                    next = inbound.message() => next,
                };
                let cmd = match next {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(agent = %id, error = %e, "desktop stream error");
                        break;
                    }
                };
                let outcome = command(&session, cmd.command).await;
                if tx.send(Ok(result(cmd.request_id, outcome))).await.is_err() {
                    break;
                }
            }
            agent::logout(&hub, &id, &session).await;
            metrics::agent_sessions(-1.0);
            tracing::info!(agent = %id, "agent logged out");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn command(
    session: &ractor::ActorRef<AgentMsg>,
    cmd: Option<pb::agent_command::Command>,
) -> Result<(), Status> {
    let cmd = to_domain(cmd)?;
    ask(
        session
            .call(|reply| AgentMsg::Command(cmd, reply), None)
            .await,
        "agent session",
    )
}

fn to_domain(cmd: Option<pb::agent_command::Command>) -> Result<AgentCommand, Status> {
    use pb::agent_command::Command as C;
    Ok(match cmd {
        None => return Err(invalid("command", "is required")),
        Some(C::Login(_)) => {
            return Err(Status::failed_precondition(
                "login: already logged in on this stream",
            ));
        }
        Some(C::SetState(s)) => match pb::AgentState::try_from(s.state) {
            Ok(pb::AgentState::Available) => AgentCommand::SetAway(false),
            Ok(pb::AgentState::Away) => AgentCommand::SetAway(true),
            _ => {
                return Err(invalid(
                    "set_state.state",
                    "agents can set AGENT_STATE_AVAILABLE or AGENT_STATE_AWAY",
                ));
            }
        },
        Some(C::Accept(a)) => {
            AgentCommand::Accept(convert::offer_id("accept.offer_id", &a.offer_id)?)
        }
        Some(C::Reject(r)) => AgentCommand::Reject(
            convert::offer_id("reject.offer_id", &r.offer_id)?,
            convert::topic("reject.reason", &r.reason)?,
        ),
        Some(C::Reply(r)) => AgentCommand::Reply {
            conversation: convert::conversation_id("reply.conversation_id", &r.conversation_id)?,
            text: convert::text("reply.text", &r.text)?,
        },
        Some(C::Transfer(t)) => AgentCommand::Transfer {
            conversation: convert::conversation_id("transfer.conversation_id", &t.conversation_id)?,
            to: convert::transfer_target(&t)?,
            note: convert::text("transfer.note", &t.note)?,
        },
        Some(C::WrapUp(w)) => AgentCommand::WrapUp {
            conversation: convert::conversation_id("wrap_up.conversation_id", &w.conversation_id)?,
            disposition: convert::topic("wrap_up.disposition", &w.disposition)?,
        },
        Some(C::Resolve(r)) => AgentCommand::Resolve {
            conversation: convert::conversation_id("resolve.conversation_id", &r.conversation_id)?,
        },
    })
}

fn result(request_id: u64, outcome: Result<(), Status>) -> pb::AgentEvent {
    let (code, message) = match outcome {
        Ok(()) => (0, String::new()),
        Err(s) => (s.code() as i32, s.message().to_owned()),
    };
    pb::AgentEvent {
        event: Some(pb::agent_event::Event::Result(
            pb::agent_event::CommandResult {
                request_id,
                code,
                message,
            },
        )),
    }
}

async fn forward_events(
    mut events: mpsc::Receiver<DesktopEvent>,
    tx: mpsc::Sender<Result<pb::AgentEvent, Status>>,
) {
    use pb::agent_event::Event as E;
    while let Some(e) = events.recv().await {
        let event = match e {
            DesktopEvent::Offer(o) => E::Offer(pb::agent_event::Offer {
                offer_id: o.offer.to_string(),
                conversation_id: o.conversation.to_string(),
                customer_id: o.conversation.customer.to_string(),
                channel: convert::channel_to_pb(o.channel),
                queue_id: o.queue.to_string(),
                attributes: Some(convert::attributes_to_pb(&o.attributes)),
                history: o.history.iter().map(convert::event_to_pb).collect(),
                explanation: Some(convert::explanation_to_pb(&o.explanation)),
                expires_unix_ms: o.expires_at as i64,
            }),
            DesktopEvent::OfferRevoked { offer, reason } => {
                E::OfferRevoked(pb::agent_event::OfferRevoked {
                    offer_id: offer.to_string(),
                    reason,
                })
            }
            DesktopEvent::CustomerMessage {
                conversation,
                event,
            } => E::CustomerMessage(pb::agent_event::CustomerMessage {
                conversation_id: conversation.to_string(),
                event: Some(convert::event_to_pb(&event)),
            }),
            DesktopEvent::StateChanged { state, load } => {
                E::StateChanged(pb::agent_event::StateChanged {
                    state: convert::agent_state_to_pb(state),
                    load: load as u32,
                    reason: String::new(),
                })
            }
        };
        if tx
            .send(Ok(pb::AgentEvent { event: Some(event) }))
            .await
            .is_err()
        {
            return;
        }
    }
}
