//! The `scale` scenario: memory per idle customer actor, actors per node,
//! and many agent desktops online at once (brief: "100,000 active
//! customer actors and 15,000 online agents in the cluster").
//!
//! 1. Each node's resident memory (`VmRSS` of its process, nodes the bench
//!    started only) at rest.
//! 2. `--customers` customers are created over the nodes
//!    ([`population`]): one chat message each, no agent free, so each
//!    waits and then receives nothing more (an idle actor). The nodes'
//!    memory again: the growth summed over the nodes, over the customers,
//!    is the bytes per idle actor. It covers everything a waiting customer
//!    costs a node: the actor and its mailbox, the customer's state and
//!    one-message history, the hub's and the topology's maps, and the
//!    router's entry for the waiting conversation (on the router's node).
//!    `Admin.ListNodes` asked of each node gives its actors.
//! 3. `--agents` desktops log in (`AgentDesktop.Session`, several hundred
//!    per HTTP/2 connection, spread over the nodes), AWAY: online, and
//!    taking no offer from the customers waiting. They stay connected for
//!    `--duration` seconds; `Admin.ListAgents` counts those online after
//!    the logins and at the end, and the bench counts the sessions the
//!    server ended. The nodes' memory once more gives the bytes per agent
//!    session.
//!
//! With fewer customers than the brief's 100,000 (creating them takes a
//! while through the cluster), the report says what was measured and
//! extrapolates the memory linearly. The teardown kills the nodes: a drain
//! would only move every actor between nodes that are all leaving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use centralino_proto::v1 as pb;
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot, watch};
use tonic::transport::Channel as Conn;

use super::load::{all_logged_in, log_in_telling};
use super::population;
use super::report::num;
use super::system::{System, rss_bytes};
use super::workload::AgentKind;

/// Customers created unless `--customers` says otherwise: the brief's
/// target, which the default run measures rather than extrapolates.
pub const DEFAULT_CUSTOMERS: usize = 100_000;
/// Seconds the desktops stay online unless `--duration` says otherwise.
pub const DEFAULT_HOLD_S: f64 = 10.0;
/// The brief's targets for the whole cluster.
pub const TARGET_CUSTOMERS: u64 = 100_000;
pub const TARGET_AGENTS: u64 = 15_000;
/// Desktops per HTTP/2 connection, as an agent-desktop gateway would
/// multiplex them.
const DESKTOPS_PER_CONNECTION: usize = 500;
/// Logins in progress at once.
const LOGINS_IN_FLIGHT: usize = 256;
/// Submits in flight while customers are created.
const IN_FLIGHT: usize = 64;

/// What the scenario is asked to do.
pub struct Spec {
    pub customers: usize,
    pub agents: usize,
    /// How long the desktops stay online.
    pub hold: Duration,
    pub tag: String,
}

/// One node's memory at the three moments, bytes.
#[derive(Debug, Serialize)]
pub struct NodeMemory {
    pub node: String,
    pub at_rest: Option<u64>,
    pub with_customers: Option<u64>,
    pub with_agents: Option<u64>,
    /// Customer actors it runs (its own count).
    pub actors: u32,
}

/// What the scenario measured.
#[derive(Debug, Serialize)]
pub struct Measured {
    pub customers_asked: usize,
    pub customers_created: usize,
    pub create_s: f64,
    pub create_per_s: f64,
    pub create_failed: u64,
    pub create_first_error: Option<String>,
    pub nodes: Vec<NodeMemory>,
    pub actors_in_cluster: u64,
    pub actors_per_node: f64,
    pub bytes_per_idle_actor: Option<f64>,
    pub agents_asked: usize,
    pub login_s: f64,
    /// `Admin.ListAgents`: the bench's agents online after the logins, and
    /// after `hold_s`.
    pub agents_online_after_login: u64,
    pub agents_online: u64,
    pub hold_s: f64,
    /// Sessions the server ended (or that broke) while held.
    pub sessions_lost: u64,
    pub bytes_per_agent_session: Option<f64>,
    /// Memory per node at the brief's 100,000 customers, from the
    /// measured bytes per actor, when fewer were measured.
    pub extrapolated_rss_per_node_at_100k: Option<f64>,
}

