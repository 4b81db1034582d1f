//! Pipes to peer nodes: node-to-node envelopes, several per call.
//!
//! Every envelope for another node goes through that node's [`Pipe`]. The
//! pipe keeps at most [`IN_FLIGHT`] calls (`Node.Send`) open at once; when
//! one returns, the next call takes every envelope that queued meanwhile
//! (at most [`MAX_BATCH`]), so under load many envelopes share one call,
//! one frame and one reply, and when idle an envelope goes out at once:
//! nothing waits to fill a batch (group commit, for the network).
//!
//! The receiving hub handles a batch's envelopes concurrently and answers
//! each (`Envelope::Batch`, `EnvelopeReply::Batch`); a caller still awaits
//! its own envelope's answer, so ordering stays the callers' (a delivery
//! lane sends a customer's next decision only once the previous one is
//! delivered). Handovers (`Adopt`, `Migrate`) go alone: a batch answers when
//! its slowest envelope is done, and they are the slow ones.

use std::sync::Arc;

use centralino_actors::error::{ActorError, Result};
use centralino_actors::wire::{Envelope, EnvelopeReply};
use centralino_proto::internal::Frame;
use centralino_proto::internal::node_client::NodeClient;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::transport::Channel as Conn;

/// Calls open to one peer at once.
pub const IN_FLIGHT: usize = 4;
/// Most envelopes in one call.
pub const MAX_BATCH: usize = 256;

type Pending = (Envelope, oneshot::Sender<Result<EnvelopeReply>>);

/// The way to one peer node (see the module docs).
#[derive(Clone)]
pub struct Pipe {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Pipe {
    /// A pipe to `node` over `client`; its sender runs on the current
    /// runtime until the pipe is dropped.
    pub fn new(node: String, client: NodeClient<Conn>) -> Pipe {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(node, client, pending));
        Pipe { queue }
    }

    /// Sends the envelope; its answer.
    pub async fn send(&self, envelope: Envelope) -> Result<EnvelopeReply> {
        let (tx, rx) = oneshot::channel();
        let gone = || ActorError::unavailable("node-to-node pipe (closed)");
        self.queue.send((envelope, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(
    node: String,
    client: NodeClient<Conn>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        // What queued while every call was open goes in this one; a
        // handover goes alone, in a call of its own.
        if !alone(&batch[0].0) {
            while batch.len() < MAX_BATCH {
                match pending.try_recv() {
                    Ok(p) if alone(&p.0) => {
                        let (node, client) = (node.clone(), client.clone());
                        tokio::spawn(async move { send_all(&node, &client, vec![p]).await });
                    }
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        let (node, client) = (node.clone(), client.clone());
        tokio::spawn(async move {
            send_all(&node, &client, batch).await;
            drop(slot);
        });
    }
}

/// Envelopes sent in a call of their own.
fn alone(e: &Envelope) -> bool {
    matches!(e, Envelope::Adopt { .. } | Envelope::Migrate { .. })
}

/// One call carrying `batch`; each sender gets its envelope's answer.
async fn send_all(node: &str, client: &NodeClient<Conn>, batch: Vec<Pending>) {
    let (envelopes, replies): (Vec<Envelope>, Vec<_>) = batch.into_iter().unzip();
    let n = envelopes.len();
    let envelope = if n == 1 {
        envelopes.into_iter().next().expect("one envelope")
    } else {
        Envelope::Batch(envelopes)
    };
    crate::metrics::node_send(n);
    let answers = match call(node, client, &envelope).await {
        Ok(EnvelopeReply::Batch(answers)) if answers.len() == n && n > 1 => {
            answers.into_iter().map(Ok).collect()
        }
        Ok(answer) if n == 1 => vec![Ok(answer)],
        Ok(other) => {
            let e = ActorError::unavailable(format!(
                "node {node} answered {n} envelopes with {other:?}"
            ));
            vec![Err(e); n]
        }
        Err(e) => vec![Err(e); n],
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

async fn call(node: &str, client: &NodeClient<Conn>, envelope: &Envelope) -> Result<EnvelopeReply> {
    let payload = serde_json::to_vec(envelope)
        .map_err(|e| ActorError::unavailable(format!("encoding an envelope ({e})")))?;
    let mut client = client.clone();
    match client.send(Frame { payload }).await {
        Ok(reply) => serde_json::from_slice(&reply.into_inner().payload).map_err(|e| {
            ActorError::unavailable(format!(
                "node {node} answered with an unreadable envelope ({e})"
            ))
        }),
        Err(status) => Err(ActorError::unavailable(format!(
            "node {node}: {}",
            status.message()
        ))),
    }
}
