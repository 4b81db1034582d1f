//! `centralino bench`: measures a cluster against this machine's ceilings
//! and publishes the numbers (issue 6; brief, "How good it must be").
//!
//! The bench drives nodes through the public gRPC API only, as simulated
//! channel gateways and agent desktops ([`load`]), either nodes someone
//! else runs (`--target`) or a cluster it starts and tears down itself
//! (`--nodes N`, [`system`]). The workload is reproducible from `--seed`
//! ([`workload`]). What happens to every contact is recorded on one
//! monotonic clock ([`tracker`]); the report compares each number with its
//! target and with ceilings measured in the same process ([`ceiling`]):
//! a no-op tonic unary call and raw etcd puts at the same concurrency.
//!
//! Scenarios (`--scenario`):
//!
//! - `latency`: a fixed moderate rate (1,000 contacts/s unless `--rate`)
//!   with agents sized so that about 30% of their capacity is in use, so
//!   that an agent is free for nearly every contact: ingest-to-offer
//!   p50/p99/p99.9 at that load (target: p99 < 5 ms at 1,000/s).
//! - `throughput`: a high open-loop rate (6,000 contacts/s unless
//!   `--rate`, above the 5,000/s target) with agents sized for about 50%
//!   use: contacts routed end to end per second, and etcd requests per
//!   routed contact. When the system cannot keep up, the routed rate is
//!   what it sustained and the report shows the backlog. With `--steps N`
//!   it is a ramp: N phases whose rates double up to `--rate`, stopping
//!   after the first one the system cannot keep up with; the report takes
//!   the step that routed the most.
//!   With etcd, each throughput phase also reads what the cluster's keys
//!   take in etcd as its window closes; the last one's bytes over the
//!   conversations open then are `etcd_bytes_per_active_conversation` (see
//!   [`keys`]; the summary splits them into events, per-customer keys and
//!   the archive).
//!   On the bench's own nodes, the latency and throughput phases also
//!   count the envelopes the nodes sent each other per routed contact, by
//!   kind ([`crossings`]): where a cluster's cost per contact goes.
//! - `all`: `latency`, then `throughput`, on the same nodes; then
//!   `migration`, `failover`, `drain`, `scale` and `quality`, each on a
//!   cluster of its own with its logs under `--out`/NAME and its own
//!   defaults: one report with every number.
//! - `migration`: one customer with a 1,000-event history moved 200 times
//!   between the nodes (3 unless `--nodes`) while a gateway keeps writing
//!   to it: the migration pause p50/p99 (target: p99 < 10 ms), see
//!   [`migration`].
//! - `failover`: SIGKILL of a node holding waiting customers (3 nodes,
//!   `--customers` new ones per repetition, `--repeat` kills, `--victim
//!   other|router`): the time until each is owned by a survivor and queued
//!   again with its waiting time, p50 over the repetitions (target: under
//!   3 s), with the lease TTL; see [`failover`].
//! - `drain`: SIGTERM of a node holding `--customers` (10,000) customer
//!   actors: the time until it has moved them all and exited, its own
//!   `drained` figures, and that nothing was lost; see [`drain`].
//! - `scale`: `--customers` idle customer actors over the cluster and
//!   `--agents` (15,000) desktops online: bytes per idle actor (from the
//!   nodes' resident memory), actors per node, agents that stayed online
//!   (targets: 100,000 actors and 15,000 agents in the cluster); see
//!   [`scale`].
//! - `quality`: Poisson arrivals of voice contacts (17/s unless `--rate`)
//!   to 20 agents 85% busy, 1 s mean handle time, for 180 s: the waits
//!   against what queueing theory predicts for the same queue (Erlang C;
//!   per priority class with `--classes`, Cobham's formula), with a
//!   confidence interval; see [`quality`].
//!
//! The last five each run alone, on a cluster of their own (`all` runs
//! them after the load). Failover and drain signal the nodes, so they need
//! the bench's own processes, not `--target`; scale and quality also drive
//! `--target` nodes (scale without their memory). `--nodes N` is etcd and
//! N clustered nodes (3 unless given); `--standalone` one node alone with
//! in-memory coordination (latency, throughput, scale and quality only).
//!
//! Outputs under `--out`: `report.json`, `contacts.csv` (one row per
//! contact sent by the load phases, or by `quality`: under `all`, in its
//! own directory), and for spawned clusters the nodes' and etcd's logs,
//! the node configuration and each node's Prometheus metrics at the end.

mod ceiling;
mod crossings;
mod drain;
mod failover;
mod keys;
mod load;
mod migration;
mod population;
mod quality;
mod queueing;
pub(crate) mod report;
mod scale;
mod system;
mod tracker;
pub(crate) mod workload;

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;

use centralino_core::Channel;
use failover::Victim;
use load::{Env, PhaseRun, PhaseSpec};
use report::Report;
use system::{SpawnSpec, System};
use tracker::Clock;
use workload::{AgentKind, Class, Mix};

