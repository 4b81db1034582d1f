//! The `drain` scenario: how long a node holding many customer actors
//! takes, after SIGTERM, to move every one of them to the other nodes and
//! exit, and that nothing was lost on the way (brief: "a whole node's
//! drain time").
//!
//! 1. etcd and `--nodes` clustered nodes (3 unless given), every node
//!    listing every member; then `--customers` (10,000 unless given) times
//!    the nodes waiting customers are created through all of them
//!    ([`population`]): placement spreads them, so `n1` holds about
//!    `--customers` (its own count, `Admin.ListNodes`, is what is
//!    drained). The nodes all start first because a node that joins later
//!    is moved its share at once (rebalance), which would race the drain.
//! 2. The customers `n1` holds, by etcd's `owners/customer/`, are the ones
//!    checked after the drain.
//! 3. SIGTERM to `n1`; the drain time is from the signal until its process
//!    has exited: the drain itself (each actor handed over with its
//!    history, `DRAIN_PARALLEL` at a time), then the rest of the ordered
//!    shutdown (calls finish, actors stop, the lease is revoked). The
//!    node's own `drained moved=N failed=M ms=T` log line gives the drain
//!    alone, and how many actors moved.
//! 4. `n1`, the first node, hosted the router: it gave the router up at
//!    the start of its drain, and a survivor must host it now, with every
//!    customer still queued there (`Admin.ListConversations`): the router
//!    moved with the drain and lost nobody's place.
//! 5. Nothing lost: etcd's `owners/customer/` names no `n1`, and every
//!    customer's conversation, asked of the survivors, has its message at
//!    its sequence number.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::failover::log_field;
use super::keys::ClusterKeys;
use super::population;
use super::system::{System, poll_until};

/// Submits and checks in flight.
const IN_FLIGHT: usize = 64;
/// Customer actors on the drained node unless `--customers` says
/// otherwise.
pub const DEFAULT_CUSTOMERS: usize = 10_000;
/// How long the drained node may take to exit: generous for 10,000 actors
/// on a loaded machine (past it the node is killed and the run fails).
const EXIT_DEADLINE: Duration = Duration::from_secs(300);
/// How long the cluster may take to settle (members, the router's claim).
const SETTLE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// What the scenario is asked to do.
pub struct Spec {
    pub nodes: usize,
    pub customers: usize,
    pub tag: String,
}

/// What the scenario measured.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// Nodes in the cluster when the drain began.
    pub nodes: usize,
    pub node: String,
    /// Actors on the drained node before SIGTERM (its own count).
    pub actors_before: u32,
    pub customers_created: usize,
    pub create_per_s: f64,
    pub create_failed: u64,
    /// From SIGTERM until the process exited, s.
    pub drain_s: f64,
    /// The node's own figures (`drained moved=N failed=M ms=T`).
    pub logged_moved: Option<u64>,
    pub logged_failed: Option<u64>,
    pub logged_ms: Option<u64>,
    pub exit: String,
    /// Customers etcd still says the drained node owns.
    pub still_owned: usize,
    /// The survivor hosting the router after the drain.
    pub router: String,
    pub history: population::Checked,
}

