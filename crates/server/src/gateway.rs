//! The Gateway service: contacts in, replies out, self-service status.

use std::pin::Pin;
use std::sync::Arc;

use centralino_actors::Hub;
use centralino_actors::wire::{
    CustomerReply, CustomerRequest, NewCustomer, RouterReply, RouterRequest,
};
use centralino_actors::{ActorError, JournalError};
use centralino_core::customer::{Contact, ConversationState};
use centralino_core::history::{EventKind, HistoryEvent};
use centralino_core::router::Phase;
use centralino_core::{Channel, CoreError, CustomerId, Identity};
use centralino_proto::v1 as pb;
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use tracing::Instrument;

use crate::admission::{Admission, Admitted};
use crate::convert::{self, invalid};
use crate::error::status;
use crate::{Closing, metrics, unexpected};

/// Replies buffered per gateway stream before delivery waits.
pub const DELIVERY_BUFFER: usize = 4096;

pub struct GatewayService {
    hub: Arc<Hub>,
    closing: Closing,
    admission: Admission,
}

impl GatewayService {
    pub fn new(hub: Arc<Hub>, closing: Closing, admission: Admission) -> Self {
        GatewayService {
            hub,
            closing,
            admission,
        }
    }

    /// The customer an identity belongs to; NOT_FOUND naming `identity`.
    async fn customer_with(&self, identity: &Identity) -> Result<CustomerId, Status> {
        self.hub
            .lookup(identity)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found("identity: no customer has this identity"))
    }

    async fn customer_of(
        &self,
        who: &Option<pb::get_conversation_request::Who>,
    ) -> Result<CustomerId, Status> {
        use pb::get_conversation_request::Who;
        match who {
            Some(Who::Identity(i)) => {
                let identity = convert::identity("identity", Some(i))?;
                self.customer_with(&identity).await
            }
            Some(Who::CustomerId(c)) => {
                let id = convert::customer_id("customer_id", c)?;
                if self.hub.customer_exists(id).await.map_err(status)? {
                    Ok(id)
                } else {
                    Err(Status::not_found(format!("customer_id: no customer {id}")))
                }
            }
            None => Err(invalid("who", "set identity or customer_id")),
        }
    }

    /// A contact of the customer's (a message or a bot's hand-over): the
    /// identity resolved (linking `links`), the request `make` builds (from
    /// the identities linked now and, for a customer it makes up, what
    /// creating it takes) asked of the customer's actor.
    async fn contact_customer(
        hub: &Arc<Hub>,
        identity: &Identity,
        links: &[Identity],
        make: impl Fn(Vec<Identity>, Option<NewCustomer>) -> CustomerRequest,
    ) -> Result<pb::SubmitContactResponse, Status> {
        // A new customer's identity can be taken by a first contact of the
        // same identity elsewhere at the same moment: then it is that
        // customer's, and the contact goes there.
        let mut attempt = 0;
        let (resolution, outcome) = loop {
            attempt += 1;
            let resolution = hub.resolve(identity, links).await.map_err(status)?;
            let new = resolution.created.then(|| NewCustomer {
                link: resolution.pending.clone(),
            });
            let request = make(resolution.linked.clone(), new);
            match hub.ask_customer(resolution.customer, request).await {
                Ok(CustomerReply::Contact(outcome)) => break (resolution, outcome),
                Ok(_) => return Err(unexpected("customer")),
                Err(ActorError::Journal(JournalError::Taken { identity, customer }))
                    if attempt == 1 =>
                {
                    hub.cluster().identity_of(&identity, customer);
                }
                Err(e) => return Err(status(e)),
            }
        };
        // Linked identities that another customer has: the same person,
        // merged into the contact's customer (the contact is acknowledged
        // either way; a merge that fails is retried by the next contact
        // that links them).
        for (other, absorbed) in &resolution.conflicts {
            if let Err(e) = hub.merge(resolution.customer, *absorbed).await {
                tracing::warn!(survivor = %resolution.customer, %absorbed, identity = %other, error = %e, "customers not merged");
            }
        }
        Ok(pb::SubmitContactResponse {
            // The conversation's: a merged customer's contact joins the survivor's.
            customer_id: outcome.conversation.customer.to_string(),
            conversation_id: outcome.conversation.to_string(),
            seq: outcome.seq,
            joined_existing: outcome.joined_existing,
        })
    }
}