/// `centralino bench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Latency)]
    scenario: Scenario,
    /// Drive running nodes (HOST:PORT, comma-separated) instead of
    /// starting them.
    #[arg(long, value_delimiter = ',', conflicts_with = "nodes")]
    target: Option<Vec<String>>,
    /// Start a real etcd and this many clustered nodes on loopback, torn
    /// down afterwards (3 unless given).
    #[arg(long)]
    nodes: Option<usize>,
    /// Start one node alone instead, with in-memory coordination and no
    /// etcd (nothing durable): the node's own cost, without the cluster's.
    #[arg(long, conflicts_with_all = ["nodes", "target"])]
    standalone: bool,
    /// With --target: the cluster's etcd client URL, to count its requests,
    /// measure its put ceiling and read its keys.
    #[arg(long)]
    etcd: Option<String>,
    /// With --target and --etcd: the nodes' cluster name (their keys live
    /// under `/centralino/<cluster>/`).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Membership lease TTL, ms, of the nodes the bench starts (renewed
    /// every quarter of it); the node's default (2,000) otherwise.
    #[arg(long)]
    lease_ttl_ms: Option<u64>,
    /// Customers the failover (per repetition: 150), drain (10,000) and
    /// scale (100,000) scenarios create.
    #[arg(long)]
    customers: Option<usize>,
    /// failover: the node killed: one that does not host the router (the
    /// busiest), or the router's.
    #[arg(long, value_enum, default_value_t = Victim::Other)]
    victim: Victim,
    /// failover: how many nodes are killed, one after the other (each
    /// replaced before the next).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Contacts per second (Poisson arrivals); the scenario's default
    /// otherwise.
    #[arg(long)]
    rate: Option<f64>,
    /// Agents, of the kinds of --agent-mix in exact counts by its shares;
    /// sized from the rate, the handle time, the channel mix and the mix's
    /// mean capacity otherwise. scale: the desktops logged in (15,000
    /// unless given).
    #[arg(long)]
    agents: Option<usize>,
    /// Kinds of agents and their shares, as
    /// `name:weight:capacity[:skill=level+skill=level]` (capacity 1..100:
    /// voice costs 100, chat 30, email 20; skill levels 1..5): e.g.
    /// `generalist:0.7:100,billing:0.3:60:billing=4`. Skills matter where
    /// the topic's queue requires them (see --node-config).
    #[arg(long, default_value = "agent:1:100")]
    agent_mix: String,
    /// Mean wrap-up time, ms (exponential): an agent wraps each
    /// conversation up when its handle time is over and resolves it this
    /// long after. Without it an agent resolves at once. Sizing the agents
    /// counts it as time the conversation holds capacity (as the nodes'
    /// after-contact work does, which the bench's own node config sets to
    /// none).
    #[arg(long)]
    wrap_up_ms: Option<f64>,
    /// Mean patience, ms (exponential) from the acknowledgement, of a
    /// waiting customer: one not offered by then abandons. Without it
    /// nobody abandons.
    #[arg(long)]
    patience_ms: Option<f64>,
    /// Configuration file for the nodes the bench starts (queues, skills,
    /// after-contact work, ...) instead of its own: the default queue, no
    /// skills required, no after-contact work.
    #[arg(long)]
    node_config: Option<PathBuf>,
    /// Mean handle time, ms (exponential), from the offer to the resolve.
    #[arg(long)]
    handle_ms: Option<f64>,
    /// Priority classes and their shares: `angry` is a negative sentiment,
    /// `normal` the standard tier, any other name a tier
    /// (`normal:0.8,gold:0.15,angry:0.05` unless given; quality:
    /// `normal:1`).
    #[arg(long)]
    classes: Option<String>,
    /// Channel mix and shares (`chat:0.5,voice:0.3,email:0.2` unless
    /// given; quality: `voice:1`).
    #[arg(long)]
    channels: Option<String>,
    /// Seconds measured (after the warm-up); scale: how long the desktops
    /// stay online (10 unless given).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of load before the measured window.
    #[arg(long)]
    warmup: Option<f64>,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where report.json, contacts.csv and the logs go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Topics of the contacts and their shares (`sales:0.7,billing:0.3`);
    /// the node routes each to the queue listing its topic, or the default
    /// queue.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// gRPC connections per target (gateways and desktops share them).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Most SubmitContact calls outstanding; beyond it the generator skips
    /// contacts and counts them (the system fell behind).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Seconds to wait after the window for outstanding contacts.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Throughput as a ramp: this many steps whose rates double up to
    /// --rate, stopping after the first step the system cannot keep up with.
    #[arg(long, default_value_t = 1)]
    steps: u32,
    /// Seconds each ceiling is measured for (0 skips them).
    #[arg(long, default_value_t = 3.0)]
    ceiling_secs: f64,
    /// Calls in flight for the ceilings; the load's mean in-flight
    /// SubmitContact calls otherwise.
    #[arg(long)]
    ceiling_concurrency: Option<usize>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Throughput,
    Latency,
    Migration,
    Failover,
    Drain,
    Scale,
    Quality,
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Migration => "migration",
            Scenario::Failover => "failover",
            Scenario::Drain => "drain",
            Scenario::Scale => "scale",
            Scenario::Quality => "quality",
            Scenario::All => "all",
        }
    }
}

