//! A client that knows only the standard gRPC health and reflection
//! protocols finds a running `centralino dev` SERVING and lists the
//! centralino.v1 services; SIGTERM then shuts the node down cleanly.

mod support;

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn dev_is_discoverable_through_health_and_reflection() {
    let (mut node, port) = support::start_dev(["--rate", "2", "--agents", "3"]);
    let url = format!("http://127.0.0.1:{port}");

    // Wait until it serves: connection refused until then.
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("centralino dev did not listen on {url} within 60 s: {e}"),
        }
    };

    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "centralino.v1.Gateway",
        "centralino.v1.AgentDesktop",
        "centralino.v1.Admin",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "service {service:?} is SERVING"
        );
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "expected a service list, got {:?}",
            response.message_response
        );
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "centralino.v1.Gateway",
        "centralino.v1.AgentDesktop",
        "centralino.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "reflection lists {expected}: {names:?}"
        );
    }

    // SIGTERM: the ordered shutdown runs and the process exits by itself.
    support::terminate(&mut node);
}
