//! A node: coordination, archive, journal and actors, started and stopped
//! in order.

use std::sync::Arc;
use std::time::Duration;

use centralino_actors::campaign::Campaigns;
use centralino_actors::router::RouterStart;
use centralino_actors::supervisor::{self, SupervisorMsg};
use centralino_actors::wire::{Envelope, RouterRequest};
use centralino_actors::{Cluster, Hub, Standalone};
use centralino_core::Input;
use centralino_core::RouterConfig;
use centralino_core::queue::QueueConfig;
use centralino_core::rules::RoutingRule;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::archive::Archive;
use crate::campaigns::CoordinatedCampaigns;
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
    /// Routing rules of the configuration; those an operator set since
    /// (`Admin.SetRoutingRules`) replace them.
    pub rules: Vec<RoutingRule>,
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
    /// through the coordination backend, messages through `Node.Exchange` streams.
    Clustered,
}

/// A running node. Drop is not enough: call [`Node::shutdown`].
pub struct Node {
    pub hub: Arc<Hub>,
    pub info: NodeInfo,
    coord: Arc<dyn Coordination>,
    archive: Arc<dyn Archive>,
    lease: i64,
    seat: Arc<RouterSeat>,
    supervisor_done: ractor::concurrency::JoinHandle<()>,
    keep_alive: JoinHandle<()>,
    lease_lost: watch::Receiver<bool>,
    failover: Option<JoinHandle<()>>,
    rebalance: Option<JoinHandle<()>>,
}

