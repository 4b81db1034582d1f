//! `centralino`: the node binary and CLI.
//!
//! - `centralino dev`: one node with in-memory coordination, simulated
//!   gateways and agent desktops driving it over real gRPC, and live numbers
//!   on the terminal until Ctrl-C.
//! - `centralino node`: a node configured by file, environment and flags.
//! - `centralino bench`: measures a cluster against this machine's ceilings.
//! - `centralino replay`: recorded traffic through the routing core under
//!   two configurations, service level, ASA and occupancy side by side.

mod bench;
mod config;
mod replay;
mod run;
mod sim;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "centralino",
    version,
    about = "Omnichannel contact-center routing cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One node with simulated gateways and agents, and live numbers.
    Dev(DevArgs),
    /// Run a node.
    Node(NodeArgs),
    /// Measure a cluster (started here or running) against this machine's ceilings.
    Bench(bench::Args),
    /// Replay recorded traffic under two routing configurations and compare
    /// service level, ASA and occupancy.
    Replay(replay::Args),
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// TOML configuration file (see deploy/centralino.toml).
    #[arg(long, env = "CENTRALINO_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "CENTRALINO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Node id, unique in the cluster.
    #[arg(long, env = "CENTRALINO_NODE_ID")]
    node_id: Option<String>,
    /// Address other nodes and clients dial (defaults to --listen).
    #[arg(long, env = "CENTRALINO_ADVERTISE")]
    advertise: Option<String>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "CENTRALINO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Join a cluster through these etcd endpoints (comma-separated);
    /// without it the node runs standalone.
    #[arg(long, env = "CENTRALINO_ETCD", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Cluster name (nodes of one cluster share it).
    #[arg(long, env = "CENTRALINO_CLUSTER")]
    cluster: Option<String>,
    /// Membership lease TTL, ms.
    #[arg(long, env = "CENTRALINO_LEASE_TTL_MS")]
    lease_ttl_ms: Option<u64>,
    /// Lease renewal interval, ms (at most a third of the TTL).
    #[arg(long, env = "CENTRALINO_KEEP_ALIVE_MS")]
    keep_alive_ms: Option<u64>,
    /// Directory of the history archive of closed conversations, shared by
    /// the cluster's nodes (default /var/lib/centralino/archive when
    /// clustered, memory when standalone).
    #[arg(long, env = "CENTRALINO_ARCHIVE_DIR")]
    archive_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DevArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// New contacts per second from the simulated gateways.
    #[arg(long, default_value_t = 6.0)]
    rate: f64,
    /// Simulated agents.
    #[arg(long, default_value_t = 14)]
    agents: usize,
    /// Mean handle time of a simulated agent, ms.
    #[arg(long, default_value_t = 2_500)]
    handle_ms: u64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seconds between live reports.
    #[arg(long, default_value_t = 2)]
    report_every: u64,
}

impl NodeArgs {
    fn load(&self, dev: bool) -> anyhow::Result<config::Config> {
        let overrides = config::Overrides {
            listen: self.listen,
            node_id: self.node_id.clone(),
            advertise: self.advertise.clone(),
            metrics_listen: self.metrics_listen,
            etcd: self.etcd.clone(),
            cluster: self.cluster.clone(),
            lease_ttl_ms: self.lease_ttl_ms,
            keep_alive_ms: self.keep_alive_ms,
            archive_dir: self.archive_dir.clone(),
        };
        let mut cfg = config::Config::load(self.config.as_deref(), overrides)?;
        if dev && self.config.is_none() {
            sim::dev_defaults(&mut cfg);
        }
        Ok(cfg)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    run::init_tracing();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(args) = &cli.command
        && let Some(workers) = args.worker_threads()
    {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Node(args) => run::node(args.load(false)?, None).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Dev(args) => {
                let cfg = args.node.load(true)?;
                let sim = sim::Options {
                    rate: args.rate,
                    agents: args.agents,
                    handle_ms: args.handle_ms,
                    seed: args.seed,
                    report_every: std::time::Duration::from_secs(args.report_every.max(1)),
                };
                run::node(cfg, Some(sim)).await
            }
        }
    })
}
