//! A client that knows only the standard gRPC health and reflection
//! protocols finds a running `centralino dev` SERVING and lists the
//! centralino.v1 services; SIGTERM then shuts the node down cleanly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// Kills the child if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[tokio::test]
async fn dev_is_discoverable_through_health_and_reflection() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_centralino"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "2",
            "--agents",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start centralino dev");
    let mut node = Running(child);
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
    let pid = node.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = node.0.try_wait().expect("wait for centralino dev") {
            assert!(
                status.success(),
                "centralino dev exits cleanly on SIGTERM, got {status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "centralino dev still running 30 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
