//! Pipes to peer nodes: node-to-node envelopes over one long-lived stream.
//!
//! Every envelope for another node goes through that node's [`Pipe`]. The
//! pipe keeps one bidirectional stream (`Node.Exchange`) open to the peer
//! and writes each envelope on it under an id; the peer answers under that
//! id as soon as that envelope is handled, whatever else is still being
//! handled. Whatever queued while the previous frame was being written goes
//! in the next one (at most [`MAX_BATCH`] envelopes), and the peer does the
//! same with its answers: under load many envelopes share a frame and a
//! write, and no envelope pays for a call of its own (headers, a stream, a
//! trailer), which is most of what a small gRPC call costs. When idle an
//! envelope goes out at once: nothing waits to fill a frame. A frame holds
//! at most `FRAME_BUDGET` bytes of envelopes (a larger one, such as a long
//! history handed over, goes alone).
//!
//! A caller awaits its own envelope's answer (at most [`SEND_TIMEOUT`]), so
//! ordering stays the callers' (a delivery lane sends a customer's next
//! decision only once the previous one is delivered). When the stream
//! breaks (the peer died or restarted), every envelope still unanswered
//! fails as unavailable, and the next envelope opens a new stream. A
//! caller that timed out leaves the table of unanswered envelopes at the
//! next sweep (every 4,096 envelopes), answered or not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralino_actors::error::{ActorError, Result};
use centralino_actors::sync::lock;
use centralino_actors::wire::{Envelope, EnvelopeReply, pack_frames};
use centralino_proto::internal::Frame;
use centralino_proto::internal::node_client::NodeClient;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel as Conn;

/// Most envelopes taken from the queue at once.
pub const MAX_BATCH: usize = 256;
/// How long a caller waits for its envelope's answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written ahead of the stream (its backpressure).
const FRAMES_AHEAD: usize = 16;
/// Every this many envelopes written, the entries of callers that stopped
/// waiting (timed out) are dropped from the unanswered table.
const SWEEP_EVERY: u64 = 4_096;

type Answer = oneshot::Sender<Result<EnvelopeReply>>;
type Pending = (Envelope, Answer);

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
        match tokio::time::timeout(SEND_TIMEOUT, rx).await {
            Ok(answer) => answer.map_err(|_| gone())?,
            Err(_) => Err(ActorError::unavailable(format!(
                "no answer from the peer node within {SEND_TIMEOUT:?}"
            ))),
        }
    }
}

/// The envelopes written on the current stream and not answered yet.
#[derive(Default)]
struct Unanswered {
    by_id: FxHashMap<u64, Answer>,
    /// The stream ended: nothing more will be answered on it.
    ended: bool,
}

impl Unanswered {
    /// Drops the entries whose caller gave up waiting: a peer that never
    /// answers some envelopes (a handler stuck, an answer lost) must not
    /// grow the table for as long as the stream lasts.
    fn sweep(&mut self) {
        self.by_id.retain(|_, answer| !answer.is_closed());
    }

    /// Fails every envelope still waiting, and anything registered later.
    fn end(&mut self, why: &ActorError) {
        self.ended = true;
        for (_, answer) in self.by_id.drain() {
            let _ = answer.send(Err(why.clone()));
        }
    }
}

/// Why a stream's sender stopped.
enum Stopped {
    /// The pipe was dropped: nothing more to send.
    Dropped,
    /// The stream broke; open another for what comes next.
    Broken,
}

async fn run(
    node: String,
    client: NodeClient<Conn>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
) {
    let mut next_id = 0u64;
    while let Some(first) = pending.recv().await {
        let (frames, outbound) = mpsc::channel::<Frame>(FRAMES_AHEAD);
        let stream = tokio_stream::wrappers::ReceiverStream::new(outbound);
        let mut call = client.clone();
        let inbound = match call.exchange(stream).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                // The peer cannot be reached now: what waits fails at once
                // (the callers retry), rather than each in turn after a
                // connect timeout.
                let e = ActorError::unavailable(format!("node {node}: {}", status.message()));
                let _ = first.1.send(Err(e.clone()));
                while let Ok((_, answer)) = pending.try_recv() {
                    let _ = answer.send(Err(e.clone()));
                }
                continue;
            }
        };
        let unanswered = Arc::new(Mutex::new(Unanswered::default()));
        let mut reader = tokio::spawn(read_answers(node.clone(), inbound, unanswered.clone()));
        let stopped = write_envelopes(
            first,
            &mut pending,
            &frames,
            &unanswered,
            &mut reader,
            &mut next_id,
        )
        .await;
        drop(frames);
        match stopped {
            Stopped::Dropped => {
                // Answers still coming are read to the end of the stream.
                let _ = reader.await;
                return;
            }
            Stopped::Broken => {
                reader.abort();
                let e = ActorError::unavailable(format!("node {node}: the stream to it broke"));
                lock(&unanswered).end(&e);
            }
        }
    }
}

