//! The gRPC edge of a node: the Gateway, AgentDesktop and Admin services,
//! grpc.health.v1 and server reflection.
//!
//! Architecture invariant: proto types stop here. [`convert`] turns every
//! request into domain types, validating it and naming the field at fault;
//! [`error::status`] is the one mapping from errors to gRPC statuses.

pub mod admin;
pub mod admission;
pub mod convert;
pub mod desktop;
pub mod error;
pub mod gateway;
pub mod internal;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use centralino_actors::{ActorError, Hub};
use centralino_proto::v1 as pb;
use ractor::rpc::CallResult;
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::Server;

/// Largest request a client may send. A contact's text is at most 16 KiB;
/// this leaves room for identities and attributes. tonic refuses a larger
/// message before it is decoded, with OUT_OF_RANGE ("decoded message length
/// too large").
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Largest response (an offer carries the whole history).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The fully-qualified names of our services, for health and reflection.
pub const SERVICES: [&str; 3] = [
    "centralino.v1.Gateway",
    "centralino.v1.AgentDesktop",
    "centralino.v1.Admin",
];

/// What the edge's own limits are (see [`admission`]).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Contacts (`SubmitContact`, `HandOver`) handled at once before more
    /// are refused with RESOURCE_EXHAUSTED; 0: no bound.
    pub max_contacts_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_contacts_in_flight: DEFAULT_MAX_CONTACTS_IN_FLIGHT,
        }
    }
}

/// The default bound on contacts in flight on one node: room for bursts
/// of several times what a node routes in the time a contact takes, and
/// a ceiling on how long one can queue.
pub const DEFAULT_MAX_CONTACTS_IN_FLIGHT: usize = 512;

/// Serves every service on `listener` until `shutdown` resolves, then
/// stops accepting and lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    for s in SERVICES {
        health
            .set_service_status(s, tonic_health::ServingStatus::Serving)
            .await;
    }
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| tracing::error!(error = %e, "reflection v1"))
        .ok();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| tracing::error!(error = %e, "reflection v1alpha"))
        .ok();

    let gateway = pb::gateway_server::GatewayServer::new(gateway::GatewayService::new(
        hub.clone(),
        Closing(closing.clone()),
        admission::Admission::new(limits.max_contacts_in_flight),
    ))
    .max_decoding_message_size(MAX_REQUEST_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let desktop = pb::agent_desktop_server::AgentDesktopServer::new(desktop::DesktopService::new(
        hub.clone(),
        Closing(closing.clone()),
    ))
    .max_decoding_message_size(MAX_REQUEST_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let admin = pb::admin_server::AdminServer::new(admin::AdminService::new(hub.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    // Envelopes carry whole histories; the same bound as responses.
    let internal = centralino_proto::internal::node_server::NodeServer::new(
        internal::NodeService::new(hub, Closing(closing)),
    )
    .max_decoding_message_size(MAX_RESPONSE_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES);

    let health_on_stop = health.clone();
    let shutdown = async move {
        shutdown.await;
        // Streams never end by themselves: end them, telling clients to
        // reconnect (to another node), so the graceful stop can finish.
        let _ = closing_tx.send(true);
        for s in SERVICES {
            health_on_stop
                .set_service_status(s, tonic_health::ServingStatus::NotServing)
                .await;
        }
        health_on_stop
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(gateway)
        .add_service(desktop)
        .add_service(admin)
        .add_service(internal)
        // The builder's `tcp_nodelay` only reaches sockets tonic binds
        // itself: without it here, a reply written in two segments waits
        // for a delayed ACK (40 ms) on every node-to-node hand-over.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Resolves when the server starts shutting down.
#[derive(Clone)]
pub struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|closing| *closing).await;
    }

    /// The status a stream ends with when the node shuts down.
    pub fn status() -> Status {
        Status::unavailable("this node is shutting down; reconnect to another node")
    }
}

/// An actor answered with the wrong kind of reply: a bug between versions.
pub(crate) fn unexpected(what: &str) -> Status {
    Status::internal(format!("{what} answered with an unexpected reply"))
}

/// The outcome of a call to an actor that answers with a `Result`.
pub(crate) fn ask<T, E>(
    r: Result<CallResult<Result<T, ActorError>>, E>,
    what: &str,
) -> Result<T, Status> {
    ask_plain(r, what)?.map_err(error::status)
}

/// The outcome of a call to an actor that answers with a plain value.
pub(crate) fn ask_plain<T, E>(r: Result<CallResult<T>, E>, what: &str) -> Result<T, Status> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(Status::unavailable(format!(
            "{what} did not answer in time; retry"
        ))),
        Ok(CallResult::SenderError) | Err(_) => {
            Err(Status::unavailable(format!("{what} is unavailable; retry")))
        }
    }
}
