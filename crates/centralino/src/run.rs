//! Running a node, and its one ordered shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use centralino_cluster::{
    Archive, EtcdCoordination, FileArchive, MemoryArchive, MemoryCoordination, Mode, Node,
    NodeInfo, NodeOptions,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::sim;

/// How long in-flight calls and open streams get to finish on shutdown.
pub const GRACE: Duration = Duration::from_secs(5);

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,h2=warn,tower=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Starts the node (and the simulation, in dev), serves until Ctrl-C or
/// SIGTERM, then shuts down in order: stop the simulation, drain (move
/// every customer actor to the other nodes, with its history), stop
/// accepting and let calls finish, stop the actors, leave the cluster.
pub async fn node(cfg: Config, sim: Option<sim::Options>) -> anyhow::Result<()> {
    if let Some(addr) = cfg.node.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("starting the metrics endpoint on {addr}"))?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    let listener = TcpListener::bind(cfg.node.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.node.listen))?;
    let listen = listener.local_addr()?;
    let opts = NodeOptions {
        node: NodeInfo {
            id: cfg.node.id.clone(),
            advertise: cfg.advertise(),
        },
        router: cfg.router()?,
        queues: cfg.queues()?,
        rules: cfg.rules()?,
        lease_ttl: Duration::from_millis(cfg.node.lease_ttl_ms),
        keep_alive: Duration::from_millis(cfg.node.keep_alive_ms),
    };
    let archive: Arc<dyn Archive> = match cfg.archive_dir() {
        Some(dir) => {
            let archive = FileArchive::open(&dir).with_context(|| {
                format!(
                    "opening the history archive in {}: set node.archive_dir (CENTRALINO_ARCHIVE_DIR, \
                     --archive-dir) to a directory this node can write, shared by the cluster's nodes",
                    dir.display()
                )
            })?;
            tracing::info!(dir = %dir.display(), "history archive");
            Arc::new(archive)
        }
        None => Arc::new(MemoryArchive::new()),
    };
    let node = if cfg.node.etcd.is_empty() {
        let coord = Arc::new(MemoryCoordination::new());
        Node::start(opts, coord, archive, Mode::Standalone).await
    } else {
        let prefix = format!("/centralino/{}/", cfg.node.cluster);
        let etcd = EtcdCoordination::connect(&cfg.node.etcd, &prefix)
            .await
            .with_context(|| format!("connecting to etcd at {}", cfg.node.etcd.join(",")))?;
        Node::start(opts, Arc::new(etcd), archive, Mode::Clustered).await
    }
    .context("starting the node")?;

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let limits = centralino_server::Limits {
        max_contacts_in_flight: cfg.node.max_contacts_in_flight,
    };
    let server = tokio::spawn(centralino_server::serve(
        listener,
        node.hub.clone(),
        limits,
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    tracing::info!(%listen, node = %cfg.node.id, "serving gRPC");

    let simulation = match sim {
        Some(opts) => Some(
            sim::start(listen, opts)
                .await
                .context("starting the simulation")?,
        ),
        None => None,
    };

    let lease_lost = tokio::select! {
        () = shutdown_signal() => false,
        () = node.lease_lost() => true,
    };
    tracing::info!(lease_lost, "shutting down");
    if let Some(s) = simulation {
        s.stop().await;
    }
    // Drain while the server still serves: other nodes keep reaching the
    // customers here (forwarded once moved) until every one has moved.
    if !lease_lost {
        node.drain().await;
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("streams still open after {GRACE:?}; closing them"),
    }
    node.shutdown().await;
    if lease_lost {
        anyhow::bail!("the node lost its cluster lease and stopped; restart it to rejoin");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
