//! The internal Node service: envelopes from other nodes, handed to the hub.
//!
//! Each peer keeps one stream open to this node (see
//! `centralino_cluster::peer`). The envelopes of a frame are handled
//! concurrently, and each answer goes back as soon as it is ready: a slow
//! envelope (a handover, a journal commit) holds up nobody else's. Answers
//! ready at the same moment share a frame. When the node shuts down it
//! reads no more envelopes, answers those it has, and ends the stream (the
//! peer's next envelope fails as unavailable there).

use std::pin::Pin;
use std::sync::Arc;

use centralino_actors::Hub;
use centralino_actors::wire::{Envelope, EnvelopeReply, pack_frames};
use centralino_proto::internal as pb;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::Closing;

/// Most answers taken at once.
const MAX_ANSWERS: usize = 256;

pub struct NodeService {
    hub: Arc<Hub>,
    closing: Closing,
}

impl NodeService {
    pub fn new(hub: Arc<Hub>, closing: Closing) -> Self {
        NodeService { hub, closing }
    }
}

type Answers = Pin<Box<dyn Stream<Item = Result<pb::Frame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    type ExchangeStream = Answers;

    async fn exchange(
        &self,
        req: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<Answers>, Status> {
        let inbound = req.into_inner();
        let (answers, ready) = mpsc::unbounded_channel();
        let (hub, closing) = (self.hub.clone(), self.closing.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = read_envelopes(hub, inbound, answers) => {}
                () = closing.wait() => {}
            }
        });
        Ok(Response::new(Box::pin(answer_frames(ready))))
    }
}

/// Hands every envelope that arrives to the hub; each answer goes to
/// `answers` under its envelope's id.
async fn read_envelopes(
    hub: Arc<Hub>,
    mut inbound: Streaming<pb::Frame>,
    answers: mpsc::UnboundedSender<Result<(u64, EnvelopeReply), Status>>,
) {
    loop {
        let frame = match inbound.message().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(error = %status, "a peer's stream ended");
                return;
            }
        };
        let envelopes: Vec<(u64, Envelope)> = match serde_json::from_slice(&frame.payload) {
            Ok(e) => e,
            Err(e) => {
                let status = Status::invalid_argument(format!(
                    "payload: not a frame of envelopes of this version ({e})"
                ));
                let _ = answers.send(Err(status));
                return;
            }
        };
        // One task per frame: its envelopes start in the order they came.
        let (hub, answers) = (hub.clone(), answers.clone());
        tokio::spawn(async move {
            let mut handling: FuturesUnordered<_> = envelopes
                .into_iter()
                .map(|(id, envelope)| {
                    let hub = hub.clone();
                    async move { (id, hub.handle(envelope).await) }
                })
                .collect();
            while let Some(answer) = handling.next().await {
                let _ = answers.send(Ok(answer));
            }
        });
    }
}

/// The answers as frames: whatever is ready when the stream asks for the
/// next frame goes in it (at most `FRAME_BUDGET` bytes of it; the rest in
/// the frames after).
fn answer_frames(
    ready: mpsc::UnboundedReceiver<Result<(u64, EnvelopeReply), Status>>,
) -> impl Stream<Item = Result<pb::Frame, Status>> + Send {
    let gathered = futures::stream::unfold(ready, |mut ready| async move {
        let mut batch = vec![ready.recv().await?];
        while batch.len() < MAX_ANSWERS {
            match ready.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let frames = batch
            .into_iter()
            .map(|answer| {
                let answer = answer?;
                serde_json::to_vec(&answer)
                    .map_err(|e| Status::internal(format!("encoding the answers: {e}")))
            })
            .collect::<Result<Vec<_>, Status>>()
            .map(|items| {
                pack_frames(items)
                    .into_iter()
                    .map(|payload| Ok(pb::Frame { payload }))
                    .collect::<Vec<_>>()
            });
        let frames = frames.unwrap_or_else(|status| vec![Err(status)]);
        Some((futures::stream::iter(frames), ready))
    });
    gathered.flatten()
}
