//! A node: coordination, journal and actors, started and stopped in order.

use std::sync::Arc;
use std::time::Duration;

use centralino_actors::{Hub, Standalone};
use centralino_actors::supervisor;
use centralino_core::RouterConfig;
use centralino_core::queue::QueueConfig;
use ractor::ActorRef;
use tokio::task::JoinHandle;

use crate::coordination::{Coordination, NodeInfo};
use crate::error::{ClusterError, Result};
use crate::journal::CoordinatedJournal;

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub node: NodeInfo,
    pub router: RouterConfig,
    /// Queues defined at start; the first is the default queue.
    pub queues: Vec<QueueConfig>,
    pub lease_ttl: Duration,
}

/// A running node. Drop is not enough: call [`Node::shutdown`].
pub struct Node {
    pub hub: Arc<Hub>,
    pub info: NodeInfo,
    coord: Arc<dyn Coordination>,
    lease: i64,
    supervisor: ActorRef<()>,
    supervisor_done: ractor::concurrency::JoinHandle<()>,
    keep_alive: JoinHandle<()>,
}

impl Node {
    pub async fn start(opts: NodeOptions, coord: Arc<dyn Coordination>) -> Result<Node> {
        let lease = coord.join(&opts.node, opts.lease_ttl).await?;
        let keep_alive = tokio::spawn(keep_alive(coord.clone(), lease, opts.lease_ttl / 3));
        let journal = Arc::new(CoordinatedJournal::new(coord.clone()));
        let hub = Hub::new(journal, Arc::new(Standalone::new(opts.node.id.clone())));
        let (supervisor, supervisor_done) = supervisor::start(hub.clone(), Some((opts.router, opts.queues)))
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        tracing::info!(node = %opts.node.id, advertise = %opts.node.advertise, lease, "node started");
        Ok(Node { hub, info: opts.node, coord, lease, supervisor, supervisor_done, keep_alive })
    }

    pub fn coordination(&self) -> &Arc<dyn Coordination> {
        &self.coord
    }

    /// Whether the node's actors are still running (the router has not failed).
    pub fn is_alive(&self) -> bool {
        !self.supervisor_done.is_finished()
    }

    /// Stops the actors, then leaves the cluster (revokes the lease). The
    /// server has stopped accepting before this is called.
    pub async fn shutdown(self) {
        let stop = Duration::from_secs(10);
        self.supervisor.stop_children_and_wait(Some("node shutting down".into()), Some(stop.into())).await;
        self.supervisor.stop(Some("node shutting down".into()));
        if tokio::time::timeout(stop, self.supervisor_done).await.is_err() {
            tracing::warn!("actors did not stop within 10 s");
        }
        self.keep_alive.abort();
        if let Err(e) = self.coord.leave(self.lease).await {
            tracing::warn!(error = %e, "leaving the cluster");
        }
        tracing::info!(node = %self.info.id, "node stopped");
    }
}

async fn keep_alive(coord: Arc<dyn Coordination>, lease: i64, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        if let Err(e) = coord.keep_alive(lease).await {
            tracing::warn!(lease, error = %e, "lease keep-alive failed");
        }
    }
}
