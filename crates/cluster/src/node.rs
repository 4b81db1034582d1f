//! A node: coordination, journal and actors, started and stopped in order.

use std::sync::Arc;
use std::time::Duration;

use centralino_actors::supervisor;
use centralino_actors::{Cluster, Hub, Standalone};
use centralino_core::RouterConfig;
use centralino_core::queue::QueueConfig;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coordination::{Coordination, NodeInfo};
use crate::error::{ClusterError, Result};
use crate::journal::CoordinatedJournal;
use crate::topology::Topology;

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub node: NodeInfo,
    pub router: RouterConfig,
    /// Queues defined at start; the first is the default queue.
    pub queues: Vec<QueueConfig>,
    pub lease_ttl: Duration,
}

/// How the node relates to others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On its own: every actor here, the identity directory in memory.
    Standalone,
    /// A member of a cluster: placement, ownership and the directory go
    /// through the coordination backend, messages through `Node.Send`.
    Clustered,
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
    lease_lost: watch::Receiver<bool>,
}

impl Node {
    pub async fn start(
        opts: NodeOptions,
        coord: Arc<dyn Coordination>,
        mode: Mode,
    ) -> Result<Node> {
        let lease = coord.join(&opts.node, opts.lease_ttl).await?;
        let (lost_tx, lease_lost) = watch::channel(false);
        let keep_alive = tokio::spawn(keep_alive(coord.clone(), lease, opts.lease_ttl, lost_tx));
        let journal = Arc::new(CoordinatedJournal::new(coord.clone()));
        let (cluster, hosts_router): (Arc<dyn Cluster>, bool) = match mode {
            Mode::Standalone => (Arc::new(Standalone::new(opts.node.id.clone())), true),
            Mode::Clustered => {
                let topology = Topology::start(coord.clone(), opts.node.clone(), lease).await?;
                let hosts = topology.claim_router().await?;
                (topology, hosts)
            }
        };
        let hub = Hub::new(journal, cluster);
        let router = hosts_router.then_some((opts.router, opts.queues));
        let (supervisor, supervisor_done) = supervisor::start(hub.clone(), router)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        tracing::info!(node = %opts.node.id, advertise = %opts.node.advertise, lease, router = hosts_router, ?mode, "node started");
        Ok(Node {
            hub,
            info: opts.node,
            coord,
            lease,
            supervisor,
            supervisor_done,
            keep_alive,
            lease_lost,
        })
    }

    /// Resolves if the node's lease is lost (it expired while the node could
    /// not renew it): the node must then stop acting as the owner of its
    /// actors, which it does by shutting down.
    pub async fn lease_lost(&self) {
        let mut rx = self.lease_lost.clone();
        let _ = rx.wait_for(|lost| *lost).await;
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
        self.supervisor
            .stop_children_and_wait(Some("node shutting down".into()), Some(stop.into()))
            .await;
        self.supervisor.stop(Some("node shutting down".into()));
        if tokio::time::timeout(stop, self.supervisor_done)
            .await
            .is_err()
        {
            tracing::warn!("actors did not stop within 10 s");
        }
        self.keep_alive.abort();
        if let Err(e) = self.coord.leave(self.lease).await {
            tracing::warn!(error = %e, "leaving the cluster");
        }
        tracing::info!(node = %self.info.id, "node stopped");
    }
}

/// Renews the lease every third of its TTL. Failures while the store is
/// unreachable are retried; a lease the store no longer knows is lost for
/// good, and says so.
async fn keep_alive(
    coord: Arc<dyn Coordination>,
    lease: i64,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match coord.keep_alive(lease).await {
            Ok(()) => {}
            Err(ClusterError::LeaseExpired(_)) => {
                tracing::error!(lease, "lease lost: this node no longer owns its actors");
                let _ = lost.send(true);
                return;
            }
            Err(e) => tracing::warn!(lease, error = %e, "lease keep-alive failed; retrying"),
        }
    }
}
