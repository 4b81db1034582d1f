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
//! - `all`: `latency`, then `throughput`, on the same nodes.
//! - `migration`: one customer with a 1,000-event history moved 200 times
//!   between the nodes (3 unless `--nodes`) while a gateway keeps writing
//!   to it: the migration pause p50/p99 (target: p99 < 10 ms), see
//!   [`migration`].
//! - `failover`, `scale`: accepted names, not implemented yet: their
//!   fields are `null` and the summary says "not measured yet".
//!
//! Outputs under `--out`: `report.json`, `contacts.csv` (one row per
//! contact sent), and for spawned clusters the nodes' and etcd's logs, the
//! node configuration and each node's Prometheus metrics at the end.

mod ceiling;
mod load;
mod migration;
pub(crate) mod report;
mod system;
mod tracker;
pub(crate) mod workload;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::ValueEnum;

use load::{Env, PhaseRun, PhaseSpec};
use report::Report;
use system::System;
use tracker::{Clock, Tracker};
use workload::{Class, Mix};

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
    /// Start this many nodes on loopback (1: one standalone node; more: a
    /// real etcd and that many clustered nodes), torn down afterwards.
    #[arg(long)]
    nodes: Option<usize>,
    /// With --target: the cluster's etcd client URL, to count its requests
    /// and measure its put ceiling.
    #[arg(long)]
    etcd: Option<String>,
    /// Contacts per second (Poisson arrivals); the scenario's default
    /// otherwise.
    #[arg(long)]
    rate: Option<f64>,
    /// Identical agents (capacity 100, no skills); sized from the rate,
    /// the handle time and the channel mix otherwise.
    #[arg(long)]
    agents: Option<usize>,
    /// Mean handle time, ms (exponential), from the offer to the resolve.
    #[arg(long)]
    handle_ms: Option<f64>,
    /// Priority classes and their shares: `angry` is a negative sentiment,
    /// `normal` the standard tier, any other name a tier.
    #[arg(long, default_value = "normal:0.8,gold:0.15,angry:0.05")]
    classes: String,
    /// Channel mix and shares.
    #[arg(long, default_value = "chat:0.5,voice:0.3,email:0.2")]
    channels: String,
    /// Seconds measured (after the warm-up).
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
    /// Topic of every contact (the node's queue for it; the default queue
    /// when no queue lists it).
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
    Scale,
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Migration => "migration",
            Scenario::Failover => "failover",
            Scenario::Scale => "scale",
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

/// Runs the bench.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let classes = Arc::new(Mix::parse("classes", &args.classes, Class::parse)?);
    let channels = Arc::new(Mix::parse("channels", &args.channels, workload::channel)?);
    for (flag, v) in [
        ("rate", args.rate),
        ("handle-ms", args.handle_ms),
        ("duration", args.duration),
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
    if args.agents == Some(0) || args.connections == 0 || args.max_in_flight == 0 || args.steps == 0
    {
        bail!("--agents, --connections, --max-in-flight and --steps: must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let measured: Vec<(&'static str, &Defaults)> = match args.scenario {
        Scenario::Latency => vec![("latency", &LATENCY)],
        Scenario::Throughput => vec![("throughput", &THROUGHPUT)],
        Scenario::All => vec![("latency", &LATENCY), ("throughput", &THROUGHPUT)],
        Scenario::Migration | Scenario::Failover | Scenario::Scale => vec![],
    };
    let not_measured: Vec<String> = match args.scenario {
        Scenario::All => vec![
            "migration (run --scenario migration)".into(),
            "failover".into(),
            "scale".into(),
        ],
        Scenario::Failover | Scenario::Scale => vec![args.scenario.name().into()],
        Scenario::Migration => vec![],
        Scenario::Latency | Scenario::Throughput => vec![],
    };
    let mean_cost = workload::mean_cost(&channels);
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
            let handle_ms = args.handle_ms.unwrap_or(d.handle_ms);
            // Capacity in use = rate x handle time x mean cost; agents to
            // keep it near the scenario's utilisation (at least 10).
            let busy = rate * handle_ms / 1_000.0 * mean_cost / 100.0;
            let agents = args
                .agents
                .unwrap_or(((busy / d.utilisation).ceil() as usize).max(10));
            PhaseSpec {
                index,
                scenario: name,
                what: d.what.into(),
                rate: *rate,
                agents,
                handle_ms,
                warmup: args.warmup.unwrap_or(d.warmup),
                duration: args.duration.unwrap_or(d.duration),
                drain: args.drain,
                seed: args.seed,
                max_in_flight: args.max_in_flight,
                connections: args.connections,
                topic: args.topic.clone(),
            }
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
        "topic": args.topic,
        "connections_per_target": args.connections,
        "max_in_flight": args.max_in_flight,
        "drain_s": args.drain,
        "steps": args.steps,
        "ceiling_secs": args.ceiling_secs,
        "ceiling_concurrency": args.ceiling_concurrency,
        "phases": specs.iter().map(|s| serde_json::json!({"scenario": s.scenario, "rate_per_s": s.rate, "agents": s.agents, "handle_ms": s.handle_ms, "warmup_s": s.warmup, "duration_s": s.duration})).collect::<Vec<_>>(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });

    let mut report = Report {
        not_measured,
        parameters,
        ..Report::default()
    };
    if args.scenario == Scenario::Migration {
        return run_migration(&args, report, &tag, &classes, &channels).await;
    }
    if specs.is_empty() {
        report.system =
            serde_json::json!({ "note": "nothing started: the scenario is not measured yet" });
        finish(
            &args.out,
            &report,
            &[],
            &[],
            &[],
            &classes,
            &channels,
            "centralino bench: nothing measured",
        )?;
        return Ok(());
    }

    let load_at_start = load::load_avg();
    let mut system = start_system(&args, 1).await?;
    let env = Env {
        clock,
        tracker: Arc::new(Tracker::new()),
        classes: classes.clone(),
        channels: channels.clone(),
        tag: tag.clone(),
        targets: system.targets.clone(),
        etcd: system.etcd.clone(),
        processes: system.processes(),
    };

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
    report.ingest_to_offer_p999_ms = lat
        .and_then(|p| p.ingest_to_offer.as_ref())
        .map(|l| l.p999_ms);
    report.routed_per_s = thr.map(|p| p.routed_per_s);
    report.routed_saturated = thr.map(|p| p.saturated);
    report.etcd_requests_per_contact = thr
        .and_then(|p| p.etcd.as_ref())
        .and_then(|e| e.per_contact);
    report.grpc_ceiling_per_s = grpc.as_ref().map(|c| c.per_s);
    report.etcd_put_ceiling_per_s = etcd_put.as_ref().map(|c| c.per_s);
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
    let agent_ids: Vec<String> = runs
        .iter()
        .flat_map(|r| r.agent_ids.iter().cloned())
        .collect();
    let node_names: Vec<String> = env.targets.iter().map(|t| t.name.clone()).collect();
    let header = format!(
        "centralino bench: scenario {}, {}, seed {}; {} CPUs, load avg {} at start (a shared machine: other work shows here)",
        args.scenario.name(),
        description,
        args.seed,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_at_start.map(report::num).unwrap_or_else(|| "?".into())
    );
    finish(
        &args.out,
        &report,
        &contacts,
        &agent_ids,
        &node_names,
        &classes,
        &channels,
        &header,
    )?;
    if !dead.is_empty() {
        for d in &dead {
            eprintln!("bench: node {d}");
        }
        bail!(
            "{} node(s) died during the run (see above and the logs in {}): the numbers describe a failing system",
            dead.len(),
            args.out.display()
        );
    }
    Ok(())
}