/// What a node needs to take the router over: see [`take_router`].
struct RouterSeat {
    hub: Arc<Hub>,
    coord: Arc<dyn Coordination>,
    supervisor: ActorRef<SupervisorMsg>,
    /// `None` for a standalone node (the router is always here).
    topology: Option<Arc<Topology>>,
    router: RouterConfig,
    /// Queues of the node's configuration; those an operator defined
    /// since are in the coordination store.
    queues: Vec<QueueConfig>,
    /// Routing rules of the node's configuration; likewise.
    rules: Vec<RoutingRule>,
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
        let journal = Arc::new(CoordinatedJournal::new(
            coord.clone(),
            archive.clone(),
            &opts.node.id,
            lease,
        ));
        let (cluster, topology): (Arc<dyn Cluster>, _) = match mode {
            Mode::Standalone => (Arc::new(Standalone::new(opts.node.id.clone())), None),
            Mode::Clustered => {
                let t = Topology::start(coord.clone(), opts.node.clone(), lease).await?;
                (t.clone(), Some(t))
            }
        };
        let hub = Hub::new(journal, cluster);
        let store = CoordinatedCampaigns::new(coord.clone(), opts.node.id.clone(), lease);
        hub.set_campaigns(Campaigns::new(Arc::new(store), opts.node.id.clone()));
        let (supervisor, supervisor_done) = supervisor::start(hub.clone())
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        let seat = Arc::new(RouterSeat {
            hub: hub.clone(),
            coord: coord.clone(),
            supervisor,
            topology,
            router: opts.router,
            queues: opts.queues,
            rules: opts.rules,
        });
        let hosts_router = take_router(&seat).await?;
        if seat.topology.is_none() {
            // Clustered nodes resume campaigns in the failover loop.
            resume_campaigns(&hub).await;
        }
        let failover = seat.topology.as_ref().map(|t| {
            let left = t.members_left();
            tokio::spawn(failover(seat.clone(), left))
        });
        let rebalance = seat
            .topology
            .as_ref()
            .map(|t| tokio::spawn(rebalance(hub.clone(), t.members_joined())));
        tracing::info!(node = %opts.node.id, advertise = %opts.node.advertise, lease, router = hosts_router, ?mode, "node started");
        Ok(Node {
            hub,
            info: opts.node,
            coord,
            archive,
            lease,
            seat,
            supervisor_done,
            keep_alive,
            lease_lost,
            failover,
            rebalance,
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

    /// The first step of a planned shutdown: gives the router up, if it
    /// runs here (another node takes it over and every node reports to it),
    /// then moves every customer actor of this node to the other live
    /// nodes, with its history. Returns how many customers moved and how
    /// many could not (those stop here, and recover from the journal
    /// wherever their next message takes them).
    pub async fn drain(&self) -> (usize, usize) {
        for task in self.failover.iter().chain(&self.rebalance) {
            task.abort();
        }
        if self.hub.cluster().member_ids().len() <= 1 {
            // Standalone, or the last node of its cluster: nowhere to move
            // to; the journal keeps every customer for the next start.
            tracing::info!(node = %self.info.id, "no other node to drain to");
            return (0, 0);
        }
        let started = std::time::Instant::now();
        self.vacate_router().await;
        let (moved, failed) = self.hub.drain(DRAIN_PARALLEL).await;
        for (customer, e) in failed.iter().take(10) {
            tracing::warn!(%customer, error = %e, "not moved during the drain");
        }
        crate::metrics::drain(started.elapsed());
        tracing::info!(node = %self.info.id, moved, failed = failed.len(), ms = started.elapsed().as_millis() as u64, "drained");
        (moved, failed.len())
    }

    /// Stops the router here and gives it up, so that another node claims
    /// it; tells the others at once rather than let them find out.
    async fn vacate_router(&self) {
        let (Some(topology), true) = (&self.seat.topology, self.hub.hosts_router()) else {
            return;
        };
        let Some(epoch) = self.hub.cluster().router_epoch() else {
            return;
        };
        supervisor::stop_router(&self.seat.supervisor).await;
        if let Err(e) = topology.release_router(epoch).await {
            tracing::warn!(error = %e, "giving the router up; it moves once this node's lease ends");
        }
        let me = self.info.id.clone();
        let others: Vec<String> = topology
            .member_ids()
            .into_iter()
            .filter(|m| *m != me)
            .collect();
        let vacated = others.iter().map(|m| {
            let envelope = Envelope::RouterVacated { node: me.clone() };
            self.hub.send(m, envelope)
        });
        futures::future::join_all(vacated).await;
        tracing::info!(node = %me, epoch, "router given up");
    }

    /// Stops the actors, then leaves the cluster (revokes the lease). The
    /// server has stopped accepting before this is called.
    pub async fn shutdown(self) {
        for task in self.failover.iter().chain(&self.rebalance) {
            task.abort();
        }
        // Their ownership goes with the lease; another node resumes them.
        if let Some(c) = self.hub.campaigns() {
            c.stop_all();
        }
        let stop = Duration::from_secs(10);
        let supervisor = &self.seat.supervisor;
        supervisor
            .stop_children_and_wait(Some("node shutting down".into()), Some(stop))
            .await;
        supervisor.stop(Some("node shutting down".into()));
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
/// Customers moved at once to a node that joined: fewer than a drain, so
/// that rebalancing, which nothing waits for, stays in the background of
/// the work the node serves.
pub const REBALANCE_PARALLEL: usize = 8;
/// How long a node that joined gets to start serving before the others
/// give up moving it its share.
pub const JOIN_READY_WAIT: Duration = Duration::from_secs(60);
/// Dead nodes' customers recovered at once.
pub const RECOVER_PARALLEL: usize = 64;
/// How often a node checks that some node holds the router (a safety net:
/// a router's death or hand-over is normally seen at once).
pub const ROUTER_CHECK: Duration = Duration::from_secs(2);

/// Takes the router if no node holds it: claims it (the claim's token is
/// the new router's epoch), starts it held, and asks every node to report
/// what it holds (see `centralino_actors::router`, "Taking over"). A
/// standalone node always hosts it, from the start, with nothing to wait
/// for. Returns whether this node hosts the router now.
async fn take_router(seat: &RouterSeat) -> Result<bool> {
    if seat.hub.hosts_router() {
        return Ok(true);
    }
    let Some(topology) = &seat.topology else {
        start_router(seat, 0, Vec::new()).await?;
        return Ok(true);
    };
    if seat.hub.is_draining() {
        return Ok(false);
    }
    let Some(epoch) = topology.claim_router().await? else {
        return Ok(false);
    };
    let members = topology.member_ids();
    start_router(seat, epoch, members.clone()).await?;
    let me = topology.node().id.clone();
    for member in members {
        let (hub, members) = (seat.hub.clone(), topology.member_ids());
        let me = me.clone();
        tokio::spawn(async move {
            let started = if member == me {
                hub.router_started(&me, epoch, &members).await
            } else {
                announce_router(&hub, &member, &me, epoch, members).await
            };
            if let Err(e) = started {
                tracing::warn!(node = %member, error = %e, "new router not announced");
            }
        });
    }
    Ok(true)
}

/// Starts the router here under `epoch`, with the configured queues and
/// rules and those an operator defined since (which win), and the KPIs the
/// previous router saved.
async fn start_router(seat: &RouterSeat, epoch: u64, wait_for: Vec<String>) -> Result<()> {
    let mut queues = seat.queues.clone();
    match seat.coord.queues().await {
        Ok(saved) => {
            for q in saved {
                match queues.iter_mut().find(|c| c.id == q.id) {
                    Some(c) => *c = q,
                    None => queues.push(q),
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the queues operators defined; starting with the configured ones")
        }
    }
    let rules = match seat.coord.rules().await {
        Ok(saved) => saved.unwrap_or_else(|| seat.rules.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "reading the routing rules operators set; starting with the configured ones");
            seat.rules.clone()
        }
    };
    let kpis = seat.coord.kpis().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading the KPIs the previous router saved; counting from zero");
        None
    });
    let start = RouterStart {
        cfg: seat.router.clone(),
        queues,
        rules,
        kpis,
        hub: seat.hub.clone(),
        epoch,
        wait_for,
    };
    supervisor::start_router(&seat.supervisor, start)
        .await
        .map_err(|e| ClusterError::Unavailable(e.to_string()))
}

/// Tells `node` that a router started here, retrying until it has heard,
/// it leaves, or a newer router started.
async fn announce_router(
    hub: &Hub,
    node: &str,
    me: &str,
    epoch: u64,
    members: Vec<String>,
) -> centralino_actors::Result<()> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let envelope = Envelope::RouterStarted {
            node: me.to_owned(),
            epoch,
            members: members.clone(),
        };
        let Err(e) = hub.send(node, envelope).await else {
            return Ok(());
        };
        let gone = !hub.cluster().member_ids().iter().any(|m| m == node);
        let newer = hub.cluster().router_epoch() != Some(epoch);
        if gone || newer {
            return Err(e);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Failover: whenever a member leaves, recovers here the customers it owned
/// that placement now gives to this node (once at start too, for what died
/// while this node was away, its own previous incarnation included); if
/// the router is here, tells it whose desktops went away; and takes the
/// router if it went with the dead node (or was given up by a draining one).
async fn failover(seat: Arc<RouterSeat>, mut left: tokio::sync::broadcast::Receiver<String>) {
    let Some(topology) = seat.topology.clone() else {
        return;
    };
    let hub = &seat.hub;
    let (mut recover, mut claim) = (true, true);
    let mut dead: Option<String> = None;
    let mut check = tokio::time::interval(ROUTER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if std::mem::take(&mut recover) {
            let started = std::time::Instant::now();
            match hub.recover_orphans(None, RECOVER_PARALLEL).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(recovered = n, from = ?dead, ms = started.elapsed().as_millis() as u64, "recovered customers of a dead node")
                }
                Err(e) => tracing::warn!(error = %e, "listing dead nodes' customers"),
            }
            resume_campaigns(hub).await;
        }
        if let Some(node) = dead.take()
            && hub.hosts_router()
        {
            let lost = Input::SessionsLost {
                session: node.clone(),
            };
            if let Err(e) = hub.tell_router(RouterRequest::Step(lost)).await {
                tracing::warn!(node = %node, error = %e, "router not told of the dead node's desktops");
            }
        }
        if std::mem::take(&mut claim)
            && let Err(e) = take_router(&seat).await
        {
            tracing::warn!(error = %e, "taking the router over; trying again");
        }
        tokio::select! {
            r = left.recv() => {
                match r {
                    Ok(node) => dead = Some(node),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                (recover, claim) = (true, true);
            }
            () = topology.router_vacancy() => claim = true,
            _ = check.tick() => claim = hub.cluster().router_home().await.is_err(),
        }
    }
}

/// Takes over here the campaigns no live node runs (see
/// `centralino_actors::campaign`, "When the runner's node dies").
async fn resume_campaigns(hub: &Arc<Hub>) {
    let Some(campaigns) = hub.campaigns() else {
        return;
    };
    match campaigns.resume(hub).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(campaigns = n, "took over campaigns"),
        Err(e) => tracing::warn!(error = %e, "looking for campaigns to take over"),
    }
}

/// Rebalance: whenever a member joins, moves it its share of the
/// customers running here (those placement now gives to it), once it
/// answers: a node that joins takes load at once, not only new customers.
async fn rebalance(hub: Arc<Hub>, mut joined: tokio::sync::broadcast::Receiver<String>) {
    loop {
        let node = match joined.recv().await {
            Ok(node) => node,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            if !ready(&hub, &node).await {
                tracing::warn!(%node, "joined but never answered: nothing moved to it");
                return;
            }
            let started = std::time::Instant::now();
            let (moved, failed) = hub.rebalance_to(&node, REBALANCE_PARALLEL).await;
            crate::metrics::rebalanced(moved);
            tracing::info!(to = %node, moved, failed, ms = started.elapsed().as_millis() as u64, "rebalanced to a new node");
        });
    }
}

/// Waits until `node` answers a ping (it joined before it serves), at most
/// [`JOIN_READY_WAIT`]; false if it never did or left meanwhile.
async fn ready(hub: &Hub, node: &str) -> bool {
    let give_up = std::time::Instant::now() + JOIN_READY_WAIT;
    let mut backoff = Duration::from_millis(50);
    while std::time::Instant::now() < give_up {
        if hub.send(node, Envelope::Ping).await.is_ok() {
            return true;
        }
        if !hub.cluster().member_ids().iter().any(|m| m == node) {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    false
}

/// Most lease renewals under way at once (see [`keep_alive`]).
const RENEWALS_IN_FLIGHT: usize = 8;

/// Renews the lease every `every`, each renewal on its own: one that a
/// busy store answers late does not hold up the next (waiting for it, up to
/// the store's call timeout, could outlast the lease). Failures while the
/// store is unreachable are retried; a lease the store no longer knows is
/// lost for good, and says so.
async fn keep_alive(
    coord: Arc<dyn Coordination>,
    lease: i64,
    every: Duration,
    lost: watch::Sender<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewals = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if renewals.len() < RENEWALS_IN_FLIGHT {
                    let coord = coord.clone();
                    renewals.spawn(async move { coord.keep_alive(lease).await });
                } else {
                    tracing::warn!(lease, in_flight = renewals.len(), "lease renewals are not answered; not sending more");
                }
            }
            Some(done) = renewals.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(ClusterError::LeaseExpired(_))) => {
                    tracing::error!(lease, "lease lost: this node no longer owns its actors");
                    let _ = lost.send(true);
                    return;
                }
                Ok(Err(e)) => tracing::warn!(lease, error = %e, "lease keep-alive failed; retrying"),
                Err(e) => tracing::warn!(lease, error = %e, "lease renewal task failed"),
            },
        }
    }
}
