//! The `migration` scenario: the pause of a planned migration of one
//! customer actor with a long history.
//!
//! One customer gets a conversation of `HISTORY` events (chat messages
//! through Gateway.SubmitContact, no agent, so it stays queued and only
//! grows); then Admin.MoveCustomer moves it `MOVES` times between the
//! nodes, round robin, while one gateway keeps sending it messages one at a
//! time. Two numbers per move: the pause the owner reports (from taking
//! the Move until the new owner is ready: one journal flush at most, the
//! handover over gRPC, one etcd transaction) and, from the client's side,
//! the slowest acknowledgement of a message sent during the run.

use std::time::Instant;

use anyhow::{Context, bail};
use centralino_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::gateway_client::GatewayClient;
use tokio::sync::watch;
use tonic::transport::Channel as Conn;

use super::report::{self, Latency};
use super::system::Target;

/// Events in the moved customer's history before the moves start.
pub const HISTORY: usize = 1_000;
/// Moves measured.
pub const MOVES: usize = 200;

/// What the scenario measured.
#[derive(serde::Serialize)]
pub struct Measured {
    /// The pause of each move, as the owner reported it.
    pub pause: Latency,
    /// Acknowledgement latency of the messages sent during the moves.
    pub acks_during_moves: Option<Latency>,
    #[serde(rename = "history_events")]
    pub history: usize,
    pub moves: usize,
}

impl super::Outcome for Measured {
    fn fill(&self, report: &mut super::Report) {
        report.migration_pause_p50_ms = Some(self.pause.p50_ms);
        report.migration_pause_p99_ms = Some(self.pause.p99_ms);
    }

    fn header(&self, system: &str) -> String {
        format!(
            "centralino bench: scenario migration, {system}: {} moves of a customer with {} events; pause p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest ack of a message sent meanwhile {} ms",
            self.moves,
            self.history,
            self.pause.p50_ms,
            self.pause.p99_ms,
            self.pause.max_ms,
            self.acks_during_moves
                .as_ref()
                .map_or("-".into(), |a| format!("{:.2}", a.max_ms)),
        )
    }
}

fn message(tag: &str, n: usize) -> pb::SubmitContactRequest {
    pb::SubmitContactRequest {
        channel: pb::Channel::Chat as i32,
        identity: Some(pb::Identity {
            kind: pb::IdentityKind::ChatSession as i32,
            address: format!("bench-migration-{tag}"),
        }),
        topic: "billing".into(),
        text: format!(
            "message {n}: the same question again, with some detail to make it realistic"
        ),
        ..Default::default()
    }
}

/// Runs the scenario against `targets` (at least two nodes of one cluster).
pub async fn measure(targets: &[Target], tag: &str) -> anyhow::Result<Measured> {
    if targets.len() < 2 {
        bail!(
            "the migration scenario needs a cluster of at least two nodes (--nodes 3, or --target with two or more)"
        );
    }
    let conn = targets[0].connect().await?;
    let mut gateway = GatewayClient::new(conn.clone());
    let mut admin = AdminClient::new(conn);
    let nodes = admin
        .list_nodes(pb::ListNodesRequest {})
        .await
        .context("Admin.ListNodes")?
        .into_inner()
        .node_ids;
    if nodes.len() < 2 {
        bail!(
            "the cluster has {} live node(s); moves need two",
            nodes.len()
        );
    }
    // Message 1 opens the conversation and it is queued: two events.
    let first = gateway.submit_contact(message(tag, 0)).await?.into_inner();
    let customer = first.customer_id;
    let mut events = 2;
    while events < HISTORY {
        gateway.submit_contact(message(tag, events)).await?;
        events += 1;
    }
    eprintln!(
        "bench: migration: {customer} has {events} events; moving it {MOVES} times between {} nodes",
        nodes.len()
    );

    let (stop_tx, stop) = watch::channel(false);
    let sender = tokio::spawn(send_until(gateway.clone(), tag.to_owned(), events, stop));
    let mut pauses = Vec::with_capacity(MOVES);
    for m in 0..MOVES {
        let to = nodes[m % nodes.len()].clone();
        let reply = admin
            .move_customer(pb::MoveCustomerRequest {
                customer_id: customer.clone(),
                to_node: to.clone(),
            })
            .await
            .with_context(|| format!("move {m} of {customer} to {to}"))?
            .into_inner();
        // A move to the node that owns it already is no move.
        if reply.pause_us > 0 {
            pauses.push(reply.pause_us as f64 / 1e6);
        }
    }
    let _ = stop_tx.send(true);
    let acks = sender.await.context("the sender task")??;
    let pause = report::latency(pauses.iter().copied())
        .context("no move took place (every move went to the current owner)")?;
    Ok(Measured {
        moves: pause.count as usize,
        pause,
        acks_during_moves: report::latency(acks),
        history: events,
    })
}

/// Sends messages one at a time until told to stop; their ack latencies.
async fn send_until(
    mut gateway: GatewayClient<Conn>,
    tag: String,
    mut n: usize,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<f64>> {
    let mut acks = Vec::new();
    while !*stop.borrow() {
        let sent = Instant::now();
        gateway
            .submit_contact(message(&tag, n))
            .await
            .context("a message sent during the moves")?;
        acks.push(sent.elapsed().as_secs_f64());
        n += 1;
    }
    Ok(acks)
}