/// The nodes under test: `--target`'s, or `--nodes` (`default_nodes`
/// unless given) started here, with etcd when more than one.
async fn start_system(args: &Args, default_nodes: usize) -> anyhow::Result<System> {
    match &args.target {
        Some(t) => System::external(t, args.etcd.clone()),
        None => {
            let nodes = args.nodes.unwrap_or(default_nodes);
            eprintln!(
                "bench: starting {nodes} node(s) on loopback; logs in {}",
                args.out.display()
            );
            System::spawn(nodes, &args.out).await
        }
    }
}

/// The `migration` scenario (see [`migration`]) on a cluster of
/// `--nodes` (3 unless given) or `--target` nodes.
async fn run_migration(
    args: &Args,
    mut report: Report,
    tag: &str,
    classes: &Mix<Class>,
    channels: &Mix<centralino_core::Channel>,
) -> anyhow::Result<()> {
    let system = start_system(args, 3).await?;
    let outcome = tokio::select! {
        r = migration::measure(&system.targets, tag) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    system.save_node_metrics(&args.out).await;
    let description = system.description.clone();
    eprintln!("bench: tearing down");
    system.shutdown().await;
    let m = outcome?;
    report.migration_pause_p50_ms = Some(m.pause.p50_ms);
    report.migration_pause_p99_ms = Some(m.pause.p99_ms);
    report.system = serde_json::json!({
        "under_test": description,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "migration": {
            "history_events": m.history,
            "moves": m.moves,
            "pause": m.pause,
            "acks_during_moves": m.acks_during_moves,
        },
    });
    let header = format!(
        "centralino bench: scenario migration, {description}: {} moves of a customer with {} events; pause p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest ack of a message sent meanwhile {} ms",
        m.moves,
        m.history,
        m.pause.p50_ms,
        m.pause.p99_ms,
        m.pause.max_ms,
        m.acks_during_moves
            .as_ref()
            .map_or("-".into(), |a| format!("{:.2}", a.max_ms)),
    );
    finish(
        &args.out,
        &report,
        &[],
        &[],
        &[],
        classes,
        channels,
        &header,
    )
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

/// Writes report.json and contacts.csv and prints the summary.
#[allow(clippy::too_many_arguments)]
fn finish(
    out: &Path,
    report: &Report,
    contacts: &[tracker::Contact],
    agents: &[String],
    nodes: &[String],
    classes: &Mix<Class>,
    channels: &Mix<centralino_core::Channel>,
    header: &str,
) -> anyhow::Result<()> {
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
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
    print!("{}", report::summary(report, header));
    println!("\nwrote {} and {}", json.display(), csv.display());
    Ok(())
}
