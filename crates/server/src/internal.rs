//! The internal Node service: envelopes from other nodes, handed to the hub.

use std::sync::Arc;

use centralino_actors::Hub;
use centralino_actors::wire::Envelope;
use centralino_proto::internal as pb;
use tonic::{Request, Response, Status};

pub struct NodeService {
    hub: Arc<Hub>,
}

impl NodeService {
    pub fn new(hub: Arc<Hub>) -> Self {
        NodeService { hub }
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn send(&self, req: Request<pb::Frame>) -> Result<Response<pb::Frame>, Status> {
        let envelope: Envelope =
            serde_json::from_slice(&req.into_inner().payload).map_err(|e| {
                Status::invalid_argument(format!("payload: not an envelope of this version ({e})"))
            })?;
        let reply = self.hub.handle(envelope).await;
        let payload = serde_json::to_vec(&reply)
            .map_err(|e| Status::internal(format!("encoding the reply: {e}")))?;
        Ok(Response::new(pb::Frame { payload }))
    }
}