/// Defaults of a measured scenario.
struct Defaults {
    rate: f64,
    handle_ms: f64,
    /// Share of the agents' capacity the load should use.
    utilisation: f64,
    warmup: f64,
    duration: f64,
    what: &'static str,
}

const LATENCY: Defaults = Defaults {
    rate: 1_000.0,
    handle_ms: 200.0,
    utilisation: 0.3,
    warmup: 3.0,
    duration: 10.0,
    what: "ingest-to-offer latency at a moderate rate with plenty of free agents",
};
const THROUGHPUT: Defaults = Defaults {
    rate: 6_000.0,
    handle_ms: 100.0,
    utilisation: 0.5,
    warmup: 3.0,
    duration: 10.0,
    what: "contacts routed end to end per second at a high open-loop rate",
};
/// 20 agents 85% busy: see [`quality`] for why.
const QUALITY: Defaults = Defaults {
    rate: 17.0,
    handle_ms: 1_000.0,
    utilisation: 0.85,
    warmup: 20.0,
    duration: 180.0,
    what: "waits against queueing theory (Erlang C, Cobham's priority formula)",
};
const LOAD_CLASSES: &str = "normal:0.8,gold:0.15,angry:0.05";
const LOAD_CHANNELS: &str = "chat:0.5,voice:0.3,email:0.2";
const QUALITY_CLASSES: &str = "normal:1";
const QUALITY_CHANNELS: &str = "voice:1";

