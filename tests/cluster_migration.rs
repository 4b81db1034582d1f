//! Planned migration under load: one customer's actor is moved back and
//! forth between the nodes of a real cluster (etcd and three `centralino
//! node` processes) while its messages stream in, and its history keeps
//! every acknowledged message exactly once, in order.
//!
//! `a_customer_moved_back_and_forth_under_load_keeps_every_message_in_order`:
//!
//! 1. etcd and three nodes; no agent logs in, so the customer's one
//!    conversation stays open and queued and its history only grows.
//! 2. Two gateway clients, on two different nodes, each send the same
//!    customer a stream of chat messages, one at a time (the next only once
//!    the previous was acknowledged). A message refused (UNAVAILABLE, a
//!    timeout) is sent again as a new attempt with its own text, as a
//!    gateway would; every attempt's text is unique.
//! 3. Meanwhile an operator moves the customer with Admin.MoveCustomer,
//!    asked of a random node, to a node other than its owner (read from
//!    etcd), `MOVES` times, and the owner in etcd follows every move.
//! 4. Checks, on the history read back with Gateway.GetConversation:
//!    sequence numbers are contiguous from 1; every acknowledged attempt is
//!    there exactly once, at the sequence number its acknowledgement gave;
//!    each sender's acknowledged messages appear in the order they were
//!    acknowledged; an attempt that was refused appears at most once.
//!    The migration pauses the nodes reported are printed (measured, not
//!    asserted: timings belong to the benchmark).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use centralino_proto::v1 as pb;
use centralino_tests::cluster::{ClusterProcess, NodeSpec, customer_owners};
use centralino_tests::etcd::EtcdServer;
use pb::get_conversation_request::Who;
use pb::history_event::Kind;
use tonic::transport::Channel;

const CLUSTER: &str = "migration";
/// Messages each of the two senders gets acknowledged.
const MESSAGES: usize = 150;
/// Moves of the customer while the messages stream in.
const MOVES: usize = 20;
const WAIT: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

fn identity() -> pb::Identity {
    pb::Identity {
        kind: pb::IdentityKind::ChatSession as i32,
        address: "migrating-visitor".into(),
    }
}

fn message(text: String) -> pb::SubmitContactRequest {
    pb::SubmitContactRequest {
        channel: pb::Channel::Chat as i32,
        identity: Some(identity()),
        topic: "billing".into(),
        text,
        ..Default::default()
    }
}

/// What one sender saw: each acknowledged attempt with its sequence
/// number, in acknowledgement order, and the attempts that were refused.
#[derive(Default)]
struct Sent {
    acked: Vec<(String, u64)>,
    refused: Vec<String>,
}