/// The channel a closed conversation was last on: its latest contact's or
/// routing's.
fn last_channel(history: &[HistoryEvent]) -> Option<Channel> {
    history.iter().rev().find_map(|e| match &e.kind {
        EventKind::CustomerMessage { channel, .. }
        | EventKind::BotTranscript { channel, .. }
        | EventKind::Queued { channel, .. }
        | EventKind::Notice { channel, .. } => Some(*channel),
        _ => None,
    })
}

/// Runs an admitted contact's work to its end in a task of its own, which
/// holds the admission: a gateway that gives up on the call (its deadline,
/// a cancel) neither frees the node's slot while the work goes on (the
/// customer's actor has the request already) nor leaves it half done.
async fn to_the_end<T: Send + 'static>(
    admitted: Admitted,
    work: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    let task = tokio::spawn(
        async move {
            let _admitted = admitted;
            work.await
        }
        .instrument(tracing::Span::current()),
    );
    task.await
        .unwrap_or_else(|e| Err(Status::internal(format!("the contact's task failed: {e}"))))
}

type Deliveries = Pin<Box<dyn Stream<Item = Result<pb::Delivery, Status>> + Send>>;

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    #[tracing::instrument(skip_all, fields(channel = req.get_ref().channel))]
    async fn submit_contact(
        &self,
        req: Request<pb::SubmitContactRequest>,
    ) -> Result<Response<pb::SubmitContactResponse>, Status> {
        let admitted = self.admission.enter()?;
        let r = req.into_inner();
        let channel = convert::channel("channel", r.channel)?;
        let identity = convert::identity("identity", r.identity.as_ref())?;
        if r.link_identities.len() > convert::MAX_LINKED_IDENTITIES {
            return Err(invalid(
                "link_identities",
                format!("at most {} identities", convert::MAX_LINKED_IDENTITIES),
            ));
        }
        let links = r
            .link_identities
            .iter()
            .map(|i| convert::identity("link_identities", Some(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let contact = Contact {
            channel,
            identity: identity.clone(),
            topic: convert::topic("topic", &r.topic)?,
            text: convert::text("text", &r.text)?,
            sentiment: convert::sentiment("sentiment", r.sentiment)?,
            attributes: convert::attributes("attributes", r.attributes.as_ref())?,
        };
        let hub = self.hub.clone();
        let response = to_the_end(admitted, async move {
            let make = |linked, new| CustomerRequest::Contact {
                contact: contact.clone(),
                linked,
                new,
            };
            Self::contact_customer(&hub, &identity, &links, make).await
        })
        .await?;
        metrics::contact(channel);
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(bot = %req.get_ref().bot_id, channel = req.get_ref().channel))]
    async fn hand_over(
        &self,
        req: Request<pb::HandOverRequest>,
    ) -> Result<Response<pb::SubmitContactResponse>, Status> {
        let admitted = self.admission.enter()?;
        let (hand_over, links) = convert::hand_over(req.get_ref())?;
        let (identity, channel) = (hand_over.identity.clone(), hand_over.channel);
        let hub = self.hub.clone();
        let response = to_the_end(admitted, async move {
            let make = |linked, new| CustomerRequest::HandOver {
                hand_over: Box::new(hand_over.clone()),
                linked,
                new,
            };
            Self::contact_customer(&hub, &identity, &links, make).await
        })
        .await?;
        metrics::hand_over(channel);
        Ok(Response::new(response))
    }

    type DeliveriesStream = Deliveries;

    async fn deliveries(
        &self,
        req: Request<pb::DeliveriesRequest>,
    ) -> Result<Response<Deliveries>, Status> {
        let r = req.into_inner();
        let channels = r
            .channels
            .iter()
            .map(|c| convert::channel("channels", *c))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(gateway = %r.gateway_id, ?channels, "gateway subscribed to deliveries");
        let rx = self.hub.subscribe(channels, DELIVERY_BUFFER).await;
        let until_closing =
            futures::StreamExt::take_until(ReceiverStream::new(rx), self.closing.clone().wait());
        let stream = until_closing.map(|d| {
            Ok(pb::Delivery {
                conversation_id: d.conversation.to_string(),
                customer_id: d.conversation.customer.to_string(),
                channel: convert::channel_to_pb(d.channel),
                to: Some(convert::identity_to_pb(&d.to)),
                agent_id: d.agent.to_string(),
                text: d.text,
                seq: d.seq,
                campaign_id: d.campaign.map(|c| c.to_string()).unwrap_or_default(),
            })
        });
        let end = futures::stream::once(async { Err(Closing::status()) });
        Ok(Response::new(Box::pin(stream.chain(end))))
    }

    async fn request_callback(
        &self,
        req: Request<pb::RequestCallbackRequest>,
    ) -> Result<Response<pb::RequestCallbackResponse>, Status> {
        let r = req.into_inner();
        let identity = convert::identity("identity", r.identity.as_ref())?;
        let channel = if r.channel == 0 {
            centralino_core::Channel::Voice
        } else {
            convert::channel("channel", r.channel)?
        };
        let to = match &r.callback_to {
            Some(i) => convert::identity("callback_to", Some(i))?,
            None => identity.clone(),
        };
        if r.not_before_unix_ms < 0 {
            return Err(invalid("not_before_unix_ms", "must not be negative"));
        }
        let not_before = (r.not_before_unix_ms > 0).then_some(r.not_before_unix_ms as u64);
        let id = self.customer_with(&identity).await?;
        let CustomerReply::Callback(conversation, seq) = self
            .hub
            .ask_customer(
                id,
                CustomerRequest::Callback {
                    channel,
                    to,
                    not_before,
                },
            )
            .await
            .map_err(status)?
        else {
            return Err(unexpected("customer"));
        };
        Ok(Response::new(pb::RequestCallbackResponse {
            conversation_id: conversation.to_string(),
            seq,
        }))
    }

    async fn abandon(
        &self,
        req: Request<pb::AbandonRequest>,
    ) -> Result<Response<pb::AbandonResponse>, Status> {
        let r = req.into_inner();
        let identity = convert::identity("identity", r.identity.as_ref())?;
        let channel = convert::channel("channel", r.channel)?;
        let id = self.customer_with(&identity).await?;
        let reply = self
            .hub
            .ask_customer(id, CustomerRequest::Abandon { channel })
            .await
            .map_err(|e| match e {
                // Not waiting: a state to wait out, not a malformed request.
                ActorError::Core(CoreError::Invalid { message, .. }) => {
                    Status::failed_precondition(format!("identity: {message}"))
                }
                e => status(e),
            })?;
        let CustomerReply::Abandoned(conversation, seq) = reply else {
            return Err(unexpected("customer"));
        };
        Ok(Response::new(pb::AbandonResponse {
            conversation_id: conversation.to_string(),
            seq,
        }))
    }

    async fn get_conversation(
        &self,
        req: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::ConversationView>, Status> {
        let r = req.into_inner();
        let id = self.customer_of(&r.who).await?;
        let CustomerReply::Customer(customer) = self
            .hub
            .ask_customer(id, CustomerRequest::Get)
            .await
            .map_err(status)?
        else {
            return Err(unexpected("customer"));
        };
        let mut view = pb::ConversationView {
            customer_id: customer.id.to_string(),
            attributes: Some(convert::attributes_to_pb(&customer.attributes)),
            identities: customer
                .identities
                .iter()
                .map(convert::identity_to_pb)
                .collect(),
            ..Default::default()
        };
        let Some(conv) = &customer.open else {
            // Closed: the customer sees how it ended, from the archive.
            let closed = self.hub.journal().last_closed(id).await;
            if let Some((id, history)) = closed.map_err(|e| status(e.into()))? {
                let ended = match history.last().map(|e| &e.kind) {
                    Some(EventKind::Abandoned { .. }) => ConversationState::Abandoned,
                    _ => ConversationState::Resolved,
                };
                view.conversation_id = id.to_string();
                view.state = convert::conversation_state_to_pb(ended);
                view.channel = last_channel(&history).map_or(0, convert::channel_to_pb);
                view.history = history.iter().map(convert::event_to_pb).collect();
            }
            return Ok(Response::new(view));
        };
        view.conversation_id = conv.id.to_string();
        view.state = convert::conversation_state_to_pb(conv.state);
        view.channel = convert::channel_to_pb(conv.channel);
        view.queue_id = conv
            .queue
            .as_ref()
            .map(|q| q.to_string())
            .unwrap_or_default();
        view.agent_id = conv
            .agent
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default();
        view.history = conv
            .history
            .events()
            .iter()
            .map(convert::event_to_pb)
            .collect();
        // Only a conversation with routing has a place in a queue.
        if !matches!(
            conv.state,
            ConversationState::Queued | ConversationState::Offered
        ) {
            return Ok(Response::new(view));
        }
        let RouterReply::Status(routed, estimate) = self
            .hub
            .ask_router(RouterRequest::Status(conv.id))
            .await
            .map_err(status)?
        else {
            return Err(unexpected("router"));
        };
        if let Some(v) = routed.filter(|v| v.phase == Phase::Waiting) {
            view.position = v.position.unwrap_or(0);
            view.wait_estimate = estimate.as_ref().map(convert::wait_estimate_to_pb);
        }
        Ok(Response::new(view))
    }
}