/// Runs the scenario on `system`'s nodes.
pub async fn measure(system: &mut System, spec: &Spec) -> anyhow::Result<Measured> {
    let pids = system.node_pids();
    let rss = || -> Vec<Option<u64>> {
        system
            .targets
            .iter()
            .map(|t| {
                pids.iter()
                    .find(|(n, _)| *n == t.name)
                    .and_then(|(_, pid)| rss_bytes(*pid))
            })
            .collect()
    };
    let at_rest = rss();
    let made = population::create(
        &system.targets,
        &spec.tag,
        "sc",
        0..spec.customers as u64,
        IN_FLIGHT,
    )
    .await?;
    let actors = population::local_customers(&system.targets).await?;
    let with_customers = rss();

    eprintln!(
        "bench: scale: logging {} agent desktops in (AWAY)",
        spec.agents
    );
    let desk = Desktops::log_in(system, spec).await?;
    let agents_online_after_login = online(system, &spec.tag).await?;
    eprintln!(
        "bench: scale: {} desktops logged in in {:.1} s, {agents_online_after_login} online; holding them for {:?}",
        spec.agents, desk.login_s, spec.hold
    );
    tokio::time::sleep(spec.hold).await;
    let agents_online = online(system, &spec.tag).await?;
    let with_agents = rss();
    let (sessions_lost, login_s) = (desk.lost.load(Ordering::Relaxed), desk.login_s);
    desk.log_out().await;

    let growth = |a: &[Option<u64>], b: &[Option<u64>]| -> Option<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?) as f64))
            .sum::<Option<f64>>()
    };
    let created = made.created.len();
    let bytes_per_idle_actor = growth(&at_rest, &with_customers)
        .filter(|_| created > 0)
        .map(|g| g / created as f64);
    let bytes_per_agent_session = growth(&with_customers, &with_agents)
        .filter(|_| spec.agents > 0)
        .map(|g| g / spec.agents as f64);
    let actors_in_cluster: u64 = actors.iter().map(|(_, n)| u64::from(*n)).sum();
    let n = system.targets.len().max(1);
    let extrapolated_rss_per_node_at_100k = match bytes_per_idle_actor {
        Some(b) if (created as u64) < TARGET_CUSTOMERS => {
            let rest: Vec<u64> = at_rest.iter().flatten().copied().collect();
            let mean_rest = rest.iter().sum::<u64>() as f64 / rest.len().max(1) as f64;
            Some(mean_rest + b * TARGET_CUSTOMERS as f64 / n as f64)
        }
        _ => None,
    };
    Ok(Measured {
        customers_asked: spec.customers,
        customers_created: created,
        create_s: made.seconds,
        create_per_s: made.per_s(),
        create_failed: made.failed,
        create_first_error: made.first_error,
        nodes: system
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| NodeMemory {
                node: t.name.clone(),
                at_rest: at_rest[i],
                with_customers: with_customers[i],
                with_agents: with_agents[i],
                actors: actors
                    .iter()
                    .find(|(a, _)| *a == t.name)
                    .map_or(0, |(_, n)| *n),
            })
            .collect(),
        actors_in_cluster,
        actors_per_node: actors_in_cluster as f64 / n as f64,
        bytes_per_idle_actor,
        agents_asked: spec.agents,
        login_s,
        agents_online_after_login,
        agents_online,
        hold_s: spec.hold.as_secs_f64(),
        sessions_lost,
        bytes_per_agent_session,
        extrapolated_rss_per_node_at_100k,
    })
}

/// The agent id of desktop `i` of run `tag`.
fn agent_id(tag: &str, i: usize) -> String {
    format!("bench-{tag}-sc-{i}")
}

/// The bench's agents `Admin.ListAgents` lists as online (any state but
/// offline).
async fn online(system: &System, tag: &str) -> anyhow::Result<u64> {
    let prefix = agent_id(tag, 0);
    let prefix = prefix.trim_end_matches('0');
    let t = system.targets.first().context("no node left")?;
    let mut req = tonic::Request::new(pb::ListAgentsRequest {});
    req.set_timeout(Duration::from_secs(60));
    let agents = population::admin(t.connect().await?)
        .list_agents(req)
        .await
        .context("Admin.ListAgents")?
        .into_inner()
        .agents;
    Ok(agents
        .iter()
        .filter(|a| a.agent_id.starts_with(prefix) && a.state != pb::AgentState::Offline as i32)
        .count() as u64)
}

/// The logged-in desktops.
struct Desktops {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    lost: Arc<AtomicU64>,
    login_s: f64,
}