/// Sends `MESSAGES` messages one at a time through `gateway`, each retried
/// as a new attempt until acknowledged.
async fn send_all(name: &'static str, gateway: pb::gateway_client::GatewayClient<Channel>) -> Sent {
    let mut sent = Sent::default();
    for n in 0..MESSAGES {
        let give_up = Instant::now() + WAIT;
        for attempt in 0.. {
            let text = format!("{name} message {n} attempt {attempt}");
            let mut g = gateway.clone();
            let r =
                tokio::time::timeout(CALL_TIMEOUT, g.submit_contact(message(text.clone()))).await;
            match r {
                Ok(Ok(ack)) => {
                    sent.acked.push((text, ack.into_inner().seq));
                    break;
                }
                Ok(Err(status)) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::Unavailable,
                        "{text}: only UNAVAILABLE may refuse a well-formed contact: {status:?}"
                    );
                    sent.refused.push(text);
                }
                Err(_) => sent.refused.push(text),
            }
            assert!(
                Instant::now() < give_up,
                "{name} message {n} never acknowledged"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    sent
}

fn owner_of(etcd: &EtcdServer, customer: &str) -> Option<String> {
    customer_owners(etcd, CLUSTER).get(customer).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_moved_back_and_forth_under_load_keeps_every_message_in_order() {
    let etcd = EtcdServer::start();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(
            ClusterProcess::start_with(NodeSpec {
                etcd: etcd.endpoint(),
                cluster: CLUSTER.into(),
                node_id: id.into(),
                ..Default::default()
            })
            .await,
        );
    }
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();

    // The customer exists before the load starts.
    let first = nodes[0]
        .gateway()
        .submit_contact(message("hello".into()))
        .await
        .expect("the first contact is acknowledged")
        .into_inner();
    let customer = first.customer_id.clone();
    let owner = owner_of(&etcd, &customer).expect("the customer has an owner in etcd");
    println!("customer {customer} starts on {owner}");

    let a = tokio::spawn(send_all("a", nodes[1].gateway()));
    let b = tokio::spawn(send_all("b", nodes[2].gateway()));

    let mut pauses = Vec::new();
    let mut owner = owner;
    for m in 0..MOVES {
        let to = ids[(ids
            .iter()
            .position(|n| *n == owner)
            .expect("owner is a node")
            + 1
            + m % 2)
            % 3]
        .clone();
        let via = &nodes[m % 3];
        let reply = via
            .admin()
            .move_customer(pb::MoveCustomerRequest {
                customer_id: customer.clone(),
                to_node: to.clone(),
            })
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "move {m} of {customer} from {owner} to {to} via {}: {s:?}",
                    via.node_id
                )
            })
            .into_inner();
        pauses.push(reply.pause_us);
        let give_up = Instant::now() + WAIT;
        while owner_of(&etcd, &customer).as_deref() != Some(to.as_str()) {
            assert!(
                Instant::now() < give_up,
                "etcd never named {to} the owner after move {m}"
            );
            tokio::time::sleep(POLL).await;
        }
        owner = to;
        // Let some messages land between moves.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    let (a, b) = (a.await.expect("sender a"), b.await.expect("sender b"));

    let view = nodes[0]
        .gateway()
        .get_conversation(pb::GetConversationRequest {
            who: Some(Who::CustomerId(customer.clone())),
        })
        .await
        .expect("the conversation can be read")
        .into_inner();
    let history = view.history;
    let mut problems = Vec::new();
    for (i, e) in history.iter().enumerate() {
        if e.seq != i as u64 + 1 {
            problems.push(format!("event {i} has seq {} (expected {})", e.seq, i + 1));
            break;
        }
    }
    let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &history {
        if let Some(Kind::CustomerMessage(m)) = &e.kind {
            seen.entry(m.text.as_str()).or_default().push(e.seq);
        }
    }
    for (name, sent) in [("a", &a), ("b", &b)] {
        let mut last = 0;
        for (text, seq) in &sent.acked {
            match seen.get(text.as_str()).map(Vec::as_slice) {
                Some([s]) if s == seq => {}
                Some(found) => problems.push(format!(
                    "{text:?} (acknowledged as seq {seq}) is in the history at {found:?}"
                )),
                None => problems.push(format!("{text:?} (acknowledged as seq {seq}) is missing")),
            }
            if *seq <= last {
                problems.push(format!(
                    "sender {name}: {text:?} acknowledged as seq {seq} after seq {last}"
                ));
            }
            last = *seq;
        }
        for text in &sent.refused {
            if seen.get(text.as_str()).is_some_and(|s| s.len() > 1) {
                problems.push(format!("refused attempt {text:?} recorded more than once"));
            }
        }
    }
    pauses.sort_unstable();
    println!(
        "{} events; {} + {} acknowledged, {} + {} refused attempts; {MOVES} moves, pause p50 {} us, max {} us",
        history.len(),
        a.acked.len(),
        b.acked.len(),
        a.refused.len(),
        b.refused.len(),
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );

    for n in &mut nodes {
        let status = n.terminate().await;
        assert!(
            status.success(),
            "node {} exits cleanly: {status:?}",
            n.node_id
        );
    }
}