/// Writes `first` and whatever follows on the open stream, several
/// envelopes per frame, until the pipe is dropped or the stream breaks.
async fn write_envelopes(
    first: Pending,
    pending: &mut mpsc::UnboundedReceiver<Pending>,
    frames: &mpsc::Sender<Frame>,
    unanswered: &Mutex<Unanswered>,
    reader: &mut tokio::task::JoinHandle<()>,
    next_id: &mut u64,
) -> Stopped {
    let mut next = Some(first);
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => tokio::select! {
                p = pending.recv() => match p {
                    Some(p) => p,
                    None => return Stopped::Dropped,
                },
                _ = &mut *reader => return Stopped::Broken,
            },
        };
        let mut batch = vec![first];
        crate::group::take_queued(pending, &mut batch, MAX_BATCH);
        crate::metrics::node_send(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        {
            let mut waiting = lock(unanswered);
            if waiting.ended {
                let e = ActorError::unavailable("node-to-node stream (ended)");
                for (_, answer) in batch {
                    let _ = answer.send(Err(e.clone()));
                }
                return Stopped::Broken;
            }
            for (envelope, answer) in batch {
                crate::metrics::node_envelope(envelope.kind());
                *next_id += 1;
                if next_id.is_multiple_of(SWEEP_EVERY) {
                    waiting.sweep();
                }
                match serde_json::to_vec(&(*next_id, &envelope)) {
                    Ok(item) => {
                        waiting.by_id.insert(*next_id, answer);
                        items.push(item);
                    }
                    // Cannot happen with the wire types; said, not
                    // panicked on.
                    Err(e) => {
                        let e = ActorError::unavailable(format!("encoding an envelope ({e})"));
                        let _ = answer.send(Err(e));
                    }
                }
            }
        }
        for payload in pack_frames(items) {
            if frames.send(Frame { payload }).await.is_err() {
                return Stopped::Broken;
            }
        }
    }
}

/// Hands each answer to its caller until the stream ends; then fails what
/// is still waiting.
async fn read_answers(
    node: String,
    mut inbound: tonic::Streaming<Frame>,
    unanswered: Arc<Mutex<Unanswered>>,
) {
    let why = loop {
        let frame = match inbound.message().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break format!("node {node} closed the stream"),
            Err(status) => break format!("node {node}: {}", status.message()),
        };
        let answers: Vec<(u64, EnvelopeReply)> = match serde_json::from_slice(&frame.payload) {
            Ok(a) => a,
            Err(e) => break format!("node {node} answered with an unreadable frame ({e})"),
        };
        let mut waiting = lock(&unanswered);
        for (id, answer) in answers {
            if let Some(caller) = waiting.by_id.remove(&id) {
                let _ = caller.send(Ok(answer));
            }
        }
    };
    tracing::debug!("{why}");
    lock(&unanswered).end(&ActorError::unavailable(why));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_drops_the_callers_that_stopped_waiting_and_keeps_the_others() {
        let mut table = Unanswered::default();
        let (waiting, mut rx_waiting) = oneshot::channel();
        let (gave_up, rx_gave_up) = oneshot::channel();
        table.by_id.insert(1, waiting);
        table.by_id.insert(2, gave_up);
        drop(rx_gave_up);
        table.sweep();
        assert_eq!(table.by_id.keys().copied().collect::<Vec<_>>(), vec![1]);
        let answer = table.by_id.remove(&1).expect("the waiting caller's entry");
        let _ = answer.send(Ok(EnvelopeReply::Done));
        assert_eq!(rx_waiting.try_recv().ok(), Some(Ok(EnvelopeReply::Done)));
    }
}