/// Runs the bench.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (classes, channels) = args.mixes(args.scenario == Scenario::Quality)?;
    let topics = Arc::new(Mix::parse("topic", &args.topic, workload::topic)?);
    let agent_kinds = Arc::new(workload::agent_mix(&args.agent_mix)?);
    for (flag, v) in [
        ("rate", args.rate),
        ("handle-ms", args.handle_ms),
        ("duration", args.duration),
        ("wrap-up-ms", args.wrap_up_ms),
        ("patience-ms", args.patience_ms),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            bail!("--{flag}: must be positive");
        }
    }
    if args.warmup.is_some_and(|v| !(v.is_finite() && v >= 0.0))
        || !(args.drain.is_finite() && args.drain >= 0.0)
    {
        bail!("--warmup and --drain: must be zero or more seconds");
    }
    if args.agents == Some(0)
        || args.connections == 0
        || args.max_in_flight == 0
        || args.steps == 0
        || args.customers == Some(0)
        || args.repeat == 0
    {
        bail!(
            "--agents, --connections, --max-in-flight, --steps, --customers and --repeat: must be at least 1"
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let measured: Vec<(&'static str, &Defaults)> = match args.scenario {
        Scenario::Latency => vec![("latency", &LATENCY)],
        Scenario::Throughput => vec![("throughput", &THROUGHPUT)],
        Scenario::All => vec![("latency", &LATENCY), ("throughput", &THROUGHPUT)],
        Scenario::Migration
        | Scenario::Failover
        | Scenario::Drain
        | Scenario::Scale
        | Scenario::Quality => vec![],
    };
    // A throughput ramp is `--steps` phases whose rates double up to the
    // rate; the others are one phase each.
    let mut plan: Vec<(&'static str, &Defaults, f64)> = Vec::new();
    for (name, d) in &measured {
        let top = args.rate.unwrap_or(d.rate);
        let steps = if *name == "throughput" { args.steps } else { 1 };
        for k in (0..steps).rev() {
            plan.push((name, d, top / 2f64.powi(k as i32)));
        }
    }
    let specs: Vec<PhaseSpec> = plan
        .iter()
        .enumerate()
        .map(|(index, (name, d, rate))| {
            args.phase_spec(index, name, d, *rate, (&topics, &agent_kinds, &channels))
        })
        .collect();

    let clock = Clock::start();
    let tag = format!(
        "{:06}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() / 10)
            % 1_000_000
    );
    let parameters = serde_json::json!({
        "scenario": args.scenario.name(),
        "target": args.target,
        "nodes": args.nodes,
        "etcd": args.etcd,
        "seed": args.seed,
        "classes": classes.shares.iter().map(|s| serde_json::json!({"name": s.item.name, "tier": s.item.tier, "sentiment": s.item.sentiment, "share": s.share})).collect::<Vec<_>>(),
        "channels": channels.shares.iter().map(|s| serde_json::json!({"name": s.item.name(), "share": s.share, "cost": s.item.cost()})).collect::<Vec<_>>(),
        "topics": topics.shares.iter().map(|s| serde_json::json!({"name": s.item, "share": s.share})).collect::<Vec<_>>(),
        "agent_mix": agent_kinds.shares.iter().map(|s| serde_json::json!({"name": s.item.name, "share": s.share, "capacity": s.item.capacity, "skills": s.item.skills})).collect::<Vec<_>>(),
        "wrap_up_ms": args.wrap_up_ms,
        "patience_ms": args.patience_ms,
        "node_config": args.node_config,
        "connections_per_target": args.connections,
        "max_in_flight": args.max_in_flight,
        "drain_wait_s": args.drain,
        "customers": args.customers,
        "victim": args.victim.name(),
        "repeat": args.repeat,
        "lease_ttl_ms": args.lease_ttl_ms,
        "cluster": args.cluster,
        "steps": args.steps,
        "ceiling_secs": args.ceiling_secs,
        "ceiling_concurrency": args.ceiling_concurrency,
        "phases": specs.iter().map(|s| serde_json::json!({"scenario": s.scenario, "rate_per_s": s.rate, "agents": s.agents, "handle_ms": s.handle_ms, "warmup_s": s.warmup, "duration_s": s.duration})).collect::<Vec<_>>(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });

    let mut report = Report {
        parameters,
        ..Report::default()
    };
    if measured.is_empty() {
        return run_apart(&args, report, &tag, (&classes, &channels)).await;
    }

    let load_at_start = load::load_avg();
    let mut system = start_system(&args, spawn_spec(&args), &args.out).await?;
    let env = Env::on(
        &system,
        clock,
        (classes.clone(), channels.clone()),
        tag.clone(),
    );

    let outcome = tokio::select! {
        r = measure(&args, &specs, &env, &mut system) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    system.save_node_metrics(&args.out).await;
    let dead = system.dead_nodes();
    let description = system.description.clone();
    eprintln!("bench: tearing down");
    system.shutdown().await;
    let (runs, grpc, etcd_put) = outcome?;

    let contacts = env.tracker.snapshot();
    report.phases = runs.iter().map(|r| r.summarise(&contacts)).collect();
    for r in &runs {
        if let Some((e, n)) = r.first_error(&contacts) {
            eprintln!(
                "bench: {} phase: {n} SubmitContact calls failed with: {e}",
                r.spec.scenario
            );
        }
    }
    let latency = report.phases.iter().find(|p| p.scenario == "latency");
    // Of a ramp, the step that routed the most.
    let throughput = report
        .phases
        .iter()
        .filter(|p| p.scenario == "throughput")
        .max_by(|a, b| a.routed_per_s.total_cmp(&b.routed_per_s));
    // Latency numbers from the latency phase; throughput and etcd cost from
    // the throughput phase; either from the only phase there is.
    let lat = latency.or(throughput);
    let thr = throughput.or(latency);
    report.ingest_to_offer_p50_ms = lat
        .and_then(|p| p.ingest_to_offer.as_ref())
        .map(|l| l.p50_ms);
    report.ingest_to_offer_p99_ms = lat
        .and_then(|p| p.ingest_to_offer.as_ref())
        .map(|l| l.p99_ms);
    report.ingest_to_offer_at_rate_per_s = lat.map(|p| p.rate_per_s);
    report.ingest_to_offer_p999_ms = lat
        .and_then(|p| p.ingest_to_offer.as_ref())
        .map(|l| l.p999_ms);
    report.routed_per_s = thr.map(|p| p.routed_per_s);
    report.routed_saturated = thr.map(|p| p.saturated);
    report.etcd_requests_per_contact = thr
        .and_then(|p| p.etcd.as_ref())
        .and_then(|e| e.per_contact);
    report.node_envelopes_per_contact = thr
        .and_then(|p| p.node_envelopes.as_ref())
        .and_then(|e| e.per_contact);
    // At the end of the throughput scenario: its last phase (of a ramp, the
    // step with the most open conversations).
    report.etcd_bytes_per_active_conversation = report
        .phases
        .iter()
        .rev()
        .find_map(|p| p.etcd_footprint.as_ref())
        .and_then(|f| f.per_open_conversation());
    report.grpc_ceiling_per_s = grpc.as_ref().map(|c| c.per_s);
    report.etcd_put_ceiling_per_s = etcd_put.as_ref().map(|c| c.per_s);
    report.etcd_load_to_put_ceiling = match (
        report.routed_per_s,
        report.etcd_requests_per_contact,
        report.etcd_put_ceiling_per_s,
    ) {
        (Some(r), Some(q), Some(e)) if e > 0.0 => Some(r * q / e),
        _ => None,
    };
    report.routed_to_grpc_ceiling = match (report.routed_per_s, report.grpc_ceiling_per_s) {
        (Some(r), Some(g)) if g > 0.0 => Some(r / g),
        _ => None,
    };
    report.grpc_ceiling = grpc;
    report.etcd_put_ceiling = etcd_put;
    report.system = serde_json::json!({
        "under_test": description,
        "targets": env.targets.iter().map(|t| serde_json::json!({"name": t.name, "addr": t.addr})).collect::<Vec<_>>(),
        "etcd": env.etcd,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "load_avg_1m_at_start": load_at_start,
        "load_avg_1m_at_end": load::load_avg(),
        "dead_nodes": dead,
        "offers_never_matched": env.tracker.unmatched(),
        "note": "generator, nodes and etcd share this machine; the load average shows what else ran",
    });
    // `all`: the scenarios that run alone, once the load's cluster is gone.
    let (rest, rest_failed) = match args.scenario {
        Scenario::All => the_rest(&args, &tag, &mut report).await,
        _ => (Vec::new(), Vec::new()),
    };
    for a in &rest {
        report.system[a.scenario.name()] = serde_json::json!({
            "under_test": a.description,
            "outcome": a.json,
        });
    }
    let agent_ids: Vec<String> = runs
        .iter()
        .flat_map(|r| r.agent_ids.iter().cloned())
        .collect();
    let node_names: Vec<String> = env.targets.iter().map(|t| t.name.clone()).collect();
    let mut header = format!(
        "centralino bench: scenario {}, {}, seed {}; {} CPUs, load avg {} at start (a shared machine: other work shows here)",
        args.scenario.name(),
        description,
        args.seed,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_at_start.map(report::num).unwrap_or_else(|| "?".into())
    );
    for a in &rest {
        header.push_str("\n\n");
        header.push_str(a.header.trim_end());
    }
    write_contacts(
        &args.out,
        &contacts,
        &agent_ids,
        &node_names,
        &classes,
        &channels,
    )?;
    finish(&args.out, &report, &header)?;
    fail_if_dead(&dead, &args.out)?;
    fail_if_alone_failed(&rest, &args.out)?;
    if !rest_failed.is_empty() {
        bail!("{}", rest_failed.join("; "));
    }
    Ok(())
}

/// The classes and the channels of a workload.
type Mixes = (Arc<Mix<Class>>, Arc<Mix<Channel>>);

impl Args {
    /// The classes and channels of the load scenarios (`quality`: of the
    /// quality scenario), from the flags or the defaults.
    fn mixes(&self, quality: bool) -> anyhow::Result<Mixes> {
        let (classes, channels) = if quality {
            (QUALITY_CLASSES, QUALITY_CHANNELS)
        } else {
            (LOAD_CLASSES, LOAD_CHANNELS)
        };
        let classes = self.classes.as_deref().unwrap_or(classes);
        let channels = self.channels.as_deref().unwrap_or(channels);
        Ok((
            Arc::new(Mix::parse("classes", classes, Class::parse)?),
            Arc::new(Mix::parse("channels", channels, workload::channel)?),
        ))
    }

    /// Phase `index` of scenario `name` (defaults `d`) at `rate`: the flags
    /// where given, `d` otherwise, and agents sized for `d`'s utilisation.
    fn phase_spec(
        &self,
        index: usize,
        name: &'static str,
        d: &Defaults,
        rate: f64,
        (topics, agent_kinds, channels): (&Arc<Mix<String>>, &Arc<Mix<AgentKind>>, &Mix<Channel>),
    ) -> PhaseSpec {
        let handle_ms = self.handle_ms.unwrap_or(d.handle_ms);
        // Capacity in use = rate x handle time (and wrap-up) x mean cost,
        // in agents of the mix's mean capacity; agents to keep it near the
        // scenario's utilisation (at least 10).
        let held_ms = handle_ms + self.wrap_up_ms.unwrap_or(0.0);
        let busy = rate * held_ms / 1_000.0 * workload::mean_cost(channels)
            / workload::mean_capacity(agent_kinds);
        let agents = self
            .agents
            .unwrap_or(((busy / d.utilisation).ceil() as usize).max(10));
        PhaseSpec {
            index,
            scenario: name,
            what: d.what.into(),
            rate,
            agents,
            handle_ms,
            warmup: self.warmup.unwrap_or(d.warmup),
            duration: self.duration.unwrap_or(d.duration),
            drain: self.drain,
            seed: self.seed,
            max_in_flight: self.max_in_flight,
            connections: self.connections,
            topics: topics.clone(),
            agent_kinds: agent_kinds.clone(),
            wrap_up_ms: self.wrap_up_ms,
            patience_ms: self.patience_ms,
        }
    }

    /// The generator's own tokio worker threads: when it starts the nodes
    /// on this machine, it shares the cores with them (a worker more than
    /// its share adds context switches to every latency it measures, about
    /// 2x the ingest->offer p50 measured with 3 nodes on 2 cores); its
    /// runtime's default when it drives remote nodes.
    pub fn worker_threads(&self) -> Option<usize> {
        if self.target.is_some() || std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
            return None;
        }
        Some(system::worker_share(self.node_count() + 1))
    }

    /// How many nodes are under test: `--target`'s, one for
    /// `--standalone`, else `--nodes` (3 unless given).
    fn node_count(&self) -> usize {
        match &self.target {
            Some(t) => t.len(),
            None if self.standalone => 1,
            None => self.nodes.unwrap_or(DEFAULT_NODES),
        }
    }
}

/// Nodes the bench starts unless `--nodes` says.
const DEFAULT_NODES: usize = 3;

/// The nodes to start: etcd and `--nodes` clustered nodes, or one node
/// alone for `--standalone`.
fn spawn_spec(args: &Args) -> SpawnSpec {
    let nodes = args.node_count();
    SpawnSpec {
        nodes,
        peak_nodes: nodes,
        clustered: !args.standalone,
        lease_ttl_ms: args.lease_ttl_ms,
        node_config: args.node_config.clone(),
    }
}

/// The nodes under test: `--target`'s, or those `spec` asks for, started
/// here (with etcd unless standalone), their logs under `out`.
async fn start_system(args: &Args, spec: SpawnSpec, out: &Path) -> anyhow::Result<System> {
    match &args.target {
        Some(t) => System::external(t, args.etcd.clone(), &args.cluster),
        None => {
            eprintln!(
                "bench: starting {} node(s) on loopback ({} worker thread(s) each, unless TOKIO_WORKER_THREADS says); logs in {}",
                spec.nodes,
                system::worker_share(spec.peak_nodes.max(spec.nodes)),
                out.display()
            );
            System::spawn(&spec, out).await
        }
    }
}

/// What one of the scenarios that run alone does with its system.
type Measure<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + 'a>>;

/// What a scenario that runs alone measured, as the report needs it.
trait Outcome: serde::Serialize {
    /// Fills the report's headline fields.
    fn fill(&self, report: &mut Report);
    /// The summary's opening lines, given what ran (the system's
    /// description).
    fn header(&self, system: &str) -> String;
    /// Why the run fails, when what it measured shows a failing system
    /// (lost customers, a repetition that never finished).
    fn failure(&self) -> Option<String> {
        None
    }
}

/// How a scenario that runs alone ends its system.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// SIGTERM: the nodes drain and leave (see [`System::shutdown`]).
    Drain,
    /// SIGKILL: nothing worth moving between nodes that all leave.
    Kill,
}

/// What a scenario that ran alone left for the report.
struct Alone {
    scenario: Scenario,
    /// Its outcome: `system.<scenario>` in report.json when it ran alone,
    /// `system.<scenario>.outcome` (beside its `under_test`) in `all`.
    json: serde_json::Value,
    /// The summary's opening lines.
    header: String,
    /// Why the run fails, if what it measured shows a failing system.
    failure: Option<String>,
    /// Nodes that died without the bench stopping them.
    dead: Vec<String>,
    /// What ran (the system's description).
    description: String,
}

/// Measures one of the scenarios that run alone on a system of its own:
/// starts it (`spec`, logs under `out`), measures (Ctrl-C interrupts),
/// saves the nodes' metrics, tears it down, and fills the report's
/// headline fields with what it measured.
async fn measure_alone<T: Outcome>(
    args: &Args,
    scenario: Scenario,
    out: &Path,
    report: &mut Report,
    spec: SpawnSpec,
    teardown: Teardown,
    measure: impl for<'a> FnOnce(&'a mut System) -> Measure<'a, T>,
) -> anyhow::Result<Alone> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut system = start_system(args, spec, out).await?;
    let outcome = tokio::select! {
        r = measure(&mut system) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    system.save_node_metrics(out).await;
    let dead = system.dead_nodes();
    let description = system.description.clone();
    eprintln!("bench: tearing down");
    if teardown == Teardown::Kill {
        system.kill_nodes();
    }
    system.shutdown().await;
    let measured = outcome?;
    measured.fill(report);
    Ok(Alone {
        scenario,
        json: serde_json::to_value(&measured)?,
        header: measured.header(&description),
        failure: measured.failure(),
        dead,
        description,
    })
}

/// Fails the run for what the scenarios run alone showed: nodes that died
/// under them, or a failing system.
fn fail_if_alone_failed(alone: &[Alone], out: &Path) -> anyhow::Result<()> {
    let dead: Vec<String> = alone.iter().flat_map(|a| a.dead.clone()).collect();
    fail_if_dead(&dead, out)?;
    let failures: Vec<String> = alone.iter().filter_map(|a| a.failure.clone()).collect();
    if failures.is_empty() {
        return Ok(());
    }
    bail!(
        "{}: see the summary above and the logs in {}",
        failures.join("; "),
        out.display()
    )
}

/// Fails the run if nodes died that the bench did not stop (`dead`, each
/// with its log's tail).
fn fail_if_dead(dead: &[String], out: &Path) -> anyhow::Result<()> {
    if dead.is_empty() {
        return Ok(());
    }
    for d in dead {
        eprintln!("bench: node {d}");
    }
    bail!(
        "{} node(s) died during the run without the bench stopping them (see above and the logs in {}): the numbers describe a failing system",
        dead.len(),
        out.display()
    )
}

/// Failover and drain signal node processes: they need the bench's own.
fn needs_own_nodes(args: &Args, scenario: Scenario) -> anyhow::Result<()> {
    if args.target.is_some() {
        bail!(
            "--scenario {} kills or stops a node process, so it starts its own nodes: use --nodes (or leave it out), not --target",
            scenario.name()
        );
    }
    Ok(())
}

/// One of the scenarios that run alone, on a system of its own whose logs
/// go under `out` (see their modules); fills the report's headline fields.
async fn alone(
    args: &Args,
    scenario: Scenario,
    tag: &str,
    out: &Path,
    report: &mut Report,
) -> anyhow::Result<Alone> {
    let tag = tag.to_owned();
    if args.standalone && !matches!(scenario, Scenario::Scale | Scenario::Quality) {
        bail!(
            "--scenario {} moves customers between nodes: it needs a cluster (--nodes), not --standalone",
            scenario.name()
        );
    }
    match scenario {
        Scenario::Migration => {
            measure_alone(
                args,
                scenario,
                out,
                report,
                spawn_spec(args),
                Teardown::Drain,
                move |s| Box::pin(async move { migration::measure(&s.targets, &tag).await }),
            )
            .await
        }
        Scenario::Failover => {
            needs_own_nodes(args, scenario)?;
            let spec = failover::Spec {
                nodes: args.node_count(),
                customers: args.customers.unwrap_or(failover::DEFAULT_CUSTOMERS),
                repeat: args.repeat,
                victim: args.victim,
                tag,
            };
            measure_alone(
                args,
                scenario,
                out,
                report,
                spawn_spec(args),
                Teardown::Drain,
                move |s| Box::pin(async move { failover::measure(s, &spec).await }),
            )
            .await
        }
        Scenario::Drain => {
            needs_own_nodes(args, scenario)?;
            let spec = drain::Spec {
                nodes: args.node_count(),
                customers: args.customers.unwrap_or(drain::DEFAULT_CUSTOMERS),
                tag,
            };
            // One clustered node first; the others join after the customers.
            let first = SpawnSpec {
                nodes: 1,
                peak_nodes: spec.nodes,
                clustered: true,
                lease_ttl_ms: args.lease_ttl_ms,
                node_config: args.node_config.clone(),
            };
            measure_alone(
                args,
                scenario,
                out,
                report,
                first,
                Teardown::Drain,
                move |s| Box::pin(async move { drain::measure(s, &spec).await }),
            )
            .await
        }
        Scenario::Scale => {
            let spec = scale::Spec {
                customers: args.customers.unwrap_or(scale::DEFAULT_CUSTOMERS),
                agents: args.agents.unwrap_or(scale::TARGET_AGENTS as usize),
                hold: Duration::from_secs_f64(args.duration.unwrap_or(scale::DEFAULT_HOLD_S)),
                tag,
            };
            measure_alone(
                args,
                scenario,
                out,
                report,
                spawn_spec(args),
                Teardown::Kill,
                move |s| Box::pin(async move { scale::measure(s, &spec).await }),
            )
            .await
        }
        Scenario::Quality => {
            let (classes, channels) = args.mixes(true)?;
            let topics = Arc::new(Mix::parse("topic", &args.topic, workload::topic)?);
            let agent_kinds = Arc::new(workload::agent_mix(&args.agent_mix)?);
            let rate = args.rate.unwrap_or(QUALITY.rate);
            let spec = quality::Spec {
                phase: args.phase_spec(
                    0,
                    "quality",
                    &QUALITY,
                    rate,
                    (&topics, &agent_kinds, &channels),
                ),
                classes,
                channels,
                tag,
                out: out.to_owned(),
                foreign_config: args.node_config.is_some() || args.target.is_some(),
            };
            measure_alone(
                args,
                scenario,
                out,
                report,
                spawn_spec(args),
                Teardown::Drain,
                move |s| Box::pin(async move { quality::measure(s, &spec).await }),
            )
            .await
        }
        Scenario::Latency | Scenario::Throughput | Scenario::All => {
            bail!("--scenario {}: not one that runs alone", scenario.name())
        }
    }
}

/// `--scenario migration|failover|drain|scale|quality`: the scenario
/// alone, then the report and the summary.
async fn run_apart(
    args: &Args,
    mut report: Report,
    tag: &str,
    (classes, channels): (&Mix<Class>, &Mix<Channel>),
) -> anyhow::Result<()> {
    let a = alone(args, args.scenario, tag, &args.out, &mut report).await?;
    report.system = serde_json::json!({
        "under_test": a.description,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        args.scenario.name(): &a.json,
    });
    // The quality scenario wrote its contacts; the others send none.
    if args.scenario != Scenario::Quality {
        write_contacts(&args.out, &[], &[], &[], classes, channels)?;
    }
    finish(&args.out, &report, &a.header)?;
    fail_if_alone_failed(std::slice::from_ref(&a), &args.out)
}

/// `--scenario all`, after latency and throughput: migration, failover,
/// drain, scale and quality, each alone on a cluster of its own with its
/// logs under `out/<scenario>/`, each with its own defaults: the load's
/// --agents, --rate, --handle-ms, --duration, --warmup, --classes,
/// --channels, --wrap-up-ms, --patience-ms and --customers are the load's
/// (--agent-mix and --topic carry over). Those the system cannot run
/// (failover and drain against --target, all but scale and quality on one
/// node) are listed as not measured, and so is one that fails, with its
/// error: what the load measured is written either way, and the run fails
/// after.
/// Returns what ran, and the errors of those that failed.
async fn the_rest(args: &Args, tag: &str, report: &mut Report) -> (Vec<Alone>, Vec<String>) {
    let own = Args {
        agents: None,
        duration: None,
        warmup: None,
        customers: None,
        rate: None,
        handle_ms: None,
        classes: None,
        channels: None,
        wrap_up_ms: None,
        patience_ms: None,
        ..args.clone()
    };
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for scenario in [
        Scenario::Migration,
        Scenario::Failover,
        Scenario::Drain,
        Scenario::Scale,
        Scenario::Quality,
    ] {
        let nodes = args.node_count();
        let cannot = match scenario {
            Scenario::Failover | Scenario::Drain if args.target.is_some() => {
                Some("it signals node processes: not with --target")
            }
            Scenario::Scale | Scenario::Quality => None,
            _ if nodes < 2 => Some("it moves customers between nodes: not on one node"),
            _ => None,
        };
        if let Some(why) = cannot {
            report
                .not_measured
                .push(format!("{} ({why})", scenario.name()));
            continue;
        }
        eprintln!("bench: scenario {} (all)", scenario.name());
        let out = args.out.join(scenario.name());
        match alone(&own, scenario, tag, &out, report).await {
            Ok(a) => done.push(a),
            Err(e) => {
                let e = format!("{} failed: {e:#}", scenario.name());
                eprintln!("bench: scenario {e}");
                report.not_measured.push(e.clone());
                failed.push(e);
            }
        }
    }
    (done, failed)
}

type Measured = (
    Vec<PhaseRun>,
    Option<report::Ceiling>,
    Option<report::Ceiling>,
);

/// The phases, then the ceilings (after the load, so that neither disturbs
/// the other; etcd's counters were read at the windows' ends, before the
/// put ceiling writes).
async fn measure(
    args: &Args,
    specs: &[PhaseSpec],
    env: &Env,
    system: &mut System,
) -> anyhow::Result<Measured> {
    let mut runs = Vec::new();
    let mut agent_base = 0u32;
    for spec in specs {
        eprintln!(
            "bench: phase {}: {} contacts/s, {} agents, mean handle {} ms, {} s warm-up + {} s measured",
            spec.scenario, spec.rate, spec.agents, spec.handle_ms, spec.warmup, spec.duration
        );
        let run = load::run(spec.clone(), env, agent_base)
            .await
            .with_context(|| format!("phase {}", spec.scenario))?;
        agent_base += run.agent_ids.len() as u32;
        let saturated = run.summarise(&env.tracker.snapshot()).saturated;
        runs.push(run);
        let dead = system.dead_nodes();
        if !dead.is_empty() {
            // What was measured up to here still goes in the report, which
            // names the dead nodes; no further phase runs.
            eprintln!(
                "bench: a node died during phase {}; stopping after it",
                spec.scenario
            );
            break;
        }
        let ramp_continues = specs
            .get(runs.len())
            .is_some_and(|next| next.scenario == spec.scenario);
        if saturated && ramp_continues {
            eprintln!(
                "bench: the system did not keep up at {} contacts/s; the ramp stops here",
                spec.rate
            );
            break;
        }
    }
    if args.ceiling_secs <= 0.0 {
        return Ok((runs, None, None));
    }
    let in_flight = runs.iter().map(|r| r.mean_in_flight).fold(0.0, f64::max);
    let concurrency = args
        .ceiling_concurrency
        .unwrap_or((in_flight.ceil() as usize).clamp(1, 256));
    let connections = env.targets.len() * args.connections;
    eprintln!("bench: ceilings at {concurrency} in flight");
    let grpc = ceiling::grpc(concurrency, connections, args.ceiling_secs)
        .await
        .context("measuring the gRPC ceiling")?;
    let etcd_put = match &env.etcd {
        Some(url) => Some(
            ceiling::etcd_puts(url, concurrency, args.ceiling_secs, &env.tag)
                .await
                .context("measuring the etcd put ceiling")?,
        ),
        None => None,
    };
    Ok((runs, Some(grpc), etcd_put))
}

/// Writes report.json and prints the summary (after [`write_contacts`]).
fn finish(out: &Path, report: &Report, header: &str) -> anyhow::Result<()> {
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    print!("{}", report::summary(report, header));
    println!(
        "\nwrote {} and {}",
        json.display(),
        out.join("contacts.csv").display()
    );
    Ok(())
}

/// Writes `out`/contacts.csv: one row per contact, agents and nodes by
/// their indexes in `agents` and `nodes`, classes and channels in theirs.
fn write_contacts(
    out: &Path,
    contacts: &[tracker::Contact],
    agents: &[String],
    nodes: &[String],
    classes: &Mix<Class>,
    channels: &Mix<Channel>,
) -> anyhow::Result<()> {
    let csv = out.join("contacts.csv");
    let file =
        std::fs::File::create(&csv).with_context(|| format!("creating {}", csv.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "{}", report::CSV_HEADER)?;
    for (id, c) in contacts.iter().enumerate() {
        let agent = c
            .agent
            .and_then(|a| agents.get(a as usize))
            .map(String::as_str);
        let node = c
            .node
            .and_then(|n| nodes.get(n as usize))
            .map(String::as_str);
        let row = report::csv_row(
            id,
            c,
            &classes.shares[c.class].item.name,
            channels.shares[c.channel].item.name(),
            agent,
            node,
        );
        writeln!(w, "{row}")?;
    }
    w.flush()?;
    Ok(())
}
