//! A node: coordination, archive, journal and actors, started and stopped
//! in order.

use std::sync::Arc;
use std::time::Duration;

use centralino_actors::supervisor;
use centralino_actors::{Cluster, Hub, Standalone};
use centralino_core::RouterConfig;
use centralino_core::queue::QueueConfig;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::archive::Archive;
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
    /// How often the lease is renewed.
    pub keep_alive: Duration,
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
    archive: Arc<dyn Archive>,
    lease: i64,
    supervisor: ActorRef<()>,
    supervisor_done: ractor::concurrency::JoinHandle<()>,
    keep_alive: JoinHandle<()>,
    lease_lost: watch::Receiver<bool>,
    failover: Option<JoinHandle<()>>,
}

impl Node {
    /// Joins the cluster through `coord` and starts the actors; closed
    /// conversations go to `archive` (shared by the cluster's nodes).
    pub async fn start(
        opts: NodeOptions,
        coord: Arc<dyn Coordination>,
        archive: Arc<dyn Archive>,
        mode: Mode,
    ) -> Result<Node> {
        let lease = coord.join(&opts.node, opts.lease_ttl).await?;
        let (lost_tx, lease_lost) = watch::channel(false);
        let keep_alive = tokio::spawn(keep_alive(coord.clone(), lease, opts.keep_alive, lost_tx));
        let journal = Arc::new(CoordinatedJournal::new(coord.clone(), archive.clone()));
        let mut topology = None;
        let (cluster, hosts_router): (Arc<dyn Cluster>, bool) = match mode {
            Mode::Standalone => (Arc::new(Standalone::new(opts.node.id.clone())), true),
            Mode::Clustered => {
                let t = Topology::start(coord.clone(), opts.node.clone(), lease).await?;
                let hosts = t.claim_router().await?;
                topology = Some(t.clone());
                (t, hosts)
            }
        };
        let hub = Hub::new(journal, cluster);
        let router = hosts_router.then_some((opts.router, opts.queues));
        let (supervisor, supervisor_done) = supervisor::start(hub.clone(), router)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        let failover = topology.map(|t| tokio::spawn(failover(hub.clone(), t.members_left())));
        tracing::info!(node = %opts.node.id, advertise = %opts.node.advertise, lease, router = hosts_router, ?mode, "node started");
        Ok(Node {
            hub,
            info: opts.node,
            coord,
            archive,
            lease,
            supervisor,
            supervisor_done,
            keep_alive,
            lease_lost,
            failover,
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

    /// Where this node archives closed conversations.
    pub fn archive(&self) -> &Arc<dyn Archive> {
        &self.archive
    }

    /// Whether the node's actors are still running (the router has not failed).
    pub fn is_alive(&self) -> bool {
        !self.supervisor_done.is_finished()
    }

    /// Moves every customer actor of this node to the other live nodes,
    /// with its history (the first step of a planned shutdown). Returns how
    /// many moved and how many could not (those stop here, and recover from
    /// the journal wherever their next message takes them).
    pub async fn drain(&self) -> (usize, usize) {
        if let Some(f) = &self.failover {
            f.abort();
        }
        if self.hub.cluster().member_ids().len() <= 1 {
            // Standalone, or the last node of its cluster: nowhere to move
            // to; the journal keeps every customer for the next start.
            tracing::info!(node = %self.info.id, "no other node to drain to");
            return (0, 0);
        }
        let started = std::time::Instant::now();
        let (moved, failed) = self.hub.drain(DRAIN_PARALLEL).await;
        for (customer, e) in failed.iter().take(10) {
            tracing::warn!(%customer, error = %e, "not moved during the drain");
        }
        crate::metrics::drain(started.elapsed());
        tracing::info!(node = %self.info.id, moved, failed = failed.len(), ms = started.elapsed().as_millis() as u64, "drained");
        (moved, failed.len())
    }

    /// Stops the actors, then leaves the cluster (revokes the lease). The
    /// server has stopped accepting before this is called.
    pub async fn shutdown(self) {
        if let Some(f) = &self.failover {
            f.abort();
        }
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

/// Customers moved at once during a drain.
pub const DRAIN_PARALLEL: usize = 32;
/// Dead nodes' customers recovered at once.
pub const RECOVER_PARALLEL: usize = 64;

/// Failover: whenever a member leaves, recovers here the customers it owned
/// that placement now gives to this node (once at start too, for what died
/// while this node was away, its own previous incarnation included).
async fn failover(hub: Arc<Hub>, mut left: tokio::sync::broadcast::Receiver<String>) {
    let mut dead = None;
    loop {
        let started = std::time::Instant::now();
        match hub.recover_orphans(RECOVER_PARALLEL).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(recovered = n, from = ?dead, ms = started.elapsed().as_millis() as u64, "recovered customers of a dead node")
            }
            Err(e) => tracing::warn!(error = %e, "listing dead nodes' customers"),
        }
        match left.recv().await {
            Ok(node) => dead = Some(node),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dead = None,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Renews the lease every `every`. Failures while the store is unreachable
/// are retried; a lease the store no longer knows is lost for good, and
/// says so.
async fn keep_alive(
    coord: Arc<dyn Coordination>,
    lease: i64,
    every: Duration,
    lost: watch::Sender<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
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