/// Runs the scenario. `system` must be ONE clustered node the bench
/// started (see `SpawnSpec::clustered`).
pub async fn measure(system: &mut System, spec: &Spec) -> anyhow::Result<Measured> {
    if spec.nodes < 2 {
        bail!(
            "the drain scenario needs at least 2 nodes (one to drain, one to take its actors), got --nodes {}",
            spec.nodes
        );
    }
    let first = system.targets.first().context("no node started")?.clone();
    while system.targets.len() < spec.nodes {
        system.add_node().await?;
    }
    population::wait_members(&system.targets, SETTLE).await?;
    let all = population::create(
        &system.targets,
        &spec.tag,
        "dr",
        0..(spec.customers * spec.nodes) as u64,
        IN_FLIGHT,
    )
    .await?;
    let actors_before = population::local_customers(std::slice::from_ref(&first))
        .await?
        .first()
        .map_or(0, |(_, n)| *n);
    let owners = system.keys().await?.owners().await?;
    let (create_per_s, create_failed, created_total) = (all.per_s(), all.failed, all.created.len());
    let mine: Vec<population::Created> = all
        .created
        .into_iter()
        .filter(|c| owners.get(&c.customer) == Some(&first.name))
        .collect();
    if mine.len() != actors_before as usize {
        bail!(
            "{} runs {actors_before} customer actors but etcd says it owns {} of the {created_total} created",
            first.name,
            mine.len()
        );
    }
    let made = population::Population {
        created: mine,
        ..Default::default()
    };

    eprintln!(
        "bench: drain: SIGTERM {} with {actors_before} customer actors",
        first.name
    );
    let signalled = Instant::now();
    system.sigterm(&first.name)?;
    let exit = system.wait_exit(&first.name, EXIT_DEADLINE).await?;
    let drain_s = signalled.elapsed().as_secs_f64();
    let Some(exit) = exit else {
        bail!(
            "{} did not exit within {EXIT_DEADLINE:?} of SIGTERM; see its log",
            first.name
        );
    };
    let line = system
        .log_lines_with(&first.name, " drained ")
        .into_iter()
        .last();
    eprintln!(
        "bench: drain: {} exited ({exit}) {drain_s:.3} s after SIGTERM; it logged {:?}",
        first.name,
        line.as_deref().unwrap_or("no `drained` line")
    );
    let field = |name| line.as_deref().and_then(|l| log_field(l, name));

    let keys = system.keys().await?;
    population::wait_members(&system.targets, SETTLE).await?;
    let router = survivor_router(&keys, &first.name).await?;
    let survivor = system
        .targets
        .iter()
        .find(|t| t.name == router)
        .context("the router's node is not among the survivors")?;
    population::wait_queued(
        &population::admin(survivor.connect().await?),
        &made.created,
        SETTLE,
    )
    .await
    .context("the drained node's customers, in the moved router's queue")?;
    let still_owned = keys
        .owners()
        .await?
        .values()
        .filter(|n| **n == first.name)
        .count();
    eprintln!(
        "bench: drain: checking {} conversations on the survivors",
        made.created.len()
    );
    let history = population::check(&system.targets, &made.created, IN_FLIGHT).await?;
    Ok(Measured {
        nodes: spec.nodes,
        node: first.name.clone(),
        actors_before,
        customers_created: created_total,
        create_per_s,
        create_failed,
        drain_s,
        logged_moved: field("moved"),
        logged_failed: field("failed"),
        logged_ms: field("ms"),
        exit: exit.to_string(),
        still_owned,
        router,
        history,
    })
}

/// Step 4 of the module docs: the survivor hosting the router.
async fn survivor_router(keys: &ClusterKeys, drained: &str) -> anyhow::Result<String> {
    let router = poll_until("a survivor hosting the router", SETTLE, POLL, || async {
        Ok(match keys.router().await? {
            Some(node) if node != drained => Ok(node),
            other => Err(format!("owners/router/main names {other:?}")),
        })
    })
    .await?;
    Ok(router)
}

impl super::Outcome for Measured {
    fn fill(&self, report: &mut super::Report) {
        report.drain_s = Some(self.drain_s);
    }

    fn header(&self, system: &str) -> String {
        let opt = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
        let mut s = format!(
            "centralino bench: scenario drain, {system}, {} nodes when n1 was drained: SIGTERM to a node with {} customer actors; exited after {:.3} s (the drain itself {} ms by its log)",
            self.nodes,
            self.actors_before,
            self.drain_s,
            opt(self.logged_ms),
        );
        s.push_str(&format!(
            "\n  {} held {} customer actors (of {} created through every node at {:.0}/s, {} failed); SIGTERM to exit {:.3} s ({}); the node logged moved={} failed={} ms={}",
            self.node,
            self.actors_before,
            self.customers_created,
            self.create_per_s,
            self.create_failed,
            self.drain_s,
            self.exit,
            opt(self.logged_moved),
            opt(self.logged_failed),
            opt(self.logged_ms),
        ));
        s.push_str(&format!(
            "\n  after: etcd owners naming {}: {}; conversations lost {} of {} checked",
            self.node, self.still_owned, self.history.lost, self.history.checked,
        ));
        s.push_str(&format!(
            "; the router moved to {} with every customer still queued",
            self.router
        ));
        for e in &self.history.examples {
            s.push_str(&format!("\n    {e}"));
        }
        s
    }

    fn failure(&self) -> Option<String> {
        let failed = self.logged_failed.unwrap_or(1);
        (self.history.lost > 0 || self.still_owned > 0 || failed > 0).then(|| {
            format!(
                "the drain left customers behind: {failed} not moved (by the node's log), {} still owned by {}, {} conversations lost",
                self.still_owned, self.node, self.history.lost
            )
        })
    }
}