impl Desktops {
    /// Logs `spec.agents` desktops in, AWAY, over connections spread over
    /// the nodes; returns once all are in (fails if one is refused, or if
    /// they take longer than a deadline that grows with their number).
    async fn log_in(system: &System, spec: &Spec) -> anyhow::Result<Desktops> {
        let connections = spec.agents.div_ceil(DESKTOPS_PER_CONNECTION).max(1);
        let mut conns: Vec<Conn> = Vec::with_capacity(connections);
        for j in 0..connections {
            conns.push(system.targets[j % system.targets.len()].connect().await?);
        }
        let (stop, stop_rx) = watch::channel(false);
        let lost = Arc::new(AtomicU64::new(0));
        let limit = Arc::new(Semaphore::new(LOGINS_IN_FLIGHT));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(spec.agents);
        let mut ready = Vec::with_capacity(spec.agents);
        for i in 0..spec.agents {
            let (tx, rx) = oneshot::channel();
            ready.push(rx);
            tasks.push(tokio::spawn(desktop(
                conns[i % conns.len()].clone(),
                agent_id(&spec.tag, i),
                tx,
                stop_rx.clone(),
                lost.clone(),
                limit.clone(),
            )));
        }
        let desk = Desktops {
            stop,
            tasks,
            lost,
            login_s: 0.0,
        };
        // 10 ms a desktop, at least a minute: a loaded machine logs in
        // about 1,000 a second.
        let deadline = Duration::from_secs(60).max(Duration::from_millis(10) * spec.agents as u32);
        if let Err(e) = all_logged_in(ready, deadline).await {
            desk.log_out().await;
            return Err(e);
        }
        Ok(Desktops {
            login_s: started.elapsed().as_secs_f64(),
            ..desk
        })
    }

    /// Closes every session (logging the agents out).
    async fn log_out(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// One idle desktop: logs in AWAY, then only reads its stream until told
/// to stop; a stream the server ends meanwhile counts as lost.
async fn desktop(
    conn: Conn,
    id: String,
    ready: oneshot::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
    lost: Arc<AtomicU64>,
    limit: Arc<Semaphore>,
) {
    let permit = limit.acquire_owned().await;
    let Some((_commands, mut events)) = log_in_telling(
        conn,
        &id,
        &AgentKind::identical(),
        pb::AgentState::Away,
        ready,
    )
    .await
    else {
        return;
    };
    drop(permit);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            event = events.message() => match event {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if !*stop.borrow() {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    }
    // Dropping the command sender ends the session: the agent logs out.
}

impl super::Outcome for Measured {
    fn fill(&self, report: &mut super::Report) {
        report.bytes_per_idle_actor = self.bytes_per_idle_actor;
        report.actors_per_node = Some(self.actors_per_node);
        report.customer_actors_in_cluster = Some(self.actors_in_cluster as f64);
        report.agents_online = Some(self.agents_online as f64);
    }

    fn header(&self, system: &str) -> String {
        format!(
            "centralino bench: scenario scale, {system}: {} idle customer actors, {} agent desktops\n{}",
            self.customers_created,
            self.agents_asked,
            describe(self).trim_end()
        )
    }
}

/// The summary's lines about the scenario.
fn describe(m: &Measured) -> String {
    let mb = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6));
    let mut s = format!(
        "  {} customers created ({} asked) in {:.1} s ({:.0}/s, {} failed{}); {} customer actors in the cluster, {} per node\n",
        m.customers_created,
        m.customers_asked,
        m.create_s,
        m.create_per_s,
        m.create_failed,
        m.create_first_error
            .as_ref()
            .map_or(String::new(), |e| format!(", first error: {e}")),
        m.actors_in_cluster,
        num(m.actors_per_node),
    );
    for n in &m.nodes {
        s.push_str(&format!(
            "  {}: {} actors; RSS at rest {}, with the customers {}, with the desktops {}\n",
            n.node,
            n.actors,
            mb(n.at_rest),
            mb(n.with_customers),
            mb(n.with_agents)
        ));
    }
    s.push_str(&format!(
        "  {} desktops logged in (AWAY) in {:.1} s; online by Admin.ListAgents: {} after the logins, {} after {:.0} s; sessions lost {}; {} per agent session\n",
        m.agents_asked,
        m.login_s,
        m.agents_online_after_login,
        m.agents_online,
        m.hold_s,
        m.sessions_lost,
        m.bytes_per_agent_session
            .map_or("? bytes".into(), |b| format!("{} bytes", num(b)))
    ));
    if let Some(x) = m.extrapolated_rss_per_node_at_100k {
        s.push_str(&format!(
            "  measured with {} customers, not the brief's {}: extrapolated linearly, a node would hold about {:.0} MB at {} customers over {} nodes (creating them at {:.0}/s would take {:.0} s)\n",
            m.customers_created,
            TARGET_CUSTOMERS,
            x / 1e6,
            TARGET_CUSTOMERS,
            m.nodes.len(),
            m.create_per_s,
            TARGET_CUSTOMERS as f64 / m.create_per_s.max(f64::EPSILON)
        ));
    }
    if m.nodes.iter().all(|n| n.at_rest.is_none()) {
        s.push_str(
            "  memory not measured: the nodes are not the bench's own processes (--target)\n",
        );
    }
    s
}
